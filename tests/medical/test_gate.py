"""The medical gate scores an existing bundle on a MedMNIST .npz or a class folder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from common.artifacts import load_bundle
from common.errors import InvalidInput
from common.registry import get_vertical
from medical_imaging.synthetic import SYNTHETIC_LABELS, make_phantoms


@pytest.fixture(scope="module")
def bundle(medical_root):
    return load_bundle("latest", vertical="medical", root=medical_root)


@pytest.fixture(scope="module")
def phantoms():
    return make_phantoms(64, 28, seed=4242)  # unseen by the bundle (its seeds are 0..2)


def _npz(path, images, labels):
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.reshape(-1, 1)
    np.savez(path, **arrays)
    return path


def test_gate_scores_npz_and_folder_alike(bundle, phantoms, tmp_path):
    med = get_vertical("medical")
    assert med.gate_metric == "auc"
    images, labels = phantoms
    m = med.gate_score(bundle, _npz(tmp_path / "gate.npz", images, labels), None)
    assert m["n"] == 64 and 0.7 < m["auc"] <= 1.0 and 0 <= m["ece"] <= 1
    folder = tmp_path / "folder"
    for k, (img, y) in enumerate(zip(images, labels, strict=True)):
        d = folder / SYNTHETIC_LABELS[y]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{k}.png")
    # PNG is lossless and both paths scale by 1/255: the same images give the same metrics
    assert med.gate_score(bundle, folder, None) == pytest.approx(m)


@pytest.mark.parametrize("case, reason", [
    ("wrong_type", "use a MedMNIST .npz or a folder"),
    ("not_npz", "not a MedMNIST .npz file"),
    ("one_class", "AUC needs images of at least two classes"),
    ("too_many_classes", "test labels do not fit the bundle's 2 classes"),
    ("unknown_folder", "class folders ['cat', 'dog'] are not labels of the bundle"),
])
def test_unfitting_data_is_one_line(bundle, phantoms, tmp_path, case, reason):
    images, labels = phantoms
    path = tmp_path / "gate.npz"
    if case == "wrong_type":
        path = tmp_path / "gate.csv"
        path.write_text("a,b\n1,2\n")
    elif case == "not_npz":
        path.write_bytes(b"not a zip")
    elif case == "one_class":
        _npz(path, images, np.zeros_like(labels))
    elif case == "too_many_classes":
        _npz(path, images, labels + 2)
    elif case == "unknown_folder":
        path = tmp_path / "pets"
        for k, name in enumerate(("cat", "dog", "cat", "dog")):
            (path / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[k]).save(path / name / f"{k}.png")
    with pytest.raises(InvalidInput) as e:
        get_vertical("medical").gate_score(bundle, path, None)
    assert e.value.field == "data" and reason in e.value.reason and "\n" not in str(e.value)
