"""API keys for the serving middleware: several keys at once, so a key can be rotated without
downtime (add the new key, move clients, remove the old one).

Keys come from `VERTICALS_API_KEY` (one key or a comma-separated list) and/or the file named by
`VERTICALS_API_KEYS_FILE` (one key per line, blank lines and `#` comments ignored). The file is
re-read whenever its modification time, size or inode changes, so a rotation is a file replace
(write a temp file, rename it over the old one). A key is never logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from pathlib import Path

__all__ = ["KeyRing", "parse_credential", "MAX_KEY_BYTES"]
log = logging.getLogger(__name__)
MAX_KEY_BYTES = 4096
# RFC 6750 b64token characters plus a few common in generated keys; anything else is malformed
_TOKEN_BYTES = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=:!$*@^|"
)


def _digest(key: bytes) -> bytes:
    # comparing fixed-length digests keeps the time independent of the key's length too
    return hashlib.sha256(key).digest()


def parse_credential(headers: dict[bytes, bytes]) -> bytes | None:
    """The credential from `X-API-Key` or `Authorization: Bearer`; None when absent or
    malformed (another scheme, empty, too long, or bytes outside the token alphabet)."""
    given = headers.get(b"x-api-key")
    if given is None:
        auth = headers.get(b"authorization")
        if auth is None or auth[:7].lower() != b"bearer ":
            return None
        given = auth[7:]
    given = given.strip()
    if not given or len(given) > MAX_KEY_BYTES or not _TOKEN_BYTES.issuperset(given):
        return None
    return given


class KeyRing:
    """The set of accepted keys. `enabled` is False when no key source is configured (auth
    off); a configured file that is missing or empty accepts nothing (fails closed)."""

    def __init__(self, keys: str | None = None, keys_file: str | os.PathLike | None = None):
        self._static = [k.strip().encode() for k in (keys or "").split(",") if k.strip()]
        self._file = Path(keys_file) if keys_file else None
        self._stamp: tuple[int, int, int] | None = None
        self._digests = [_digest(k) for k in self._static]
        self.enabled = bool(self._static) or self._file is not None
        self._refresh()

    @classmethod
    def from_env(cls, keys: str | None = None) -> KeyRing:
        """`keys` (e.g. create_app's api_key) or `VERTICALS_API_KEY`, plus the keys file."""
        return cls(keys if keys is not None else os.environ.get("VERTICALS_API_KEY"),
                   os.environ.get("VERTICALS_API_KEYS_FILE") or None)

    def _refresh(self) -> None:
        if self._file is None:
            return
        try:
            st = self._file.stat()
        except OSError:
            stamp = None
        else:
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        keys: list[bytes] = []
        if stamp is not None:
            try:
                lines = self._file.read_bytes().splitlines()
            except OSError:
                lines = []
            keys = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith(b"#")]
        if not keys:
            # fail closed: a key file that cannot be read must not turn auth off
            log.warning("API key file %s is missing, unreadable or empty: only keys from "
                        "VERTICALS_API_KEY are accepted", self._file)
        else:
            log.info("API key file %s loaded: %d key(s)", self._file, len(keys))
        self._digests = [_digest(k) for k in [*self._static, *keys]]

    def accepts(self, given: bytes) -> bool:
        """Compare against every key without an early exit (constant time in the match)."""
        self._refresh()
        d = _digest(given)
        ok = False
        for k in self._digests:
            ok |= hmac.compare_digest(d, k)
        return ok
