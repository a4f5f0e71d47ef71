"""What medical monitoring watches: a PHI-free summary of each image, never its pixels.

Per image: the intensity summary of the normalised model input (mean, std, 5th/50th/95th
percentiles), the decoded image size (height, width), and where it came from: the DICOM
Modality and PhotometricInterpretation when the file is DICOM, else the format ("png", "jpeg",
"nifti") and MONOCHROME2/RGB by channel count. No patient or study field is ever read.

`image_features` gives these both at training time (the reference profile, on the validation
images) and at serving time (`MedicalPredictor.monitor_record`, one image).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictStr

__all__ = ["INTENSITY", "image_features", "record_features", "source_meta", "build_profile",
           "TRAINING_SOURCE", "MedicalFeedbackItem", "MedicalFeedbackRequest"]

INTENSITY = ("intensity_mean", "intensity_std", "intensity_p05", "intensity_p50",
             "intensity_p95")
_LEVELS = (0.05, 0.5, 0.95)
# 2D training arrays (synthetic phantoms, MedMNIST .npz) are 8-bit images: as if sent as PNG
TRAINING_SOURCE = "png"


def _photometric_of(channels: int) -> str:
    return "RGB" if channels == 3 else "MONOCHROME2"


def source_meta(data: bytes, fmt: str, channels: int) -> tuple[str, str]:
    """(modality, photometric) of a decoded file: from the DICOM header (two tags, read without
    pixel data), else (format, MONOCHROME2 | RGB)."""
    if fmt == "dicom":
        import pydicom

        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True,
                                 specific_tags=["Modality", "PhotometricInterpretation"])
            return (str(ds.get("Modality", "") or "unknown"),
                    str(ds.get("PhotometricInterpretation", "") or _photometric_of(channels)))
        except Exception:  # the pixels already decoded: an odd header only loses the labels
            return "unknown", _photometric_of(channels)
    return fmt, _photometric_of(channels)


def image_features(x: Any, sizes: Any, modality: list[str], photometric: list[str]
                   ) -> dict[str, Any]:
    """Model inputs (n, C, [D,] S, S) in [0, 1], original sizes (n, 2) and source labels →
    {monitored name: column}."""
    flat = np.sort(np.asarray(x, dtype=np.float64).reshape(len(modality), -1), axis=1)
    # np.quantile's linear interpolation on the sorted rows: the same numbers at a tenth of
    # its per-call cost (this runs per served image)
    pos = np.array(_LEVELS) * (flat.shape[1] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, flat.shape[1] - 1)
    q = flat[:, lo] * (1 - (pos - lo)) + flat[:, hi] * (pos - lo)
    mean = flat.mean(1)
    sizes = np.asarray(sizes, dtype=np.float64).reshape(len(modality), 2)
    return {"intensity_mean": mean,
            "intensity_std": np.sqrt(np.maximum((flat * flat).mean(1) - mean * mean, 0.0)),
            "intensity_p05": q[:, 0], "intensity_p50": q[:, 1], "intensity_p95": q[:, 2],
            "height": sizes[:, 0], "width": sizes[:, 1],
            "modality": list(modality), "photometric": list(photometric)}


def record_features(x: Any, size: tuple[int, int], modality: str, photometric: str
                    ) -> dict[str, float | str]:
    """One served image's summary (the same names as `image_features`)."""
    cols = image_features(np.asarray(x)[None], [size], [modality], [photometric])
    return {k: (v[0] if isinstance(v, list) else float(v[0])) for k, v in cols.items()}


def build_profile(images: Any, probs: np.ndarray, task: str, classes: list[str],
                  metrics: dict[str, float], source: str = TRAINING_SOURCE) -> dict[str, Any]:
    """The bundle's reference profile from validation model inputs (n, C, [D,] S, S) and their
    calibrated probabilities (n, K): image summaries, and P(positive) (binary) or the top
    probability. `source` is the format the training arrays stand for."""
    from common.monitoring.profile import build_profile as build
    from common.monitoring.profile import categorical_ref, numeric_ref

    x = np.asarray(images, dtype=np.float32)
    n, c = len(x), int(x.shape[1])
    cols = image_features(x, [x.shape[-2:]] * n, [source] * n,
                          [_photometric_of(c)] * n)
    feats = {k: categorical_ref(v) if isinstance(v, list) else numeric_ref(v)
             for k, v in cols.items()}
    mon_task = "binary" if task == "binary" else "multilabel" if task == "multilabel" \
        else "multiclass"
    p = np.asarray(probs, dtype=np.float64)
    score = p[:, 1] if mon_task == "binary" else p.max(1)
    return build(feats, task=mon_task, score=numeric_ref(score), metrics=metrics,
                 classes=classes, score_name="score")


class MedicalFeedbackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: StrictStr = Field(min_length=1, max_length=128,
                          description="the prediction's case_id, or its X-Request-ID")
    label: StrictStr = Field(min_length=1, max_length=128,
                             description="the confirmed diagnosis: one of the model's class names")


class MedicalFeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    feedback: list[MedicalFeedbackItem] = Field(min_length=1, max_length=10_000)
