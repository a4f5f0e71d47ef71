"""The medical Predictor: base64 image (PNG/JPEG/DICOM/NIfTI) or volume (NIfTI 3D/4D, zipped
DICOM series) → calibrated class probabilities, label, abstention flag and an optional Grad-CAM
overlay PNG (3D: a montage of the most salient slices, with their indices).

The bundle's `net.dimensions` (2 or 3; missing: 2) decides what an input must be: a 2D model
refuses a volume and a 3D model a 2D image, each with the file name and the shape it got."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from common.errors import InvalidInput
from common.predictor import Predictor
from medical_imaging.explain import GradCamExplainer, gradcam_montage, overlay_png
from medical_imaging.io import decode_image, sniff_format, to_model_input
from medical_imaging.metrics import probabilities
from medical_imaging.model import build_model, dimensions, tune_allocator
from medical_imaging.monitoring import record_features, source_meta
from medical_imaging.series import is_zip
from medical_imaging.train import model_logits
from medical_imaging.volume import decode_volume, volume_shape, volume_to_model_input

__all__ = ["PredictRequest", "PredictResponse", "MedicalPredictor", "DEFAULT_MAX_IMAGE_BYTES"]
DEFAULT_MAX_IMAGE_BYTES = 32 * 1024 * 1024
_DECIMALS = 6  # probabilities are rounded so answers do not depend on float summation order
CASE_ID_DOC = ("your id for this case (1..128 characters, no patient data): echoed, logged, and "
               "the id to send its diagnosis to /medical/v1/feedback by")


class PredictRequest(BaseModel):
    """One image, base64-encoded (the multipart route fills the same model from an upload)."""

    model_config = ConfigDict(extra="forbid")
    image_base64: str = Field(description="the file's bytes (PNG, JPEG, DICOM or NIfTI), base64")
    filename: str | None = Field(None, max_length=255, description="used in error messages")
    heatmap: bool = Field(False, description="also return a Grad-CAM overlay PNG (base64)")
    abstain_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="abstain below this confidence (default: the bundle's)")
    time_index: int = Field(0, ge=0, description="4D NIfTI: the time point to use")
    series_uid: str | None = Field(
        None, min_length=1, max_length=64,
        description="zipped DICOM series holding several series: the SeriesInstanceUID to use")
    window_center: float | None = Field(
        None, ge=-1e9, le=1e9, description="DICOM window centre (default: the file's)")
    window_width: float | None = Field(
        None, gt=1.0, le=1e9, description="DICOM window width (default: the file's)")
    case_id: str | None = Field(None, min_length=1, max_length=128, description=CASE_ID_DOC)


class ModelInfo(BaseModel):
    name: str
    version: str
    sha256: str | None


class PredictResponse(BaseModel):
    filename: str | None = Field(None, description="the request's filename, echoed")
    case_id: str | None = Field(None, description="the request's case_id, echoed")
    task: str
    probabilities: dict[str, float]
    label: str | None = Field(description="predicted class; None when abstained")
    labels: list[str] = Field(description="multi-label: every label over 0.5; else [label]")
    confidence: float
    abstained: bool
    heatmap_png_base64: str | None = None
    heatmap_slices: list[int] | None = Field(
        None, description="3D models: the slice indices (along the model input's depth) shown "
                          "in the heatmap montage")
    synthetic: bool = Field(description="true when the model was trained on synthetic phantoms")
    model: ModelInfo


class _Item:
    __slots__ = ("x", "image", "heatmap", "threshold", "filename", "case_id", "source")

    def __init__(self, x: torch.Tensor, image: np.ndarray, heatmap: bool, threshold: float,
                 filename: str | None):
        self.x, self.image, self.heatmap, self.threshold = x, image, heatmap, threshold
        self.filename = filename


class MedicalPredictor(Predictor):
    vertical = "medical"
    request_model = PredictRequest
    response_model = PredictResponse
    max_batch_size = 64
    max_wait_ms = 4.0
    batch_job_size = 64

    def setup(self, device: torch.device) -> None:
        cfg = self.bundle.model_config
        self.device = device
        net_cfg = {k: v for k, v in cfg["net"].items() if k != "pretrained"}  # weights: bundle's
        self.net = build_model(net_cfg)
        self.net.load_state_dict(self.bundle.state_dict())
        self.net.to(device).eval()
        self.task: str = cfg["task"]
        self.labels: list[str] = list(cfg["labels"])
        self.temperature = float(cfg.get("temperature", 1.0))
        self.in_channels = int(net_cfg.get("in_channels", 1))
        self.image_size = int(net_cfg.get("image_size", 28))
        self.dims = dimensions(net_cfg)
        if self.dims == 3:
            tune_allocator()  # 3D activations: keep freed memory (see model.tune_allocator)
        spacing = net_cfg.get("spacing") or cfg.get("spacing")  # mm per voxel, when trained so
        self.spacing = tuple(float(v) for v in spacing) if spacing else None
        self.synthetic = bool(cfg.get("synthetic", False))
        self.tta = bool(cfg.get("fit", {}).get("tta", False))  # as calibrated in training
        self.default_threshold = float(self.options.get("abstain_threshold")
                                       or cfg.get("abstain_threshold") or 0.0)
        self.max_image_bytes = int(self.options.get("max_image_bytes", DEFAULT_MAX_IMAGE_BYTES))
        self._explainer: GradCamExplainer | None = None
        info = self.info()
        self._model_info = ModelInfo(name=info["name"], version=info["version"],
                                     sha256=info["sha256"])

    # ---- decode -------------------------------------------------------------------------
    def decode(self, request: PredictRequest) -> _Item:
        name = request.filename or "image"
        # base64 grows data by 4/3: reject oversize input before decoding it
        if len(request.image_base64) > self.max_image_bytes * 4 // 3 + 4:
            raise InvalidInput("image_base64", f"{name}: larger than {self.max_image_bytes} bytes")
        try:
            data = base64.b64decode(request.image_base64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("image_base64", f"{name}: not valid base64") from None
        window = _window(request)
        if self.dims == 3:
            vol = decode_volume(data, name, time_index=request.time_index,
                                series_uid=request.series_uid, window=window)
            image = vol.array
            x = volume_to_model_input(vol, self.in_channels, self.image_size, self.spacing)
            fmt = "dicom-series" if is_zip(data) else "nifti"
        else:
            shape = (decode_volume(data, name, series_uid=request.series_uid, window=window).shape
                     if is_zip(data) else volume_shape(data, name, request.time_index))
            if shape is not None:
                raise InvalidInput("image", f"{name}: this model takes 2D images; got a 3D "
                                            f"volume ({'×'.join(str(d) for d in shape)})")
            image = decode_image(data, name, window, time_index=request.time_index)
            x = to_model_input(image, self.in_channels, self.image_size)
            fmt = sniff_format(data, name)
        threshold = (request.abstain_threshold if request.abstain_threshold is not None
                     else self.default_threshold)
        item = _Item(x, image, request.heatmap, threshold, request.filename)
        # monitoring: the case id, and the source's modality / photometric (never other fields)
        item.case_id = request.case_id
        item.source = source_meta(data, fmt, int(image.shape[0]))
        return item

    def monitor_record(self, request: PredictRequest, output: dict[str, Any],
                       response: PredictResponse) -> dict[str, Any]:
        """A PHI-free summary (medical_imaging.monitoring): intensities, size, source labels;
        P(positive) for binary, else the top probability and all of them."""
        item = output["_item"]
        feats = record_features(item.x.numpy(), tuple(item.image.shape[-2:]), *item.source)
        probs = [response.probabilities[lab] for lab in self.labels]
        score = probs[1] if self.task == "binary" else max(probs)
        return {"id": item.case_id, "features": feats, "score": score, "probs": probs,
                "prediction": response.label}

    # ---- model --------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> np.ndarray:
        """Raw logits for a (N, C, S, S) batch (what the bench's bare-model path runs).

        oneDNN picks a different convolution kernel for a batch of one than for two or more,
        which changes the last float bits; a single image therefore runs as a pair, so an
        answer does not depend on how the batcher grouped requests (bitwise for the ResNets;
        probabilities are also rounded to 6 decimals for the other backbones)."""
        single = len(x) == 1
        if single:
            x = torch.cat([x, x])
        x = x.to(self.device)
        # the flips training calibrated with (images: horizontal; volumes: each axis)
        out = model_logits(self.net, x, self.tta).cpu().numpy()
        return out[:1] if single else out

    def predict_batch(self, items: list[_Item]) -> list[dict[str, Any]]:
        probs = probabilities(self.task, self.logits(torch.stack([it.x for it in items])),
                              self.temperature)
        return [self._output(it, p) for it, p in zip(items, probs, strict=True)]

    def _output(self, item: _Item, p: np.ndarray) -> dict[str, Any]:
        p = np.round(p.astype(np.float64), _DECIMALS)
        probs = {lab: float(v) for lab, v in zip(self.labels, p, strict=True)}
        if self.task == "multilabel":
            top = int(np.argmax(p))
            # confidence of a multi-label answer: the least certain per-label decision
            confidence = float(np.min(np.maximum(p, 1 - p)))
            positives = [lab for lab, v in probs.items() if v > 0.5]
        else:
            top = int(np.argmax(p))
            confidence = float(p[top])
            positives = [self.labels[top]]
        abstained = confidence < item.threshold
        heat, slices = None, None
        if item.heatmap:
            if self._explainer is None:
                self._explainer = GradCamExplainer(self.net)
            if self.dims == 3:  # a montage of the most salient slices of the model's input
                png, slices = gradcam_montage(self._explainer, item.x[None], top)
            else:
                png = overlay_png(item.image, self._explainer(item.x, top))
            heat = base64.b64encode(png).decode()
        return {
            "filename": item.filename,
            "task": self.task,
            "probabilities": probs,
            "label": None if abstained or self.task == "multilabel" and not positives
            else (positives[0] if self.task != "multilabel" else self.labels[top]),
            "labels": [] if abstained else positives,
            "confidence": round(confidence, _DECIMALS),
            "abstained": abstained,
            "heatmap_png_base64": heat,
            "heatmap_slices": slices,
            "synthetic": self.synthetic,
            "model": self._model_info,
            "case_id": item.case_id,
            "_item": item,  # for monitor_record; encode drops it
        }


def _window(request: PredictRequest) -> tuple[float | None, float | None] | None:
    """The request's DICOM window; a half not given keeps the file's (`io.pick_window`)."""
    c, w = request.window_center, request.window_width
    return None if c is None and w is None else (c, w)
