"""Readers: PNG/JPEG/DICOM/NIfTI/npz, DICOM pixel semantics, clear errors, no patient data."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from common.errors import InvalidInput
from medical_imaging.io import decode_image, load_medmnist, sniff_format, to_model_input
from tests.medical.files import (
    PATIENT_ID,
    PATIENT_NAME,
    dicom_bytes,
    jpeg_bytes,
    nifti_bytes,
    png_bytes,
)

RAMP = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))  # 16x16, columns 0..240


def test_png_grey_rgb_and_16_bit():
    grey = decode_image(png_bytes(RAMP), "a.png")
    assert grey.shape == (1, 16, 16) and grey[0, 0, 0] == 0 and grey[0, 0, -1] == 240 / 255
    rgb = decode_image(png_bytes(np.stack([RAMP] * 3, -1)), "b.png")
    assert rgb.shape == (3, 16, 16)
    wide = decode_image(png_bytes(RAMP.astype(np.uint16) * 200), "c.png")
    assert wide.shape == (1, 16, 16) and wide.min() == 0 and wide.max() == 1


def test_jpeg():
    img = decode_image(jpeg_bytes(np.stack([RAMP] * 3, -1)), "a.jpg")
    assert img.shape == (3, 16, 16) and abs(float(img[0, 0, -1]) - 240 / 255) < 0.03


def test_dicom_rescale_and_window():
    raw = (RAMP.astype(np.uint16) * 10)  # stored 0..2400
    # HU = raw - 1000 → -1000..1400; window centre 40 width 400 → [-160, 240] maps to [0, 1]
    img = decode_image(dicom_bytes(raw, slope=1.0, intercept=-1000.0, window=(40, 400)), "ct.dcm")
    hu = raw.astype(float) - 1000
    expect = np.clip((hu - 39.5) / 399 + 0.5, 0, 1)
    assert img.shape == (1, 16, 16)
    np.testing.assert_allclose(img[0], expect, atol=1e-6)


def test_dicom_without_window_is_min_max_and_monochrome1_inverts():
    raw = RAMP.astype(np.uint16)
    m2 = decode_image(dicom_bytes(raw), "m2.dcm")
    m1 = decode_image(dicom_bytes(raw, photometric="MONOCHROME1"), "m1.dcm")
    assert m2[0, 0, 0] == 0 and m2[0, 0, -1] == 1
    np.testing.assert_allclose(m1, 1 - m2, atol=1e-6)


def test_dicom_multiframe_takes_the_middle_frame_and_rgb():
    frames = np.stack([np.full((8, 8), v, np.uint16) for v in (0, 100, 200)])
    frames[:, 0, 0] = 0
    frames[:, 0, 1] = 300
    img = decode_image(dicom_bytes(frames, frames=3), "mf.dcm")
    assert img.shape == (1, 8, 8) and abs(float(img[0, 4, 4]) - 100 / 300) < 1e-6
    rgb = decode_image(dicom_bytes(np.stack([RAMP, RAMP // 2, RAMP // 4], -1)), "us.dcm")
    assert rgb.shape == (3, 16, 16) and rgb[0].max() > rgb[2].max()


def test_nifti_2d_3d_and_gzip():
    vol = np.random.default_rng(0).random((10, 12, 5)).astype(np.float32)
    for gz in (False, True):
        img = decode_image(nifti_bytes(vol, gz), "v.nii.gz" if gz else "v.nii")
        assert img.shape == (1, 12, 10) and img.min() >= 0 and img.max() <= 1
    flat = decode_image(nifti_bytes(vol[:, :, 0]), "s.nii")
    assert flat.shape == (1, 12, 10)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"hello, not an image", "unsupported format"),
        (png_bytes(RAMP)[:40], "corrupt or truncated"),
        (b"\x1f\x8b" + b"garbage" * 10, "not a readable NIfTI"),
        (b"PK\x03\x04zip", "dataset, not an image"),
    ],
)
def test_errors_name_the_file_and_the_reason(data, reason):
    with pytest.raises(InvalidInput) as e:
        decode_image(data, "scan_17.bin")
    assert "scan_17.bin" in e.value.message and reason in e.value.message
    assert e.value.field == "image"


def test_dicom_errors_and_logs_never_show_patient_data(caplog):
    caplog.set_level(logging.DEBUG)
    good = dicom_bytes(RAMP.astype(np.uint16))
    broken = good[: len(good) - 100]  # pixel data cut short
    with pytest.raises(InvalidInput) as e:
        decode_image(broken, "patient.dcm")
    assert "patient.dcm" in e.value.message
    decode_image(good, "ok.dcm")
    for text in (e.value.message, caplog.text):
        assert PATIENT_NAME not in text and "Doe" not in text and PATIENT_ID not in text
        assert "19700101" not in text


def test_sniff_and_model_input_channels_and_size():
    assert sniff_format(png_bytes(RAMP)) == "png"
    assert sniff_format(dicom_bytes(RAMP.astype(np.uint16))) == "dicom"
    grey = to_model_input(np.random.rand(3, 64, 48).astype(np.float32), 1, 28)
    assert grey.shape == (1, 28, 28)
    rgb = to_model_input(np.random.rand(1, 20, 20).astype(np.float32), 3, 28)
    assert rgb.shape == (3, 28, 28) and float(rgb.min()) >= 0 and float(rgb.max()) <= 1


def test_load_medmnist_infers_task_and_rejects_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for s, n in (("train", 12), ("val", 4), ("test", 4)):
        arrays[f"{s}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{s}_labels"] = rng.integers(0, 2, (n, 3))
    np.savez(tmp_path / "chest.npz", **arrays)
    d = load_medmnist(tmp_path / "chest.npz")
    assert d["task"] == "multilabel" and d["num_classes"] == 3
    assert d["train"][0].shape == (12, 1, 28, 28) and float(d["train"][0].max()) <= 1
    np.savez(tmp_path / "bad.npz", x=np.zeros(3))
    with pytest.raises(InvalidInput, match="bad.npz"):
        load_medmnist(tmp_path / "bad.npz")
