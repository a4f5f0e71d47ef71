"""The `medical` vertical: registration, CLI hooks (train / evaluate / score / explain), examples.

    verticals train medical [--preset demo] [--data FILE.npz|FOLDER]
    verticals evaluate medical --protocol medmnist --data pneumoniamnist.npz --out report.json
    verticals score medical FOLDER predictions.csv
    verticals explain medical scan.dcm --out overlay.png
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from common.artifacts import Bundle
from common.errors import InvalidInput
from common.registry import register_vertical
from common.vertical import ExampleRequest, Vertical
from medical_imaging.api import build_router
from medical_imaging.predictor import MedicalPredictor
from medical_imaging.train import FitConfig

__all__ = ["MedicalVertical", "example_png"]
_CHUNK_BYTES = 256 * 1024 * 1024
_PAYLOAD_KEYS = ("image_base64", "filename", "heatmap", "abstain_threshold", "case_id")


def example_png(lesion: bool, seed: int = 7) -> bytes:
    """One SYNTHETIC phantom as PNG bytes (with or without a lesion)."""
    from PIL import Image

    from medical_imaging.synthetic import make_phantoms

    for k in range(64):  # the first phantom of the wanted class from a fixed seed
        imgs, labels = make_phantoms(1, 28, seed + k)
        if bool(labels[0]) == lesion:
            buf = io.BytesIO()
            Image.fromarray(imgs[0]).save(buf, format="PNG")
            return buf.getvalue()
    raise RuntimeError("no phantom of the requested class")  # unreachable at p=0.5


@register_vertical("medical")
class MedicalVertical(Vertical):
    title = "medical imaging: calibrated, explained diagnosis from PNG, DICOM and NIfTI"
    predictor_cls = MedicalPredictor
    protocols = ("medmnist",)
    monitor_task = "binary"  # or multiclass / multilabel: the bundle profile's task prevails

    # ---- serving ------------------------------------------------------------------------
    def build_router(self, served):
        return build_router(served)

    def openapi_schema_updates(self, predictor: MedicalPredictor) -> dict[str, Any]:
        """Feedback labels are the served bundle's class names."""
        return {"MedicalFeedbackItem": {"label": {"enum": list(predictor.labels)}}}

    def example_requests(self) -> list[ExampleRequest]:
        out = []
        for lesion, heatmap in ((True, True), (False, False)):
            payload = {"image_base64": base64.b64encode(example_png(lesion)).decode(),
                       "filename": f"synthetic_phantom_{'lesion' if lesion else 'clear'}.png",
                       "heatmap": heatmap}
            out.append(ExampleRequest(payload=payload, method="POST",
                                      path="/medical/v1/predict", body=payload))
        return out

    # ---- training -----------------------------------------------------------------------
    def train_default(self, root: Path, preset: str = "demo") -> Bundle:
        from medical_imaging.pipeline import PRESETS, synthetic_dataset, train_and_publish

        if preset not in PRESETS:
            raise InvalidInput("preset", f"{preset!r} is not one of {', '.join(PRESETS)}")
        data = synthetic_dataset(preset)
        return train_and_publish(data, root, FitConfig(**PRESETS[preset]["fit"]))

    def add_train_args(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("medical")
        g.add_argument("--arch", default=None, help="resnet18 (default), resnet34, resnet50, "
                       "densenet121, timm:<name>, torchvision:<name> (3D data: the MONAI ones "
                       "in 3D)")
        g.add_argument("--width", type=float, default=None, help="MONAI ResNet width factor")
        g.add_argument("--epochs", type=int, default=None)
        g.add_argument("--task", default=None,
                       choices=["binary", "multiclass", "ordinal", "multilabel"],
                       help="task type (default: inferred from the labels)")
        g.add_argument("--labels", default=None, help="comma-separated class names")
        g.add_argument("--pretrained", default=None, help="local checkpoint to start from")
        g.add_argument("--abstain-threshold", type=float, default=None,
                       help="abstain when confidence is below this (stored in the bundle)")
        g.add_argument("--tta", action="store_true", default=None,
                       help="flip test-time augmentation (calibration, evaluation, serving)")
        g.add_argument("--members", type=int, default=None,
                       help="ensemble size: networks trained with different seeds, logits "
                            "averaged and served together (default 1)")

    def train(self, args: argparse.Namespace) -> Bundle:
        from medical_imaging.pipeline import (
            PRESETS,
            load_dataset,
            synthetic_dataset,
            train_and_publish,
        )

        preset = args.preset if args.preset in PRESETS else "demo"
        if args.data:
            labels = args.labels.split(",") if getattr(args, "labels", None) else None
            data = load_dataset(args.data, getattr(args, "task", None), labels)
        else:
            data = synthetic_dataset(preset)
        if data.get("dimensions", 2) == 3:  # volumes: the 3D evaluation's network and recipe
            from medical_imaging.evaluate import EVAL_PRESETS_3D

            cfg = FitConfig(**EVAL_PRESETS_3D["full" if preset == "full" else "quick"])
        else:
            cfg = FitConfig(**PRESETS[preset]["fit"])
        overrides = {k: getattr(args, k, None)
                     for k in ("arch", "width", "epochs", "pretrained", "tta", "members")}
        cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None},
                      device=getattr(args, "device", None))
        return train_and_publish(data, args.root, cfg, getattr(args, "abstain_threshold", None))

    # ---- evaluation ---------------------------------------------------------------------
    def add_evaluate_args(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("medical")
        g.add_argument("--task", default=None,
                       choices=["binary", "multiclass", "ordinal", "multilabel"],
                       help="MedMNIST task type (default: inferred from the labels)")
        g.add_argument("--arch", dest="med_arch", default=None, help="override the preset's arch")
        g.add_argument("--width", dest="med_width", type=float, default=None)
        g.add_argument("--epochs", dest="med_epochs", type=int, default=None)
        g.add_argument("--lr", dest="med_lr", type=float, default=None)
        g.add_argument("--members", dest="med_members", type=int, default=None,
                       help="ensemble size per seed (default: the preset's, by training-set size)")
        g.add_argument("--average-last", dest="med_average_last", type=int, default=None,
                       help="average each member's weights over its last N epochs (kept when "
                            "val AUC improves on the best single epoch)")
        g.add_argument("--batch-size", dest="med_batch_size", type=int, default=None)
        g.add_argument("--mixup", dest="med_mixup", type=float, default=None,
                       help="mixup Beta(a, a) parameter (0: off)")
        g.add_argument("--label-smoothing", dest="med_label_smoothing", type=float,
                       default=None)
        g.add_argument("--pretrained", default=None, help="local checkpoint to start from")

    def evaluate(self, args: argparse.Namespace) -> dict[str, Any]:
        from medical_imaging.evaluate import run_medmnist

        if args.protocol != "medmnist":
            raise InvalidInput("protocol", f"{args.protocol!r}: medical supports 'medmnist'")
        return run_medmnist(args)

    gate_metric = "auc"

    def gate_score(self, bundle: Bundle, data: Path, args) -> dict[str, float]:
        from medical_imaging.gate import gate_score

        return gate_score(bundle, data)

    # ---- batch scoring ------------------------------------------------------------------
    def add_score_args(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--abstain-threshold", type=float, default=None,
                            help="abstain below this confidence (default: the bundle's)")
        parser.add_argument("--time-index", type=int, default=None,
                            help="4D NIfTI files: the time point to score (default 0)")

    def predictor_options(self, args: argparse.Namespace) -> dict[str, Any]:
        t = getattr(args, "abstain_threshold", None)
        return {"abstain_threshold": t} if t is not None else {}

    def read_batch(self, path: Path, chunk_size: int,
                   args: argparse.Namespace | None) -> Iterator[pd.DataFrame] | None:
        """A folder (recursively) or one file of images → chunks of request rows: each image
        or NIfTI file is a row, and so is each DICOM series (the slices of one
        SeriesInstanceUID in one folder, with positions; sent to the model as a zip). Files
        are not judged here: an unreadable one still becomes a row, and `decode` rejects it
        with the file name and the reason."""
        path = Path(path)
        if path.is_file() and path.suffix.lower() in (".csv", ".parquet", ".pq", ".jsonl"):
            return None  # a table of requests (image_base64 column): the common reader
        if not path.exists():
            raise InvalidInput("input", f"{path} does not exist")
        files = [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        base = path if path.is_dir() else path.parent
        return _chunks(_units(files), base, chunk_size)

    def row_to_payload(self, row: dict[str, Any], args: argparse.Namespace | None) -> Any:
        payload = {k: row[k] for k in _PAYLOAD_KEYS if row.get(k) is not None}
        if getattr(args, "time_index", None) is not None:
            payload["time_index"] = args.time_index
        return payload

    # ---- explanations -------------------------------------------------------------------
    def explain(self, args: argparse.Namespace) -> str:
        """`verticals explain medical IMAGE --out overlay.png`: writes the overlay, returns
        the prediction as JSON."""
        from medical_imaging.explain import explain_file

        out = explain_file(args.image, args.out, getattr(args, "bundle", "latest"),
                           getattr(args, "root", None))
        return json.dumps(out, indent=2)


def _units(files: list[Path]) -> list[tuple[str | None, list[Path]]]:
    """Files → rows to score, folder by folder: a DICOM series (uid, its slices), else
    (None, [file]); in path order, so chunks (and a resumed job's) are stable."""
    from medical_imaging.series import group_series

    folders: dict[Path, list[Path]] = {}
    for f in files:
        folders.setdefault(f.parent, []).append(f)
    units = [u for group in folders.values() for u in group_series(group)]
    return sorted(units, key=lambda u: u[1][0])


def _row(uid: str | None, files: list[Path], base: Path, several: bool) -> dict[str, Any]:
    if uid is None:
        name = files[0].relative_to(base).as_posix()
        try:
            data = files[0].read_bytes()
        except OSError:
            data = b""  # unreadable: decode rejects it as empty, naming the file
    else:
        folder = files[0].parent.relative_to(base).as_posix()
        name = f"{folder}/" + (f" (series {uid})" if several else "")
        buf = io.BytesIO()  # the same zip a REST client sends: one code path decodes both
        try:
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
                for f in files:
                    zf.writestr(f.name, f.read_bytes())
            data = buf.getvalue()
        except OSError:
            data = b""
    return {"__source": name, "image_base64": base64.b64encode(data).decode(), "filename": name}


def _chunks(units: list[tuple[str | None, list[Path]]], base: Path,
            chunk_size: int) -> Iterator[pd.DataFrame]:
    """Rows of at most `chunk_size` units, and of at most ~_CHUNK_BYTES of encoded files (a
    chunk of CT series would otherwise hold gigabytes); both cuts depend on the input only."""
    per_folder: dict[Path, int] = {}
    for uid, files in units:
        if uid is not None:
            per_folder[files[0].parent] = per_folder.get(files[0].parent, 0) + 1
    rows: list[dict[str, Any]] = []
    size = 0
    for uid, files in units:
        row = _row(uid, files, base, per_folder.get(files[0].parent, 0) > 1)
        rows.append(row)
        size += len(row["image_base64"])
        if len(rows) >= chunk_size or size >= _CHUNK_BYTES:
            yield pd.DataFrame(rows)
            rows, size = [], 0
    if rows:
        yield pd.DataFrame(rows)
