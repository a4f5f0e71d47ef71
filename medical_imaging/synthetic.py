"""The embedded default data: seeded synthetic 2D phantoms (and 3D volumes), with and without
a lesion.

SYNTHETIC DATA — not patient images. Each phantom is an elliptical body with two darker
"lung" fields, smooth texture and noise; a positive case adds one small bright round lesion
inside a lung field. `make_volumes` is the 3D counterpart (an ellipsoid body, two darker
fields, a small bright ball for a positive case). Used by `make demo`, `train_default`, the
benchmarks and the tests; labelled synthetic in bundles, reports and responses.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SYNTHETIC_LABELS", "make_phantoms", "phantom_splits", "make_volumes"]
SYNTHETIC_LABELS = ("no_lesion", "lesion")


def _ellipse(yy, xx, cy, cx, ry, rx) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def make_phantoms(n: int, size: int = 28, seed: int = 0,
                  positive_rate: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """`n` uint8 phantoms (n, size, size) and int64 labels (1 = lesion)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    s = size / 28.0
    images = np.empty((n, size, size), np.uint8)
    labels = (rng.random(n) < positive_rate).astype(np.int64)
    for i in range(n):
        cy, cx = size / 2 + rng.normal(0, 1.0 * s, 2)
        body = _ellipse(yy, xx, cy, cx, rng.uniform(10, 12.5) * s, rng.uniform(11, 13) * s)
        img = np.where(body, rng.uniform(0.55, 0.7), 0.05).astype(np.float32)
        lungs = []
        for side in (-1, 1):
            ly, lx = cy + rng.normal(0, 0.5 * s), cx + side * rng.uniform(4.5, 5.5) * s
            ry, rx = rng.uniform(5.5, 7.5) * s, rng.uniform(2.8, 3.8) * s
            lungs.append((ly, lx, ry, rx))
            img[_ellipse(yy, xx, ly, lx, ry, rx)] = rng.uniform(0.2, 0.3)
        # low-frequency texture: a few random Gaussian bumps
        for _ in range(4):
            by, bx = rng.uniform(0, size, 2)
            img += rng.normal(0, 0.04) * np.exp(-((yy - by) ** 2 + (xx - bx) ** 2)
                                                 / (2 * (4 * s) ** 2))
        if labels[i]:
            ly, lx, ry, rx = lungs[rng.integers(2)]
            t = rng.uniform(0, 2 * np.pi)
            r = rng.uniform(0, 0.5)
            py, px = ly + r * ry * np.sin(t), lx + r * rx * np.cos(t)
            rad = rng.uniform(1.2, 2.2) * s
            img += rng.uniform(0.25, 0.4) * np.exp(-((yy - py) ** 2 + (xx - px) ** 2)
                                                    / (2 * rad ** 2))
        img += rng.normal(0, 0.035, img.shape)
        images[i] = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    return images, labels


def phantom_splits(n_train: int, n_val: int, n_test: int, size: int = 28,
                   seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MedMNIST-shaped splits of phantoms (independent seeds per split)."""
    return {
        name: make_phantoms(n, size, seed * 1000 + k)
        for k, (name, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test)))
    }


def _ellipsoid(grid: tuple[np.ndarray, ...], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1.0


def make_volumes(n: int, size: int = 28, seed: int = 0,
                 positive_rate: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """`n` uint8 volumes (n, size, size, size) (D, H, W) and int64 labels (1 = lesion)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[0:size, 0:size, 0:size].astype(np.float32) + 0.5
    s = size / 28.0
    out = np.empty((n, size, size, size), np.uint8)
    labels = (rng.random(n) < positive_rate).astype(np.int64)
    for i in range(n):
        c = size / 2 + rng.normal(0, 1.0 * s, 3)
        r = rng.uniform(9, 12, 3) * s
        body = _ellipsoid((zz, yy, xx), c, r)
        vol = np.where(body, rng.uniform(0.55, 0.7), 0.05).astype(np.float32)
        fields = []
        for side in (-1, 1):
            fc = c + np.array([0, 0, side * rng.uniform(4.0, 5.0) * s])
            fr = np.array([rng.uniform(5, 7), rng.uniform(4, 6), rng.uniform(2.5, 3.5)]) * s
            fields.append((fc, fr))
            vol[_ellipsoid((zz, yy, xx), fc, fr)] = rng.uniform(0.2, 0.3)
        if labels[i]:
            fc, fr = fields[rng.integers(2)]
            p = fc + rng.uniform(-0.4, 0.4, 3) * fr
            rad = rng.uniform(1.5, 2.5) * s
            d2 = (zz - p[0]) ** 2 + (yy - p[1]) ** 2 + (xx - p[2]) ** 2
            vol += rng.uniform(0.3, 0.45) * np.exp(-d2 / (2 * rad ** 2))
        vol += rng.normal(0, 0.035, vol.shape)
        out[i] = np.clip(vol * 255.0, 0, 255).astype(np.uint8)
    return out, labels
