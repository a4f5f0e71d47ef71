"""Structural limits on request bodies, checked while the body streams in, before any parser
allocates: the nesting depth of a JSON body and the number of parts of a multipart body.

Python's `json` refuses very deep nesting with a RecursionError (a 400 or 500 depending on the
route) and Starlette refuses more than 1,000 multipart parts with a 400; both become one clear
refusal in our error shape here, with limits an operator can set:
`VERTICALS_MAX_JSON_DEPTH` (default 64) and `VERTICALS_MAX_MULTIPART_PARTS` (default 64).
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import numpy as np

__all__ = ["BodyInspector", "Refusal", "json_depth", "DEFAULT_MAX_JSON_DEPTH",
           "DEFAULT_MAX_MULTIPART_PARTS"]
DEFAULT_MAX_JSON_DEPTH = 64
DEFAULT_MAX_MULTIPART_PARTS = 64
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_BOUNDARY = re.compile(rb'boundary="?([^";,]+)"?', re.IGNORECASE)


class Refusal(NamedTuple):
    status: int
    code: str
    message: str
    field: str


def json_depth(body: bytes) -> int:
    """Deepest nesting of arrays/objects in a JSON text (brackets inside strings ignored).
    Linear and iterative, so it is safe on a body made of 100,000 `[`."""
    outside = b"".join(_ESCAPE.sub(b"", body).split(b'"')[::2])  # even pieces lie outside
    brackets = np.frombuffer(outside.translate(None, _NOT_BRACKET), dtype=np.uint8)
    if not len(brackets):
        return 0
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else default


class BodyInspector:
    """Fed each body chunk of one request; returns a Refusal as soon as a limit is exceeded.

    JSON: counting `[` and `{` costs one C pass per chunk; only a body with more openings
    than the depth limit (e.g. a large batch request) gets the exact depth scan at its end.
    Multipart: counts boundary delimiters across chunk edges."""

    def __init__(self, content_type: bytes, max_depth: int | None = None,
                 max_parts: int | None = None):
        self.max_depth = max_depth or _env_int("VERTICALS_MAX_JSON_DEPTH", DEFAULT_MAX_JSON_DEPTH)
        self.max_parts = max_parts or _env_int("VERTICALS_MAX_MULTIPART_PARTS",
                                               DEFAULT_MAX_MULTIPART_PARTS)
        ctype = content_type.lower()
        self._delim: bytes | None = None
        self._json = False
        if ctype.startswith(b"multipart/"):
            m = _BOUNDARY.search(content_type)
            self._delim = b"--" + m.group(1) if m else None
        elif not ctype.startswith(b"application/x-www-form-urlencoded"):
            # routes that read the raw body parse anything else as JSON
            self._json = True
        self._chunks: list[bytes] = []
        self._openings = 0
        self._tail = b""
        self._delims = 0

    def feed(self, chunk: bytes, last: bool) -> Refusal | None:
        if self._json:
            return self._feed_json(chunk, last)
        if self._delim is not None:
            return self._feed_multipart(chunk, self._delim)
        return None

    def _feed_json(self, chunk: bytes, last: bool) -> Refusal | None:
        self._chunks.append(chunk)  # references only: the app buffers the body anyway
        self._openings += chunk.count(b"[") + chunk.count(b"{")
        if not last or self._openings <= self.max_depth:
            return None
        body, self._chunks = b"".join(self._chunks), []
        if json_depth(body) > self.max_depth:
            return Refusal(422, "invalid_input",
                           f"body: JSON nested deeper than {self.max_depth} levels", "body")
        return None

    def _feed_multipart(self, chunk: bytes, delim: bytes) -> Refusal | None:
        window = self._tail + chunk
        # the tail is one byte shorter than a delimiter, so a match always ends in `chunk`
        self._delims += window.count(delim)
        self._tail = window[-(len(delim) - 1):]
        # n parts are framed by n + 1 delimiters (the last one is the closing `--boundary--`)
        if self._delims - 1 > self.max_parts:
            return Refusal(413, "payload_too_large",
                           f"multipart body has more than {self.max_parts} parts", "body")
        return None
