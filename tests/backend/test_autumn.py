"""Usage reaches Autumn from an outbox: Autumn being down never blocks a chat or loses an event."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from backend.app import create_app
from backend.billing.models import UsageEvent
from tests.conftest import Users, make_settings
from tests.support.scripted_provider import ScriptedProvider, TextReply
from tests.support.servers import serve
from tests.support.ui_stream import chat_body, read_chunks, text_of


class FakeAutumn:
    """Autumn's `POST /v1/track` on loopback: records calls; answers 503 while `down`."""

    def __init__(self) -> None:
        self.down = False
        self.tracked: list[dict[str, Any]] = []
        self.attempts = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.attempts += 1
        payload = json.loads(body or b"{}")
        if self.down:
            status, reply = 503, {"message": "down", "code": "unavailable"}
        else:
            self.tracked.append({"path": scope["path"], **payload})
            status = 200
            reply = {
                "id": f"trk_{len(self.tracked)}",
                "code": "ok",
                "customer_id": payload.get("customer_id", ""),
                "feature_id": payload.get("feature_id"),
            }
        data = json.dumps(reply).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})


@pytest.fixture(scope="module")
async def autumn() -> AsyncIterator[tuple[FakeAutumn, str]]:
    fake = FakeAutumn()
    async with serve(fake) as url:
        yield fake, url


@pytest.fixture(scope="module")
async def autumn_app(
    data_dir: Path, database_url: str, provider: ScriptedProvider, autumn: tuple[FakeAutumn, str]
) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        data_dir,
        database_url,
        openrouter_api_key="test-key",
        openrouter_base_url=provider.base_url,
        autumn_secret_key="am_sk_test_123",
        autumn_base_url=autumn[1],
        autumn_sync_seconds=0.05,
        thread_titles=False,  # the test counts the usage events of its own turns
    )
    application = create_app(settings, migrate=True)
    async with application.router.lifespan_context(application):
        yield application


async def events_of(app: FastAPI, user_id: str) -> list[UsageEvent]:
    async with app.state.db.read() as session:
        rows = await session.scalars(select(UsageEvent).where(UsageEvent.user_id == user_id))
        return list(rows)


async def eventually(condition: Any, seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not await condition():  # noqa: ASYNC110 (the sync runs in the same loop)
            await asyncio.sleep(0.02)


async def test_chats_work_while_autumn_is_down_and_every_event_arrives_later(
    autumn_app: FastAPI, autumn: tuple[FakeAutumn, str], provider: ScriptedProvider, users: Users
) -> None:
    fake, _ = autumn
    fake.down = True
    provider.reset(default=TextReply("Fine."))
    headers = users.headers()
    async with serve(autumn_app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        user_id = (await http.get("/v1/me", headers=headers)).json()["id"]
        for _ in range(2):
            thread = f"autumn-{uuid.uuid4().hex[:10]}"
            async with http.stream(
                "POST", "/v1/chat", json=chat_body(thread, "Hi"), headers=headers
            ) as response:
                assert response.status_code == 200
                assert text_of(await read_chunks(response)) == "Fine."

    async def tried() -> bool:
        return fake.attempts >= 2

    await eventually(tried)
    assert all(e.autumn_synced_at is None for e in await events_of(autumn_app, user_id))

    fake.down = False
    autumn_app.state.autumn.nudge()

    async def synced() -> bool:
        events = await events_of(autumn_app, user_id)
        return len(events) == 2 and all(e.autumn_synced_at is not None for e in events)

    await eventually(synced)
    events = await events_of(autumn_app, user_id)
    mine = [t for t in fake.tracked if t["customer_id"] == user_id]
    assert sorted(t["idempotency_key"] for t in mine) == sorted(e.id for e in events)
    assert all(t["path"] == "/v1/track" and t["feature_id"] == "credits" for t in mine)
    assert sum(t["value"] for t in mine) == sum(e.credits for e in events)
