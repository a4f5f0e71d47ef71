"""Readers: PNG/JPEG (Pillow), DICOM (pydicom), NIfTI (nibabel), MedMNIST `.npz` (numpy).

Every image reader returns a float32 array (C, H, W) in [0, 1], C = 1 (grey) or 3 (RGB), and
raises `InvalidInput("image", "<file>: <reason>")` for empty, corrupt or unsupported input.
DICOM header values other than the pixel-related ones are never read into messages or logs:
patient names, ids and dates stay inside the dataset object.

Decompression and size bombs are refused from the header, before pixel data is decoded
(`ImageLimits`): one 2D image, frame or slice may hold `VERTICALS_MAX_IMAGE_PIXELS` pixels
(default 40 million, a large mammogram), and a whole decoded volume or series
`VERTICALS_MAX_DECODED_BYTES` (default 256 MiB); a gzip stream is never inflated past that.
A 3D volume (`medical_imaging.volume`) may also hold at most `VERTICALS_MAX_VOXELS` voxels
(default 512^3).
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import InvalidInput
from medical_imaging.medmnist import load_medmnist  # re-exported: moved there

__all__ = ["read_image", "decode_image", "sniff_format", "to_model_input", "load_medmnist",
           "IMAGE_SUFFIXES", "ImageLimits", "apply_window", "dicom_window", "nifti_header",
           "nifti_image", "check_time_index", "pick_window"]
log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".nii", ".nii.gz")
_PNG, _JPEG, _GZIP = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\x1f\x8b"


def _bad(name: str, reason: str) -> InvalidInput:
    return InvalidInput("image", f"{name}: {reason}")


def _env_int(var: str, default: int) -> int:
    value = os.environ.get(var, "").replace("_", "")
    return int(value) if value.isdigit() and int(value) > 0 else default


@dataclass(frozen=True)
class ImageLimits:
    """What one input may declare before anything is decoded."""

    max_pixels: int = 40_000_000  # one 2D image, frame or slice
    max_decoded_bytes: int = 256 * 1024 * 1024  # a whole decoded volume or series
    max_voxels: int = 512 ** 3  # a whole 3D volume, whatever its data type

    @classmethod
    def from_env(cls) -> ImageLimits:
        return cls(_env_int("VERTICALS_MAX_IMAGE_PIXELS", cls.max_pixels),
                   _env_int("VERTICALS_MAX_DECODED_BYTES", cls.max_decoded_bytes),
                   _env_int("VERTICALS_MAX_VOXELS", cls.max_voxels))

    def check_voxels(self, name: str, dims: tuple[int, ...]) -> None:
        """Refuse a volume of `dims` (D, H, W) holding more than `max_voxels` voxels."""
        n = math.prod(dims)
        if n > self.max_voxels:
            shape = "x".join(str(d) for d in dims)
            raise _bad(name, f"volume of {shape} = {n:,} voxels is over the limit of "
                             f"{self.max_voxels:,} (VERTICALS_MAX_VOXELS)")

    def check(self, name: str, what: str, dims: tuple[int, ...], item_bytes: float) -> None:
        """Refuse `dims` (2D plane first) whose plane or total decoded size is over a limit."""
        plane = math.prod(dims[:2])
        total = math.prod(dims) * item_bytes
        shape = "x".join(str(d) for d in dims)
        if plane > self.max_pixels:
            raise _bad(name, f"{what} declares {shape} = {plane:,} pixels per image, over the "
                             f"limit of {self.max_pixels:,} (VERTICALS_MAX_IMAGE_PIXELS)")
        if total > self.max_decoded_bytes:
            raise _bad(name, f"{what} declares {shape} = {int(total):,} bytes decoded, over the "
                             f"limit of {self.max_decoded_bytes:,} (VERTICALS_MAX_DECODED_BYTES)")


def _is_nifti_header(data: bytes) -> bool:
    if len(data) < 348:
        return False
    n1 = data[344:348] in (b"n+1\x00", b"ni1\x00")
    n2 = len(data) >= 540 and data[4:8] in (b"n+2\x00", b"ni2\x00")
    return n1 or n2


def sniff_format(data: bytes, name: str = "image") -> str:
    """'png' | 'jpeg' | 'dicom' | 'nifti' from the bytes (the name only breaks DICOM ties)."""
    if not data:
        raise _bad(name, "empty file")
    if data.startswith(_PNG):
        return "png"
    if data.startswith(_JPEG):
        return "jpeg"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(_GZIP) or _is_nifti_header(data):
        return "nifti"
    if data.startswith(b"PK"):
        raise _bad(name, "a zip/.npz archive is a dataset, not an image (use it with --data)")
    if name.lower().endswith((".dcm", ".dicom")):
        return "dicom"  # DICOM without the 128-byte preamble: let pydicom try
    raise _bad(name, "unsupported format (expected PNG, JPEG, DICOM or NIfTI)")


def _read_pil(data: bytes, name: str, limits: ImageLimits) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            # open() reads the header only: refuse a bomb before load() allocates its pixels
            limits.check(name, im.format or "image", (im.height, im.width, len(im.getbands())),
                         1)
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(im, dtype=np.float32)
                return _minmax(arr)[None]
            if im.mode in ("L", "1", "LA"):
                return np.asarray(im.convert("L"), dtype=np.float32)[None] / 255.0
            return np.asarray(im.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
    except Image.DecompressionBombError:  # Pillow's own guard fires in open() already
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise _bad(name, f"image declares too many pixels to decode (over {limit:,}, Pillow's "
                         "decompression-bomb limit)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise _bad(name, f"corrupt or truncated image ({type(e).__name__})") from None


def _minmax(arr: np.ndarray) -> np.ndarray:
    arr = arr.astype(np.float32)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def _first(value: Any) -> float:
    # WindowCenter/Width may be multi-valued; the first pair is the default view
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def _dicom_int(ds: Any, keyword: str, default: int, name: str) -> int:
    try:
        return int(ds.get(keyword, default) or default)
    except (TypeError, ValueError):
        raise _bad(name, f"DICOM {keyword} is not a number") from None


def _read_dicom(data: bytes, name: str, window: tuple[float | None, float | None] | None,
                limits: ImageLimits) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, convert_color_space

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as e:
        raise _bad(name, f"not a readable DICOM file ({type(e).__name__})") from None
    if "PixelData" not in ds:
        raise _bad(name, "DICOM file holds no pixel data")
    rows, cols = _dicom_int(ds, "Rows", 0, name), _dicom_int(ds, "Columns", 0, name)
    frames = _dicom_int(ds, "NumberOfFrames", 1, name)
    spp = _dicom_int(ds, "SamplesPerPixel", 1, name)
    bits = _dicom_int(ds, "BitsAllocated", 16, name)
    if min(rows, cols, frames, spp, bits) < 1:
        raise _bad(name, "DICOM Rows, Columns, NumberOfFrames, SamplesPerPixel and "
                         "BitsAllocated must be positive")
    # header first: pydicom would allocate Rows x Columns x frames before finding out
    limits.check(name, "DICOM", (rows, cols, frames, spp), max(bits, 8) / 8)
    try:
        if frames > 1:  # multi-frame: the middle frame represents the series; decode only it
            ds.pixel_array_options(index=frames // 2)
        arr = ds.pixel_array
    except Exception as e:  # pydicom raises many types for bad/unsupported pixel data
        raise _bad(name, f"DICOM pixel data cannot be decoded ({type(e).__name__})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if spp == 3:
        if photometric.startswith("YBR"):
            arr = convert_color_space(arr, photometric, "RGB")
        return _minmax(arr).transpose(2, 0, 1) if arr.dtype != np.uint8 else \
            arr.astype(np.float32).transpose(2, 0, 1) / 255.0
    hu = apply_modality_lut(arr, ds).astype(np.float32)  # rescale slope / intercept
    return apply_window(hu, pick_window(window, dicom_window(ds), hu), photometric)[None]


def dicom_window(ds: Any) -> tuple[float, float] | None:
    """The dataset's first (centre, width) window pair, or None."""
    if "WindowCenter" in ds and "WindowWidth" in ds:
        return _first(ds.WindowCenter), _first(ds.WindowWidth)
    return None


def pick_window(asked: tuple[float | None, float | None] | None,
                own: tuple[float, float] | None, hu: np.ndarray) -> tuple[float, float] | None:
    """The window to use: the asked (centre, width), a missing half taken from the file's own
    window, or from the data's range when the file has none; no ask: the file's own."""
    if asked is None:
        return own
    c, w = asked
    if c is None or w is None:
        lo, hi = float(np.min(hu)), float(np.max(hu))
        base = own or ((lo + hi) / 2, hi - lo + 1)
        c, w = (base[0] if c is None else c), (base[1] if w is None else w)
    return float(c), float(w)


def apply_window(hu: np.ndarray, window: tuple[float, float] | None,
                 photometric: str = "MONOCHROME2") -> np.ndarray:
    """Modality values (e.g. HU) → [0, 1]: the linear window when given, else min–max; then
    MONOCHROME1 inverted. Used for one DICOM image and for a whole series alike."""
    if window is not None and window[1] > 1:
        # DICOM PS3.3 C.11.2.1.2.1 linear window, mapped straight to [0, 1] (pydicom's
        # apply_voi_lut maps to the stored bit depth's range, which we would undo again)
        c, w = window
        out = np.clip((hu - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)
    else:
        out = _minmax(hu)
    if photometric == "MONOCHROME1":  # high values are dark: invert so bright means dense
        out = 1.0 - out
    return out.astype(np.float32)


def _nifti_header(head: bytes, name: str) -> Any:
    import nibabel as nib

    two = head[4:8] in (b"n+2\x00", b"ni2\x00")
    cls = nib.Nifti2Header if two else nib.Nifti1Header
    try:
        return cls.from_fileobj(io.BytesIO(head[: cls.sizeof_hdr]))
    except Exception as e:  # nibabel raises a wide range of types for bad headers
        raise _bad(name, f"not a readable NIfTI file ({type(e).__name__})") from None


def nifti_header(data: bytes, name: str) -> Any:
    """The NIfTI-1/2 header of `data` (inflating only its first bytes when gzipped)."""
    try:
        head = gzip.GzipFile(fileobj=io.BytesIO(data)).read(540) if data.startswith(_GZIP) \
            else data[:540]
    except (OSError, EOFError, zlib.error) as e:
        raise _bad(name, f"not a readable NIfTI file ({type(e).__name__})") from None
    return _nifti_header(head, name)


def nifti_image(data: bytes, name: str, limits: ImageLimits, *, volume: bool = False) -> Any:
    """A nibabel image over `data`, its header checked against `limits` (and, with `volume`,
    the voxel limit) before the data is inflated — and never inflated past the declared size."""
    import nibabel as nib

    gz = gzip.GzipFile(fileobj=io.BytesIO(data)) if data.startswith(_GZIP) else None
    try:
        # the header says how much data follows: check it, then inflate no more than that
        head = gz.read(540) if gz is not None else data[:540]
        hdr = _nifti_header(head, name)
        shape = tuple(int(d) for d in hdr.get_data_shape())
        item = hdr.get_data_dtype().itemsize
        limits.check(name, "NIfTI", tuple(d for d in shape if d != 1) or shape, item)
        if volume:
            limits.check_voxels(name, shape[:3])
        need = int(hdr.get_data_offset()) + math.prod(shape) * item
        raw = head + gz.read(max(0, need - len(head))) if gz is not None else data
        if len(raw) < need:
            raise _bad(name, f"truncated NIfTI: header declares {need:,} bytes, file holds "
                             f"{len(raw):,}")
        return (nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else
                nib.Nifti1Image).from_bytes(raw)
    except InvalidInput:
        raise
    except Exception as e:  # nibabel/gzip raise a wide range of types for bad files
        raise _bad(name, f"not a readable NIfTI file ({type(e).__name__})") from None


def check_time_index(name: str, shape: tuple[int, ...], time_index: int) -> None:
    """A 4D NIfTI's time point must exist (a 3D one only has time point 0)."""
    count = shape[3] if len(shape) >= 4 else 1
    if not 0 <= time_index < count:
        raise InvalidInput("time_index", f"{name}: time point {time_index} does not exist; "
                                         f"the file holds {count} (0..{count - 1})")


def _read_nifti(data: bytes, name: str, limits: ImageLimits, time_index: int = 0) -> np.ndarray:
    from monai.transforms import ScaleIntensityRangePercentiles

    img = nifti_image(data, name, limits)
    shape = tuple(int(d) for d in img.shape)
    try:
        # index the proxy so only the 2D slice used is read: squeeze singleton axes, take the
        # chosen time point of a series and the middle axial slice of a volume
        axes = [i for i, d in enumerate(shape) if d != 1]
        index: list[int | slice] = [0 if d == 1 else slice(None) for d in shape]
        if len(shape) >= 4:
            check_time_index(name, shape, time_index)
            index[3] = time_index
            axes = [a for a in axes if a != 3]
        if len(axes) == 4:
            index[axes[3]] = 0
        if len(axes) in (3, 4):
            index[axes[2]] = shape[axes[2]] // 2
        sl = np.asarray(img.dataobj[tuple(index)], dtype=np.float32)
    except InvalidInput:
        raise
    except Exception as e:  # nibabel/gzip raise a wide range of types for bad files
        raise _bad(name, f"not a readable NIfTI file ({type(e).__name__})") from None
    if len(axes) > 4 or sl.ndim != 2 or min(sl.shape) < 2:
        raise _bad(name, f"NIfTI image of shape {shape} has no 2D slice")
    sl = np.rot90(sl)  # voxel (i, j) → display rows/cols, superior at the top
    scale = ScaleIntensityRangePercentiles(lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True)
    return np.asarray(scale(np.ascontiguousarray(sl)[None]), dtype=np.float32)


def decode_image(data: bytes, name: str = "image",
                 window: tuple[float | None, float | None] | None = None,
                 limits: ImageLimits | None = None, time_index: int = 0) -> np.ndarray:
    """Bytes of one PNG/JPEG/DICOM/NIfTI file → float32 (C, H, W) in [0, 1]. Inputs whose
    header declares more than `limits` (default: `ImageLimits.from_env()`) are refused. A
    NIfTI volume gives its middle axial slice at `time_index` (whole volumes:
    `medical_imaging.volume.decode_volume`)."""
    fmt = sniff_format(data, name)
    limits = limits or ImageLimits.from_env()
    if fmt in ("png", "jpeg"):
        arr = _read_pil(data, name, limits)
    elif fmt == "dicom":
        arr = _read_dicom(data, name, window, limits)
    else:
        arr = _read_nifti(data, name, limits, time_index)
    if arr.shape[-1] < 2 or arr.shape[-2] < 2:
        raise _bad(name, f"image of size {arr.shape[-2]}x{arr.shape[-1]} is too small")
    if not np.isfinite(arr).all():
        raise _bad(name, "image holds NaN or infinite values")
    log.debug("decoded %s image %s", fmt, arr.shape)  # sizes only, never header values
    return arr


def read_image(path: str | Path, window: tuple[float, float] | None = None,
               limits: ImageLimits | None = None) -> np.ndarray:
    """Read one image file (see `decode_image`)."""
    path = Path(path)
    if not path.is_file():
        raise _bad(path.name, "no such file")
    return decode_image(path.read_bytes(), path.name, window, limits)


def to_model_input(arr: np.ndarray, in_channels: int, image_size: int) -> torch.Tensor:
    """(C, H, W) in [0, 1] → (in_channels, S, S): RGB→grey by luminance or grey→RGB by
    repetition, then MONAI Resize (area for downsampling, bilinear for upsampling)."""
    from monai.transforms import Resize

    x = np.asarray(arr, dtype=np.float32)
    if x.shape[0] == 3 and in_channels == 1:
        x = np.tensordot(np.array([0.299, 0.587, 0.114], np.float32), x, axes=1)[None]
    elif x.shape[0] == 1 and in_channels == 3:
        x = np.repeat(x, 3, axis=0)
    elif x.shape[0] != in_channels:
        raise InvalidInput("image", f"{x.shape[0]} channels cannot feed a {in_channels}-channel "
                                    "model")
    if x.shape[1:] != (image_size, image_size):
        down = x.shape[1] * x.shape[2] >= image_size * image_size
        x = Resize((image_size, image_size), mode="area" if down else "bilinear")(x)
    return torch.as_tensor(np.asarray(x), dtype=torch.float32).clamp(0, 1).contiguous()
