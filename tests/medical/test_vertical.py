"""The vertical end to end on a tiny synthetic bundle: predictor, REST (JSON + multipart, 413,
422), batch scoring of a mixed folder with rejects, explain, training on user data, and the
MedMNIST protocol on a generated .npz."""

from __future__ import annotations

import argparse
import base64
import io
import json

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from common.batch import score_file
from common.errors import InvalidInput
from common.registry import get_vertical
from common.serving import create_app
from medical_imaging.predictor import MedicalPredictor
from medical_imaging.synthetic import make_phantoms
from medical_imaging.vertical import example_png
from tests.medical.files import PATIENT_NAME, dicom_bytes, nifti_bytes, png_bytes

pytestmark = pytest.mark.slow


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_predict_is_calibrated_deterministic_and_batch_invariant(predictor, medical_root):
    payloads = [ex.payload for ex in get_vertical("medical").example_requests()]
    out = predictor.predict(payloads)
    for o in out:
        assert set(o["probabilities"]) == {"no_lesion", "lesion"}
        assert abs(sum(o["probabilities"].values()) - 1) < 1e-5
        assert o["synthetic"] is True and o["model"]["version"] == predictor.bundle.version
        assert o["label"] in o["probabilities"] and not o["abstained"]
    assert out[0]["heatmap_png_base64"] and out[1]["heatmap_png_base64"] is None
    assert Image.open(io.BytesIO(base64.b64decode(out[0]["heatmap_png_base64"]))).format == "PNG"
    fresh = MedicalPredictor.load("latest", root=medical_root)
    assert [fresh.predict([p])[0] for p in payloads] == out


def test_abstention_below_threshold(predictor):
    payload = {"image_base64": b64(example_png(True)), "abstain_threshold": 1.0}
    out = predictor.predict([payload])[0]
    assert out["abstained"] is True and out["label"] is None and out["labels"] == []
    assert predictor.predict([{**payload, "abstain_threshold": 0.0}])[0]["abstained"] is False


def test_every_format_is_accepted(predictor):
    img, _ = make_phantoms(1, 64, seed=1)
    files = {
        "x.png": png_bytes(img[0]),
        "x.dcm": dicom_bytes(img[0].astype(np.uint16) * 4, window=(500, 1000)),
        # one slice: a volume of several is refused by this 2D model (tests/medical/test_volume_api)
        "x.nii.gz": nifti_bytes(img[0].T.astype(np.float32)[..., None], gz=True),
    }
    for name, data in files.items():
        out = predictor.predict([{"image_base64": b64(data), "filename": name}])[0]
        assert out["label"] in ("lesion", "no_lesion"), name


def test_bad_input_names_the_file(predictor):
    with pytest.raises(InvalidInput, match="notes.txt: unsupported format"):
        predictor.predict([{"image_base64": b64(b"just text"), "filename": "notes.txt"}])
    with pytest.raises(InvalidInput, match="not valid base64"):
        predictor.predict([{"image_base64": "@@@", "filename": "a.png"}])
    with pytest.raises(InvalidInput):
        predictor.predict([{"image_base64": b64(example_png(True)), "extra": 1}])


def test_rest_json_multipart_413_422(predictor):
    png = example_png(True)
    app = create_app(predictors={"medical": predictor}, max_body_bytes=64_000)
    with TestClient(app) as client:
        j = client.post("/medical/v1/predict", json={"image_base64": b64(png),
                                                        "filename": "scan.png"})
        assert j.status_code == 200, j.text
        m = client.post("/medical/v1/predict", files={"file": ("scan.png", png, "image/png")})
        assert m.status_code == 200 and m.json() == j.json()
        h = client.post("/medical/v1/predict", files={"file": ("scan.png", png)},
                        data={"heatmap": "true"})
        assert h.status_code == 200 and h.json()["heatmap_png_base64"]
        bad = client.post("/medical/v1/predict", files={"file": ("bad.dcm", b"DICM" * 10)})
        assert bad.status_code == 422 and "bad.dcm" in bad.json()["error"]["message"]
        assert PATIENT_NAME not in bad.text
        big = client.post("/medical/v1/predict", files={"file": ("big.png", b"0" * 100_000)})
        assert big.status_code == 413
        nojson = client.post("/medical/v1/predict", content=b"{oops",
                             headers={"content-type": "application/json"})
        assert nojson.status_code == 422 and nojson.json()["error"]["field"] == "body"


def test_score_folder_of_mixed_files_with_rejects(medical_root, tmp_path):
    folder = tmp_path / "scans"
    (folder / "sub").mkdir(parents=True)
    img, _ = make_phantoms(3, 28, seed=5)
    (folder / "a.png").write_bytes(png_bytes(img[0]))
    (folder / "sub" / "b.dcm").write_bytes(dicom_bytes(img[1].astype(np.uint16)))
    (folder / "c.nii").write_bytes(nifti_bytes(img[2].T.astype(np.float32)))
    (folder / "broken.png").write_bytes(png_bytes(img[0])[:30])
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "readme.txt").write_text("not an image")
    out = tmp_path / "predictions.csv"
    args = argparse.Namespace(abstain_threshold=None)
    s = score_file("medical", folder, out, root=medical_root, chunk_size=2, args=args)
    assert (s["read"], s["scored"], s["rejected"]) == (6, 3, 3)
    rows = pd.read_csv(out)
    assert len(rows) == 3 and set(rows["label"]) <= {"lesion", "no_lesion"}
    assert set(rows["filename"]) == {"a.png", "sub/b.dcm", "c.nii"}
    rejects = [json.loads(line) for line in
               (tmp_path / "predictions.csv.rejects.jsonl").read_text().splitlines()]
    by_source = {r["source"]: r["reason"] for r in rejects}
    assert set(by_source) == {"broken.png", "empty.dcm", "readme.txt"}
    assert "empty file" in by_source["empty.dcm"] and "corrupt" in by_source["broken.png"]


def test_explain_writes_an_overlay(medical_root, tmp_path):
    src = tmp_path / "scan.dcm"
    img, _ = make_phantoms(1, 28, seed=2)
    src.write_bytes(dicom_bytes(img[0].astype(np.uint16)))
    args = argparse.Namespace(image=str(src), out=str(tmp_path / "o.png"), bundle="latest",
                              root=str(medical_root))
    out = json.loads(get_vertical("medical").explain(args))
    assert out["overlay"] == str(tmp_path / "o.png") and "heatmap_png_base64" not in out
    assert Image.open(tmp_path / "o.png").size == (256, 256)


def _npz(path, labels_fn, n=(96, 32, 32)):
    arrays = {}
    for k, (s, m) in enumerate(zip(("train", "val", "test"), n, strict=True)):
        x, y = make_phantoms(m, 28, seed=40 + k)
        arrays[f"{s}_images"], arrays[f"{s}_labels"] = x, labels_fn(x, y)
    np.savez(path, **arrays)
    return path


def test_medmnist_protocol_report_and_bundle_scoring(tmp_path, medical_root):
    data = _npz(tmp_path / "phantommnist.npz", lambda x, y: y.reshape(-1, 1))
    v = get_vertical("medical")
    args = argparse.Namespace(protocol="medmnist", data=str(data), out=None, bundle=None,
                              seeds=2, preset="quick", root=str(tmp_path), device=None,
                              task=None, med_arch=None, med_width=0.25, med_epochs=1,
                              med_lr=None, med_batch_size=None, pretrained=None)
    import medical_imaging.evaluate as ev

    ev_min = ev._MIN_STEPS
    ev._MIN_STEPS = 2  # tiny data: do not stretch to the real minimum number of steps
    try:
        report = v.evaluate(args)
    finally:
        ev._MIN_STEPS = ev_min
    assert report["protocol"] == "medmnist" and len(report["per_seed"]) == 2
    assert {"auc", "acc", "ece"} <= set(report["metrics"]) <= set(report["metrics_std"])
    assert report["config"]["task"] == "binary"
    assert report["config"]["fit"]["members"] == 2  # a small training set gets an ensemble
    args.bundle, args.root = "latest", str(medical_root)
    scored = v.evaluate(args)
    assert scored["bundle"] == "latest" and 0 <= scored["metrics"]["auc"] <= 1


def test_train_on_user_multilabel_npz_as_an_ensemble(tmp_path):
    data = _npz(tmp_path / "ml.npz",
                lambda x, y: np.stack([y, (x.mean((1, 2)) > 110).astype(int)], 1), (64, 24, 24))
    args = argparse.Namespace(root=str(tmp_path / "store"), preset="test", data=str(data),
                              arch=None, width=None, epochs=1, task=None, labels="lesion,dense",
                              pretrained=None, abstain_threshold=0.2, device=None, tta=True,
                              members=2)
    bundle = get_vertical("medical").train(args)
    assert bundle.model_config["task"] == "multilabel" and bundle.model_config["fit"]["tta"]
    assert bundle.model_config["net"]["ensemble"] == 2
    p = MedicalPredictor.load(bundle.path)
    payload = {"image_base64": b64(example_png(True)), "heatmap": True}
    out = p.predict([payload])[0]
    assert set(out["probabilities"]) == {"lesion", "dense"} and out["synthetic"] is False
    assert out["heatmap_png_base64"]  # Grad-CAM over both members
    assert p.predict([payload, payload])[1] == out  # batch answer == single answer
    assert "test_auc" in bundle.manifest["metrics"] and "test_ece" in bundle.manifest["metrics"]
