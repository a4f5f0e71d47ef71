"""Every MedMNIST layout loads with the right channels, dimensionality and task, and the RGB
file of issue 17 trains through the real CLI to a sensible AUC (it used to crash in the first
step: a 1-channel stem fed 3 channels)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.cli import main
from common.errors import InvalidInput
from medical_imaging.io import load_medmnist as reexported
from medical_imaging.medmnist import layout_of, load_medmnist


def _write(path, shape, labels_fn, seed=0, n=(12, 6, 6)):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n, strict=True):
        arrays[f"{split}_images"] = rng.integers(0, 256, (k, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = labels_fn(rng, k)
    np.savez(path, **arrays)
    return path


LABELS = {
    "binary": lambda rng, k: np.arange(k).reshape(-1, 1) % 2,
    "multiclass": lambda rng, k: np.arange(k).reshape(-1, 1) % 4,
    "ordinal": lambda rng, k: np.arange(k).reshape(-1, 1) % 5,
    "multilabel": lambda rng, k: np.stack([np.arange(k) % 2, np.arange(k) // 2 % 2,
                                           np.ones(k, int)], 1),
}
LAYOUTS = {"grey": ((28, 28), 2, 1), "rgb": ((28, 28, 3), 2, 3), "3d": ((8, 10, 12), 3, 1)}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("task", LABELS)
def test_layout_and_task_come_from_the_data(tmp_path, layout, task):
    shape, dims, channels = LAYOUTS[layout]
    path = _write(tmp_path / f"{layout}_{task}.npz", shape, LABELS[task])
    d = load_medmnist(path, "ordinal" if task == "ordinal" else None)
    x, y = d["train"]
    assert d["dimensions"] == dims and d["in_channels"] == channels
    assert x.shape[:2] == (12, channels) and x.ndim == dims + 2
    assert str(x.dtype) == "torch.float32" and 0 <= float(x.min()) and float(x.max()) <= 1
    if layout == "3d":
        assert tuple(x.shape[2:]) == shape  # (D, H, W) kept in order
    if layout == "rgb":  # channel-last → channel-first without mixing pixels
        raw = np.load(path)["train_images"]
        assert np.allclose(x[3, :, 5, 7].numpy() * 255, raw[3, 5, 7])
    expected = {"binary": ("binary", 2), "multiclass": ("multiclass", 4),
                "ordinal": ("ordinal", 5), "multilabel": ("multilabel", 3)}[task]
    assert (d["task"], d["num_classes"]) == expected
    assert reexported is load_medmnist  # io keeps exporting it


def test_layout_edge_cases_and_bad_files(tmp_path):
    assert layout_of((5, 28, 28, 3)) == (2, 3)
    assert layout_of((5, 3, 3, 3)) == (3, 1)  # a 3-voxel cube is a volume, not RGB
    assert layout_of((5, 16, 16, 16, 1)) == (3, 1)
    with pytest.raises(ValueError, match="not a MedMNIST layout"):
        layout_of((5, 28))
    bad = _write(tmp_path / "bad.npz", (28,), LABELS["binary"])
    with pytest.raises(InvalidInput, match="bad.npz: not a MedMNIST"):
        load_medmnist(bad)
    ml = _write(tmp_path / "ml.npz", (28, 28), LABELS["multilabel"])
    with pytest.raises(InvalidInput, match="multi-label"):
        load_medmnist(ml, "binary")
    np.savez(tmp_path / "mixed.npz", train_images=np.zeros((4, 28, 28), np.uint8),
             val_images=np.zeros((4, 28, 28, 3), np.uint8),
             test_images=np.zeros((4, 28, 28), np.uint8),
             **{f"{s}_labels": np.zeros((4, 1), np.uint8) for s in ("train", "val", "test")})
    with pytest.raises(InvalidInput, match="different shapes"):
        load_medmnist(tmp_path / "mixed.npz")


def _rgb_lesions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 28, 28, 3) uint8 tissue-coloured noise with one blob each: red for class 1, blue
    for class 0 (same brightness, so only colour tells them apart)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    img = rng.normal(120, 20, (n, 28, 28, 3))
    yy, xx = np.mgrid[0:28, 0:28]
    for i in range(n):
        cy, cx = rng.uniform(7, 21, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.5 ** 2))
        colour = np.array([110, -40, -40]) if y[i] else np.array([-40, -40, 110])
        img[i] += blob[..., None] * colour
    return np.clip(img, 0, 255).astype(np.uint8), y.reshape(-1, 1)


@pytest.mark.slow
def test_rgb_medmnist_file_trains_through_the_cli(tmp_path, monkeypatch, capsys):
    import medical_imaging.evaluate as ev

    monkeypatch.setattr(ev, "_MIN_STEPS", 1)  # tiny data: no stretching to CI's step count
    arrays = {}
    for split, n, seed in (("train", 320, 0), ("val", 96, 1), ("test", 160, 2)):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = _rgb_lesions(n, seed)
    np.savez(tmp_path / "rgbmnist.npz", **arrays)
    out = tmp_path / "report.json"
    rc = main(["evaluate", "medical", "--protocol", "medmnist", "--data",
               str(tmp_path / "rgbmnist.npz"), "--out", str(out), "--seeds", "1",
               "--root", str(tmp_path / "store"), "--width", "0.125", "--epochs", "4",
               "--batch-size", "32", "--members", "1", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["config"]["in_channels"] == 3 and report["config"]["dimensions"] == 2
    assert report["config"]["fit"]["in_channels"] == 3
    assert report["metrics"]["auc"] > 0.8, report["metrics"]
