"""One pure-ASGI middleware for request ids, API-key auth, body limits, per-request deadlines
and per-route metrics. Pure ASGI rather than BaseHTTPMiddleware: it adds no task or body copy per
request, which matters at thousands of small requests per second.

Auth (on every route but the probes, when keys are configured; see `api_keys`):
- 401 `unauthorized` with `WWW-Authenticate: Bearer`: no credential, or a malformed one
  (another scheme than Bearer, empty, over 4 KiB, bytes outside the token alphabet). The
  client has not authenticated at all, so the challenge tells it how to.
- 403 `forbidden`: a well-formed key that is not accepted. The client did authenticate and
  retrying with the same key will not help; a rotated-out key lands here.
Keys are compared in constant time against all accepted keys and never logged or echoed.

Body limits, all refused before the app parses the body: size (413, `VERTICALS_MAX_BODY_BYTES`),
JSON nesting depth (422) and multipart part count (413), see `body_limits`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar

from common.serving.api_keys import KeyRing, parse_credential
from common.serving.body_limits import BodyInspector, Refusal
from common.serving.prom import LATENCY, REQUESTS

__all__ = [
    "ServingMiddleware",
    "request_timeout",
    "request_arrival",
    "request_headers",
    "request_id",
    "error_body",
]

OPEN_PATHS = frozenset({"/livez", "/readyz"})
request_timeout: ContextVar[float | None] = ContextVar("request_timeout", default=None)
# time.monotonic() when the request reached the server: deadlines run from there
request_arrival: ContextVar[float | None] = ContextVar("request_arrival", default=None)
# the raw request headers, for code below the routes (canary routing on a header)
request_headers: ContextVar[dict[bytes, bytes] | None] = ContextVar("request_headers", default=None)
# the request's id (X-Request-ID or generated), for the prediction log
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
_ID_OK = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")
_CHALLENGE = (b"www-authenticate", b'Bearer realm="verticals"')


def error_body(code: str, message: str, field: str | None, request_id: str | None) -> bytes:
    return json.dumps(
        {"error": {"code": code, "message": message, "field": field}, "request_id": request_id}
    ).encode()


class _Refused(Exception):
    """Raised from `receive` when the body breaks a limit. The app may turn it into its own
    answer (FastAPI makes any body-read error a 400); that answer is dropped and the refusal
    is sent instead."""

    def __init__(self, refusal: Refusal):
        super().__init__(refusal.message)
        self.refusal = refusal


class ServingMiddleware:
    def __init__(self, app, api_key: str | None, max_body_bytes: int,
                 keys: KeyRing | None = None,
                 shed: Callable[[str, float | None], str | None] | None = None):
        self.app = app
        # shed(path, timeout_s) -> why a model route cannot answer in time now, or None:
        # refused before the body is read or validated, the cheapest answer under overload
        self.shed = shed
        self.keys = keys if keys is not None else KeyRing.from_env(api_key)
        self.max_body = max_body_bytes
        # (route, method, status) -> metric children: .labels() costs microseconds per call
        self._children: dict[tuple[str, str, str], tuple] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        request_headers.set(headers)
        request_arrival.set(time.monotonic())
        rid = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = rid if _ID_OK.match(rid) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        request_id.set(rid)
        rid_header = (b"x-request-id", rid.encode())
        status_box = [500]
        recorded = [False]
        refused: list[Refusal] = []
        started = [False]

        def record() -> None:
            # once per request, just before the last body chunk goes out: a /metrics scrape
            # made after a client has its response then always counts it (`finally` covers
            # requests that never completed a response)
            if recorded[0]:
                return
            recorded[0] = True
            route = scope.get("route")
            label = getattr(route, "path", None) or ("unmatched" if status_box[0] == 404 else path)
            key = (label, scope["method"], str(status_box[0]))
            children = self._children.get(key)
            if children is None:
                children = self._children[key] = (REQUESTS.labels(*key), LATENCY.labels(*key))
            children[0].inc()
            children[1].observe(time.perf_counter() - t0)

        async def send_wrapper(message):
            if refused and not started[0]:  # the app's answer to a refused body is replaced
                return
            if message["type"] == "http.response.start":
                started[0] = True
                status_box[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], rid_header]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                record()
            await send(message)

        async def reply(status: int, code: str, msg: str, field: str | None, extra=()):
            status_box[0] = status
            body = error_body(code, msg, field, rid)
            hdrs = [
                (b"content-type", b"application/json"),
                rid_header,
                (b"content-length", str(len(body)).encode()),
                *extra,
            ]
            await send({"type": "http.response.start", "status": status, "headers": hdrs})
            record()
            await send({"type": "http.response.body", "body": body})

        path = scope["path"]
        try:
            if self.keys.enabled and path not in OPEN_PATHS:
                given = parse_credential(headers)
                if given is None:
                    await reply(
                        401,
                        "unauthorized",
                        "missing or malformed API key (X-API-Key or Authorization: Bearer)",
                        "X-API-Key",
                        [_CHALLENGE],
                    )
                    return
                if not self.keys.accepts(given):
                    await reply(403, "forbidden", "API key not accepted", "X-API-Key")
                    return
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                await reply(
                    413,
                    "payload_too_large",
                    f"body of {int(length)} bytes exceeds the limit of {self.max_body}",
                    "body",
                )
                return
            timeout_ms = headers.get(b"x-request-timeout-ms", b"").decode("latin-1")
            timeout_s = float(timeout_ms) / 1e3 if timeout_ms.replace(".", "", 1).isdigit() \
                else None
            if self.shed is not None and scope["method"] == "POST":
                why = self.shed(path, timeout_s)
                if why is not None:
                    await reply(503, "overloaded", why, None, [(b"retry-after", b"1")])
                    return
            token = request_timeout.set(timeout_s)
            seen = [0]
            inspector = BodyInspector(headers.get(b"content-type", b""))

            async def receive_limited():
                message = await receive()
                if message["type"] == "http.request":
                    chunk = message.get("body", b"")
                    seen[0] += len(chunk)
                    problem = (
                        Refusal(413, "payload_too_large",
                                f"body exceeds the limit of {self.max_body} bytes", "body")
                        if seen[0] > self.max_body
                        else inspector.feed(chunk, not message.get("more_body", False))
                    )
                    if problem is not None:
                        refused.append(problem)
                        raise _Refused(problem)
                return message

            try:
                await self.app(scope, receive_limited, send_wrapper)
            except _Refused:
                pass
            finally:
                request_timeout.reset(token)
            if refused and not started[0]:
                r = refused[0]
                await reply(r.status, r.code, r.message, r.field)
        finally:
            record()
