"""The route class every router uses: request bodies are checked for NUL characters before
parsing, since PostgreSQL cannot store them in text or JSONB (a 500 there, a 422 here, on both
databases alike)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from backend.errors import validation_error

_NUL_MARKERS = (b"\x00", b"\\u0000")


class TurboKitRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            if _is_json(request) and _has_nul(await request.body()):
                raise validation_error(["body"], "text must not contain NUL (\\u0000) characters")
            return await handler(request)

        return checked


def _is_json(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("application/json")


def _has_nul(body: bytes) -> bool:
    return any(marker in body for marker in _NUL_MARKERS)
