"""Runs: the active-run lookup, state changes that happen once, event logs, metering, cascade."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select

from config.database import Database
from threads import store
from threads.models import LLMCall, Message, Role, Run, RunEvent, RunStatus
from threads.schemas import TextPart


async def _thread(db: Database, user_id: str) -> str:
    async with db.write() as session:
        return (await store.create_thread(session, user_id)).id


async def _run(db: Database, thread_id: str, user_id: str) -> Run:
    async with db.write() as session:
        return await store.create_run(
            session,
            thread_id=thread_id,
            user_id=user_id,
            agent="assistant",
            model="openai/gpt-4o-mini",
            request={"user_message_id": "msg_1"},
        )


async def test_a_new_run_is_queued_with_its_request(db: Database, user_id: str) -> None:
    thread_id = await _thread(db, user_id)
    run = await _run(db, thread_id, user_id)

    async with db.read() as session:
        stored = await store.get_run(session, run.id)
    assert stored is not None
    assert stored.id.startswith("run_")
    assert (stored.status, stored.request, stored.error, stored.started_at) == (
        RunStatus.queued,
        {"user_message_id": "msg_1"},
        None,
        None,
    )


async def _active(db: Database, thread_id: str) -> str | None:
    async with db.read() as session:
        run = await store.get_active_run(session, thread_id)
    return None if run is None else run.id


async def test_active_run_is_the_oldest_unfinished_one(db: Database, user_id: str) -> None:
    thread_id = await _thread(db, user_id)
    assert await _active(db, thread_id) is None

    first = await _run(db, thread_id, user_id)
    second = await _run(db, thread_id, user_id)
    assert await _active(db, thread_id) == first.id

    async with db.write() as session:
        await store.mark_run_running(session, first.id)
        await store.mark_run_awaiting_approval(session, first.id)
    assert await _active(db, thread_id) == first.id

    async with db.write() as session:
        await store.mark_run_finished(session, first.id, RunStatus.completed, finish_reason="stop")
    assert await _active(db, thread_id) == second.id

    async with db.write() as session:
        await store.mark_run_finished(session, second.id, RunStatus.stopped, finish_reason="other")
    assert await _active(db, thread_id) is None


async def test_a_run_starts_once_and_finishes_once(db: Database, user_id: str) -> None:
    run = await _run(db, (await _thread(db, user_id)), user_id)

    async with db.write() as session:
        started = await store.mark_run_running(session, run.id)
        assert started is not None
        assert started.started_at is not None
        assert await store.mark_run_running(session, run.id) is None  # a second delivery

        failed = await store.mark_run_finished(
            session,
            run.id,
            RunStatus.failed,
            finish_reason="error",
            error={"code": "UPSTREAM_ERROR", "message": "provider timed out"},
        )
        assert failed is not None
        assert await store.mark_run_finished(session, run.id, RunStatus.completed) is None
        assert await store.mark_run_running(session, run.id) is None

    async with db.read() as session:
        stored = await store.get_run(session, run.id)
    assert stored is not None
    assert stored.status == RunStatus.failed
    assert stored.error == {"code": "UPSTREAM_ERROR", "message": "provider timed out"}
    assert stored.finished_at is not None
    assert stored.started_at is not None
    assert stored.finished_at >= stored.started_at


async def test_finishing_needs_a_final_status_and_an_existing_run(db: Database) -> None:
    async with db.write() as session:
        with pytest.raises(ValueError, match="not a final run status"):
            await store.mark_run_finished(session, "run_x", RunStatus.running)
        with pytest.raises(store.RunNotFound):
            await store.mark_run_finished(session, "run_missing", RunStatus.completed)


async def test_run_usage_defaults_to_the_sum_of_its_llm_calls(db: Database, user_id: str) -> None:
    run = await _run(db, (await _thread(db, user_id)), user_id)
    async with db.write() as session:
        await store.record_llm_call(
            session,
            run,
            model="openai/gpt-4o-mini",
            prompt_tokens=100,
            completion_tokens=20,
            cached_tokens=64,
            cost_usd=0.1,
            latency_ms=850,
            generation_id="gen-1",
        )
        await store.record_llm_call(
            session,
            run,
            model="anthropic/claude-3.5-haiku",
            prompt_tokens=150,
            completion_tokens=30,
            reasoning_tokens=12,
            cost_usd=Decimal("0.0000001234"),
        )
        await store.record_llm_call(
            session, run, model="openai/gpt-4o-mini", prompt_tokens=1, completion_tokens=1
        )
        finished = await store.mark_run_finished(session, run.id, RunStatus.completed)

    assert finished is not None
    assert (finished.prompt_tokens, finished.completion_tokens) == (251, 51)
    assert finished.cost_usd == Decimal("0.1000001234")
    assert finished.usage == {"llm_calls": 3, "cached_tokens": 64, "reasoning_tokens": 12}
    async with db.read() as session:
        calls = await store.list_llm_calls(session, run.id)
    assert [call.model for call in calls] == [
        "openai/gpt-4o-mini",
        "anthropic/claude-3.5-haiku",
        "openai/gpt-4o-mini",
    ]
    assert (calls[0].user_id, calls[0].thread_id, calls[0].agent) == (
        user_id,
        run.thread_id,
        "assistant",
    )
    assert calls[0].cost_usd == Decimal("0.1")
    assert calls[2].cost_usd is None


async def test_run_without_calls_has_no_cost(db: Database, user_id: str) -> None:
    run = await _run(db, (await _thread(db, user_id)), user_id)
    async with db.write() as session:
        finished = await store.mark_run_finished(session, run.id, RunStatus.stopped)
    assert finished is not None
    assert (finished.prompt_tokens, finished.cost_usd) == (0, None)


async def test_explicit_usage_is_stored_as_given(db: Database, user_id: str) -> None:
    run = await _run(db, (await _thread(db, user_id)), user_id)
    usage = store.RunUsage(
        prompt_tokens=7, completion_tokens=3, cost_usd=Decimal("0.002"), extra={"credits": 2}
    )
    async with db.write() as session:
        await store.mark_run_finished(session, run.id, RunStatus.completed, usage=usage)
    async with db.read() as session:
        stored = await store.get_run(session, run.id)
    assert stored is not None
    assert (stored.prompt_tokens, stored.completion_tokens, stored.cost_usd, stored.usage) == (
        7,
        3,
        Decimal("0.002"),
        {"credits": 2},
    )


async def test_events_are_numbered_and_listed_after_a_seq(db: Database, user_id: str) -> None:
    run = await _run(db, (await _thread(db, user_id)), user_id)
    other = await _run(db, run.thread_id, user_id)
    async with db.write() as session:
        start = await store.append_run_event(session, run.id, {"type": "start", "messageId": "m"})
        deltas = await store.append_run_events(
            session,
            run.id,
            [{"type": "text-delta", "id": "t", "delta": str(i)} for i in range(5)],
        )
        await store.append_run_event(session, other.id, {"type": "start"})
        await store.append_run_event(session, run.id, {"type": "finish"})
    assert start.seq == 1
    assert [event.seq for event in deltas] == [2, 3, 4, 5, 6]

    async with db.read() as session:
        everything = await store.list_run_events(session, run.id)
        after_four = await store.list_run_events(session, run.id, after_seq=4)
        two_after_one = await store.list_run_events(session, run.id, after_seq=1, limit=2)
        nothing = await store.list_run_events(session, run.id, after_seq=7)

    assert [event.seq for event in everything] == [1, 2, 3, 4, 5, 6, 7]
    assert everything[0].chunk == {"type": "start", "messageId": "m"}
    assert [(event.seq, event.chunk["type"]) for event in after_four] == [
        (5, "text-delta"),
        (6, "text-delta"),
        (7, "finish"),
    ]
    assert [event.chunk.get("delta") for event in two_after_one] == ["0", "1"]
    assert nothing == []


async def test_deleting_a_thread_removes_its_messages_runs_events_and_calls(
    db: Database, user_id: str
) -> None:
    thread_id = await _thread(db, user_id)
    kept_thread = await _thread(db, user_id)
    run = await _run(db, thread_id, user_id)
    kept_run = await _run(db, kept_thread, user_id)
    async with db.write() as session:
        for target, target_run in ((thread_id, run), (kept_thread, kept_run)):
            await store.append_message(session, target, Role.user, [TextPart(text="hi")])
            await store.append_run_event(session, target_run.id, {"type": "start"})
            await store.record_llm_call(
                session, target_run, model="m", prompt_tokens=1, completion_tokens=1
            )

    async with db.write() as session:
        assert await store.delete_thread(session, thread_id, user_id)

    async with db.read() as session:
        counts = {
            str(model.__tablename__): await session.scalar(
                select(func.count()).select_from(model).where(column.in_(ids))
            )
            for model, column, ids in (
                (Message, Message.thread_id, [thread_id, kept_thread]),
                (Run, Run.thread_id, [thread_id, kept_thread]),
                (RunEvent, RunEvent.run_id, [run.id, kept_run.id]),
                (LLMCall, LLMCall.run_id, [run.id, kept_run.id]),
            )
        }
    assert counts == {"messages": 1, "runs": 1, "run_events": 1, "llm_calls": 1}
