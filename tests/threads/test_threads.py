"""Threads: ownership, updates, deletion and the recency-ordered keyset walk."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import update

from config.database import Database
from threads import store
from threads.models import Thread, ThreadStatus
from threads.schemas import ThreadCreate, ThreadUpdate


async def _make_threads(db: Database, user_id: str, count: int) -> list[str]:
    async with db.write() as session:
        return [
            (await store.create_thread(session, user_id, ThreadCreate(title=f"t{i}"))).id
            for i in range(count)
        ]


async def _walk(db: Database, user_id: str, limit: int) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    while True:
        async with db.read() as session:
            page = await store.list_threads(session, user_id, limit=limit, cursor=cursor)
        seen += [thread.id for thread in page.items]
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


async def test_create_and_get_only_for_the_owner(db: Database, user_id: str) -> None:
    async with db.write() as session:
        created = await store.create_thread(
            session, user_id, ThreadCreate(title="Trip", metadata={"concurrency": "queue"})
        )

    async with db.read() as session:
        mine = await store.get_thread(session, created.id, user_id)
        theirs = await store.get_thread(session, created.id, "usr_someone_else")
        missing = await store.get_thread(session, "thr_missing", user_id)

    assert mine is not None
    assert (mine.id[:4], mine.title, mine.agent, mine.status) == (
        "thr_",
        "Trip",
        "assistant",
        ThreadStatus.active,
    )
    assert mine.meta == {"concurrency": "queue"}
    assert mine.created_at == mine.updated_at
    assert mine.created_at.tzinfo is UTC
    assert theirs is None
    assert missing is None


async def test_client_chosen_ids_are_checked(db: Database, user_id: str) -> None:
    async with db.write() as session:
        thread = await store.create_thread(session, user_id, thread_id="chat-Abc_123")
        assert thread.id == "chat-Abc_123"
        for bad in ("", "has space", "x" * 65, "slash/"):
            with pytest.raises(ValueError, match="thread id must match"):
                await store.create_thread(session, user_id, thread_id=bad)


async def test_get_or_create_creates_once_and_hides_other_users_threads(
    db: Database, user_id: str
) -> None:
    thread_id = f"chat-{user_id}"

    async def get_or_create(owner: str) -> Thread | None:
        async with db.write() as session:
            return await store.get_or_create_thread(session, thread_id, owner)

    first, second = await asyncio.gather(get_or_create(user_id), get_or_create(user_id))
    intruder = await get_or_create("usr_intruder")

    assert first is not None
    assert second is not None
    assert first.id == second.id == thread_id
    assert intruder is None


async def test_update_changes_only_what_was_sent(db: Database, user_id: str) -> None:
    async with db.write() as session:
        thread = await store.create_thread(
            session, user_id, ThreadCreate(title="Old", metadata={"a": 1})
        )
    created_at = thread.updated_at

    async with db.write() as session:
        unchanged = await store.update_thread(session, thread.id, user_id, ThreadUpdate())
        assert unchanged is not None
        assert unchanged.updated_at == created_at

        archived = await store.update_thread(
            session, thread.id, user_id, ThreadUpdate(status=ThreadStatus.archived)
        )
        assert archived is not None
        assert (archived.title, archived.status, archived.meta) == (
            "Old",
            ThreadStatus.archived,
            {"a": 1},
        )
        assert archived.updated_at > created_at

        cleared = await store.update_thread(
            session,
            thread.id,
            user_id,
            ThreadUpdate.model_validate({"title": None, "metadata": {}}),
        )
        assert cleared is not None
        assert (cleared.title, cleared.meta) == (None, {})

        assert await store.update_thread(session, thread.id, "usr_other", ThreadUpdate()) is None

    async with db.read() as session:
        stored = await store.get_thread(session, thread.id, user_id)
    assert stored is not None
    assert (stored.title, stored.status, stored.meta) == (None, ThreadStatus.archived, {})


async def test_delete_only_for_the_owner(db: Database, user_id: str) -> None:
    (thread_id,) = await _make_threads(db, user_id, 1)

    async with db.write() as session:
        assert await store.delete_thread(session, thread_id, "usr_other") is False
        assert await store.delete_thread(session, thread_id, user_id) is True
        assert await store.delete_thread(session, thread_id, user_id) is False
    async with db.read() as session:
        assert await store.get_thread(session, thread_id, user_id) is None


async def test_list_is_most_recently_updated_first(db: Database, user_id: str) -> None:
    ids = await _make_threads(db, user_id, 5)
    await _make_threads(db, "usr_other", 2)
    async with db.write() as session:
        await store.touch_thread(session, ids[1])

    assert await _walk(db, user_id, limit=2) == [ids[1], ids[4], ids[3], ids[2], ids[0]]


async def test_walk_with_equal_timestamps_breaks_ties_by_id(db: Database, user_id: str) -> None:
    ids = await _make_threads(db, user_id, 9)
    same = datetime(2024, 1, 1, tzinfo=UTC)
    async with db.write() as session:
        await session.execute(update(Thread).where(Thread.id.in_(ids)).values(updated_at=same))

    assert await _walk(db, user_id, limit=4) == sorted(ids, reverse=True)


async def test_walk_never_repeats_and_misses_only_threads_that_jumped_ahead(
    db: Database, user_id: str
) -> None:
    ids = await _make_threads(db, user_id, 12)
    newest_first = list(reversed(ids))
    seen: list[str] = []

    async with db.read() as session:
        page = await store.list_threads(session, user_id, limit=4)
    seen += [thread.id for thread in page.items]
    # One already seen and one still ahead both jump to the front mid-walk.
    async with db.write() as session:
        await store.touch_thread(session, newest_first[1])
        await store.touch_thread(session, newest_first[8])
    cursor = page.next_cursor
    while cursor is not None:
        async with db.read() as session:
            page = await store.list_threads(session, user_id, limit=4, cursor=cursor)
        seen += [thread.id for thread in page.items]
        cursor = page.next_cursor

    assert len(seen) == len(set(seen))
    assert set(ids) - set(seen) == {newest_first[8]}  # it moved behind the walk, to the top


async def test_list_rejects_a_bad_limit_or_cursor(db: Database, user_id: str) -> None:
    async with db.read() as session:
        with pytest.raises(ValueError, match="limit"):
            await store.list_threads(session, user_id, limit=0)
        with pytest.raises(ValueError, match="limit"):
            await store.list_threads(session, user_id, limit=101)
        with pytest.raises(store.InvalidCursor):
            await store.list_threads(session, user_id, cursor="bm90IGEgY3Vyc29y")


async def test_touching_a_missing_thread_raises(db: Database) -> None:
    async with db.write() as session:
        with pytest.raises(store.ThreadNotFound):
            await store.touch_thread(session, "thr_missing")
