"""Publishing live events from the write paths, and the channels a stream listens on.

A write path calls `publish` (or one of the helpers below) with its session; the event is sent
once that session's transaction commits, never for one that rolls back, so a client that reacts
by reading the resource sees the change. The broker is the app's, found in the session's `info`
(`Database.session_info`), so store and service code need nothing but the session.

Owner-scoped topics (`threads`, `thread:{id}`, `projects`) travel on a channel per user, so a
stream can only ever receive its own user's events; `presence:{room}` is one channel per room.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy import Table, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from backend.events.broker import Broker
from config.database import Database, after_commit
from config.ids import new_id
from threads.models import Thread

BROKER_KEY = "events_broker"
PRESENCE_PREFIX = "presence:"
THREAD_PREFIX = "thread:"

_threads: Table = Thread.__table__  # type: ignore[assignment]


def install(db: Database, broker: Broker) -> None:
    """Give every session of `db` the broker that `publish` sends through."""
    db.session_info[BROKER_KEY] = broker


def parse_topics(topics: str) -> list[str]:
    """The distinct topics of a (validated) comma-separated list, in the order given."""
    return list(dict.fromkeys(topics.split(",")))


def channel(user_id: str, topic: str) -> str:
    if topic.startswith(PRESENCE_PREFIX):
        return topic
    return f"user:{user_id}:{topic}"


def publish(
    session: AsyncSession, topic: str, type_: str, data: dict[str, Any], user_id: str | None
) -> None:
    """Publish `{"topic", "type", "data"}` to the topic's channel once `session` commits.
    `user_id` is the owner of an owner-scoped topic (None for presence)."""
    broker: Broker | None = session.info.get(BROKER_KEY)
    if broker is None:  # a session of a Database no app installed a broker on (scripts)
        return
    target = channel(user_id or "", topic)
    message = sse_frame(new_id("evt"), {"topic": topic, "type": type_, "data": data})
    after_commit(session, lambda: broker.publish(target, message))


def sse_frame(event_id: str, event: dict[str, Any]) -> bytes:
    """The event as a stream sends it: built once at publish time, relayed as bytes by every
    stream (orjson writes no newline, so the data stays one line)."""
    try:
        data = orjson.dumps(event)
    except TypeError:  # an integer beyond 64 bits (thread metadata may hold one)
        data = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    return b"id: " + event_id.encode() + b"\ndata: " + data + b"\n\n"


def owned_threads(conn: Connection, user_id: str, thread_ids: list[str]) -> set[str]:
    """A read unit: which of these threads the user owns (by primary key, a few at most)."""
    query = select(_threads.c.id).where(
        _threads.c.id.in_(thread_ids), _threads.c.user_id == user_id
    )
    return set(conn.execute(query).scalars())


def _json(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


def project_changed(session: AsyncSession, type_: str, project: BaseModel) -> None:
    """`created` or `updated`, with the project as the API shows it."""
    data = _json(project)
    publish(session, "projects", type_, data, data["user_id"])


def project_deleted(session: AsyncSession, user_id: str, project_id: str) -> None:
    publish(session, "projects", "deleted", {"id": project_id}, user_id)


def thread_changed(session: AsyncSession, type_: str, thread: BaseModel) -> None:
    """`created` or `updated`, on `threads` and on `thread:{id}`."""
    data = _json(thread)
    _to_thread_topics(session, type_, data, data["user_id"], data["id"])


def thread_deleted(session: AsyncSession, user_id: str, thread_id: str) -> None:
    _to_thread_topics(session, "deleted", {"id": thread_id}, user_id, thread_id)


def thread_titled(session: AsyncSession, user_id: str, thread_id: str, title: str) -> None:
    data = {"id": thread_id, "title": title}
    _to_thread_topics(session, "updated", data, user_id, thread_id)


def run_finished(
    session: AsyncSession,
    user_id: str,
    thread_id: str,
    run_id: str,
    status: str,
    finish_reason: str | None,
) -> None:
    """A run ended (completed, stopped or failed): the thread has its answer to read."""
    data = {
        "thread_id": thread_id,
        "run_id": run_id,
        "status": status,
        "finish_reason": finish_reason,
    }
    _to_thread_topics(session, "run_finished", data, user_id, thread_id)


def presence_changed(
    session: AsyncSession, room: str, type_: str, entries: Iterable[dict[str, Any]]
) -> None:
    """`joined` (the entry as `online` lists it) or `left` (`user_id`, `session_id`, and
    `reason`: `left` or `timeout`)."""
    for entry in entries:
        publish(session, PRESENCE_PREFIX + room, type_, entry, None)


def _to_thread_topics(
    session: AsyncSession, type_: str, data: dict[str, Any], user_id: str, thread_id: str
) -> None:
    publish(session, "threads", type_, data, user_id)
    publish(session, THREAD_PREFIX + thread_id, type_, data, user_id)
