"""3D inputs: a NIfTI volume (4D: one time point) or a zipped DICOM series → `Volume`, and a
`Volume` → the model's input with MONAI transforms.

    vol = decode_volume(data, "brain.nii.gz", time_index=0)    # or a zip of DICOM slices
    x = volume_to_model_input(vol, in_channels=1, image_size=28, spacing=None)  # (1, 28, 28, 28)

Array layout (C, D, H, W): D runs along the slice normal, (H, W) is each slice as the 2D reader
shows it. A NIfTI volume is first brought to the closest canonical (RAS+) orientation with
nibabel, so the same anatomy gives the same array whatever the file's voxel order; its slices
are then axial, anterior at the top (as the 2D reader's `rot90`). `affine` maps (d, h, w)
indices to world mm (NIfTI: RAS, DICOM: LPS) and `spacing` is the voxel size along D, H, W.
Intensities: NIfTI 0.5-99.5 percentile scaling over the volume, DICOM rescale + window (the
request's, else the first slice's, else min-max), both as in 2D.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from common.errors import InvalidInput
from medical_imaging.io import (
    ImageLimits,
    check_time_index,
    decode_image,
    nifti_header,
    nifti_image,
    sniff_format,
)
from medical_imaging.series import ZipLimits, assemble_series, is_zip, unzip_slices

__all__ = ["Volume", "decode_volume", "volume_shape", "volume_to_model_input", "volume_to_nifti"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Volume:
    """A 3D image in [0, 1] with its geometry."""

    array: np.ndarray  # (C, D, H, W) float32 in [0, 1]
    spacing: tuple[float, float, float]  # mm along D, H, W
    affine: np.ndarray  # 4x4: (d, h, w, 1) → world mm

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.array.shape[1:])  # type: ignore[return-value]


def _shape_text(dims: Sequence[int]) -> str:
    return "×".join(str(int(d)) for d in dims)


def volume_shape(data: bytes, name: str, time_index: int = 0) -> tuple[int, ...] | None:
    """(D, H, W) when `data` is a 3D input (a NIfTI with three non-singleton spatial axes or a
    zip of DICOM slices), else None. NIfTI: from the header only; zip: the whole series is
    assembled (it has to be, to know its slices)."""
    if is_zip(data):
        return decode_volume(data, name).shape
    if sniff_format(data, name) != "nifti":
        return None
    import nibabel as nib

    hdr = nifti_header(data, name)
    shape = tuple(int(d) for d in hdr.get_data_shape())
    if len(shape) >= 4:
        check_time_index(name, shape, time_index)
    spatial = (shape + (1, 1))[:3]
    if sum(d > 1 for d in spatial) < 3:
        return None
    # the (D, H, W) that `decode_volume` would give: canonical axes, then (z, y, x)
    xyz = [0, 0, 0]
    for axis, (to, _) in enumerate(nib.orientations.io_orientation(hdr.get_best_affine())):
        xyz[int(to)] = spatial[axis]
    return xyz[2], xyz[1], xyz[0]


def decode_volume(data: bytes, name: str = "volume", *, time_index: int = 0,
                  series_uid: str | None = None,
                  window: tuple[float | None, float | None] | None = None,
                  limits: ImageLimits | None = None,
                  zip_limits: ZipLimits | None = None) -> Volume:
    """Bytes of a NIfTI file or a zipped DICOM series → `Volume`. A 2D image is refused with
    its size ("this model takes 3D volumes ...")."""
    limits = limits or ImageLimits.from_env()
    if is_zip(data):
        s = assemble_series(unzip_slices(data, name, zip_limits), name, series_uid=series_uid,
                            window=window, limits=limits)
        vol = Volume(s.array[None], s.spacing, s.affine)
    elif sniff_format(data, name) == "nifti":
        vol = _nifti_volume(data, name, time_index, limits)
    else:
        vol = None
    if vol is None or min(vol.shape) < 2:
        hw = decode_image(data, name, window, limits, time_index).shape[1:] if vol is None \
            else tuple(d for d in vol.shape if d > 1) or vol.shape
        raise InvalidInput("image", f"{name}: this model takes 3D volumes (NIfTI or a zipped "
                                    f"DICOM series); got a 2D image ({_shape_text(hw)})")
    if not np.isfinite(vol.array).all():
        raise InvalidInput("image", f"{name}: volume holds NaN or infinite values")
    log.debug("decoded volume %s", vol.shape)  # sizes only, never header values
    return vol


def _nifti_volume(data: bytes, name: str, time_index: int, limits: ImageLimits) -> Volume:
    import nibabel as nib
    from monai.transforms import ScaleIntensityRangePercentiles

    img = nifti_image(data, name, limits, volume=True)
    shape = tuple(int(d) for d in img.shape)
    if len(shape) > 4 or (len(shape) == 4 and shape[3] < 1):
        raise InvalidInput("image", f"{name}: NIfTI of shape {shape} is not a 3D volume or a "
                                    "4D series of volumes")
    if len(shape) == 4:  # as in the 2D reader, a file without a time axis ignores it
        check_time_index(name, shape, time_index)
    try:
        arr = np.asarray(img.dataobj[..., time_index] if len(shape) == 4 else img.dataobj,
                         dtype=np.float32)
    except Exception as e:  # nibabel raises a wide range of types for bad data
        raise InvalidInput("image", f"{name}: NIfTI data cannot be read "
                                    f"({type(e).__name__})") from None
    arr = arr.reshape(shape[:3] + (1,) * (3 - len(shape[:3])))
    # closest canonical (RAS+) voxel order: the same anatomy, the same array
    ornt = nib.orientations.io_orientation(img.affine)
    arr = nib.orientations.apply_orientation(arr, ornt)
    affine = img.affine @ nib.orientations.inv_ornt_aff(ornt, arr.shape)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    # (x, y, z) → (z, rows, cols) with rows = y reversed (anterior on top) and cols = x, as
    # the 2D reader's rot90 of an axial slice
    ny = arr.shape[1]
    arr = np.ascontiguousarray(arr.transpose(2, 1, 0)[:, ::-1, :])
    to_ijk = np.array([[0, 0, 1, 0], [0, -1, 0, ny - 1], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    scale = ScaleIntensityRangePercentiles(lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True)
    out = np.asarray(scale(arr[None]), dtype=np.float32)
    spacing = (float(zooms[2]), float(zooms[1]), float(zooms[0]))
    return Volume(out, spacing, affine @ to_ijk)


def volume_to_nifti(vol: Volume, gz: bool = False) -> bytes:
    """A `Volume` as NIfTI-1 bytes (first channel), geometry kept: decoding them gives back the
    same array (up to intensity scaling) and affine."""
    import gzip

    import nibabel as nib

    d, h, w = vol.shape
    to_ijk = np.array([[0, 0, 1, 0], [0, -1, 0, h - 1], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    xyz = np.ascontiguousarray(vol.array[0][:, ::-1, :].transpose(2, 1, 0))
    raw = nib.Nifti1Image(xyz.astype(np.float32), vol.affine @ np.linalg.inv(to_ijk)).to_bytes()
    return gzip.compress(raw) if gz else raw


def volume_to_model_input(vol: Volume, in_channels: int, image_size: int | Sequence[int],
                          spacing: Sequence[float] | None = None) -> torch.Tensor:
    """`Volume` → (in_channels, S, S, S) float32 in [0, 1]. With `spacing` (the bundle's voxel
    size in mm), MONAI `Spacing` resamples to it first and the result is centre-cropped or
    padded to S; without, MONAI `Resize` scales the whole volume to S (area when shrinking,
    trilinear when growing)."""
    from monai.data import MetaTensor
    from monai.transforms import Resize, ResizeWithPadOrCrop, Spacing

    size = tuple(int(s) for s in (image_size if isinstance(image_size, Sequence)
                                  else (image_size,) * 3))
    x = np.asarray(vol.array, dtype=np.float32)
    if x.shape[0] == 1 and in_channels > 1:
        x = np.repeat(x, in_channels, axis=0)
    elif x.shape[0] != in_channels:
        raise InvalidInput("image", f"{x.shape[0]} channels cannot feed a {in_channels}-channel "
                                    "model")
    if spacing is not None:
        # the voxel grid's own spacing (orientation is already fixed by the reader)
        m = MetaTensor(torch.from_numpy(x), affine=torch.diag(torch.tensor(
            [*vol.spacing, 1.0], dtype=torch.float64)))
        x = Spacing(pixdim=tuple(float(s) for s in spacing), mode="bilinear")(m)
        x = ResizeWithPadOrCrop(size)(x)
    elif tuple(x.shape[1:]) != size:
        down = np.prod(x.shape[1:]) >= np.prod(size)
        x = Resize(size, mode="area" if down else "trilinear")(x)
    t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    return t.clamp(0, 1).contiguous()
