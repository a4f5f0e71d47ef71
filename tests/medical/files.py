"""Writers of small medical image files for the tests (PNG, JPEG, DICOM, NIfTI)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-998877"


def png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def dicom_bytes(pixels: np.ndarray, *, photometric: str = "MONOCHROME2", slope: float = 1.0,
                intercept: float = 0.0, window: tuple[float, float] | None = None,
                frames: int = 1) -> bytes:
    """A minimal valid DICOM (explicit VR little endian) with patient data in the header."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, PATIENT_ID, "19700101"
    ds.StudyDate = "20240102"
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    rgb = pixels.ndim == (4 if frames > 1 else 3)
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if rgb else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else photometric
    if rgb:
        ds.PlanarConfiguration = 0
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if not rgb:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def nifti_bytes(vol: np.ndarray, gz: bool = False) -> bytes:
    import gzip

    import nibabel as nib

    data = nib.Nifti1Image(vol.astype(np.float32), np.eye(4)).to_bytes()
    return gzip.compress(data) if gz else data


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def series_files(vol: np.ndarray, *, spacing: tuple[float, float, float] = (2.5, 0.7, 0.8),
                 series_uid: str = "1.2.826.0.1.3680043.2.1125.1", slope: float = 1.0,
                 intercept: float = 0.0, window: tuple[float, float] | None = None,
                 origin: tuple[float, float, float] = (-40.0, -30.0, 100.0),
                 prefix: str = "slice") -> dict[str, bytes]:
    """One DICOM file per slice of `vol` (D, H, W, uint16), axial, slice k at z = origin_z +
    k * spacing[0], with patient data in every header; named `{prefix}{k:03d}.dcm`."""
    import pydicom

    out = {}
    for k, plane in enumerate(vol):
        ds = pydicom.dcmread(io.BytesIO(dicom_bytes(plane, slope=slope, intercept=intercept,
                                                    window=window)))
        ds.SeriesInstanceUID = series_uid
        ds.Modality = "CT"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[0]]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.InstanceNumber = k + 1
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out[f"{prefix}{k:03d}.dcm"] = buf.getvalue()
    return out


def zip_bytes(files: dict[str, bytes], compression: int = 8) -> bytes:
    """A zip of `files` (compression: zipfile.ZIP_DEFLATED = 8 or ZIP_STORED = 0)."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()
