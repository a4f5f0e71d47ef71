"""Model bundles: a directory holding `model.safetensors`, `manifest.json` and vertical extras.

Layout under a store root (default `$VERTICALS_HOME` or `./artifacts`):
    <root>/<vertical>/<version>/{model.safetensors, manifest.json, ...extras}
A bundle is written into a hidden temp directory, fsynced, then renamed into place, so a reader
never sees half a bundle; `latest` is the newest version whose manifest checks out. Weights are
safetensors and extras are JSON or the library's own format (never pickle).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from common.errors import BundleError

__all__ = [
    "Bundle",
    "BundleWriter",
    "default_root",
    "load_bundle",
    "list_bundles",
    "resolve_bundle",
    "fingerprint",
    "library_versions",
]
log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"
_TRACKED_LIBS = (
    "torch",
    "torchvision",
    "numpy",
    "pandas",
    "scikit-learn",
    "transformers",
    "tokenizers",
    "timm",
    "monai",
    "xgboost",
    "faiss-cpu",
    "safetensors",
)


_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")


def default_root() -> Path:
    return Path(os.environ.get("VERTICALS_HOME", "artifacts"))


def _inside(base: Path, rel: str, what: str) -> Path:
    """`base / rel` for a relative POSIX path that stays inside `base` (symlinks included);
    BundleError naming `rel` otherwise: a manifest or ref must not reach outside its bundle."""
    pure = PurePosixPath(rel)
    if (not rel or "\\" in rel or ":" in rel or pure.is_absolute() or ".." in pure.parts):
        raise BundleError(f"{base}: {what} {rel!r} is not a plain relative path inside the "
                          "bundle", field="bundle")
    p = base / pure
    if not p.resolve().is_relative_to(base.resolve()):
        raise BundleError(f"{base}: {what} {rel!r} resolves outside the bundle", field="bundle")
    return p


def _store_dir(root: str | Path | None, vertical: str) -> Path:
    """`<root>/<vertical>`; the vertical must be a plain name, so `../x` cannot leave the store."""
    if not _PLAIN_NAME.match(vertical):
        raise BundleError(f"{vertical!r} is not a vertical name", field="bundle")
    return (Path(root) if root is not None else default_root()) / vertical


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in _TRACKED_LIBS:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(*parts: Any) -> str:
    """sha256 over data: bytes, str, files/paths, numpy arrays, DataFrames, or iterables of them."""
    import numpy as np
    import pandas as pd

    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, bytes):
            h.update(x)
        elif isinstance(x, Path):
            h.update(_sha256(x).encode())
        elif isinstance(x, str):
            h.update(x.encode())
        elif isinstance(x, np.ndarray):
            h.update(str((x.dtype, x.shape)).encode())
            h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, pd.DataFrame):
            h.update(",".join(map(str, x.columns)).encode())
            h.update(pd.util.hash_pandas_object(x, index=False).values.tobytes())
        elif isinstance(x, torch.Tensor):
            feed(x.detach().cpu().numpy())
        elif isinstance(x, Iterable):
            for y in x:
                feed(y)
        else:
            h.update(repr(x).encode())

    feed(parts)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Bundle:
    """A verified, published bundle on disk."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = Path(path)
        self.manifest = manifest

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def model_config(self) -> dict[str, Any]:
        return self.manifest.get("model", {}).get("config", {})

    def state_dict(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        return load_file(str(self.path / WEIGHTS), device=str(device))

    def file(self, name: str) -> Path:
        p = _inside(self.path, name, "file")
        if not p.exists():
            raise BundleError(f"bundle {self.path} has no file {name!r}", field="bundle")
        return p

    def read_json(self, name: str) -> Any:
        return json.loads(self.file(name).read_text())

    def __repr__(self) -> str:
        return f"Bundle({self.manifest.get('vertical')}/{self.version} at {self.path})"


class BundleWriter:
    """Builds a bundle in a temp dir and publishes it atomically on `publish()`.

    w = BundleWriter(root, vertical="fraud", name="fraud-xgb")
    w.save_weights(model.state_dict())
    w.add_json("features.json", {...}); w.add_file("booster.json", path)
    bundle = w.publish(model_class="...", model_config={...}, metrics={...}, data_fp=...)
    """

    def __init__(self, root: str | Path | None, vertical: str, name: str | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.vertical = vertical
        self.name = name or vertical
        (self.root / vertical).mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root / vertical))
        self._weights_saved = False

    @property
    def dir(self) -> Path:
        """Where extras may be written directly (`tok.save_pretrained(w.dir / 'tok')`)."""
        return self.tmp

    def save_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        # safetensors refuses shared storage and non-contiguous tensors: clone to be safe.
        clean = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
        save_file(clean, str(self.tmp / WEIGHTS))
        self._weights_saved = True

    def add_json(self, name: str, obj: Any) -> Path:
        p = _inside(self.tmp, name, "file")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
        return p

    def add_file(self, name: str, src: str | Path) -> Path:
        p = _inside(self.tmp, name, "file")
        p.parent.mkdir(parents=True, exist_ok=True)
        if Path(src).is_dir():
            shutil.copytree(src, p, dirs_exist_ok=True)
        else:
            shutil.copyfile(src, p)
        return p

    def add_bytes(self, name: str, data: bytes) -> Path:
        p = _inside(self.tmp, name, "file")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return p

    def publish(
        self,
        model_class: str,
        model_config: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        data_fingerprint: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Bundle:
        if not self._weights_saved:
            # Non-neural models (trees, closed-form) still carry a (possibly empty) weights file.
            save_file({}, str(self.tmp / WEIGHTS))
        now = datetime.now(UTC)
        version = now.strftime("%Y%m%dT%H%M%S%fZ")
        files = {}
        for p in sorted(self.tmp.rglob("*")):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
                rel = p.relative_to(self.tmp).as_posix()
                files[rel] = {"sha256": _sha256(p), "bytes": p.stat().st_size}
        manifest = {
            "name": self.name,
            "vertical": self.vertical,
            "version": version,
            "created_at": now.isoformat(),
            "model": {"class": model_class, "config": model_config or {}},
            "metrics": metrics or {},
            "data_fingerprint": data_fingerprint,
            "libraries": library_versions(),
            "files": files,
            "extra": extra or {},
        }
        mpath = self.tmp / MANIFEST
        mpath.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        with open(mpath, "rb") as f:
            os.fsync(f.fileno())
        _fsync_dir(self.tmp)
        final = self.root / self.vertical / version
        os.rename(self.tmp, final)
        _fsync_dir(final.parent)
        return Bundle(final, manifest)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _verify(path: Path) -> Bundle:
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{path} is not a bundle: {MANIFEST} is missing", field="bundle")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{mpath} is not valid JSON: {e}", field="bundle") from None
    files = manifest.get("files", {})
    if WEIGHTS not in files:
        raise BundleError(f"{path}: manifest lists no {WEIGHTS}", field="bundle")
    for rel, meta in files.items():
        p = _inside(path, rel, "manifest file")
        if not p.is_file():
            raise BundleError(f"{path}: file {rel} listed in the manifest is missing", "bundle")
        if _sha256(p) != meta["sha256"]:
            raise BundleError(f"{path}: checksum mismatch for {rel} (corrupt or edited)", "bundle")
    return Bundle(path, manifest)


def list_bundles(root: str | Path | None = None, vertical: str | None = None) -> list[Path]:
    """Published bundle dirs (newest last), without verifying checksums. A bundle dir that is a
    link leading out of the store is ignored: `latest` never resolves outside `root`."""
    root = Path(root) if root is not None else default_root()
    dirs = [_store_dir(root, vertical)] if vertical else [d for d in root.glob("*") if d.is_dir()]
    real_root = root.resolve()
    out = [
        b
        for d in dirs
        if d.is_dir()
        for b in d.iterdir()
        if b.is_dir() and not b.name.startswith(".") and (b / MANIFEST).is_file()
        and b.resolve().is_relative_to(real_root)
    ]
    return sorted(out, key=lambda p: (p.name, p.parent.name))


def resolve_bundle(
    ref: str | Path = "latest", vertical: str | None = None, root: str | Path | None = None
) -> Path:
    """Where a bundle ref points:
    - `latest`: the newest complete bundle of `vertical` under `root`;
    - an existing bundle directory (one holding a manifest), anywhere: that directory;
    - otherwise a version name, looked up only inside `<root>/<vertical>` (so `../../etc`
      cannot leave the store)."""
    if str(ref) != "latest":
        p = Path(ref)
        if p.is_dir():
            if not (p / MANIFEST).is_file():
                raise BundleError(f"{p} is not a bundle: {MANIFEST} is missing", field="bundle")
            return p
        if vertical is None:
            raise BundleError(f"bundle path {p} does not exist", field="bundle")
        store = _store_dir(root, vertical)
        if not _PLAIN_NAME.match(str(ref)):
            raise BundleError(
                f"bundle {str(ref)!r} is neither a bundle directory nor a version name under "
                f"{store}", field="bundle")
        cand = store / str(ref)
        if not cand.is_dir() or not cand.resolve().is_relative_to(store.resolve()):
            raise BundleError(f"no bundle {str(ref)!r} under {store}", field="bundle")
        return cand
    if vertical is None:
        raise BundleError("'latest' needs a vertical name", field="bundle")
    for cand in reversed(list_bundles(root, vertical)):
        try:
            _verify(cand)
            return cand
        except BundleError as e:  # skip broken bundles; an older good one still serves
            log.error("skipping bundle %s: %s", cand.name, e.message)
            continue
    where = Path(root) if root is not None else default_root()
    raise BundleError(
        f"no complete bundle for vertical {vertical!r} under {where}; "
        f"train one with `verticals train {vertical}`",
        field="bundle",
    )


def load_bundle(
    ref: str | Path = "latest", vertical: str | None = None, root: str | Path | None = None
) -> Bundle:
    """Resolve and verify a bundle; raises BundleError on a missing file or bad checksum."""
    bundle = _verify(resolve_bundle(ref, vertical, root))
    if vertical and bundle.manifest.get("vertical") != vertical:
        raise BundleError(
            f"{bundle.path} is a {bundle.manifest.get('vertical')!r} bundle, not {vertical!r}",
            field="bundle",
        )
    return bundle
