"""The 3D path end to end on a tiny untrained MONAI ResNet-3D bundle: NIfTI volumes and zipped
DICOM series over REST (JSON and multipart), 4D time points, series selection, the 3D Grad-CAM
montage, bad input (2D image to a 3D model and a volume to a 2D model, zip bombs and zip-slip,
the voxel limit), and `verticals score` over series folders agreeing with REST."""

from __future__ import annotations

import base64
import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from common.artifacts import BundleWriter
from common.cli import main
from common.serving import create_app
from medical_imaging.model import build_model
from medical_imaging.predictor import MedicalPredictor
from tests.medical.files import nifti_bytes, png_bytes, series_files, zip_bytes

RNG = np.random.default_rng(11)
VOL = RNG.random((12, 10, 9)).astype(np.float32)  # NIfTI (x, y, z)
CT = RNG.integers(0, 2000, (5, 12, 12), dtype=np.uint16)  # DICOM slices (D, H, W)


def tiny_bundle(root, dims: int):
    """An untrained, seeded MONAI ResNet ([1, 1, 1, 1] blocks, width 1/8) published as a real
    bundle: enough to test every input path without training."""
    net_cfg = {"arch": "resnet18", "dimensions": dims, "in_channels": 1, "num_classes": 2,
               "image_size": 16, "width": 0.125, "layers": [1, 1, 1, 1]}
    torch.manual_seed(0)
    w = BundleWriter(root, "medical", f"medical-tiny-{dims}d")
    w.save_weights(build_model(net_cfg).state_dict())
    return w.publish(model_class="medical_imaging.model.build_model",
                     model_config={"net": net_cfg, "task": "binary",
                                   "labels": ["normal", "lesion"], "temperature": 1.0,
                                   "synthetic": True, "fit": {}})


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles3d")
    two = tiny_bundle(tmp_path_factory.mktemp("bundles2d"), 2)
    return root, tiny_bundle(root, 3), two


@pytest.fixture(scope="module")
def client3d(bundles):
    app = create_app(predictors={"medical": MedicalPredictor.load(bundles[1].path)})
    with TestClient(app) as client:
        yield client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def post(client, data: bytes, name: str, multipart: bool = False, **fields):
    if multipart:
        form = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items()}
        return client.post("/medical/v1/predict", files={"file": (name, data)}, data=form)
    return client.post("/medical/v1/predict",
                       json={"image_base64": b64(data), "filename": name, **fields})


def refused(r, field: str, *texts: str) -> str:
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == field, err
    for t in texts:
        assert t in err["message"], err
    return err["message"]


def test_nifti_volume_json_and_multipart_agree_with_a_slice_montage(client3d):
    data = nifti_bytes(VOL, gz=True)
    j = post(client3d, data, "brain.nii.gz", heatmap=True)
    m = post(client3d, data, "brain.nii.gz", multipart=True, heatmap=True)
    assert j.status_code == m.status_code == 200, j.text
    assert j.json() == m.json()
    out = j.json()
    assert set(out["probabilities"]) == {"normal", "lesion"} and out["filename"] == "brain.nii.gz"
    slices = out["heatmap_slices"]
    assert slices == sorted(slices) and 1 <= len(slices) <= 16 and all(0 <= s < 16 for s in slices)
    assert Image.open(io.BytesIO(base64.b64decode(out["heatmap_png_base64"]))).format == "PNG"
    plain = post(client3d, data, "brain.nii.gz").json()
    assert plain["heatmap_slices"] is None and plain["probabilities"] == out["probabilities"]


def test_4d_time_point_over_rest(client3d):
    series = np.stack([VOL, VOL[::-1] * 3], -1)
    data = nifti_bytes(series)
    t1 = post(client3d, data, "fmri.nii", multipart=True, time_index=1).json()
    alone = post(client3d, nifti_bytes(VOL[::-1] * 3), "t1.nii").json()
    assert t1["probabilities"] == alone["probabilities"]
    refused(post(client3d, data, "fmri.nii", time_index=2), "time_index",
            "fmri.nii", "holds 2 (0..1)")
    refused(post(client3d, data, "fmri.nii", multipart=True, time_index="x"), "time_index")


def test_zipped_dicom_series_and_the_series_selector(client3d):
    ct = series_files(CT, series_uid="1.2.3.4")
    r = post(client3d, zip_bytes(ct), "ct.zip", multipart=True, heatmap=True)
    assert r.status_code == 200, r.text
    assert r.json()["heatmap_slices"]
    mixed = zip_bytes({**ct, **series_files(CT[:3], series_uid="1.2.3.5", prefix="b")})
    refused(post(client3d, mixed, "study.zip", multipart=True), "series_uid",
            "study.zip", "holds 2 series", "1.2.3.4: 5 slices", "1.2.3.5: 3 slices")
    chosen = post(client3d, mixed, "study.zip", multipart=True, series_uid="1.2.3.4")
    assert chosen.json()["probabilities"] == r.json()["probabilities"]
    windowed = post(client3d, zip_bytes(ct), "ct.zip", window_center=500, window_width=400)
    centre = post(client3d, zip_bytes(ct), "ct.zip", multipart=True, window_center=500)
    assert windowed.status_code == centre.status_code == 200
    assert windowed.json()["probabilities"] != r.json()["probabilities"]
    refused(post(client3d, zip_bytes(ct), "ct.zip", window_width=1), "window_width")


def test_bad_volumes_are_422_naming_the_file(client3d, monkeypatch):
    refused(post(client3d, png_bytes(np.zeros((20, 24), np.uint8)), "xray.png"), "image",
            "xray.png: this model takes 3D volumes", "got a 2D image (20×24)")
    gap = {k: v for k, v in series_files(CT).items() if k != "slice002.dcm"}
    refused(post(client3d, zip_bytes(gap), "gap.zip", multipart=True), "image",
            "gap.zip", "missing slice between slice001.dcm and slice003.dcm")
    sizes = {**series_files(CT), "slice004.dcm": series_files(CT[:, :8, :8])["slice004.dcm"]}
    refused(post(client3d, zip_bytes(sizes), "sizes.zip"), "image", "slices differ in size")
    bomb = zip_bytes({"a.dcm": bytes(30 << 20)})
    refused(post(client3d, bomb, "bomb.zip", multipart=True), "image", "bomb.zip", "zip bomb")
    slip = zip_bytes({"../../etc/cron.d/x.dcm": b"x"})
    refused(post(client3d, slip, "slip.zip"), "image", "slip.zip", "outside the archive")
    monkeypatch.setenv("VERTICALS_MAX_VOXELS", "1000")
    refused(post(client3d, nifti_bytes(VOL), "big.nii"), "image", "big.nii",
            "VERTICALS_MAX_VOXELS")


def test_a_series_over_the_body_limit_is_413(bundles):
    app = create_app(predictors={"medical": MedicalPredictor.load(bundles[1].path)},
                     max_body_bytes=4_000)
    big = zip_bytes(series_files(CT), zipfile.ZIP_STORED)
    assert len(big) > 4_000
    with TestClient(app) as client:
        r = post(client, big, "ct.zip", multipart=True)
        assert r.status_code == 413 and r.json()["error"]["field"] == "body"


def test_a_2d_model_refuses_volumes_with_their_shape(bundles):
    p = MedicalPredictor.load(bundles[2].path)
    app = create_app(predictors={"medical": p})
    with TestClient(app) as client:
        refused(post(client, nifti_bytes(VOL), "brain.nii"), "image",
                "brain.nii: this model takes 2D images; got a 3D volume (9×10×12)")
        refused(post(client, zip_bytes(series_files(CT)), "ct.zip", multipart=True), "image",
                "ct.zip: this model takes 2D images; got a 3D volume (5×12×12)")
        one = nifti_bytes(VOL[:, :, :1])  # one slice is a 2D image: served
        assert post(client, one, "slice.nii").status_code == 200


def test_score_treats_series_folders_as_rows_and_agrees_with_rest(bundles, client3d,
                                                                  tmp_path):
    root = bundles[0]
    inp = tmp_path / "in"
    (inp / "p1" / "ct").mkdir(parents=True)
    (inp / "p2").mkdir()
    for name, data in series_files(CT, series_uid="1.2.3.4").items():
        (inp / "p1" / "ct" / name).write_bytes(data)
    for uid, prefix, vol in (("9.1", "a", CT), ("9.2", "b", CT[:4, ::-1])):
        for name, data in series_files(vol, series_uid=uid, prefix=prefix).items():
            (inp / "p2" / name).write_bytes(data)
    (inp / "brain.nii.gz").write_bytes(nifti_bytes(VOL, gz=True))
    (inp / "xray.png").write_bytes(png_bytes(np.zeros((20, 24), np.uint8)))
    out = tmp_path / "scores.parquet"
    assert main(["score", "medical", str(inp), str(out), "--root", str(root),
                 "--chunk-size", "2"]) == 0
    summary = json.loads(out.with_name("scores.parquet.summary.json").read_text())
    assert (summary["read"], summary["scored"], summary["rejected"]) == (5, 4, 1)
    rows = pd.read_parquet(out).set_index("filename")
    assert set(rows.index) == {"brain.nii.gz", "p1/ct/", "p2/ (series 9.1)", "p2/ (series 9.2)"}
    rest = post(client3d, zip_bytes(series_files(CT, series_uid="1.2.3.4"),
                                    zipfile.ZIP_STORED), "ct.zip").json()
    assert json.loads(rows.loc["p1/ct/", "probabilities"]) == rest["probabilities"]
    rejects = out.with_name("scores.parquet.rejects.jsonl").read_text()
    assert "xray.png" in rejects and "takes 3D volumes" in rejects
