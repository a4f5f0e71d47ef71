"""Reading user data: labelled text tables (CSV / TSV / JSONL / Parquet) for sentiment and
line-aligned parallel files (`<prefix>.<lang>[.gz]`) for translation."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pandas as pd

from common.errors import InvalidInput

__all__ = [
    "read_table",
    "pick_column",
    "load_labelled",
    "read_lines",
    "parallel_file",
    "read_parallel",
    "TEXT_COLUMNS",
    "LABEL_COLUMNS",
]

TEXT_COLUMNS = ("text", "sentence", "review", "content", "body", "message", "comment")
LABEL_COLUMNS = ("label", "labels", "sentiment", "class", "target", "rating", "polarity")


def read_table(path: str | Path) -> pd.DataFrame:
    """A whole table. TSV is read without quoting, as GLUE ships it (sentences contain `"`)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput("data", f"{path} is not a file")
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False)
    if suffix == ".csv":
        return pd.read_csv(path, keep_default_na=False)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return pd.read_json(path, lines=suffix != ".json", dtype=False)
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    raise InvalidInput("data", f"{path.name}: use .csv, .tsv, .jsonl or .parquet")


def pick_column(
    df: pd.DataFrame, wanted: str | None, candidates: tuple[str, ...], what: str
) -> str:
    """`wanted` if given (must exist), else the first known name (case-insensitive)."""
    if wanted:
        if wanted not in df.columns:
            raise InvalidInput(f"{what}_column", f"no column {wanted!r}; have {list(df.columns)}")
        return wanted
    lower = {str(c).lower(): c for c in df.columns}
    for c in candidates:
        if c in lower:
            return lower[c]
    raise InvalidInput(
        f"{what}_column", f"none of {candidates} in {list(df.columns)}; pass --{what}-column"
    )


def load_labelled(
    path: str | Path, text_column: str | None = None, label_column: str | None = None
) -> tuple[list[str], list[str]]:
    """(texts, labels as strings) from a table; rows with an empty text or label are dropped."""
    df = read_table(path)
    tcol = pick_column(df, text_column, TEXT_COLUMNS, "text")
    lcol = pick_column(df, label_column, LABEL_COLUMNS, "label")
    df = df[[tcol, lcol]].dropna()
    texts = df[tcol].astype(str).str.strip()
    labels = df[lcol].astype(str).str.strip()
    keep = (texts != "") & (labels != "")
    return texts[keep].tolist(), labels[keep].tolist()


def parallel_file(data_dir: str | Path, prefix: str, lang: str) -> Path:
    """`<dir>/<prefix>.<lang>.gz` or `<dir>/<prefix>.<lang>`."""
    d = Path(data_dir)
    for p in (d / f"{prefix}.{lang}.gz", d / f"{prefix}.{lang}"):
        if p.is_file():
            return p
    raise InvalidInput("data", f"{d} has no {prefix}.{lang}.gz or {prefix}.{lang}")


def read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n").strip() for line in f]


def read_parallel(
    data_dir: str | Path, prefix: str, src: str, tgt: str
) -> tuple[list[str], list[str]]:
    """Line-aligned source/target sentences; pairs with an empty side are dropped."""
    s = read_lines(parallel_file(data_dir, prefix, src))
    t = read_lines(parallel_file(data_dir, prefix, tgt))
    if len(s) != len(t):
        raise InvalidInput("data", f"{prefix}: {len(s)} {src} lines but {len(t)} {tgt} lines")
    pairs = [(a, b) for a, b in zip(s, t, strict=True) if a and b]
    return [a for a, _ in pairs], [b for _, b in pairs]
