"""One pure-ASGI middleware for request ids, API-key auth, the body-size limit, per-request
deadlines and per-route metrics. Pure ASGI rather than BaseHTTPMiddleware: it adds no task or
body copy per request, which matters at thousands of small requests per second."""

from __future__ import annotations

import hmac
import json
import re
import time
import uuid
from contextvars import ContextVar

from common.serving.prom import LATENCY, REQUESTS

__all__ = ["ServingMiddleware", "request_timeout", "error_body"]

OPEN_PATHS = frozenset({"/livez", "/readyz"})
request_timeout: ContextVar[float | None] = ContextVar("request_timeout", default=None)
_ID_OK = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")


def error_body(code: str, message: str, field: str | None, request_id: str | None) -> bytes:
    return json.dumps(
        {"error": {"code": code, "message": message, "field": field}, "request_id": request_id}
    ).encode()


class _BodyTooLarge(Exception):
    pass


class ServingMiddleware:
    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body = max_body_bytes
        # (route, method, status) -> metric children: .labels() costs microseconds per call
        self._children: dict[tuple[str, str, str], tuple] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = rid if _ID_OK.match(rid) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode())
        status_box = [500]
        recorded = [False]

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
            if message["type"] == "http.response.start":
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
            if self.api_key and path not in OPEN_PATHS and not self._authorised(headers):
                await reply(
                    401,
                    "unauthorized",
                    "missing or wrong API key (X-API-Key or Authorization: Bearer)",
                    "X-API-Key",
                    [(b"www-authenticate", b"Bearer")],
                )
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
            token = request_timeout.set(
                float(timeout_ms) / 1e3 if timeout_ms.replace(".", "", 1).isdigit() else None
            )
            seen = [0]

            async def receive_limited():
                message = await receive()
                if message["type"] == "http.request":
                    seen[0] += len(message.get("body", b""))
                    if seen[0] > self.max_body:
                        raise _BodyTooLarge
                return message

            try:
                await self.app(scope, receive_limited, send_wrapper)
            except _BodyTooLarge:
                await reply(
                    413,
                    "payload_too_large",
                    f"body exceeds the limit of {self.max_body} bytes",
                    "body",
                )
            finally:
                request_timeout.reset(token)
        finally:
            record()

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        given = headers.get(b"x-api-key")
        if given is None:
            auth = headers.get(b"authorization", b"")
            if auth[:7].lower() == b"bearer ":
                given = auth[7:].strip()
        return given is not None and hmac.compare_digest(given, self.api_key or b"")
