"""Presence: heartbeats keep a session online in a room for a TTL; the token says who it is."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from backend.app import create_app
from backend.presence.models import Presence
from config.database import Database
from config.settings import Settings
from tests.conftest import Users, asgi_client


def room() -> str:
    return f"doc:{uuid.uuid4().hex[:12]}"


async def beat(
    http: httpx.AsyncClient, room_name: str, headers: dict[str, str], **body: Any
) -> list[dict[str, Any]]:
    response = await http.post(f"/v1/presence/{room_name}/heartbeat", headers=headers, json=body)
    assert response.status_code == 200, response.text
    online: list[dict[str, Any]] = response.json()["online"]
    return online


def sessions(online: list[dict[str, Any]]) -> set[tuple[str | None, str]]:
    return {(entry["name"], entry["session_id"]) for entry in online}


async def test_two_users_see_each_other_until_one_leaves(
    client: httpx.AsyncClient, users: Users
) -> None:
    ada, bob = users.headers(name="Ada"), users.headers(name="Bob")
    here = room()

    first = await beat(client, here, ada, session_id="tab-1", data={"page": "intro", "line": 3})
    assert sessions(first) == {("Ada", "tab-1")}
    assert first[0]["data"] == {"page": "intro", "line": 3}
    assert first[0]["user_id"].startswith("usr_")
    assert first[0]["last_seen"].endswith("Z")

    both = await beat(client, here, bob, session_id="phone")
    assert sessions(both) == {("Ada", "tab-1"), ("Bob", "phone")}
    assert next(e for e in both if e["name"] == "Bob")["data"] is None
    listed = await client.get(f"/v1/presence/{here}", headers=ada)
    assert listed.status_code == 200, listed.text
    assert sessions(listed.json()["online"]) == sessions(both)

    left = await client.post(
        f"/v1/presence/{here}/leave", headers=ada, json={"session_id": "tab-1"}
    )
    assert left.status_code == 200, left.text
    assert sessions(left.json()["online"]) == {("Bob", "phone")}
    again = await client.post(
        f"/v1/presence/{here}/leave", headers=ada, json={"session_id": "tab-1"}
    )
    assert sessions(again.json()["online"]) == {("Bob", "phone")}  # leaving twice is harmless


async def test_a_heartbeat_updates_the_same_session_and_rooms_are_apart(
    client: httpx.AsyncClient, users: Users
) -> None:
    ada = users.headers(name="Ada")
    here, elsewhere = room(), room()
    await beat(client, here, ada, session_id="tab", data={"page": "intro"})
    online = await beat(client, here, ada, session_id="tab", data={"page": "chapter 2"})
    assert [(e["session_id"], e["data"]) for e in online] == [("tab", {"page": "chapter 2"})]
    assert (await client.get(f"/v1/presence/{elsewhere}", headers=ada)).json() == {"online": []}


async def test_who_is_online_comes_from_the_token(client: httpx.AsyncClient, users: Users) -> None:
    ada, bob = users.headers(name="Ada"), users.headers(name="Bob")
    here = room()
    ada_id = (await beat(client, here, ada, session_id="shared"))[0]["user_id"]
    spoof = await client.post(
        f"/v1/presence/{here}/heartbeat",
        headers=bob,
        json={"session_id": "shared", "user_id": ada_id},
    )
    assert spoof.status_code == 422
    assert spoof.json()["error"]["code"] == "VALIDATION_ERROR"

    # Bob's session of the same id is his own; his leave cannot end Ada's.
    both = await beat(client, here, bob, session_id="shared")
    assert sessions(both) == {("Ada", "shared"), ("Bob", "shared")}
    await client.post(f"/v1/presence/{here}/leave", headers=bob, json={"session_id": "shared"})
    assert sessions((await client.get(f"/v1/presence/{here}", headers=ada)).json()["online"]) == {
        ("Ada", "shared")
    }
    assert (await client.get(f"/v1/presence/{here}")).status_code == 401


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/v1/presence/has%20space/heartbeat", {"session_id": "tab"}, "path"),
        (f"/v1/presence/{'r' * 101}/heartbeat", {"session_id": "tab"}, "path"),
        ("/v1/presence/a,b/heartbeat", {"session_id": "tab"}, "path"),
        ("/v1/presence/lobby/heartbeat", {"session_id": ""}, "body"),
        ("/v1/presence/lobby/heartbeat", {"session_id": "x" * 65}, "body"),
        ("/v1/presence/lobby/heartbeat", {"session_id": "tab/1"}, "body"),
        ("/v1/presence/lobby/heartbeat", {}, "body"),
        ("/v1/presence/lobby/heartbeat", {"session_id": "t", "data": {"a": {"nested": 1}}}, "body"),
        ("/v1/presence/lobby/heartbeat", {"session_id": "t", "data": {"a": "x" * 257}}, "body"),
        (
            "/v1/presence/lobby/heartbeat",
            {"session_id": "t", "data": {f"k{n}": n for n in range(33)}},
            "body",
        ),
        ("/v1/presence/lobby/heartbeat", {"session_id": "t", "data": {"a": [1, 2]}}, "body"),
        ("/v1/presence/lobby/heartbeat", {"session_id": "t", "data": ["a"]}, "body"),
        ("/v1/presence/lobby/leave", {"session_id": "tab", "data": {}}, "body"),
    ],
)
async def test_bad_rooms_sessions_and_data_are_422(
    client: httpx.AsyncClient, users: Users, path: str, body: dict[str, Any], where: str
) -> None:
    response = await client.post(path, headers=users.headers(), json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["data"]["errors"][0]["loc"][0] == where


# --- the TTL ------------------------------------------------------------------------------------


@pytest.fixture
async def short_ttl(app: FastAPI, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The same database served with a TTL short enough to watch sessions expire."""
    quick = create_app(settings.model_copy(update={"presence_ttl_seconds": 0.3}))
    async with quick.router.lifespan_context(quick), asgi_client(quick) as http:
        yield http


async def _rows(app: FastAPI, room_name: str) -> int:
    db: Database = app.state.db
    async with db.read() as session:
        count = await session.scalar(
            select(func.count()).select_from(Presence).where(Presence.room == room_name)
        )
    return int(count or 0)


async def test_a_silent_session_goes_offline_and_is_pruned(
    app: FastAPI, short_ttl: httpx.AsyncClient, users: Users
) -> None:
    ada, bob = users.headers(name="Ada"), users.headers(name="Bob")
    here = room()
    await beat(short_ttl, here, ada, session_id="tab")
    await asyncio.sleep(0.4)  # the TTL itself is what is under test

    assert (await short_ttl.get(f"/v1/presence/{here}", headers=bob)).json() == {"online": []}
    assert await _rows(app, here) == 1  # offline, not yet pruned: reads never write
    assert sessions(await beat(short_ttl, here, bob, session_id="desk")) == {("Bob", "desk")}
    assert await _rows(app, here) == 1  # Bob's heartbeat pruned Ada's stale row
