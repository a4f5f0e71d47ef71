"""DICOM series → one volume: slices from a zip (or a folder's files), split by Series Instance
UID, ordered by position, checked for gaps, duplicates and size mismatches, rescaled and
windowed as the 2D reader does.

    files = unzip_slices(data, "study.zip")                 # [(entry name, bytes), ...]
    vol = assemble_series(files, "study.zip", series_uid=None, window=None)

Ordering: ImagePositionPatient projected on the slice normal (the cross product of the
ImageOrientationPatient row and column cosines); without positions, InstanceNumber. Spacing is
(median slice gap, PixelSpacing row, PixelSpacing column) in mm; the affine maps (slice, row,
column) indices to patient (LPS) coordinates. A gap over 1.5x the median is a missing slice.

Zip archives are untrusted: the entry count, every entry's compression ratio and the total
uncompressed size are checked from the central directory and again while inflating, and an
entry whose path is absolute or climbs out of the archive (`..`) is refused. Limits come from
`ZipLimits.from_env()`: `VERTICALS_MAX_ZIP_ENTRIES` (default 4096), `VERTICALS_MAX_ZIP_RATIO`
(default 200), `VERTICALS_MAX_ZIP_BYTES` (default 512 MiB: a 512^3 16-bit series is 256 MiB).

Patient data: only pixel, geometry and series-identity attributes are read; errors and logs
name files, counts, shapes and series UIDs, never a patient field.
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from common.errors import InvalidInput
from medical_imaging.io import ImageLimits, _env_int, apply_window, dicom_window, pick_window

__all__ = ["ZipLimits", "is_zip", "unzip_slices", "assemble_series", "SeriesVolume",
           "group_series"]
log = logging.getLogger(__name__)
_CHUNK = 1 << 20
_SKIP = ("__MACOSX/", "DICOMDIR")


def _bad(name: str, reason: str) -> InvalidInput:
    return InvalidInput("image", f"{name}: {reason}")


@dataclass(frozen=True)
class ZipLimits:
    """What one uploaded archive may hold."""

    max_entries: int = 4096
    max_ratio: int = 200  # uncompressed / compressed, per entry
    max_bytes: int = 512 << 20  # all entries together, uncompressed

    @classmethod
    def from_env(cls) -> ZipLimits:
        return cls(_env_int("VERTICALS_MAX_ZIP_ENTRIES", cls.max_entries),
                   _env_int("VERTICALS_MAX_ZIP_RATIO", cls.max_ratio),
                   _env_int("VERTICALS_MAX_ZIP_BYTES", cls.max_bytes))


@dataclass(frozen=True)
class SeriesVolume:
    """A series' modality values mapped to [0, 1], with its geometry."""

    array: np.ndarray  # (D, H, W) float32 in [0, 1]
    spacing: tuple[float, float, float]  # mm along D, H, W
    affine: np.ndarray  # 4x4: (slice, row, column, 1) → patient LPS mm


def is_zip(data: bytes) -> bool:
    return data[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def _unsafe_path(entry: str) -> bool:
    p = entry.replace("\\", "/")
    return p.startswith("/") or (len(p) > 1 and p[1] == ":") or ".." in PurePosixPath(p).parts


def unzip_slices(data: bytes, name: str, limits: ZipLimits | None = None) -> list[tuple[str,
                                                                                      bytes]]:
    """The files of a zip archive as (entry name, bytes), directories and macOS/DICOMDIR
    entries left out. Bombs, unsafe paths and too many entries are refused naming the
    archive, the entry and the limit."""
    limits = limits or ZipLimits.from_env()
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise _bad(name, f"not a readable zip archive ({type(e).__name__})") from None
    if len(infos) > limits.max_entries:
        raise _bad(name, f"zip holds {len(infos):,} entries, over the limit of "
                         f"{limits.max_entries:,} (VERTICALS_MAX_ZIP_ENTRIES)")
    total = 0
    for info in infos:  # the central directory first: refuse before inflating anything
        if _unsafe_path(info.filename):
            raise _bad(name, f"zip entry {info.filename!r} points outside the archive "
                             "(absolute path or '..')")
        total += info.file_size
        if info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise _bad(name, f"zip entry {info.filename!r} inflates {info.compress_size:,} → "
                             f"{info.file_size:,} bytes, a ratio over {limits.max_ratio} "
                             "(VERTICALS_MAX_ZIP_RATIO): refused as a zip bomb")
    if total > limits.max_bytes:
        raise _bad(name, f"zip declares {total:,} bytes uncompressed, over the limit of "
                         f"{limits.max_bytes:,} (VERTICALS_MAX_ZIP_BYTES)")
    out, total = [], 0
    for info in infos:
        if info.is_dir() or info.filename.startswith(_SKIP) or \
                PurePosixPath(info.filename).name.startswith("."):
            continue
        # the headers may lie: count what actually comes out, and stop at the limits
        budget = min(limits.max_bytes - total, limits.max_ratio * max(info.compress_size, 1))
        parts, got = [], 0
        try:
            with zf.open(info) as fh:
                while chunk := fh.read(_CHUNK):
                    got += len(chunk)
                    if got > budget:
                        raise _bad(name, f"zip entry {info.filename!r} inflates past its "
                                         "declared size or the archive's limits: refused as a "
                                         "zip bomb")
                    parts.append(chunk)
        except InvalidInput:
            raise
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError,
                NotImplementedError) as e:
            raise _bad(name, f"zip entry {info.filename!r} cannot be read "
                             f"({type(e).__name__})") from None
        total += got
        out.append((info.filename, b"".join(parts)))
    log.debug("unzipped %d entries, %d bytes", len(out), total)  # counts only
    return out


def _read_headers(files: list[tuple[str, bytes]], name: str) -> list[tuple[str, Any]]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    out = []
    for fname, data in files:
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as e:
            raise _bad(name, f"{fname}: not a readable DICOM file ({type(e).__name__})") from None
        if "PixelData" not in ds:
            if fname.lower().endswith((".dcm", ".dicom")):
                raise _bad(name, f"{fname}: DICOM file holds no pixel data")
            continue  # a README or report that travelled with the slices
        out.append((fname, ds))
    if not out:
        raise _bad(name, "no DICOM image slices found (a zip must hold the slices of a DICOM "
                         "series; a MedMNIST .npz is a dataset: use it with --data)")
    return out


def _floats(ds: Any, keyword: str, n: int, where: str) -> np.ndarray | None:
    value = ds.get(keyword)
    if value is None:
        return None
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.shape != (n,) or not np.isfinite(arr).all():
        raise InvalidInput("image", f"{where}: DICOM {keyword} is not {n} numbers")
    return arr


def _pick_series(slices: list[tuple[str, Any]], name: str,
                 series_uid: str | None) -> list[tuple[str, Any]]:
    groups: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for fname, ds in slices:
        groups[str(ds.get("SeriesInstanceUID", "") or "")].append((fname, ds))
    if series_uid is not None:
        if series_uid not in groups:
            raise InvalidInput("series_uid", f"{name}: no series {series_uid!r}; found "
                                             + _describe(groups))
        return groups[series_uid]
    if len(groups) > 1:
        raise InvalidInput("series_uid", f"{name}: holds {len(groups)} series ("
                                         f"{_describe(groups)}); choose one with series_uid")
    return next(iter(groups.values()))


def _describe(groups: dict[str, list]) -> str:
    return ", ".join(f"{uid or '<no uid>'}: {len(v)} slices" for uid, v in sorted(groups.items()))


def _order(slices: list[tuple[str, Any]], name: str) -> tuple[list[tuple[str, Any]], float,
                                                              np.ndarray, np.ndarray]:
    """Slices sorted along the normal; (slices, slice spacing, 3x3 directions, origin)."""
    first = slices[0][1]
    iop = _floats(first, "ImageOrientationPatient", 6, f"{name}: {slices[0][0]}")
    row_dir, col_dir = (iop[:3], iop[3:]) if iop is not None else (np.array([1.0, 0, 0]),
                                                                    np.array([0, 1.0, 0]))
    normal = np.cross(row_dir, col_dir)
    positions = [_floats(ds, "ImagePositionPatient", 3, f"{name}: {f}") for f, ds in slices]
    if all(p is not None for p in positions):
        for (fname, ds) in slices[1:]:
            other = _floats(ds, "ImageOrientationPatient", 6, f"{name}: {fname}")
            if other is not None and iop is not None and np.abs(other - iop).max() > 1e-3:
                raise _bad(name, f"{fname}: slice orientation differs from {slices[0][0]}'s")
        keys = [float(np.dot(p, normal)) for p in positions]
    else:  # no geometry: InstanceNumber orders, SliceThickness (or 1 mm) spaces
        try:
            keys = [float(ds.InstanceNumber) for _, ds in slices]
        except (AttributeError, TypeError, ValueError):
            raise _bad(name, "slices have neither ImagePositionPatient nor InstanceNumber; "
                             "their order is unknown") from None
    order = np.argsort(keys, kind="stable")
    slices = [slices[i] for i in order]
    keys = [keys[i] for i in order]
    origin = positions[order[0]] if positions[order[0]] is not None else np.zeros(3)
    gaps = np.diff(keys)
    for i, g in enumerate(gaps):
        if abs(g) < 1e-4:
            raise _bad(name, f"{slices[i][0]} and {slices[i + 1][0]} are at the same slice "
                             "position (a duplicated slice)")
    if all(p is not None for p in positions):
        spacing = float(np.median(gaps)) if len(gaps) else _thickness(first)
        for i, g in enumerate(gaps):
            if g > 1.5 * spacing:
                raise _bad(name, f"missing slice between {slices[i][0]} and {slices[i + 1][0]} "
                                 f"(gap {g:.3g} mm, median spacing {spacing:.3g} mm)")
    else:
        spacing = _thickness(first)
        for i, g in enumerate(gaps):
            if g > 1.5:
                raise _bad(name, f"missing slice between {slices[i][0]} and {slices[i + 1][0]} "
                                 "(InstanceNumber jumps)")
    return slices, spacing, np.stack([normal, col_dir, row_dir], 1), origin


def _thickness(ds: Any) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            v = float(ds.get(keyword) or 0)
        except (TypeError, ValueError):
            v = 0.0
        if v > 0:
            return v
    return 1.0


def assemble_series(files: list[tuple[str, bytes]], name: str, *,
                    series_uid: str | None = None,
                    window: tuple[float | None, float | None] | None = None,
                    limits: ImageLimits | None = None) -> SeriesVolume:
    """DICOM slices (entry name, bytes) → one windowed volume (`window`: (centre, width),
    either may be None to keep the file's; see `io.pick_window`). `name` (the archive or
    folder) and the slice's file name appear in every error."""
    from pydicom.pixels import apply_modality_lut

    limits = limits or ImageLimits.from_env()
    slices = _pick_series(_read_headers(files, name), name, series_uid)
    sizes = {}
    for fname, ds in slices:
        try:
            rows, cols = int(ds.Rows), int(ds.Columns)
            spp, frames = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("NumberOfFrames", 1)
                                                                         or 1)
        except (AttributeError, TypeError, ValueError):
            raise _bad(name, f"{fname}: DICOM Rows/Columns missing or not numbers") from None
        if spp != 1 or frames != 1:
            raise _bad(name, f"{fname}: a series slice must be one grey frame (got "
                             f"{frames} frames x {spp} samples)")
        sizes.setdefault((rows, cols), fname)
    if len(sizes) > 1:
        (a, fa), (b, fb) = list(sizes.items())[:2]
        raise _bad(name, f"slices differ in size: {fa} is {a[0]}x{a[1]}, {fb} is {b[0]}x{b[1]}")
    rows, cols = next(iter(sizes))
    dims = (len(slices), rows, cols)
    limits.check(name, "DICOM series", (rows, cols, len(slices)), 4)  # float32 when decoded
    limits.check_voxels(name, dims)
    slices, gap, directions, origin = _order(slices, name)
    first = slices[0][1]
    px = _floats(first, "PixelSpacing", 2, f"{name}: {slices[0][0]}")
    row_mm, col_mm = (float(px[0]), float(px[1])) if px is not None else (1.0, 1.0)
    vol = np.empty(dims, np.float32)
    for k, (fname, ds) in enumerate(slices):
        try:
            # slope / intercept may differ per slice: each slice gets its own modality LUT
            vol[k] = apply_modality_lut(ds.pixel_array, ds)
        except Exception as e:  # pydicom raises many types for bad/unsupported pixel data
            raise _bad(name, f"{fname}: DICOM pixel data cannot be decoded "
                             f"({type(e).__name__})") from None
    if not np.isfinite(vol).all():
        raise _bad(name, "series holds NaN or infinite values")
    photometric = str(first.get("PhotometricInterpretation", "MONOCHROME2"))
    out = apply_window(vol, pick_window(window, dicom_window(first), vol), photometric)
    spacing = (abs(gap), row_mm, col_mm)
    affine = np.eye(4)
    affine[:3, :3] = directions * np.array(spacing)
    affine[:3, 3] = origin
    log.debug("assembled a series of %d slices, %dx%d", *dims)  # sizes only, never headers
    return SeriesVolume(out, spacing, affine)


def _looks_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    if path.suffix:
        return False
    try:  # exports often name slices IM0001 with no suffix: the preamble tells
        with path.open("rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def group_series(files: list[Path]) -> list[tuple[str | None, list[Path]]]:
    """The files of one folder → units to score: the slices of each DICOM series (two or more
    files sharing a SeriesInstanceUID, every one with an ImagePositionPatient) as one unit
    (uid, files), every other file alone (None, [file]). Only those two tags are read."""
    import pydicom

    by_uid: dict[str, list[Path]] = defaultdict(list)
    units: list[tuple[str | None, list[Path]]] = []
    for f in files:
        uid = None
        if _looks_dicom(f):
            try:
                ds = pydicom.dcmread(f, force=True, stop_before_pixels=True,
                                     specific_tags=["SeriesInstanceUID", "ImagePositionPatient"])
                if ds.get("ImagePositionPatient") is not None:
                    uid = str(ds.get("SeriesInstanceUID", "") or "")
            except Exception:  # unreadable here: it becomes a row of its own and is rejected
                uid = None
        if uid is None:
            units.append((None, [f]))
        else:
            by_uid[uid].append(f)
    for uid, group in by_uid.items():
        if len(group) > 1:
            units.append((uid, group))
        else:
            units.extend((None, [f]) for f in group)
    return sorted(units, key=lambda u: u[1][0])
