"""3D networks: MONAI ResNet / DenseNet in 3D by config, training step, TTA flips, a bundle
round trip with `dimensions: 3`, and patch-wise (sliding-window) inference for large volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.artifacts import load_bundle
from common.errors import InvalidInput
from medical_imaging.evaluate import score_bundle
from medical_imaging.gate import gate_score
from medical_imaging.model import build_model, dimensions, patch_logits
from medical_imaging.pipeline import train_and_publish
from medical_imaging.train import (
    FitConfig,
    ImageSet,
    VolumeAugment,
    predict_logits,
    tta_flips,
)

TINY = {"arch": "resnet18", "dimensions": 3, "width": 0.125, "layers": [1, 1, 1, 1],
        "in_channels": 1, "num_classes": 2, "image_size": 16}


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "densenet121"])
def test_3d_archs_are_3d(arch):
    net = build_model({**TINY, "arch": arch, "layers": None})
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and not any(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    assert convs[0].in_channels == 1


def test_forward_backward_and_config_errors():
    torch.manual_seed(0)
    net = build_model({**TINY, "in_channels": 2, "num_classes": 3})
    x = torch.rand(3, 2, 16, 16, 16, requires_grad=True)
    out = net(x)
    assert out.shape == (3, 3)
    out.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in net.parameters())
    assert dimensions({}) == 2 and dimensions({"dimensions": 3}) == 3
    with pytest.raises(InvalidInput, match="2D only"):
        build_model({**TINY, "arch": "timm:resnet18"})
    with pytest.raises(InvalidInput, match="dimensions"):
        build_model({**TINY, "dimensions": 4})


def test_3d_augmentation_keeps_shape_range_and_mass():
    x = torch.zeros(16, 1, 20, 20, 20)
    x[:, :, 6:14, 5:15, 8:12] = 1.0  # a box mask, as MedMNIST 3D's binary masks
    ds = ImageSet(x, np.arange(16) % 2, "binary", augment_seed=0)
    assert torch.equal(ds[1][0], x[1])  # volumes are augmented per batch, not per item
    aug = VolumeAugment(0)
    v = aug(x)
    assert v.shape == x.shape and 0 <= float(v.min()) and float(v.max()) <= 1
    changed = [not torch.equal(v[i], x[i]) for i in range(16)]
    assert sum(changed) >= 12  # flips and affines hit most volumes
    # small affines: the mask keeps roughly its size (scale 1 +- 0.1 per axis)
    mass = v.flatten(1).sum(1) / x[0].sum()
    assert float(mass.min()) > 0.6 and float(mass.max()) < 1.5
    assert not torch.equal(VolumeAugment(1)(x), v)  # seeded, and the seed matters
    assert torch.equal(VolumeAugment(0)(x), v)
    assert tta_flips(x) == [[], [-1], [-2], [-3]] and tta_flips(x[:, :, 0]) == [[], [-1]]


def test_3d_bundle_round_trip(tmp_path):
    rng = np.random.default_rng(0)

    def split(n):  # a bright cube for class 1, none for 0: learnable, tiny
        y = np.arange(n) % 2
        v = rng.random((n, 1, 16, 16, 16)).astype(np.float32) * 0.2
        v[y == 1, :, 5:11, 5:11, 5:11] += 0.7
        return torch.from_numpy(v), y.reshape(-1, 1)

    data = {"train": split(32), "val": split(16), "test": split(16), "task": "binary",
            "num_classes": 2, "labels": ["a", "b"], "name": "cubes", "synthetic": True,
            "fingerprint": "cubes"}
    cfg = FitConfig(width=0.125, epochs=2, batch_size=8, tta=True,
                    model_extra={"layers": [1, 1, 1, 1]}, device="cpu")
    bundle = train_and_publish(data, tmp_path, cfg)
    mc = bundle.model_config
    assert mc["dimensions"] == 3 and mc["net"]["dimensions"] == 3
    assert mc["net"]["image_size"] == 16 and mc["fit"]["dimensions"] == 3
    loaded = load_bundle(bundle.path)
    net = build_model(loaded.model_config["net"])
    net.load_state_dict(loaded.state_dict())
    x, y_test = data["test"]
    again = predict_logits(net, x, tta=True)
    assert again.shape == (16, 2)
    ref = build_model(loaded.model_config["net"])
    ref.load_state_dict(loaded.state_dict())
    assert np.array_equal(predict_logits(ref, x, tta=True), again)
    # `evaluate --bundle` and the gate score a 3D bundle on MedMNIST-style 3D data
    m = score_bundle(str(bundle.path), {"task": "binary", "test": data["test"]}, None)
    assert 0 <= m["auc"] <= 1 and 0 <= m["acc"] <= 1
    with pytest.raises(InvalidInput, match="2D inputs cannot be scored by a 3D bundle"):
        score_bundle(str(bundle.path), {"task": "binary", "test": (x[:, :, 0], y_test)}, None)
    npz = tmp_path / "cubes3d.npz"
    raw = {f"{s}_{k}": v for s in ("train", "val", "test") for k, v in (
        ("images", (data[s][0][:, 0].numpy() * 255).astype(np.uint8)), ("labels", data[s][1]))}
    np.savez(npz, **raw)
    g = gate_score(loaded, npz)
    assert g["n"] == 16 and abs(g["auc"] - m["auc"]) < 1e-6  # same scoring path
    with pytest.raises(InvalidInput, match="3D bundle is gated on"):
        gate_score(loaded, tmp_path)


def test_patch_logits_bounds_memory_and_matches_the_whole_volume():
    torch.manual_seed(0)
    net = build_model(TINY).eval()
    vol = torch.rand(1, 1, 16, 16, 16)
    whole = net(vol)
    # a volume exactly the patch size is one window: the same logits
    assert torch.allclose(patch_logits(net, vol, 16), whole, atol=1e-5)
    big = torch.rand(2, 1, 40, 24, 16)
    out = patch_logits(net, big, 16, sw_batch_size=2)
    assert out.shape == (2, 2) and torch.isfinite(out).all()


def test_train_cli_on_a_3d_npz_uses_the_3d_recipe(tmp_path, capsys):
    from common.cli import main
    from medical_imaging.synthetic import make_volumes

    arrays = {}
    for split, n, seed in (("train", 24, 0), ("val", 8, 1), ("test", 8, 2)):
        v, y = make_volumes(n, 12, seed)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = v, y.reshape(-1, 1)
    np.savez(tmp_path / "vols3d.npz", **arrays)
    rc = main(["train", "medical", "--data", str(tmp_path / "vols3d.npz"), "--epochs", "1",
               "--root", str(tmp_path / "store"), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    bundle = load_bundle("latest", root=tmp_path / "store", vertical="medical")
    net = bundle.model_config["net"]
    assert bundle.model_config["dimensions"] == 3 and net["dimensions"] == 3
    assert net["layers"] == [1, 1, 1, 1] and net["image_size"] == 12
    assert bundle.model_config["fit"]["balance"] is False


def test_mixup_and_label_smoothing_train_a_3d_step():
    from medical_imaging.train import _Mixup

    mix = _Mixup(0.4, "binary", 2, seed=0)
    x, y = torch.rand(6, 1, 8, 8, 8), torch.tensor([0, 1, 0, 1, 1, 0])
    xm, t = mix(x, y)
    assert xm.shape == x.shape and t.shape == (6, 2)
    assert torch.allclose(t.sum(1), torch.ones(6))  # soft targets stay distributions
    net = build_model({**TINY, "image_size": 8})
    loss = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(net(xm), t)
    loss.backward()
    assert torch.isfinite(loss)
