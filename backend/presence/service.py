"""Heartbeats, leaves and who is online, for any room; the user always comes from the token.

A session is online while its last heartbeat is younger than `PRESENCE_TTL_SECONDS`. Heartbeats
upsert their row in one statement; each write also prunes a bounded batch of the stalest
offline rows, so the table holds about the live sessions, whoever stops sending.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, case, delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from backend.events import service as events
from backend.presence.models import Presence
from backend.presence.schemas import PresenceEntry
from backend.users.models import User
from config.database import dialect_name, row_dicts, utcnow

MAX_ONLINE = 100
"""Sessions a room lists, most recently seen first."""
PRUNE_BATCH = 100
"""Offline rows a write deletes at most (the stalest first)."""

presence: Table = Presence.__table__  # type: ignore[assignment]
users: Table = User.__table__  # type: ignore[assignment]
Entry = dict[str, Any]
"""A live session as `PresenceEntry` validates it."""


def online(conn: Connection, room: str, ttl: float) -> list[Entry]:
    """A read unit: the room's live sessions, through the (room, last_seen) index."""
    cutoff = utcnow() - timedelta(seconds=ttl)
    query = (
        select(
            presence.c.user_id,
            users.c.name,
            presence.c.session_id,
            presence.c.data,
            presence.c.last_seen,
        )
        .join(users, users.c.id == presence.c.user_id)
        .where(presence.c.room == room, presence.c.last_seen >= cutoff)
        .order_by(presence.c.last_seen.desc(), presence.c.session_id)
        .limit(MAX_ONLINE)
    )
    return row_dicts(conn.execute(query))


async def heartbeat(
    session: AsyncSession,
    room: str,
    user_id: str,
    session_id: str,
    data: dict[str, Any] | None,
    ttl: float,
) -> list[Entry]:
    """Mark the session online (a `joined` event if it was not) and answer who is online."""
    now = utcnow()
    await prune(session, now - timedelta(seconds=ttl))
    joined = await _upsert(session, room, user_id, session_id, data, now, ttl)
    entries = await _online(session, room, ttl)
    if joined:
        mine = [e for e in entries if e["user_id"] == user_id and e["session_id"] == session_id]
        events.presence_changed(session, room, "joined", [_json_entry(e) for e in mine])
    return entries


async def leave(
    session: AsyncSession, room: str, user_id: str, session_id: str, ttl: float
) -> list[Entry]:
    """End the caller's session in the room (a `left` event if it was there); idempotent."""
    await prune(session, utcnow() - timedelta(seconds=ttl))
    gone = await session.execute(
        delete(presence)
        .where(
            presence.c.room == room,
            presence.c.session_id == session_id,
            presence.c.user_id == user_id,
        )
        .returning(presence.c.room)
    )
    if gone.first() is not None:
        left = {"user_id": user_id, "session_id": session_id, "reason": "left"}
        events.presence_changed(session, room, "left", [left])
    return await _online(session, room, ttl)


async def remove_user(session: AsyncSession, user_id: str) -> int:
    """End every session of the user in every room (a deleted account), each a `left` event;
    how many there were. Idempotent."""
    gone = await session.execute(
        delete(presence)
        .where(presence.c.user_id == user_id)
        .returning(presence.c.room, presence.c.session_id)
    )
    removed = 0
    for room, session_id in gone.all():
        left = {"user_id": user_id, "session_id": session_id, "reason": "left"}
        events.presence_changed(session, room, "left", [left])
        removed += 1
    return removed


async def _online(session: AsyncSession, room: str, ttl: float) -> list[Entry]:
    connection = await session.connection()
    return await connection.run_sync(online, room, ttl)


async def _upsert(
    session: AsyncSession,
    room: str,
    user_id: str,
    session_id: str,
    data: dict[str, Any] | None,
    now: datetime,
    ttl: float,
) -> bool:
    """One statement on both databases; whether the session (re)joined: a new row, or one
    whose last heartbeat was already older than the TTL."""
    insert = pg_insert if dialect_name(session) == "postgresql" else sqlite_insert
    values = {"room": room, "user_id": user_id, "session_id": session_id, "data": data}
    statement = insert(presence).values(**values, joined_at=now, last_seen=now)
    rejoined = presence.c.last_seen < now - timedelta(seconds=ttl)
    upsert = statement.on_conflict_do_update(
        index_elements=[presence.c.room, presence.c.session_id, presence.c.user_id],
        set_={
            "data": statement.excluded.data,
            "last_seen": statement.excluded.last_seen,
            "joined_at": case((rejoined, statement.excluded.joined_at), else_=presence.c.joined_at),
        },
    ).returning(presence.c.joined_at)
    joined_at: datetime = (await session.execute(upsert)).scalar_one()
    return joined_at == now


async def prune(session: AsyncSession, cutoff: datetime) -> int:
    """Delete up to `PRUNE_BATCH` rows last seen before `cutoff`, stalest first, each a `left`
    (timeout) event; how many. Rows another transaction is pruning are skipped (PostgreSQL),
    so writers never queue."""
    key = (presence.c.room, presence.c.session_id, presence.c.user_id)
    stale = (
        select(*key)
        .where(presence.c.last_seen < cutoff)
        .order_by(presence.c.last_seen)
        .limit(PRUNE_BATCH)
        .with_for_update(skip_locked=True)
    )
    result = await session.execute(delete(presence).where(tuple_(*key).in_(stale)).returning(*key))
    gone = result.all()
    for room, session_id, user_id in gone:
        left = {"user_id": user_id, "session_id": session_id, "reason": "timeout"}
        events.presence_changed(session, room, "left", [left])
    return len(gone)


def _json_entry(entry: Entry) -> Entry:
    return PresenceEntry.model_validate(entry).model_dump(mode="json")
