"""NIfTI volumes kept whole: orientation normalised and kept through a round trip, spacing,
4D time points, the voxel limit, 2D inputs refused, and MONAI resampling to the model's size
(and spacing)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from common.errors import InvalidInput
from medical_imaging.io import ImageLimits, decode_image
from medical_imaging.volume import (
    Volume,
    decode_volume,
    volume_shape,
    volume_to_model_input,
    volume_to_nifti,
)
from tests.medical.files import png_bytes, series_files, zip_bytes

RAS = np.diag([2.0, 1.5, 3.0, 1.0])


def marked(shape=(10, 12, 8)) -> np.ndarray:
    """A volume (x, y, z) whose every voxel is distinct: any flip or transpose shows."""
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def nifti(vol: np.ndarray, affine: np.ndarray, gz: bool = False) -> bytes:
    import gzip

    raw = nib.Nifti1Image(vol.astype(np.float32), affine).to_bytes()
    return gzip.compress(raw) if gz else raw


def test_volume_layout_spacing_and_affine():
    data = marked()
    vol = decode_volume(nifti(data, RAS), "ras.nii")
    assert vol.array.shape == (1, 8, 12, 10) and vol.spacing == (3.0, 1.5, 2.0)
    # (d, h, w) = (z, y reversed, x): slices axial, anterior at the top as in the 2D reader
    order = np.argsort(vol.array.ravel(), kind="stable")
    expect = np.argsort(data.transpose(2, 1, 0)[:, ::-1, :].ravel(), kind="stable")
    np.testing.assert_array_equal(order, expect)
    world = vol.affine @ np.array([7, 0, 9, 1.0])  # voxel (d=7, h=0, w=9) is x=9, y=11, z=7
    np.testing.assert_allclose(world[:3], RAS[:3, :3] @ [9, 11, 7])
    mid = decode_image(nifti(data, RAS), "ras.nii")  # the 2D reader's middle slice agrees
    np.testing.assert_array_equal(np.argsort(mid.ravel(), kind="stable"),
                                  np.argsort(vol.array[0, 4].ravel(), kind="stable"))


def test_the_same_anatomy_in_another_voxel_order_gives_the_same_volume():
    data = marked()
    lps = np.diag([-2.0, -1.5, 3.0, 1.0])  # x and y stored reversed (DICOM-style LPS)
    lps[:3, 3] = [2.0 * 9, 1.5 * 11, 0]  # so that the voxels sit where RAS's do
    a = decode_volume(nifti(data, RAS), "ras.nii")
    b = decode_volume(nifti(data[::-1, ::-1, :], lps, gz=True), "lps.nii.gz")
    np.testing.assert_allclose(b.array, a.array)
    np.testing.assert_allclose(b.affine, a.affine)


def test_nifti_round_trip_keeps_orientation_and_spacing():
    affine = np.array([[0, 0, -2.5, 30], [1.2, 0, 0, -20], [0, 0.9, 0, 5], [0, 0, 0, 1]])
    first = decode_volume(nifti(marked(), affine), "oblique.nii")
    again = decode_volume(volume_to_nifti(first, gz=True), "again.nii.gz")
    # the same voxels in the same places (values re-scaled by the 0.5-99.5 percentiles)
    np.testing.assert_array_equal(np.argsort(again.array.ravel(), kind="stable"),
                                  np.argsort(first.array.ravel(), kind="stable"))
    np.testing.assert_allclose(again.array, first.array, atol=1e-3)
    np.testing.assert_allclose(again.affine, first.affine, atol=1e-6)
    assert again.spacing == pytest.approx(first.spacing)
    img = nib.Nifti1Image.from_bytes(volume_to_nifti(first))
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")


def test_4d_time_point_is_chosen_and_checked():
    series = np.stack([np.full((6, 7, 5), t, np.float32) + marked((6, 7, 5)) * (t + 1)
                       for t in range(3)], -1)
    data = nifti(series, RAS)
    for t in range(3):
        vol = decode_volume(data, "fmri.nii", time_index=t)
        ref = decode_volume(nifti(series[..., t], RAS), "t.nii")
        np.testing.assert_allclose(vol.array, ref.array)
    with pytest.raises(InvalidInput) as e:
        decode_volume(data, "fmri.nii", time_index=3)
    assert e.value.field == "time_index" and "fmri.nii" in e.value.message
    assert "holds 3 (0..2)" in e.value.message
    assert decode_image(data, "fmri.nii", time_index=2).shape == (1, 7, 6)
    assert volume_shape(data, "fmri.nii", 1) == (5, 7, 6)


def test_voxel_limit_names_the_file(monkeypatch):
    data = nifti(marked(), RAS)
    with pytest.raises(InvalidInput) as e:
        decode_volume(data, "big.nii", limits=ImageLimits(max_voxels=900))
    assert "big.nii" in e.value.message and "10x12x8 = 960 voxels" in e.value.message
    monkeypatch.setenv("VERTICALS_MAX_VOXELS", "959")
    with pytest.raises(InvalidInput, match="VERTICALS_MAX_VOXELS"):
        decode_volume(data, "big.nii")


def test_a_2d_image_is_not_a_volume():
    for data, name, shape in ((png_bytes(np.zeros((16, 20), np.uint8)), "a.png", "16×20"),
                              (nifti(marked((9, 7, 1)), RAS), "flat.nii", "7×9")):
        assert volume_shape(data, name) is None
        with pytest.raises(InvalidInput) as e:
            decode_volume(data, name)
        assert f"{name}: this model takes 3D volumes" in e.value.message
        assert f"got a 2D image ({shape})" in e.value.message


def test_zipped_series_decodes_as_a_volume():
    vol = np.random.default_rng(0).integers(0, 1000, (4, 8, 9), dtype=np.uint16)
    data = zip_bytes(series_files(vol))
    out = decode_volume(data, "ct.zip")
    assert out.shape == (4, 8, 9) and volume_shape(data, "ct.zip") == (4, 8, 9)


def test_model_input_resize_and_spacing():
    vol = Volume(np.random.default_rng(0).random((1, 20, 16, 12), dtype=np.float32),
                 (1.0, 1.0, 1.0), np.eye(4))
    x = volume_to_model_input(vol, 1, 8)
    assert x.shape == (1, 8, 8, 8) and 0 <= float(x.min()) and float(x.max()) <= 1
    # the mean of an area-downsampled volume is the volume's mean
    assert float(x.mean()) == pytest.approx(float(vol.array.mean()), abs=0.02)
    assert volume_to_model_input(vol, 3, (4, 6, 8)).shape == (3, 4, 6, 8)
    # at 2 mm, 20 x 16 x 12 mm of 1-mm voxels is 10 x 8 x 6 voxels, padded/cropped to 8
    ramp = Volume(np.broadcast_to(np.linspace(0, 1, 20, dtype=np.float32)[:, None, None],
                                  (20, 16, 12))[None].copy(), (1.0, 1.0, 1.0), np.eye(4))
    y = volume_to_model_input(ramp, 1, 8, spacing=(2.0, 2.0, 2.0))
    assert y.shape == (1, 8, 8, 8)
    assert float(y[0, :, 4, 4].max() - y[0, :, 4, 4].min()) < 0.9  # cropped, not squeezed
    assert float(y[0, 0, 0, 0]) == 0.0  # padding where 6 voxels met 8
