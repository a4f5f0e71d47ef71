"""No patient data anywhere: DICOM files carrying a distinctive patient name, id and birth date
(valid ones, a truncated one, a corrupt one and a size bomb) are served by a real server on
loopback and batch-scored by `verticals score medical`; every log line of both processes,
every response body and header, /metrics, /v1/models, and every file they write (output,
rejects, summary) is searched for those values. None may appear. The batch job runs in the
test process with every logger at DEBUG."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.cli import main
from common.registry import get_vertical
from tests.medical.files import dicom_bytes

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
NAME, PID, BIRTH = "Quillonette^Zyxwabbit", "PHI-73519-ZQ", "19310817"
SECRETS = ("Quillonette", "Zyxwabbit", PID, BIRTH, "1931-08-17", "17.08.1931", "08/17/1931")


def patient_dicom(seed: int, rows: int | None = None) -> bytes:
    """A valid DICOM with this test's patient in its header (`rows` overrides Rows)."""
    import pydicom

    px = np.random.default_rng(seed).integers(0, 4096, (48, 48), dtype=np.uint16)
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(px, window=(2048, 4096))))
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PID, BIRTH
    ds.PatientAddress = "7 Zyxwabbit Lane"
    ds.OtherPatientIDs = PID + "-B"
    if rows is not None:
        ds.Rows = rows
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def scans() -> dict[str, bytes]:
    ok = patient_dicom(1)
    assert NAME.encode() in ok and PID.encode() in ok  # the files do carry the patient
    return {
        "scan-a.dcm": ok,
        "scan-b.dcm": patient_dicom(2),
        "cut.dcm": ok[: len(ok) - 3000],  # pixel data cut short: header intact
        "bad-pixels.dcm": patient_dicom(3, rows=49),  # header disagrees with the pixel data
        "bomb.dcm": patient_dicom(4, rows=65_535),
        "junk.dcm": ok[:400] + b"\xff" * 300,  # patient fields, then garbage
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None,
         ctype: str = "application/json") -> tuple[int, str, str]:
    req = urllib.request.Request(url, data=body, method=method,
                                 headers={"Content-Type": ctype} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode(), str(dict(r.headers))
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), str(dict(e.headers))


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    b = uuid.uuid4().hex
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/dicom\r\n\r\n").encode() + data + \
        f"\r\n--{b}\r\nContent-Disposition: form-data; name=\"heatmap\"\r\n\r\ntrue\r\n" \
        f"--{b}--\r\n".encode()
    return body, f"multipart/form-data; boundary={b}"


def serve(root: Path, work: Path, log: Path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "always",
           "OMP_NUM_THREADS": "1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    fh = open(log, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "common.cli", "-v", "serve", "--verticals", "medical",
         "--root", str(root), "--port", str(port)],
        cwd=work, env=env, stdout=fh, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if http("GET", base + "/readyz")[0] == 200:
                return proc, fh, base
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.25)
    proc.kill()
    fh.close()
    raise RuntimeError("server did not become ready: " + log.read_text()[-2000:])


def test_no_patient_data_in_logs_metrics_responses_or_outputs(tmp_path, monkeypatch, caplog,
                                                              capfd):
    root = tmp_path / "bundles"
    get_vertical("medical").train_default(root, preset="test")
    work, inp, out = tmp_path / "work", tmp_path / "scans", tmp_path / "out"
    for d in (work, inp, out):
        d.mkdir()
    files = scans()
    for name, data in files.items():
        (inp / name).write_bytes(data)
    seen: dict[str, str] = {}  # where -> text that must not hold patient data

    log = tmp_path / "server.log"
    proc, fh, base = serve(root, work, log)
    try:
        statuses = {}
        for name, data in files.items():
            body = json.dumps({"image_base64": base64.b64encode(data).decode(),
                               "filename": name, "heatmap": True}).encode()
            code, text, headers = http("POST", base + "/medical/v1/predict", body)
            statuses[name] = code
            seen[f"json {name}"], seen[f"headers {name}"] = text, headers
            mp, ctype = multipart(name, data)
            code, text, headers = http("POST", base + "/medical/v1/predict", mp, ctype)
            assert code == statuses[name], (name, text)
            seen[f"multipart {name}"], seen[f"multipart headers {name}"] = text, headers
        for path in ("/metrics", "/v1/models", "/readyz", "/openapi.json"):
            code, text, _ = http("GET", base + path)
            assert code == 200, path
            seen[path] = text
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        fh.close()
    assert statuses == {"scan-a.dcm": 200, "scan-b.dcm": 200, "cut.dcm": 422,
                        "bad-pixels.dcm": 422, "bomb.dcm": 422, "junk.dcm": 422}
    assert "heatmap_png_base64" in seen["json scan-a.dcm"]
    server_log = log.read_text()
    assert "Application startup complete" in server_log  # the log was captured
    seen["server log"] = server_log

    # the batch job runs in this process, every logger at DEBUG, stdout/stderr captured
    monkeypatch.chdir(work)
    caplog.set_level(logging.DEBUG)
    capfd.readouterr()
    code = main(["score", "medical", str(inp), str(out / "scores.parquet"), "--root", str(root),
                 "--chunk-size", "4"])
    printed = capfd.readouterr()
    assert code == 0, printed.err[-3000:]
    seen["score stdout"], seen["score stderr"] = printed.out, printed.err
    seen["score log"] = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert any(r.levelno == logging.DEBUG for r in caplog.records)  # DEBUG was on
    summary = json.loads((out / "scores.parquet.summary.json").read_text())
    assert (summary["read"], summary["scored"], summary["rejected"]) == (6, 2, 4)
    seen["scores table"] = pd.read_parquet(out / "scores.parquet").to_csv()
    rejects = (out / "scores.parquet.rejects.jsonl").read_text()
    assert len(rejects.splitlines()) == 4 and "cut.dcm" in rejects
    for d in (out, work):  # every file either process wrote, byte for byte
        for f in d.rglob("*"):
            if f.is_file():
                seen[str(f)] = f.read_bytes().decode("latin-1")

    leaks = [(where, s) for where, text in seen.items() for s in SECRETS if s in text]
    assert not leaks, leaks


def patient_series(vol: np.ndarray, uid: str, prefix: str = "slice") -> dict[str, bytes]:
    """A DICOM series (tests.medical.files.series_files) with this test's patient in every
    slice's header."""
    import pydicom

    from tests.medical.files import series_files

    out = {}
    for name, data in series_files(vol, series_uid=uid, prefix=prefix).items():
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PID, BIRTH
        ds.PatientAddress = "7 Zyxwabbit Lane"
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out[name] = buf.getvalue()
    return out


def test_no_patient_data_from_dicom_series(tmp_path, monkeypatch, caplog, capfd):
    """Zipped series (served, missing a slice, mixed, one slice cut short) over REST to a 3D
    model, and series folders batch-scored: no patient field in any answer, log or file."""
    from fastapi.testclient import TestClient

    from common.serving import create_app
    from medical_imaging.predictor import MedicalPredictor
    from tests.medical.files import zip_bytes
    from tests.medical.test_volume_api import tiny_bundle

    caplog.set_level(logging.DEBUG)
    bundle = tiny_bundle(tmp_path / "bundles", 3)
    vol = np.random.default_rng(0).integers(0, 2000, (5, 16, 16), dtype=np.uint16)
    ct = patient_series(vol, "1.2.3.4")
    assert NAME.encode() in next(iter(ct.values()))
    cut = dict(ct)
    cut["slice004.dcm"] = cut["slice004.dcm"][:-200]
    uploads = {
        "ct.zip": zip_bytes(ct),
        "gap.zip": zip_bytes({k: v for k, v in ct.items() if k != "slice002.dcm"}),
        "mixed.zip": zip_bytes({**ct, **patient_series(vol[:2], "1.2.3.5", "b")}),
        "cut.zip": zip_bytes(cut),
    }
    seen: dict[str, str] = {}
    statuses = {}
    with TestClient(create_app(predictors={"medical": MedicalPredictor.load(bundle.path)})) as c:
        for name, data in uploads.items():
            r = c.post("/medical/v1/predict", files={"file": (name, data)},
                       data={"heatmap": "true"})
            statuses[name] = r.status_code
            seen[f"multipart {name}"], seen[f"headers {name}"] = r.text, str(dict(r.headers))
        seen["/metrics"] = c.get("/metrics").text
    assert statuses == {"ct.zip": 200, "gap.zip": 422, "mixed.zip": 422, "cut.zip": 422}

    inp, out = tmp_path / "scans", tmp_path / "out"
    for folder, files in (("a", ct), ("b", {k: v for k, v in ct.items() if k != "slice001.dcm"})):
        (inp / folder).mkdir(parents=True)
        for name, data in files.items():
            (inp / folder / name).write_bytes(data)
    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    code = main(["score", "medical", str(inp), str(out / "scores.parquet"), "--root",
                 str(tmp_path / "bundles")])
    printed = capfd.readouterr()
    assert code == 0, printed.err[-3000:]
    summary = json.loads((out / "scores.parquet.summary.json").read_text())
    assert (summary["read"], summary["scored"], summary["rejected"]) == (2, 1, 1)
    seen["score stdout"], seen["score stderr"] = printed.out, printed.err
    seen["log"] = caplog.text + "".join(str(r.args) for r in caplog.records)
    for f in out.rglob("*"):
        if f.is_file():
            seen[str(f)] = f.read_bytes().decode("latin-1")
    leaks = [(where, s) for where, text in seen.items() for s in SECRETS if s in text]
    assert not leaks, leaks
