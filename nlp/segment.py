"""Splitting long inputs into sentences for translation, and reassembling them.

Hand-written on purpose: the environment has no maintained, dependency-free sentence splitter,
and this one only has to cut long inputs at safe places (after ., !, ?, … followed by space and
a capital/digit/quote), skipping common abbreviations. A sentence still too long for the model
is cut at clause punctuation, then between words, never inside a word — and never dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["split_sentences", "split_to_fit"]

_ABBREV = {"mr", "mrs", "ms", "dr", "prof", "st", "vs", "etc", "e.g", "i.e", "no", "jr", "sr",
           "z.b", "bzw", "ca", "nr", "usw", "d.h"}
_BOUNDARY = re.compile(r"(?<=[.!?…])[\"'”»)\]]*\s+(?=[\"'“„«(\[]?[A-ZÀ-ÖØ-Þ0-9])")


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` (at least one; whitespace-only parts are dropped)."""
    parts, start = [], 0
    for m in _BOUNDARY.finditer(text):
        before = text[start : m.start()].rstrip("\"'”»)]")
        last = before.split()[-1].rstrip(".!?…").lower() if before.split() else ""
        if before.endswith(".") and (last in _ABBREV or (len(last) == 1 and last.isalpha())):
            continue  # "Dr. Smith", "J. Doe": not a boundary
        parts.append(text[start : m.start() + len(m.group(0))].strip())
        start = m.end()
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def split_to_fit(sentence: str, n_tokens: Callable[[str], int], limit: int) -> list[str]:
    """Pieces of `sentence` with at most `limit` tokens each: clauses first, then words."""
    if n_tokens(sentence) <= limit:
        return [sentence]
    clauses = [c for c in re.split(r"(?<=[,;:])\s+", sentence) if c]
    if len(clauses) > 1:
        out: list[str] = []
        cur = ""
        for c in clauses:
            cand = f"{cur} {c}".strip()
            if cur and n_tokens(cand) > limit:
                out += split_to_fit(cur, n_tokens, limit)
                cur = c
            else:
                cur = cand
        return out + split_to_fit(cur, n_tokens, limit) if cur else out
    words, out, cur = sentence.split(), [], []
    for w in words:
        if cur and n_tokens(" ".join([*cur, w])) > limit:
            out.append(" ".join(cur))
            cur = []
        cur.append(w)  # a single word over the limit stays whole (the model gets it all)
    return out + ([" ".join(cur)] if cur else [])
