"""MedMNIST metric definitions, backbones (MONAI / timm / torchvision), local checkpoints,
Grad-CAM on any backbone, synthetic phantoms."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from medical_imaging.explain import GradCamExplainer, overlay_png
from medical_imaging.metrics import classification_metrics, infer_task, medmnist_auc_acc
from medical_imaging.model import Ensemble, build_model, last_conv_layer, load_local_weights
from medical_imaging.synthetic import make_phantoms


def test_binary_uses_last_column_and_half_threshold():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])
    auc, acc = medmnist_auc_acc("binary", y, probs)
    assert auc == 1.0 and acc == 0.75  # 0.6 > 0.5 misclassifies the second negative


def test_multiclass_is_mean_one_vs_rest_auc_and_argmax_acc():
    y = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.5, 0.1, 0.4], [0.1, 0.2, 0.7]])
    auc, acc = medmnist_auc_acc("multiclass", y, probs)
    # class 0: positives {0} score .8 vs .1,.5,.1 → 1; class 1: 1; class 2: .4,.7 vs .1,.2 → 1
    assert auc == 1.0 and acc == 0.75


def test_multilabel_mean_auc_and_per_label_acc():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    probs = np.array([[0.9, 0.2], [0.3, 0.6], [0.7, 0.4], [0.2, 0.1]])
    auc, acc = medmnist_auc_acc("multilabel", y, probs)
    assert auc == 1.0 and acc == pytest.approx((1.0 + 0.75) / 2)
    assert infer_task(y) == "multilabel" and infer_task(np.array([[0], [2], [1]])) == "multiclass"


def test_temperature_changes_ece_not_ranking():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    logits = np.stack([np.zeros(400), (2 * y - 1) * 3 + rng.normal(0, 3, 400)], 1)
    hot, cooled = (classification_metrics("binary", y, logits, t) for t in (1.0, 3.0))
    assert hot["auc"] == cooled["auc"] and hot["ece"] != cooled["ece"]


@pytest.mark.parametrize(
    ("arch", "cin", "size"),
    [("resnet18", 1, 28), ("resnet18", 3, 96), ("densenet121", 1, 64), ("densenet121", 4, 64),
     ("timm:resnet18", 1, 64), ("torchvision:resnet18", 2, 64)],
)
def test_backbones_any_channels_and_gradcam(arch, cin, size):
    net = build_model({"arch": arch, "in_channels": cin, "num_classes": 3, "image_size": size,
                       "width": 0.25}).eval()
    x = torch.rand(2, cin, size, size)
    assert net(x).shape == (2, 3)
    heat = GradCamExplainer(net)(x[0], class_idx=2)
    assert heat.shape == (size, size) and 0 <= heat.min() and heat.max() <= 1
    png = overlay_png(x[0].numpy()[:1], heat)
    assert Image.open(io.BytesIO(png)).size == (256, 256)
    assert last_conv_layer(net) in dict(net.named_modules())


def test_ensemble_averages_member_logits_and_explains_with_every_member():
    net = build_model({"arch": "resnet18", "in_channels": 1, "num_classes": 2, "width": 0.25,
                       "ensemble": 3}).eval()
    assert isinstance(net, Ensemble) and len(net.members) == 3
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        each = [m(x) for m in net.members]
        assert not torch.allclose(each[0], each[1])  # independently initialised
        assert torch.allclose(net(x), torch.stack(each).mean(0), atol=1e-6)
    explainer = GradCamExplainer(net)
    assert len(explainer.cams) == 3
    heat = explainer(x[0], class_idx=1)
    assert heat.shape == (28, 28) and 0 <= heat.min() and heat.max() <= 1


def test_local_checkpoint_loads_matching_tensors_only(tmp_path):
    from safetensors.torch import save_file

    src = build_model({"arch": "resnet18", "in_channels": 3, "num_classes": 10, "width": 0.25})
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "w.safetensors")
    dst = build_model({"arch": "resnet18", "in_channels": 1, "num_classes": 2, "width": 0.25})
    skipped = load_local_weights(dst, tmp_path / "w.safetensors")
    assert any("conv1" in k for k in skipped) and any("fc" in k for k in skipped)
    name = "layer4.1.conv2.weight"
    assert torch.equal(dst.state_dict()[name], src.state_dict()[name])
    via_config = build_model({"arch": "resnet18", "in_channels": 1, "num_classes": 2,
                              "width": 0.25, "pretrained": str(tmp_path / "w.safetensors")})
    assert torch.equal(via_config.state_dict()[name], src.state_dict()[name])


def test_phantoms_are_seeded_and_lesions_are_brighter():
    a, ya = make_phantoms(64, seed=3)
    b, yb = make_phantoms(64, seed=3)
    assert np.array_equal(a, b) and np.array_equal(ya, yb) and 10 < ya.sum() < 54
    assert a.dtype == np.uint8 and a.shape == (64, 28, 28)
    assert a[ya == 1].max(axis=(1, 2)).mean() > a[ya == 0].max(axis=(1, 2)).mean()
