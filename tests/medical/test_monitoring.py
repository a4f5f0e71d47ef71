"""Monitoring parts of medical: the bundle's reference profile, a PHI-free served record, the
case id, and the feedback route."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from fastapi.testclient import TestClient

from common.monitoring.profile import load_profile
from common.serving import create_app
from medical_imaging.monitoring import INTENSITY
from medical_imaging.vertical import example_png
from tests.medical.files import PATIENT_ID, PATIENT_NAME, dicom_bytes

FEATURES = {*INTENSITY, "height", "width", "modality", "photometric"}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _ct_dicom() -> bytes:
    import pydicom

    pixels = (np.arange(40 * 36, dtype=np.uint16).reshape(40, 36) * 7) % 4000
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(pixels)))
    ds.Modality = "CT"
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def _records(predictor, payloads):
    seen: list[dict] = []

    def hook(pred, requests, where, outputs, results):
        seen.extend(pred.monitor_record(requests[i], outputs[j], results[i])
                    for j, i in enumerate(where))

    results = predictor.run_each([predictor.parse(p) for p in payloads], monitor=hook)
    return seen, results


def test_the_bundle_carries_an_image_summary_profile(predictor):
    profile, why = load_profile(predictor.bundle)
    assert why is None and profile["task"] == "binary"
    assert set(profile["features"]) == FEATURES
    assert profile["features"]["modality"]["probs"]["png"] == 1.0  # training arrays: 8-bit
    assert profile["features"]["height"]["mean"] == 28.0
    assert profile["classes"] == predictor.labels and profile["score"]["kind"] == "numeric"
    assert {"roc_auc", "accuracy", "ece"} <= set(profile["metrics"])


def test_monitor_record_is_a_phi_free_summary_matching_the_profile(predictor):
    profile, _ = load_profile(predictor.bundle)
    png = {"image_base64": _b64(example_png(True)), "case_id": "case-17"}
    dcm = {"image_base64": _b64(_ct_dicom()), "filename": "scan.dcm"}
    (r_png, r_dcm), (a_png, a_dcm) = _records(predictor, [png, dcm])
    for rec, ans in ((r_png, a_png), (r_dcm, a_dcm)):
        assert set(rec["features"]) == set(profile["features"])
        assert all(isinstance(v, float | str) for v in rec["features"].values())  # no pixels
        assert rec["score"] == ans.probabilities[predictor.labels[1]]
        assert rec["prediction"] == ans.label
    assert r_png["id"] == "case-17" == a_png.case_id and r_dcm["id"] is None
    assert (r_png["features"]["modality"], r_png["features"]["photometric"]) == \
        ("png", "MONOCHROME2")
    assert (r_dcm["features"]["modality"], r_dcm["features"]["photometric"]) == \
        ("CT", "MONOCHROME2")
    assert (r_dcm["features"]["height"], r_dcm["features"]["width"]) == (40.0, 36.0)
    text = json.dumps(r_dcm)
    assert PATIENT_NAME not in text and PATIENT_ID not in text and "19700101" not in text
    assert len(text) < 1000  # a summary, not an image


def test_feedback_counts_known_and_unknown_cases_and_checks_labels(predictor, tmp_path):
    app = create_app(predictors={"medical": predictor}, log_dir=tmp_path)
    with TestClient(app) as c:
        r = c.post("/medical/v1/predict",
                   json={"image_base64": _b64(example_png(False)), "case_id": "c-1"})
        assert r.status_code == 200 and r.json()["case_id"] == "c-1"
        png = example_png(True)
        up = c.post("/medical/v1/predict", files={"file": ("a.png", png, "image/png")},
                    data={"case_id": "c-2"})
        assert up.status_code == 200 and up.json()["case_id"] == "c-2"
        fb = c.post("/medical/v1/feedback", json={"feedback": [
            {"id": "c-1", "label": predictor.labels[0]},
            {"id": "c-2", "label": predictor.labels[1]},
            {"id": "never-seen", "label": predictor.labels[1]}]})
        assert fb.status_code == 200, fb.text
        assert fb.json() == {"accepted": 2, "unknown": 1, "unknown_ids": ["never-seen"]}
        for label, why in ((1, "string"), ("tumour", "not a class")):
            bad = c.post("/medical/v1/feedback", json={"feedback": [{"id": "c-1",
                                                                     "label": label}]})
            assert bad.status_code == 422, why
            assert bad.json()["error"]["field"] == "feedback.0.label"
        dcm = c.post("/medical/v1/predict", json={"image_base64": _b64(_ct_dicom())})
        assert dcm.status_code == 200
    # the server flushed its prediction log on shutdown: summaries only, no patient data
    import pandas as pd

    logged = [pd.read_parquet(f) for f in tmp_path.rglob("*.parquet")
              if "feedback" not in f.parts]
    table = pd.concat(logged)
    assert len(table) == 3 and set(table["id"].dropna()) == {"c-1", "c-2"}
    assert "CT" in set(table["f_modality"])
    text = table.to_csv()
    assert PATIENT_NAME not in text and PATIENT_ID not in text and "19700101" not in text
