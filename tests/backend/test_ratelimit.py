"""Rate limits shared through Redis: with REDIS_URL set, every server process counts the same
chat requests, so a user cannot multiply the plan's limit by the number of processes."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from backend.app import create_app
from backend.billing.plans import plan_for
from tests.conftest import Users, asgi_client
from tests.support.scripted_provider import ScriptedProvider, TextReply

pytestmark = pytest.mark.redis


async def test_two_processes_share_one_count(
    chat_app: FastAPI, users: Users, provider: ScriptedProvider, redis_url: str
) -> None:
    provider.reset(default=TextReply("Hi."))
    settings = chat_app.state.settings.model_copy(update={"redis_url": redis_url})
    first, second = create_app(settings), create_app(settings)
    me = users.headers()
    limit = plan_for("free").chat_requests_per_minute
    async with (
        first.router.lifespan_context(first),
        second.router.lifespan_context(second),
        asgi_client(first) as one,
        asgi_client(second) as two,
    ):
        thread = (await one.post("/v1/threads", headers=me, json={})).json()["id"]
        url = f"/v1/threads/{thread}/messages"
        for n in range(limit):
            reply = await (one if n % 2 else two).post(url, headers=me, json={"text": f"#{n}"})
            assert reply.status_code == 200, reply.text

        over = [await http.post(url, headers=me, json={"text": "more"}) for http in (one, two)]

        assert [r.status_code for r in over] == [429, 429]
        assert all(r.json()["error"]["code"] == "RATE_LIMITED" for r in over)
        assert all(1 <= int(r.headers["Retry-After"]) <= 60 for r in over)
        ready = await one.get("/readyz")
        assert ready.status_code == 200, ready.text
    assert len(provider.requests) == limit
