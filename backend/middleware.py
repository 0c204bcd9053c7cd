"""Request ids, access logs and request metrics as plain ASGI middleware (no per-request task or
body copy)."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.metrics import observe_request
from config.logging import request_id_var

log = logging.getLogger("turbokit.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_ID_PREFIX = secrets.token_hex(6)
_id_counter = itertools.count(1)


def _new_id() -> str:
    """Unique in this process run and across processes (random prefix); ids need not be secret,
    and a counter costs a fraction of `uuid4()`, which reads the OS's random source each time."""
    return f"{_ID_PREFIX}-{next(_id_counter):x}"


class RequestIdMiddleware:
    """Takes a sane incoming `X-Request-ID` or makes one, echoes it, logs one line a request and
    counts it in the metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or _new_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            observe_request(scope, status, elapsed)
            elapsed_ms = elapsed * 1000
            log.info("%s %s %d %.1fms", scope["method"], scope["path"], status, elapsed_ms)
            request_id_var.reset(token)


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            return candidate if _VALID_ID.match(candidate) else None
    return None
