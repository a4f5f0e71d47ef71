"""Grad-CAM explanations (MONAI's `GradCAM`) for any supported backbone, as PNG overlays.

The target layer is picked automatically (the network's last Conv2d), so a user never names a
layer. For an ensemble the map is the mean of its members' Grad-CAMs (each member's own last
conv), as its answer is the mean of their logits.
`verticals explain medical IMAGE --out overlay.png` calls `explain_file`.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medical_imaging.model import Ensemble, last_conv_layer

__all__ = ["GradCamExplainer", "overlay_png", "explain_file"]
_OVERLAY_SIZE = 256  # 28-px inputs are unreadable as-is: overlays are drawn at least this big


class GradCamExplainer:
    """MONAI GradCAM on a private copy of `model`: MONAI registers permanent hooks on the target
    layer, so the serving model stays hook-free and the hooks are registered once, not per call.
    """

    def __init__(self, model: torch.nn.Module, layer: str | None = None):
        from monai.visualize import GradCAM

        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(True)  # gradients must flow back to the target layer
        nets = list(self.model.members) if isinstance(self.model, Ensemble) else [self.model]
        self.layers = [layer or last_conv_layer(n) for n in nets]
        self.cams = [GradCAM(nn_module=n, target_layers=name)
                     for n, name in zip(nets, self.layers, strict=True)]

    def __call__(self, x: torch.Tensor, class_idx: int) -> np.ndarray:
        """Grad-CAM of `class_idx` for one (C, H, W) input → (H, W) map in [0, 1]."""
        dev = next(self.model.parameters()).device
        maps = []
        with torch.enable_grad():
            for cam in self.cams:
                maps.append(cam(x.unsqueeze(0).to(dev), class_idx=int(class_idx))[0, 0])
        self.model.zero_grad(set_to_none=True)
        heat = torch.stack(maps).mean(0).detach().cpu().numpy().astype(np.float32)
        return np.clip(np.nan_to_num(heat), 0.0, 1.0)


def _jet(v: np.ndarray) -> np.ndarray:
    """The 'jet' colour map (blue → red) for values in [0, 1] → (..., 3) in [0, 1]; written out
    because the suite does not depend on matplotlib for four piecewise-linear ramps."""
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return np.stack([r, g, b], -1)


def overlay_png(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> bytes:
    """PNG bytes: the (C, H, W) image in grey/RGB under the heat map in 'jet', blended."""
    from PIL import Image

    img = np.asarray(image, np.float32)
    rgb = np.repeat(img[:1], 3, 0) if img.shape[0] == 1 else img[:3]
    h, w = rgb.shape[1:]
    scale = max(1.0, _OVERLAY_SIZE / max(h, w))
    size = (round(w * scale), round(h * scale))
    base = Image.fromarray((rgb.transpose(1, 2, 0) * 255).round().astype(np.uint8)).resize(
        size, Image.Resampling.BILINEAR)
    hm = Image.fromarray((heat * 255).round().astype(np.uint8)).resize(
        size, Image.Resampling.BILINEAR)
    colour = _jet(np.asarray(hm, np.float32) / 255.0)
    out = (1 - alpha) * np.asarray(base, np.float32) / 255.0 + alpha * colour
    buf = io.BytesIO()
    Image.fromarray((out * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def explain_file(image_path: str | Path, out_png: str | Path, bundle: str | Path = "latest",
                 root: str | Path | None = None) -> dict[str, Any]:
    """Predict one image file and write its Grad-CAM overlay PNG; returns the prediction."""
    import base64

    from medical_imaging.predictor import MedicalPredictor

    path = Path(image_path)
    predictor = MedicalPredictor.load(bundle, root=root)
    payload = {"image_base64": base64.b64encode(path.read_bytes()).decode() if path.is_file()
               else "", "filename": path.name, "heatmap": True}
    out = predictor.predict([payload])[0]
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    out_png.write_bytes(base64.b64decode(out.pop("heatmap_png_base64")))
    return {"overlay": str(out_png), **out}
