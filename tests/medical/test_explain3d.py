"""3D Grad-CAM: the target layer keeps enough resolution, the montage shows the k slices with
the most CAM mass (indices ascending, captioned), and a PNG of the right grid size."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from medical_imaging.explain import (
    GradCamExplainer,
    gradcam_montage,
    montage_png,
    salient_slices,
)
from medical_imaging.model import build_model, last_conv_layer

NET = {"arch": "resnet18", "dimensions": 3, "width": 0.125, "layers": [1, 1, 1, 1],
       "in_channels": 1, "num_classes": 2, "image_size": 28}


def test_salient_slices_rank_by_cam_mass():
    heat = np.zeros((10, 4, 4), np.float32)
    heat[7] = 1.0
    heat[2, :2] = 1.0
    heat[5, 0, 0] = 1.0
    assert salient_slices(heat, 3) == [2, 5, 7]
    assert salient_slices(heat, 1) == [7]
    assert salient_slices(heat, 50) == list(range(10))  # k capped at the depth


def test_montage_grid_and_captions():
    vol = np.random.default_rng(0).random((1, 12, 28, 28)).astype(np.float32)
    heat = np.zeros((12, 28, 28), np.float32)
    img = Image.open(io.BytesIO(montage_png(vol, heat, [1, 4, 9, 11])))
    w, h = img.size
    assert img.mode == "RGB" and w == 3 * 160 and h == 2 * (160 + 18)  # 3 columns, 2 rows
    caption = np.asarray(img)[:18, :160]
    assert caption.max() > 200  # the caption text is drawn


def test_target_layer_is_fine_enough_for_a_28_cube():
    torch.manual_seed(0)
    net = build_model(NET)
    assert last_conv_layer(net) == "layer4.0.conv2"  # not the shortcut (downsample) conv
    layer = last_conv_layer(net, (1, 28, 28, 28))
    assert layer == "layer3.0.conv2"  # layer4 is 2^3 at 28^3: too coarse for slices


@pytest.mark.parametrize("members", [1, 2])
def test_gradcam_montage_shape_and_indices(members):
    torch.manual_seed(0)
    net = build_model({**NET, "ensemble": members})
    vol = torch.zeros(1, 1, 28, 28, 28)
    vol[0, 0, 18:24, 8:20, 8:20] = 1.0
    png, idx = gradcam_montage(net, vol, class_idx=1, k=4)
    assert len(idx) == 4 and idx == sorted(idx) and all(0 <= i < 28 for i in idx)
    assert Image.open(io.BytesIO(png)).size == (3 * 160, 2 * (160 + 18))
    explainer = GradCamExplainer(net)
    heat = explainer(vol[0], 1)
    assert heat.shape == (28, 28, 28) and 0 <= heat.min() and heat.max() <= 1
    assert idx == salient_slices(heat, 4)  # the montage shows the CAM's heaviest slices
    # the serving model stays hook-free and gradient-free
    assert not any(m._forward_hooks for m in net.modules())
    with pytest.raises(ValueError, match="needs a volume"):
        gradcam_montage(net, torch.zeros(1, 1, 28, 28), 1)


@pytest.mark.slow
def test_cli_explain_writes_a_montage_for_a_3d_bundle(tmp_path, capsys):
    import json

    from common.cli import main
    from medical_imaging.pipeline import train_and_publish
    from medical_imaging.synthetic import make_volumes
    from medical_imaging.train import FitConfig
    from tests.medical.files import nifti_bytes

    splits = {}
    for name, n, seed in (("train", 16, 0), ("val", 8, 1)):
        v, y = make_volumes(n, 16, seed)
        splits[name] = (torch.from_numpy(v).float().div(255).unsqueeze(1), y)
    data = {**splits, "task": "binary", "num_classes": 2, "labels": ["clear", "lesion"],
            "name": "vols", "synthetic": True, "fingerprint": "vols"}
    cfg = FitConfig(width=0.125, epochs=1, batch_size=8, model_extra={"layers": [1, 1, 1, 1]},
                    device="cpu")
    train_and_publish(data, tmp_path / "store", cfg)
    vol = make_volumes(1, 20, 5)[0][0]
    (tmp_path / "scan.nii").write_bytes(nifti_bytes(vol))
    out = tmp_path / "montage.png"
    rc = main(["explain", "medical", str(tmp_path / "scan.nii"), "--out", str(out),
               "--root", str(tmp_path / "store")])
    assert rc == 0, capsys.readouterr().err
    pred = json.loads(capsys.readouterr().out)
    assert pred["label"] in ("clear", "lesion") and len(pred["heatmap_slices"]) == 6
    assert Image.open(out).size == (3 * 160, 2 * (160 + 18))
