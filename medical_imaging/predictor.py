"""The medical Predictor: base64 image (PNG/JPEG/DICOM/NIfTI) → calibrated class probabilities,
label, abstention flag and an optional Grad-CAM overlay PNG."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from common.errors import InvalidInput
from common.predictor import Predictor
from medical_imaging.explain import GradCamExplainer, overlay_png
from medical_imaging.io import decode_image, to_model_input
from medical_imaging.metrics import probabilities
from medical_imaging.model import build_model

__all__ = ["PredictRequest", "PredictResponse", "MedicalPredictor", "DEFAULT_MAX_IMAGE_BYTES"]
DEFAULT_MAX_IMAGE_BYTES = 32 * 1024 * 1024
_DECIMALS = 6  # probabilities are rounded so answers do not depend on float summation order


class PredictRequest(BaseModel):
    """One image, base64-encoded (the multipart route fills the same model from an upload)."""

    model_config = ConfigDict(extra="forbid")
    image_base64: str = Field(description="the file's bytes (PNG, JPEG, DICOM or NIfTI), base64")
    filename: str | None = Field(None, max_length=255, description="used in error messages")
    heatmap: bool = Field(False, description="also return a Grad-CAM overlay PNG (base64)")
    abstain_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="abstain below this confidence (default: the bundle's)")


class ModelInfo(BaseModel):
    name: str
    version: str
    sha256: str | None


class PredictResponse(BaseModel):
    filename: str | None = Field(None, description="the request's filename, echoed")
    task: str
    probabilities: dict[str, float]
    label: str | None = Field(description="predicted class; None when abstained")
    labels: list[str] = Field(description="multi-label: every label over 0.5; else [label]")
    confidence: float
    abstained: bool
    heatmap_png_base64: str | None = None
    synthetic: bool = Field(description="true when the model was trained on synthetic phantoms")
    model: ModelInfo


class _Item:
    __slots__ = ("x", "image", "heatmap", "threshold", "filename")

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
        image = decode_image(data, name)
        x = to_model_input(image, self.in_channels, self.image_size)
        threshold = (request.abstain_threshold if request.abstain_threshold is not None
                     else self.default_threshold)
        return _Item(x, image, request.heatmap, threshold, request.filename)

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
        out = self.net(x).float()
        if self.tta:
            out = (out + self.net(torch.flip(x, dims=[-1])).float()) / 2
        out = out.cpu().numpy()
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
        heat = None
        if item.heatmap:
            if self._explainer is None:
                self._explainer = GradCamExplainer(self.net)
            cam = self._explainer(item.x, top)
            heat = base64.b64encode(overlay_png(item.image, cam)).decode()
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
            "synthetic": self.synthetic,
            "model": self._model_info,
        }
