"""DICOM series assembly from a known volume: order (shuffled files), values after rescale and
window, spacing and affine; a missing slice, a duplicated one, mixed series, mismatched slice
sizes; zip bombs, zip-slip and too many entries; the voxel limit; no patient data in errors."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest

from common.errors import InvalidInput
from medical_imaging.io import ImageLimits
from medical_imaging.series import ZipLimits, assemble_series, group_series, unzip_slices
from tests.medical.files import PATIENT_ID, PATIENT_NAME, dicom_bytes, series_files, zip_bytes

VOL = np.random.default_rng(3).integers(0, 3000, (6, 10, 12), dtype=np.uint16)
SERIES = "1.2.826.0.1.3680043.2.1125.7"
OTHER = "1.2.826.0.1.3680043.2.1125.8"


def shuffled(files: dict[str, bytes], seed: int = 0) -> list[tuple[str, bytes]]:
    items = list(files.items())
    random.Random(seed).shuffle(items)
    return items


def refused(files, field: str = "image", **kw) -> str:
    with pytest.raises(InvalidInput) as e:
        assemble_series(files, "study.zip", **kw)
    msg = e.value.message
    assert e.value.field == field and "study.zip" in msg
    assert PATIENT_NAME not in msg and "Doe" not in msg and PATIENT_ID not in msg
    return msg


def test_shuffled_slices_give_the_known_volume_spacing_and_affine():
    files = series_files(VOL, series_uid=SERIES, slope=2.0, intercept=-1000.0)
    vol = assemble_series(unzip_slices(zip_bytes(dict(shuffled(files))), "study.zip"), "s.zip")
    hu = VOL.astype(np.float64) * 2 - 1000  # rescale applied; no window → min-max
    np.testing.assert_allclose(vol.array, (hu - hu.min()) / (hu.max() - hu.min()), atol=1e-6)
    assert vol.spacing == pytest.approx((2.5, 0.7, 0.8))
    # (slice, row, column) → LPS mm: slices along +z, rows along +y, columns along +x
    np.testing.assert_allclose(vol.affine[:3, :3], [[0, 0, 0.8], [0, 0.7, 0], [2.5, 0, 0]])
    np.testing.assert_allclose(vol.affine[:3, 3], [-40, -30, 100])


def test_window_from_the_dicom_or_the_request():
    files = shuffled(series_files(VOL, intercept=-1000.0, window=(40, 400)))
    hu = VOL.astype(np.float64) - 1000
    dicom = assemble_series(files, "w.zip")
    np.testing.assert_allclose(dicom.array, np.clip((hu - 39.5) / 399 + 0.5, 0, 1), atol=1e-6)
    asked = assemble_series(files, "w.zip", window=(500, 1000))
    np.testing.assert_allclose(asked.array, np.clip((hu - 499.5) / 999 + 0.5, 0, 1), atol=1e-6)
    wider = assemble_series(files, "w.zip", window=(None, 1000))  # the file's centre kept
    np.testing.assert_allclose(wider.array, np.clip((hu - 39.5) / 999 + 0.5, 0, 1), atol=1e-6)


def test_without_positions_instance_number_orders():
    import pydicom

    files = {}
    for name, data in shuffled(series_files(VOL)):
        ds = pydicom.dcmread(io.BytesIO(data))
        del ds.ImagePositionPatient
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        files[name] = buf.getvalue()
    vol = assemble_series(list(files.items()), "n.zip")
    assert vol.array.shape == VOL.shape and vol.spacing[0] == pytest.approx(2.5)  # thickness
    assert np.corrcoef(vol.array.ravel(), VOL.ravel().astype(float))[0, 1] > 0.999


def test_missing_and_duplicated_slices_are_named():
    files = series_files(VOL)
    gap = [(n, d) for n, d in files.items() if n != "slice003.dcm"]
    msg = refused(gap)
    assert "missing slice between slice002.dcm and slice004.dcm" in msg and "gap 5 mm" in msg
    twice = shuffled({**files, "copy.dcm": files["slice002.dcm"]})
    msg = refused(twice)
    assert "same slice position" in msg and "slice002.dcm" in msg and "copy.dcm" in msg


def test_mixed_series_are_named_and_one_can_be_chosen():
    a = series_files(VOL, series_uid=SERIES, prefix="a")
    b = series_files(VOL[:4, :8, :8], series_uid=OTHER, prefix="b")
    mixed = shuffled({**a, **b})
    msg = refused(mixed, field="series_uid")
    assert f"{SERIES}: 6 slices" in msg and f"{OTHER}: 4 slices" in msg and "series_uid" in msg
    assert assemble_series(mixed, "m.zip", series_uid=OTHER).array.shape == (4, 8, 8)
    assert "no series '9.9'" in refused(mixed, field="series_uid", series_uid="9.9")


def test_slices_of_different_sizes_are_refused():
    files = series_files(VOL)
    files["slice005.dcm"] = series_files(VOL[:, :8, :8])["slice005.dcm"]
    msg = refused(list(files.items()))
    assert "slices differ in size" in msg and "slice005.dcm is 8x8" in msg


def test_voxel_and_decoded_size_limits():
    files = list(series_files(VOL).items())
    msg = refused(files, limits=ImageLimits(max_voxels=500))
    assert "6x10x12 = 720 voxels" in msg and "VERTICALS_MAX_VOXELS" in msg


def test_env_voxel_limit(monkeypatch):
    monkeypatch.setenv("VERTICALS_MAX_VOXELS", "100")
    assert "VERTICALS_MAX_VOXELS" in refused(list(series_files(VOL).items()))


def _unzip_refused(data: bytes, limits: ZipLimits | None = None) -> str:
    with pytest.raises(InvalidInput) as e:
        unzip_slices(data, "upload.zip", limits)
    assert e.value.field == "image" and "upload.zip" in e.value.message
    return e.value.message


def test_zip_bombs_are_refused_from_the_headers():
    bomb = zip_bytes({"a.dcm": bytes(20 << 20)})  # 20 MB of zeros deflate to ~20 kB
    assert len(bomb) < 100_000
    assert "zip bomb" in _unzip_refused(bomb) and "VERTICALS_MAX_ZIP_RATIO" in _unzip_refused(bomb)
    files = {f"{i}.dcm": np.random.default_rng(i).bytes(4096) for i in range(4)}
    msg = _unzip_refused(zip_bytes(files), ZipLimits(max_bytes=10_000))
    assert "16,384 bytes uncompressed" in msg and "VERTICALS_MAX_ZIP_BYTES" in msg
    msg = _unzip_refused(zip_bytes(files), ZipLimits(max_entries=3))
    assert "4 entries" in msg and "VERTICALS_MAX_ZIP_ENTRIES" in msg


def test_an_entry_whose_header_understates_its_size_is_refused_while_reading():
    # 50 MB of zeros whose central directory declares 100 bytes: passes the header checks,
    # and is refused as soon as inflating goes past the declared size (never inflated whole)
    data = bytearray(zip_bytes({"a.dcm": bytes(50 << 20)}))
    cd = data.rindex(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (100).to_bytes(4, "little")
    msg = _unzip_refused(bytes(data))
    assert "'a.dcm'" in msg and ("zip bomb" in msg or "cannot be read" in msg)


@pytest.mark.parametrize("entry", ["../../etc/evil.dcm", "/abs/evil.dcm", "a/../../x.dcm",
                                   "C:/win/evil.dcm", "..\\evil.dcm"])
def test_zip_slip_entries_are_refused(entry):
    msg = _unzip_refused(zip_bytes({"ok.dcm": b"x", entry: b"y"}))
    assert "points outside the archive" in msg and repr(entry) in msg


def test_not_a_zip_and_no_slices():
    assert "not a readable zip" in _unzip_refused(b"PK\x03\x04" + b"\0" * 40)
    files = unzip_slices(zip_bytes({"notes.txt": b"hello", "__MACOSX/._a": b"x"}), "n.zip")
    assert [n for n, _ in files] == ["notes.txt"]
    with pytest.raises(InvalidInput, match="no DICOM image slices"):
        assemble_series(files, "n.zip")


def test_group_series_keeps_series_together_and_lone_images_alone(tmp_path):
    for name, data in {**series_files(VOL[:3], prefix="a"),
                       **series_files(VOL[:2], series_uid=OTHER, prefix="b")}.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "xray.dcm").write_bytes(dicom_bytes(VOL[0]))  # no position: a 2D image
    (tmp_path / "IM0001").write_bytes(series_files(VOL[:1], series_uid="5.5")["slice000.dcm"])
    units = group_series(sorted(tmp_path.iterdir()))
    sizes = sorted((uid, len(files)) for uid, files in units if uid)
    assert sizes == [("1.2.826.0.1.3680043.2.1125.1", 3), (OTHER, 2)]
    assert sorted(f[0].name for uid, f in units if uid is None) == ["IM0001", "xray.dcm"]
