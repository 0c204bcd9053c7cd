"""What one chat turn costs the database, and what it keeps while it is cheap: a one-step turn
commits twice (the door, the run's end); a step that calls tools is billed before its tools run
and saved before the next model call; the run's totals are its calls' totals."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event, func, select
from sqlalchemy.engine import Connection

from backend.billing.models import UsageEvent
from tests.conftest import Users
from tests.support.scripted_provider import (
    ScriptedProvider,
    TextReply,
    ToolCall,
    ToolCallReply,
    Usage,
)
from tests.support.ui_stream import chat_body, read_chunks, text_of
from threads import store
from threads.models import LLMCall, RunEvent, RunStatus


@dataclass
class Traffic:
    """Transactions begun and committed, and statements run, on one engine."""

    begun: int = 0
    committed: int = 0
    statements: list[str] = field(default_factory=list)


@contextmanager
def database_traffic(app: FastAPI) -> Iterator[Traffic]:
    engines = [engine.sync_engine for engine in app.state.db.engines]
    traffic = Traffic()

    def begun(_conn: Connection) -> None:
        traffic.begun += 1

    def committed(_conn: Connection) -> None:
        traffic.committed += 1

    def executed(*args: Any) -> None:
        statement: str = args[2]
        if not statement.lstrip().upper().startswith("BEGIN"):
            traffic.statements.append(" ".join(statement.split())[:80])

    listeners = [("begin", begun), ("commit", committed), ("before_cursor_execute", executed)]
    for engine in engines:
        for name, listener in listeners:
            event.listen(engine, name, listener)
    try:
        yield traffic
    finally:
        for engine in engines:
            for name, listener in listeners:
                event.remove(engine, name, listener)


async def test_a_one_step_turn_on_a_new_thread_commits_twice_and_reads_nothing_else(
    chat: httpx.AsyncClient, chat_app: FastAPI, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    assert (await chat.get("/v1/me", headers=me)).status_code == 200  # provisioned first
    provider.push(TextReply("Short and sweet."))
    thread_id = f"turn-{uuid.uuid4().hex[:12]}"

    with database_traffic(chat_app) as traffic:
        async with chat.stream(
            "POST", "/v1/chat", json=chat_body(thread_id, "Hi"), headers=me
        ) as response:
            chunks = await read_chunks(response)

    assert text_of(chunks) == "Short and sweet."
    # The door's transaction (which also starts the run and hands it its history), then the
    # run's end (call, credits, events, message, release, status); no other transaction.
    assert (traffic.begun, traffic.committed) == (2, 2), traffic.statements
    assert len(traffic.statements) <= 20, traffic.statements
    async with chat_app.state.db.read() as session:
        run = await store.get_active_run(session, thread_id)
        page = await store.list_messages(session, thread_id, order="asc")
    assert run is None
    assert [m.role for m in page.items] == ["user", "assistant"]


async def test_a_tool_step_is_billed_and_saved_before_the_next_model_call(
    chat: httpx.AsyncClient, chat_app: FastAPI, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    first_usage = Usage(prompt_tokens=40, completion_tokens=9, cost=0.002, cached_tokens=16)
    last_usage = Usage(prompt_tokens=70, completion_tokens=12, cost=0.003, reasoning_tokens=5)
    answer = " ".join(f"word{n}" for n in range(20))
    provider.push(
        ToolCallReply(calls=[ToolCall("search_projects", {"query": "x"})], usage=first_usage),
        TextReply(answer, delay=0.05, usage=last_usage),
    )
    thread_id = f"turn-{uuid.uuid4().hex[:12]}"

    kinds: list[str] = []
    during = None
    async with chat.stream(
        "POST", "/v1/chat", json=chat_body(thread_id, "Look it up"), headers=me
    ) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                kinds.append(json.loads(line[6:])["type"])
                if kinds[-1] == "text-delta" and during is None:
                    # The second step is streaming: the first one is behind us.
                    during = await _saved(chat_app, thread_id)

    assert kinds[-1] == "finish"
    assert during is not None
    assert during.status is RunStatus.running
    assert during.calls == 1
    assert during.usage_events == 1
    assert "finish-step" in during.chunk_types
    assert "tool-output-available" in during.chunk_types

    after = await _saved(chat_app, thread_id, during.run_id)
    assert (after.status, after.calls, after.usage_events) == (RunStatus.completed, 2, 2)
    async with chat_app.state.db.read() as session:
        run = await store.get_run(session, during.run_id)
        summed = await store.sum_llm_calls(session, during.run_id)
    assert run is not None
    assert (run.prompt_tokens, run.completion_tokens) == (110, 21)
    assert run.cost_usd == Decimal("0.005")
    assert (run.prompt_tokens, run.completion_tokens, run.cost_usd, run.usage) == (
        summed.prompt_tokens,
        summed.completion_tokens,
        summed.cost_usd,
        summed.extra,
    )
    assert run.usage == {"llm_calls": 2, "cached_tokens": 16, "reasoning_tokens": 5}


@dataclass
class _Saved:
    run_id: str
    status: RunStatus
    calls: int
    usage_events: int
    chunk_types: list[str]


async def _saved(app: FastAPI, thread_id: str, run_id: str | None = None) -> _Saved:
    """What the database holds for the thread's active run (or for `run_id`)."""
    async with app.state.db.read() as session:
        if run_id is None:
            active = await store.get_active_run(session, thread_id)
            assert active is not None
            run_id = active.id
        run = await store.get_run(session, run_id)
        assert run is not None
        calls = await session.scalar(select(func.count()).where(LLMCall.run_id == run_id))
        events = await session.scalar(select(func.count()).where(UsageEvent.run_id == run_id))
        chunks = await session.scalars(
            select(RunEvent.chunk).where(RunEvent.run_id == run_id).order_by(RunEvent.seq)
        )
        return _Saved(run_id, run.status, calls or 0, events or 0, [c["type"] for c in chunks])
