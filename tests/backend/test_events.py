"""Live events over SSE (`GET /v1/events`), read with real HTTP streaming from a served app: a
stream receives changes made by other requests, only ever its own user's, and across server
processes through Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from backend.app import create_app
from backend.events import service as events
from config.database import Database
from config.settings import Settings
from tests.conftest import Users, asgi_client
from tests.support.scripted_provider import ScriptedProvider, TextReply
from tests.support.servers import serve

WAIT = 10.0
"""Seconds a test waits for an event before failing (events arrive in milliseconds)."""


class EventStream:
    """Reads SSE frames off a streaming response: `id`, `retry`, comments and parsed `data`."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = {"comments": []}
        async with asyncio.timeout(WAIT):
            async for line in self._lines:
                if not line:
                    if frame != {"comments": []}:
                        return frame
                    continue
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "":
                    frame["comments"].append(value)
                else:
                    frame[field] = value
        raise EOFError("the stream ended")

    async def event(self) -> dict[str, Any]:
        """The next event (skipping keep-alives) as `{"id", "topic", "type", "data"}`."""
        while True:
            frame = await self.frame()
            if "data" in frame:
                return {"id": frame.get("id"), **json.loads(frame["data"])}


@asynccontextmanager
async def listen(
    url: str, topics: str, headers: dict[str, str] | None = None, **params: str
) -> AsyncIterator[EventStream]:
    """An open stream, past its first frame: everything published from here on arrives."""
    async with (
        httpx.AsyncClient(base_url=url, timeout=WAIT) as http,
        http.stream(
            "GET", "/v1/events", params={"topics": topics, **params}, headers=headers
        ) as response,
    ):
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = EventStream(response)
        first = await stream.frame()
        assert first["retry"] == "3000"
        yield stream


@pytest.fixture
async def served(app: FastAPI) -> AsyncIterator[str]:
    async with serve(app) as url:
        yield url


async def test_a_stream_receives_project_changes_made_by_other_requests(
    served: str, client: httpx.AsyncClient, users: Users
) -> None:
    me = users.headers()
    async with listen(served, "projects", me) as stream:
        created = await client.post("/v1/projects", headers=me, json={"name": "Apollo"})
        project = created.json()
        url = f"/v1/projects/{project['id']}"
        patched = (await client.patch(url, headers=me, json={"status": "archived"})).json()
        assert (await client.delete(url, headers=me)).status_code == 204

        received = [await stream.event() for _ in range(3)]

    assert [{k: e[k] for k in ("topic", "type", "data")} for e in received] == [
        {"topic": "projects", "type": "created", "data": project},
        {"topic": "projects", "type": "updated", "data": patched},
        {"topic": "projects", "type": "deleted", "data": {"id": project["id"]}},
    ]
    ids = [e["id"] for e in received]
    assert all(i.startswith("evt_") for i in ids)
    assert len(set(ids)) == 3


async def test_another_users_events_never_appear(
    served: str, client: httpx.AsyncClient, users: Users
) -> None:
    owner, stranger = users.headers(), users.headers()
    async with listen(served, "projects,threads", stranger) as stream:
        await client.post("/v1/projects", headers=owner, json={"name": "Owner's secret"})
        thread = (await client.post("/v1/threads", headers=owner, json={})).json()
        await client.patch(f"/v1/threads/{thread['id']}", headers=owner, json={"title": "x"})
        await client.delete(f"/v1/threads/{thread['id']}", headers=owner)
        mine = (await client.post("/v1/projects", headers=stranger, json={"name": "Mine"})).json()

        first = await stream.event()  # anything of the owner's would have come before

    assert (first["type"], first["data"]["id"]) == ("created", mine["id"])


async def test_thread_topics_and_another_users_thread_is_404(
    served: str, client: httpx.AsyncClient, users: Users
) -> None:
    me, stranger = users.headers(), users.headers()
    thread = (await client.post("/v1/threads", headers=me, json={"title": "Plans"})).json()
    async with httpx.AsyncClient(base_url=served, timeout=WAIT) as http:
        refused = await http.get(
            "/v1/events", params={"topics": f"projects,thread:{thread['id']}"}, headers=stranger
        )
        missing = await http.get("/v1/events", params={"topics": "thread:nope"}, headers=me)
    for response in (refused, missing):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "NOT_FOUND"

    async with (
        listen(served, f"thread:{thread['id']}", me) as one,
        listen(served, "threads", me) as every,
    ):
        other = (await client.post("/v1/threads", headers=me, json={})).json()
        patched = await client.patch(f"/v1/threads/{thread['id']}", headers=me, json={"title": "B"})
        await client.delete(f"/v1/threads/{thread['id']}", headers=me)

        on_one = [await one.event() for _ in range(2)]
        on_every = [await every.event() for _ in range(3)]

    assert [(e["topic"], e["type"]) for e in on_one] == [
        (f"thread:{thread['id']}", "updated"),
        (f"thread:{thread['id']}", "deleted"),
    ]
    assert on_one[0]["data"] == patched.json()
    assert [(e["type"], e["data"]["id"]) for e in on_every] == [
        ("created", other["id"]),
        ("updated", thread["id"]),
        ("deleted", thread["id"]),
    ]


async def test_presence_joins_and_leaves_reach_the_room(
    served: str, client: httpx.AsyncClient, users: Users
) -> None:
    ada, bob = users.headers(name="Ada"), users.headers(name="Bob")
    room = f"doc:{uuid.uuid4().hex[:12]}"
    async with listen(served, f"presence:{room}", bob) as stream:
        heartbeat = f"/v1/presence/{room}/heartbeat"
        online = (await client.post(heartbeat, headers=ada, json={"session_id": "tab"})).json()
        await client.post(heartbeat, headers=ada, json={"session_id": "tab"})  # no new join
        await client.post(f"/v1/presence/{room}/leave", headers=ada, json={"session_id": "tab"})

        joined, left = await stream.event(), await stream.event()

    assert (joined["topic"], joined["type"]) == (f"presence:{room}", "joined")
    assert joined["data"] == online["online"][0]
    assert joined["data"]["name"] == "Ada"
    assert (left["type"], left["data"]) == (
        "left",
        {"user_id": joined["data"]["user_id"], "session_id": "tab", "reason": "left"},
    )


async def test_access_token_query_works_here_only(
    served: str, client: httpx.AsyncClient, users: Users
) -> None:
    token = users.token()
    me = {"Authorization": f"Bearer {token}"}
    async with listen(served, "projects", access_token=token) as stream:
        project = (
            await client.post("/v1/projects", headers=me, json={"name": "EventSource"})
        ).json()
        assert (await stream.event())["data"]["id"] == project["id"]

    async with httpx.AsyncClient(base_url=served, timeout=WAIT) as http:
        elsewhere = await http.get("/v1/projects", params={"access_token": token})
        forged = await http.get(
            "/v1/events", params={"topics": "projects", "access_token": token + "x"}
        )
        none = await http.get("/v1/events", params={"topics": "projects"})
    for response in (elsewhere, forged, none):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    "topics",
    [
        "",
        "messages",
        "projects,",
        "presence:",
        "presence:a b",
        "thread:",
        "threads;projects",
        ",".join(["projects"] * 21),
    ],
)
async def test_unknown_topics_are_422(client: httpx.AsyncClient, users: Users, topics: str) -> None:
    response = await client.get("/v1/events", params={"topics": topics}, headers=users.headers())
    assert response.status_code == 422, response.text
    assert response.json()["error"]["data"]["errors"][0]["loc"] == ["query", "topics"]


async def test_only_committed_changes_are_published(app: FastAPI, users: Users) -> None:
    db: Database = app.state.db
    topic = f"presence:{uuid.uuid4().hex}"
    async with app.state.events.subscribe([events.channel("", topic)]) as subscription:
        with pytest.raises(RuntimeError):
            await _publish_then_fail(db, topic)
        async with db.write() as session:
            events.publish(session, topic, "committed", {}, None)

        message = await subscription.next(WAIT)

    assert message is not None
    assert b'"type":"committed"' in message


async def _publish_then_fail(db: Database, topic: str) -> None:
    async with db.write() as session:
        events.publish(session, topic, "rolled-back", {}, None)
        raise RuntimeError("the transaction fails")


# --- keep-alive and the stream's lifetime -------------------------------------------------------


@pytest.fixture
async def brief(app: FastAPI, settings: Settings) -> AsyncIterator[str]:
    """The same database, served with frequent keep-alives and short-lived streams."""
    quick = create_app(
        settings.model_copy(
            update={"events_keepalive_seconds": 0.05, "events_stream_max_seconds": 0.5}
        )
    )
    async with quick.router.lifespan_context(quick), serve(quick) as url:
        yield url


async def test_a_quiet_stream_gets_keepalives_and_ends_for_a_reconnect(
    brief: str, users: Users
) -> None:
    async with listen(brief, "projects", users.headers()) as stream:
        frames = await _until_the_end(stream)

    assert frames
    assert all(frame == {"comments": ["keep-alive"]} for frame in frames)


async def _until_the_end(stream: EventStream) -> list[dict[str, Any]]:
    frames = []
    while True:
        try:
            frames.append(await stream.frame())
        except EOFError:
            return frames


# --- runs ---------------------------------------------------------------------------------------


async def test_a_finished_run_is_published_on_its_thread(
    chat_url: str, chat: httpx.AsyncClient, provider: ScriptedProvider, users: Users
) -> None:
    provider.reset(default=TextReply("Hello there."))
    me = users.headers()
    thread = (await chat.post("/v1/threads", headers=me, json={})).json()
    async with listen(chat_url, f"thread:{thread['id']}", me) as stream:
        reply = await chat.post(
            f"/v1/threads/{thread['id']}/messages", headers=me, json={"text": "Hi"}
        )
        assert reply.status_code == 200, reply.text
        event = await stream.event()

    assert (event["type"], event["data"]) == (
        "run_finished",
        {
            "thread_id": thread["id"],
            "run_id": reply.json()["run_id"],
            "status": "completed",
            "finish_reason": "stop",
        },
    )


# --- across server processes --------------------------------------------------------------------


@pytest.mark.redis
async def test_an_event_published_by_one_process_reaches_a_stream_on_another(
    app: FastAPI, settings: Settings, users: Users, redis_url: str
) -> None:
    shared = settings.model_copy(update={"redis_url": redis_url})
    first, second = create_app(shared), create_app(shared)
    me, ada = users.headers(), users.headers(name="Ada")
    room = f"doc:{uuid.uuid4().hex[:12]}"
    async with (
        first.router.lifespan_context(first),
        second.router.lifespan_context(second),
        asgi_client(first) as writer,
        serve(second) as url,
        listen(url, f"projects,presence:{room}", me) as stream,
    ):
        project = (await writer.post("/v1/projects", headers=me, json={"name": "Far"})).json()
        await writer.post(f"/v1/presence/{room}/heartbeat", headers=ada, json={"session_id": "t"})

        received = [await stream.event() for _ in range(2)]

    assert [(e["topic"], e["type"]) for e in received] == [
        ("projects", "created"),
        (f"presence:{room}", "joined"),
    ]
    assert received[0]["data"] == project
    assert received[1]["data"]["name"] == "Ada"


async def test_events_carry_integers_beyond_64_bits(
    served: str, client: httpx.AsyncClient, users: Users
) -> None:
    me = users.headers()
    async with listen(served, "threads", me) as stream:
        created = await client.post("/v1/threads", headers=me, json={"metadata": {"n": 2**70}})
        assert created.status_code == 201, created.text
        event = await stream.event()

    assert event["data"]["metadata"] == {"n": 2**70}
