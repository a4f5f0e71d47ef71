"""Decompression and size bombs are refused from their headers, before pixel data is allocated:
PNG declaring 50,000 x 50,000 or a real 12,000 x 12,000 zlib bomb, DICOM with absurd Rows x
Columns or NumberOfFrames, NIfTI headers claiming gigabytes, a gzip stream that inflates far
past what its header declares, thousands of multipart parts, 100,000 nested `[`. The readers
are tested directly; the served app is tested in a child process whose peak RSS is measured."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from common.errors import InvalidInput
from medical_imaging.io import ImageLimits, decode_image
from tests.medical.files import dicom_bytes, nifti_bytes, png_bytes

ROOT = Path(__file__).resolve().parents[2]
MAX_RSS_GROWTH_MB = 100


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_declaring(width: int, height: int, rows_of_zeros: int = 1) -> bytes:
    """An 8-bit grey PNG whose IHDR declares width x height; its IDAT is a genuine zlib stream
    of `rows_of_zeros` zero rows (all of them makes a valid, tiny, huge-to-decode image)."""
    comp = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(rows_of_zeros)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + \
        _chunk(b"IEND", b"")


def dicom_declaring(rows: int, cols: int, frames: int = 1) -> bytes:
    """A small valid DICOM (with patient data) whose header is edited to declare a huge image."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(np.zeros((8, 8), np.uint16))))
    ds.Rows, ds.Columns = rows, cols
    if frames > 1:
        ds.NumberOfFrames = frames
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def nifti_declaring(shape: tuple[int, ...], gz: bool = False) -> bytes:
    """A NIfTI-1 header declaring `shape` float32 voxels, followed by only 64 bytes of data."""
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape(shape)
    hdr.set_data_offset(352)
    data = hdr.binaryblock + b"\0" * 4 + b"\1" * 64
    return zlib_gzip(data) if gz else data


def zlib_gzip(data: bytes, trailing_zeros: int = 0) -> bytes:
    """gzip `data` followed by `trailing_zeros` zero bytes, streamed (never held in memory)."""
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    out = [comp.compress(data)]
    block = bytes(1 << 20)
    for _ in range(trailing_zeros >> 20):
        out.append(comp.compress(block))
    return b"".join([*out, comp.flush()])


def nifti_gzip_bomb(trailing_mb: int = 256) -> bytes:
    """A valid 32x32 NIfTI image (2D, as the 2D test model takes) whose gzip stream goes on
    with `trailing_mb` MB of zeros."""
    vol = np.random.default_rng(0).random((32, 32, 1)).astype(np.float32)
    return zlib_gzip(nifti_bytes(vol), trailing_zeros=trailing_mb << 20)


def multipart_with_parts(n: int, boundary: str = "bOmBbOuNdArY") -> tuple[bytes, str]:
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nx\r\n'
             for i in range(n)]
    body = "".join(parts) + f"--{boundary}--\r\n"
    return body.encode(), f"multipart/form-data; boundary={boundary}"


# ---- the readers -------------------------------------------------------------------------

def refused(data: bytes, name: str, limits: ImageLimits | None = None) -> str:
    with pytest.raises(InvalidInput) as e:
        decode_image(data, name, limits=limits)
    assert e.value.field == "image" and name in e.value.message
    return e.value.message


def test_png_bombs_are_refused_from_the_header():
    assert len(png_declaring(50_000, 50_000)) < 200
    assert "too many pixels" in refused(png_declaring(50_000, 50_000), "huge.png")
    assert "169,000,000 pixels" in refused(png_declaring(13_000, 13_000), "big.png")
    bomb = png_declaring(12_000, 12_000, rows_of_zeros=12_000)  # decodes to 144 MB
    assert len(bomb) < 200_000
    assert "VERTICALS_MAX_IMAGE_PIXELS" in refused(bomb, "bomb.png")
    # with our limit raised, Pillow's own guard (above 2 x 89 MP) still gives a clean refusal
    assert "decompression-bomb" in refused(png_declaring(20_000, 20_000), "pil.png",
                                           ImageLimits(max_pixels=10**12, max_decoded_bytes=10**13))


def test_pixel_limit_is_configurable(monkeypatch):
    img = png_bytes(np.full((64, 64), 128, np.uint8))
    assert decode_image(img, "ok.png").shape == (1, 64, 64)
    monkeypatch.setenv("VERTICALS_MAX_IMAGE_PIXELS", "1000")
    assert "4,096 pixels" in refused(img, "small-limit.png")
    assert decode_image(img, "ok.png", limits=ImageLimits(max_pixels=5000)).shape == (1, 64, 64)


def test_dicom_with_absurd_rows_columns_or_frames_is_refused():
    msg = refused(dicom_declaring(65_535, 65_535), "rows.dcm")
    assert "65535x65535" in msg and "pixels per image" in msg
    msg = refused(dicom_declaring(512, 512, frames=1_000_000_000), "frames.dcm")
    assert "bytes decoded" in msg and "VERTICALS_MAX_DECODED_BYTES" in msg
    for text in ("Doe", "PID-998877", "19700101"):  # header values never reach the message
        assert text not in msg


def test_nifti_header_claiming_gigabytes_is_refused():
    for gz in (False, True):
        msg = refused(nifti_declaring((4096, 4096, 4096), gz), "huge.nii.gz" if gz else "huge.nii")
        assert "4096x4096x4096" in msg and "274,877,906,944 bytes" in msg
    assert "truncated" in refused(nifti_declaring((64, 64, 64)), "short.nii")


def test_gzip_is_never_inflated_past_the_declared_volume():
    bomb = nifti_gzip_bomb(trailing_mb=64)
    assert len(bomb) < 1_000_000
    img = decode_image(bomb, "trailing.nii.gz")  # the declared volume is read and served
    assert img.shape == (1, 32, 32) and float(img.max()) == 1.0


# ---- the served app, memory measured in a child process ----------------------------------

EXPECTED = [  # (bomb, status, field)
    ("png 50000x50000", 422, "image"),
    ("png 12000x12000 zlib bomb", 422, "image"),
    ("png bomb as multipart upload", 422, "image"),
    ("dicom 65535x65535", 422, "image"),
    ("dicom 1e9 frames", 422, "image"),
    ("nifti 256 GB header", 422, "image"),
    ("nifti gz 256 GB header", 422, "image"),
    ("nifti gzip stream with 256 MB of trailing zeros", 200, None),  # served, not inflated
    ("multipart with 5000 parts", 413, "body"),
    ("json nested 100000 deep", 422, "body"),
    ("json nested inside a field", 422, "body"),
]


def _payloads() -> list[dict]:
    """Request kwargs for TestClient.post, in the order of EXPECTED."""

    def as_json(data: bytes, name: str) -> dict:
        return {"json": {"image_base64": base64.b64encode(data).decode(), "filename": name}}

    parts, ctype = multipart_with_parts(5000)
    deep = b'{"image_base64": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    return [
        as_json(png_declaring(50_000, 50_000), "a.png"),
        as_json(png_declaring(12_000, 12_000, 12_000), "b.png"),
        {"files": {"file": ("c.png", png_declaring(12_000, 12_000, 12_000), "image/png")}},
        as_json(dicom_declaring(65_535, 65_535), "d.dcm"),
        as_json(dicom_declaring(512, 512, 1_000_000_000), "e.dcm"),
        as_json(nifti_declaring((4096, 4096, 4096)), "f.nii"),
        as_json(nifti_declaring((4096, 4096, 4096), gz=True), "g.nii.gz"),
        as_json(nifti_gzip_bomb(256), "h.nii.gz"),
        {"content": parts, "headers": {"content-type": ctype}},
        {"content": b"[" * 100_000, "headers": {"content-type": "application/json"}},
        {"content": deep, "headers": {"content-type": "application/json"}},
    ]


def probe(root: str) -> None:
    """Child process: serve the real app, send a warm-up of each kind, then every bomb; print
    one JSON line per bomb with its answer and the growth of peak RSS since the warm-up."""
    import resource

    from fastapi.testclient import TestClient

    from common.serving import create_app
    from medical_imaging.vertical import example_png

    bombs = _payloads()  # built before the baseline: the client's own bytes do not count
    png = example_png(True)
    vol = np.random.default_rng(0).random((32, 32, 1)).astype(np.float32)
    warm = [
        {"json": {"image_base64": base64.b64encode(png).decode()}},
        {"files": {"file": ("w.png", png, "image/png")}},
        {"json": {"image_base64": base64.b64encode(
            dicom_bytes((np.arange(64 * 64) % 4096).reshape(64, 64).astype(np.uint16))).decode(),
            "filename": "w.dcm"}},
        {"json": {"image_base64": base64.b64encode(nifti_bytes(vol, gz=True)).decode(),
                  "filename": "w.nii.gz"}},
    ]
    with TestClient(create_app(["medical"], root=root)) as client:
        for kw in warm:
            r = client.post("/medical/v1/predict", **kw)
            assert r.status_code == 200, r.text
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for (name, _, _), kw in zip(EXPECTED, bombs, strict=True):
            r = client.post("/medical/v1/predict", **kw)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            print(json.dumps({"name": name, "status": r.status_code, "body": r.json(),
                              "rss_growth_mb": round((peak - base) / 1024, 1)}), flush=True)


@pytest.mark.slow
def test_served_bombs_are_refused_within_a_memory_bound(medical_root):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c",
         f"from tests.medical.test_bombs import probe; probe({str(medical_root)!r})"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [r["name"] for r in results] == [name for name, _, _ in EXPECTED]
    for r, (_, status, field) in zip(results, EXPECTED, strict=True):
        assert r["status"] == status, r
        if status != 200:
            assert set(r["body"]) == {"error", "request_id"}, r
            assert r["body"]["error"]["field"] == field, r
        assert r["rss_growth_mb"] < MAX_RSS_GROWTH_MB, r
    print("\n".join(f"{r['name']}: {r['status']}, peak RSS +{r['rss_growth_mb']} MB"
                    for r in results))
