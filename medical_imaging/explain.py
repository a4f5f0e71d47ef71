"""Grad-CAM explanations (MONAI's `GradCAM`) for any supported backbone, as PNG overlays.

The target layer is picked automatically (the network's last Conv2d or Conv3d), so a user never
names a layer. For an ensemble the map is the mean of its members' Grad-CAMs (each member's own
last conv), as its answer is the mean of their logits. For a 3D network the CAM is upsampled to
the whole volume and `gradcam_montage` shows the k axial slices holding the most CAM mass.
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

__all__ = ["GradCamExplainer", "overlay_png", "overlay_rgb", "gradcam_montage",
           "salient_slices", "montage_png", "explain_file"]
_OVERLAY_SIZE = 256  # 28-px inputs are unreadable as-is: overlays are drawn at least this big
_TILE_SIZE = 160  # one montage tile (a 28-px slice drawn ~6x)
_CAPTION_H = 18


class GradCamExplainer:
    """MONAI GradCAM on a private copy of `model`: MONAI registers permanent hooks on the target
    layer, so the serving model stays hook-free and the hooks are registered once, not per call.
    """

    def __init__(self, model: torch.nn.Module, layer: str | None = None):
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(True)  # gradients must flow back to the target layer
        self._nets = (list(self.model.members) if isinstance(self.model, Ensemble)
                      else [self.model])
        self._layer = layer
        self.layers: list[str] = []
        self.cams: list[Any] = []
        self._shape: tuple[int, ...] | None = None
        self._is_3d = any(isinstance(m, torch.nn.Conv3d) for m in self.model.modules())
        if not self._is_3d:  # 2D: the last conv, hooked once now
            self._hook([layer or last_conv_layer(n) for n in self._nets])
        else:
            self._clean = copy.deepcopy(self.model)

    def _hook(self, layers: list[str]) -> None:
        from monai.visualize import GradCAM

        self.layers = layers
        self.cams = [GradCAM(nn_module=n, target_layers=name)
                     for n, name in zip(self._nets, layers, strict=True)]

    def _ready(self, shape: tuple[int, ...]) -> None:
        """3D: the target layer depends on the volume size (see `last_conv_layer`); chosen on
        the first call and again only when the size changes."""
        if self._is_3d and shape != self._shape:
            if self.cams:  # MONAI's hooks are permanent: hook a fresh, hook-free copy
                self.model = copy.deepcopy(self._clean)
                self._nets = (list(self.model.members) if isinstance(self.model, Ensemble)
                              else [self.model])
            self._hook([self._layer or last_conv_layer(n, shape) for n in self._nets])
            self._shape = shape

    def __call__(self, x: torch.Tensor, class_idx: int) -> np.ndarray:
        """Grad-CAM of `class_idx` for one (C, H, W) image → (H, W) map in [0, 1], or one
        (C, D, H, W) volume → (D, H, W) map (MONAI upsamples the CAM to the input size)."""
        self._ready(tuple(x.shape))
        dev = next(self.model.parameters()).device
        maps = []
        with torch.enable_grad():
            for cam in self.cams:
                maps.append(cam(x.unsqueeze(0).to(dev), class_idx=int(class_idx))[0, 0])
        for n in self._nets:
            n.zero_grad(set_to_none=True)
        heat = torch.stack(maps).mean(0).detach().cpu().numpy().astype(np.float32)
        return np.clip(np.nan_to_num(heat), 0.0, 1.0)


def _jet(v: np.ndarray) -> np.ndarray:
    """The 'jet' colour map (blue → red) for values in [0, 1] → (..., 3) in [0, 1]; written out
    because the suite does not depend on matplotlib for four piecewise-linear ramps."""
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return np.stack([r, g, b], -1)


def overlay_rgb(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45,
                min_size: int = _OVERLAY_SIZE) -> np.ndarray:
    """(h, w, 3) uint8: the (C, H, W) image in grey/RGB under the (H, W) heat map in 'jet',
    blended, scaled up so its longer side is at least `min_size`."""
    from PIL import Image

    img = np.asarray(image, np.float32)
    rgb = np.repeat(img[:1], 3, 0) if img.shape[0] == 1 else img[:3]
    h, w = rgb.shape[1:]
    scale = max(1.0, min_size / max(h, w))
    size = (round(w * scale), round(h * scale))
    base = Image.fromarray((rgb.transpose(1, 2, 0) * 255).round().astype(np.uint8)).resize(
        size, Image.Resampling.BILINEAR)
    hm = Image.fromarray((np.clip(heat, 0, 1) * 255).round().astype(np.uint8)).resize(
        size, Image.Resampling.BILINEAR)
    colour = _jet(np.asarray(hm, np.float32) / 255.0)
    out = (1 - alpha) * np.asarray(base, np.float32) / 255.0 + alpha * colour
    return (out * 255).round().astype(np.uint8)


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def overlay_png(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> bytes:
    """PNG bytes: the (C, H, W) image in grey/RGB under the heat map in 'jet', blended."""
    return _png(overlay_rgb(image, heat, alpha))


def salient_slices(heat: np.ndarray, k: int) -> list[int]:
    """Indices (ascending) of the `k` axial slices (first axis of a (D, H, W) map) holding the
    most CAM mass; ties go to the lower index."""
    mass = np.asarray(heat, np.float64).reshape(len(heat), -1).sum(1)
    k = max(1, min(int(k), len(mass)))
    order = np.argsort(-mass, kind="stable")[:k]
    return sorted(int(i) for i in order)


def montage_png(volume: np.ndarray, heat: np.ndarray, slices: list[int],
                alpha: float = 0.45) -> bytes:
    """PNG grid (up to 3 columns) of the (C, D, H, W) volume's `slices` with the (D, H, W) heat
    map overlaid, each tile captioned with its slice index."""
    from PIL import Image, ImageDraw

    vol = np.asarray(volume, np.float32)
    tiles = [overlay_rgb(vol[:, z], heat[z], alpha, _TILE_SIZE) for z in slices]
    th, tw = tiles[0].shape[:2]
    cols = min(3, len(tiles))
    rows = -(-len(tiles) // cols)
    grid = Image.new("RGB", (cols * tw, rows * (th + _CAPTION_H)), (0, 0, 0))
    draw = ImageDraw.Draw(grid)
    for n, (z, tile) in enumerate(zip(slices, tiles, strict=True)):
        x0, y0 = (n % cols) * tw, (n // cols) * (th + _CAPTION_H)
        grid.paste(Image.fromarray(tile), (x0, y0 + _CAPTION_H))
        draw.text((x0 + 4, y0 + 3), f"slice {z}/{vol.shape[1] - 1}", fill=(255, 255, 255))
    return _png(np.asarray(grid))


def gradcam_montage(model: torch.nn.Module | GradCamExplainer, x: torch.Tensor, class_idx: int,
                    k: int = 6) -> tuple[bytes, list[int]]:
    """Grad-CAM of `class_idx` on one volume `x` (1, C, D, H, W) → (PNG montage of the `k`
    axial slices (along D) with the most CAM mass, their indices ascending). Pass a
    `GradCamExplainer` to reuse its hooks across calls."""
    if x.ndim != 5 or len(x) != 1:
        raise ValueError(f"gradcam_montage needs a volume (1, C, D, H, W), got {tuple(x.shape)}")
    vol = x[0]
    explainer = model if isinstance(model, GradCamExplainer) else GradCamExplainer(model)
    heat = explainer(vol, class_idx)
    slices = salient_slices(heat, k)
    return montage_png(vol.detach().cpu().numpy(), heat, slices), slices


def _input_bytes(path: Path) -> bytes:
    """A file's bytes; a folder (a DICOM series) as the zip a REST client would send."""
    import zipfile

    if path.is_file():
        return path.read_bytes()
    if not path.is_dir():
        return b""  # missing: the predictor rejects it as empty, naming the file
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
            zf.writestr(f.name, f.read_bytes())
    return buf.getvalue()


def explain_file(image_path: str | Path, out_png: str | Path, bundle: str | Path = "latest",
                 root: str | Path | None = None) -> dict[str, Any]:
    """Predict one image file (2D model) or volume (3D model: a NIfTI file, a zipped DICOM
    series or a folder of one) and write its Grad-CAM PNG: an overlay, or for a 3D model a
    montage of the most salient slices (their indices in `heatmap_slices`); returns the
    prediction."""
    import base64

    from medical_imaging.predictor import MedicalPredictor

    path = Path(image_path)
    predictor = MedicalPredictor.load(bundle, root=root)
    payload = {"image_base64": base64.b64encode(_input_bytes(path)).decode(),
               "filename": path.name, "heatmap": True}
    out = predictor.predict([payload])[0]
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    out_png.write_bytes(base64.b64decode(out.pop("heatmap_png_base64")))
    return {"overlay": str(out_png), **out}
