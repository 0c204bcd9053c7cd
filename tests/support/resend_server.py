"""A stand-in for api.resend.com on loopback: records what the resend package posts and answers
as Resend does, or with the errors a test scripts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.servers import serve


@dataclass
class SentRequest:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeResend:
    base_url: str = ""
    requests: list[SentRequest] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)
    """(status, Resend error name) answered, in order, before any success."""
    ids: dict[str, str] = field(default_factory=dict)
    """Idempotency-Key -> the id answered for it (Resend answers a repeat with the same id)."""

    def reset(self, *failures: tuple[int, str]) -> None:
        self.requests.clear()
        self.failures = list(failures)

    def for_recipient(self, to: str) -> list[SentRequest]:
        return [r for r in self.requests if r.body.get("to") == [to]]

    async def _emails(self, request: Request) -> JSONResponse:
        self.requests.append(SentRequest(dict(request.headers), await request.json()))
        if self.failures:
            status, name = self.failures.pop(0)
            return JSONResponse(
                {"statusCode": status, "name": name, "message": f"scripted {name}"}, status
            )
        key = request.headers.get("idempotency-key") or uuid.uuid4().hex
        provider_id = self.ids.setdefault(key, str(uuid.uuid4()))
        return JSONResponse({"id": provider_id})


@asynccontextmanager
async def fake_resend() -> AsyncIterator[FakeResend]:
    fake = FakeResend()
    app = Starlette(routes=[Route("/emails", fake._emails, methods=["POST"])])
    async with serve(app) as url:
        fake.base_url = url
        yield fake
