"""Messages: numbering, keyset pages in both orders, context windows, UIMessage shape."""

from __future__ import annotations

import asyncio
import base64

import pytest

from config.database import Database
from threads import store
from threads.models import Role
from threads.schemas import TextPart, UIMessage, validate_parts


async def _thread(db: Database, user_id: str) -> str:
    async with db.write() as session:
        return (await store.create_thread(session, user_id)).id


async def _say(db: Database, thread_id: str, text: str, role: Role = Role.user) -> int:
    async with db.write() as session:
        message = await store.append_message(session, thread_id, role, [TextPart(text=text)])
        return message.seq


async def _walk(db: Database, thread_id: str, order: store.Order, limit: int) -> list[list[int]]:
    pages: list[list[int]] = []
    cursor: str | None = None
    while True:
        async with db.read() as session:
            page = await store.list_messages(
                session, thread_id, limit=limit, cursor=cursor, order=order
            )
        pages.append([message.seq for message in page.items])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


async def test_seq_counts_up_per_thread_and_bumps_the_thread(db: Database, user_id: str) -> None:
    first, second = await _thread(db, user_id), await _thread(db, user_id)

    seqs = [await _say(db, first, "a"), await _say(db, first, "b"), await _say(db, second, "c")]

    assert seqs == [1, 2, 1]
    async with db.read() as session:
        thread = await store.get_thread(session, first, user_id)
        last = await store.get_last_messages(session, first, 1)
    assert thread is not None
    assert thread.updated_at == last[0].created_at


async def test_concurrent_appends_get_distinct_numbers(db: Database, user_id: str) -> None:
    thread_id = await _thread(db, user_id)

    seqs = await asyncio.gather(*(_say(db, thread_id, str(i)) for i in range(20)))

    assert sorted(seqs) == list(range(1, 21))


async def test_appending_to_a_missing_thread_raises(db: Database) -> None:
    async with db.write() as session:
        with pytest.raises(store.ThreadNotFound):
            await store.append_message(session, "thr_missing", Role.user, [])


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_pages_of_7_walk_60_messages_exactly_once(
    db: Database, user_id: str, order: store.Order
) -> None:
    thread_id = await _thread(db, user_id)
    async with db.write() as session:
        for i in range(60):
            await store.append_message(session, thread_id, Role.user, [TextPart(text=str(i))])

    pages = await _walk(db, thread_id, order, limit=7)

    expected = list(range(1, 61)) if order == "asc" else list(range(60, 0, -1))
    assert [seq for page in pages for seq in page] == expected
    assert [len(page) for page in pages] == [7] * 8 + [4]


async def test_a_full_last_page_has_no_next_cursor(db: Database, user_id: str) -> None:
    thread_id = await _thread(db, user_id)
    for i in range(4):
        await _say(db, thread_id, str(i))

    assert await _walk(db, thread_id, "asc", limit=2) == [[1, 2], [3, 4]]
    assert await _walk(db, thread_id, "desc", limit=4) == [[4, 3, 2, 1]]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not a cursor!",
        "é",
        _b64(b"not json"),
        _b64(b"[1, 2]"),
        _b64(b'{"k": "msg"}'),
        _b64(b'{"k": "msg", "s": -1}'),
        _b64(b'{"k": "msg", "s": 3, "x": 1}'),
        _b64(b'{"k": "thr", "u": "2024-01-01T00:00:00Z", "i": "thr_1"}'),  # another list's
        "A" * 600,
    ],
)
async def test_bad_cursors_raise_invalid_cursor(db: Database, user_id: str, cursor: str) -> None:
    thread_id = await _thread(db, user_id)
    async with db.read() as session:
        with pytest.raises(store.InvalidCursor):
            await store.list_messages(session, thread_id, cursor=cursor)


async def test_last_messages_are_the_newest_in_chronological_order(
    db: Database, user_id: str
) -> None:
    thread_id = await _thread(db, user_id)
    for i in range(10):
        await _say(db, thread_id, str(i))

    async with db.read() as session:
        last = await store.get_last_messages(session, thread_id, 3)
        everything = await store.get_last_messages(session, thread_id, 50)

    assert [message.seq for message in last] == [8, 9, 10]
    assert len(everything) == 10


async def test_stored_message_loads_as_a_ui_message(db: Database, user_id: str) -> None:
    thread_id = await _thread(db, user_id)
    parts = validate_parts(
        [
            {"type": "step-start"},
            {
                "type": "tool-search_projects",
                "toolCallId": "call_1",
                "state": "output-available",
                "input": {"query": "garden"},
                "output": {"items": []},
            },
            {"type": "text", "text": "Nothing found."},
        ]
    )
    async with db.write() as session:
        saved = await store.append_message(
            session,
            thread_id,
            Role.assistant,
            parts,
            run_id="run_1",
            metadata={"model": "openai/gpt-4o-mini", "usage": {"prompt_tokens": 5}},
            message_id="msg_announced",
        )

    async with db.read() as session:
        message = await store.get_message(session, thread_id, "msg_announced")
    assert message is not None
    ui = UIMessage.from_row(message).model_dump(mode="json")

    created_at = saved.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert ui == {
        "id": "msg_announced",
        "role": "assistant",
        "parts": [
            {"type": "step-start"},
            {
                "type": "tool-search_projects",
                "toolCallId": "call_1",
                "state": "output-available",
                "input": {"query": "garden"},
                "output": {"items": []},
            },
            {"type": "text", "text": "Nothing found."},
        ],
        "metadata": {
            "created_at": created_at,
            "run_id": "run_1",
            "model": "openai/gpt-4o-mini",
            "usage": {
                "prompt_tokens": 5,
                "completion_tokens": 0,
                "cost_usd": None,
                "credits": None,
            },
        },
    }
