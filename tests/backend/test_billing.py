"""Credits: reserved before a run, settled per LLM call, released at the end; never below zero."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from backend.billing import service as billing
from backend.billing.models import LedgerEntry, UsageEvent
from backend.billing.plans import plan_for
from backend.users.models import User
from tests.conftest import Users
from tests.support.scripted_provider import ErrorReply, ScriptedProvider, TextReply, Usage
from tests.support.ui_stream import chat_body, read_chunks, text_of

FREE = plan_for("free")
ENTERPRISE = plan_for("enterprise")


async def user_with_balance(
    http: httpx.AsyncClient, app: FastAPI, users: Users, credits: int, plan: str = "free"
) -> tuple[dict[str, str], str]:
    """A fresh user on `plan` whose balance is exactly `credits` (after this month's grant)."""
    headers = users.headers()
    user_id = (await http.get("/v1/me", headers=headers)).json()["id"]
    async with app.state.db.write() as session:
        user = await session.get(User, user_id)
        assert user is not None
        user.plan = plan
        await billing.grant_monthly(session, user)
        current = await billing.balance(session, user_id)
        await billing.change_balance(
            session, user_id, credits - current, reason="adjustment", key=f"test:{uuid.uuid4()}"
        )
    return headers, user_id


async def ledger_sum(app: FastAPI, user_id: str, after_key_prefix: str = "test:") -> int:
    async with app.state.db.read() as session:
        total = await session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.delta), 0)).where(
                LedgerEntry.user_id == user_id,
                LedgerEntry.reason != "adjustment",
                LedgerEntry.reason != "grant",
            )
        )
    return int(total or 0)


async def ledger_replays_above_zero(app: FastAPI, user_id: str) -> bool:
    """Replayed in order, the user's ledger reproduces every recorded balance, none below zero:
    the balance was never overdrawn, even for a moment."""
    async with app.state.db.read() as session:
        entries = list(
            await session.scalars(
                select(LedgerEntry).where(LedgerEntry.user_id == user_id).order_by(LedgerEntry.id)
            )
        )
    running = 0
    for entry in entries:
        running += entry.delta
        assert (entry.reason, entry.balance_after) == (entry.reason, running)
        assert running >= 0, entry.reason
    return bool(entries)


async def chat_once(http: httpx.AsyncClient, headers: dict[str, str]) -> tuple[int, Any]:
    thread_id = f"bill-{uuid.uuid4().hex[:12]}"
    async with http.stream(
        "POST", "/v1/chat", json=chat_body(thread_id, "Hi"), headers=headers
    ) as response:
        if response.status_code != 200:
            return response.status_code, (await response.aread()).decode()
        return 200, await read_chunks(response)


async def test_fifty_chats_at_once_never_overdraw(
    chat: httpx.AsyncClient, chat_app: FastAPI, users: Users, provider: ScriptedProvider
) -> None:
    # enterprise: its rate limit lets all 50 through to the credit check
    start = 10 * ENTERPRISE.run_reservation
    headers, user_id = await user_with_balance(chat, chat_app, users, start, "enterprise")
    provider.reset(default=TextReply("one two three four five six seven eight", delay=0.05))

    results = await asyncio.gather(*(chat_once(chat, headers) for _ in range(50)))

    ok = [body for status, body in results if status == 200]
    refused = [body for status, body in results if status == 402]
    assert len(ok) + len(refused) == 50
    # The balance covers ten reservations; a run that ends while later chats still wait at the
    # door gives back what it did not use, so a few more may get through, never past zero.
    assert len(ok) >= 10
    assert await ledger_replays_above_zero(chat_app, user_id)
    for body in refused:
        assert '"INSUFFICIENT_CREDITS"' in body
        assert f'"required":{ENTERPRISE.run_reservation}' in body
    assert len(provider.requests) == len(ok)  # no refused chat reached the model
    for chunks in ok:
        assert chunks[-1]["type"] == "finish"

    async with chat_app.state.db.read() as session:
        final = await billing.balance(session, user_id)
        spent = await session.scalar(
            select(func.sum(UsageEvent.credits)).where(UsageEvent.user_id == user_id)
        )
    assert final >= 0
    assert spent == len(ok)  # one call each, 1 credit (ceil of 0.123)
    assert start - final == spent
    assert await ledger_sum(chat_app, user_id) == final - start


async def test_a_run_is_refused_with_402_when_the_balance_cannot_cover_it(
    chat: httpx.AsyncClient, chat_app: FastAPI, users: Users, provider: ScriptedProvider
) -> None:
    headers, _ = await user_with_balance(chat, chat_app, users, FREE.run_reservation - 1)
    status, body = await chat_once(chat, headers)
    assert status == 402
    assert f'"available":{FREE.run_reservation - 1}' in body
    assert provider.requests == []


async def test_usage_event_matches_the_provider_and_unused_credits_return(
    chat: httpx.AsyncClient, chat_app: FastAPI, users: Users, provider: ScriptedProvider
) -> None:
    headers, user_id = await user_with_balance(chat, chat_app, users, 100)
    provider.push(
        TextReply("Sure.", usage=Usage(prompt_tokens=321, completion_tokens=45, cost=0.0072))
    )
    status, chunks = await chat_once(chat, headers)
    assert status == 200
    assert text_of(chunks) == "Sure."
    async with chat_app.state.db.read() as session:
        events = list(
            await session.scalars(select(UsageEvent).where(UsageEvent.user_id == user_id))
        )
        final = await billing.balance(session, user_id)
    assert [
        (e.prompt_tokens, e.completion_tokens, float(e.cost_usd), e.credits, e.priced_by)
        for e in events
    ] == [(321, 45, 0.0072, 8, "provider")]
    assert events[0].generation_id
    assert final == 100 - 8
    billing_view = (await chat.get("/v1/billing", headers=headers)).json()
    assert billing_view == {
        "plan": "free",
        "credits": 92,
        "credits_per_usd": 1000,
        "monthly_credits": FREE.monthly_credits,
    }


async def test_a_failed_run_is_billed_for_what_it_used(
    chat: httpx.AsyncClient, chat_app: FastAPI, users: Users, provider: ScriptedProvider
) -> None:
    headers, user_id = await user_with_balance(chat, chat_app, users, 100)
    from tests.support.scripted_provider import ToolCall, ToolCallReply

    provider.push(
        ToolCallReply(calls=[ToolCall("search_projects", {"query": "x"})], usage=Usage(cost=0.002)),
        ErrorReply(500),
        ErrorReply(500),
        ErrorReply(500),
    )
    status, chunks = await chat_once(chat, headers)
    assert status == 200
    assert chunks[-1]["type"] == "error"
    async with chat_app.state.db.read() as session:
        final = await billing.balance(session, user_id)
    assert final == 100 - 2  # the first call's cost; the reservation's rest came back
    assert await ledger_sum(chat_app, user_id) == -2


async def test_the_chat_after_the_plans_limit_in_a_minute_is_rate_limited(
    chat: httpx.AsyncClient, chat_app: FastAPI, users: Users, provider: ScriptedProvider
) -> None:
    headers, _ = await user_with_balance(chat, chat_app, users, 10_000)
    for _ in range(FREE.chat_requests_per_minute):
        status, _body = await chat_once(chat, headers)
        assert status == 200
    thread = f"bill-{uuid.uuid4().hex[:12]}"
    response = await chat.post("/v1/chat", json=chat_body(thread, "One more"), headers=headers)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert len(provider.requests) == FREE.chat_requests_per_minute


async def test_a_stopped_run_is_billed_for_what_it_used(
    chat: httpx.AsyncClient, chat_app: FastAPI, users: Users, provider: ScriptedProvider
) -> None:
    headers, user_id = await user_with_balance(chat, chat_app, users, 100)
    provider.push(TextReply(" ".join(f"w{n}" for n in range(300)), delay=0.01))
    thread = f"bill-{uuid.uuid4().hex[:12]}"
    async with chat.stream(
        "POST", "/v1/chat", json=chat_body(thread, "Go"), headers=headers
    ) as response:
        stopped = False
        async for line in response.aiter_lines():
            if '"text-delta"' in line and not stopped:
                assert (
                    await chat.post(f"/v1/chat/{thread}/stop", headers=headers)
                ).status_code == 202
                stopped = True
    for _ in range(200):
        if (await chat.get(f"/v1/chat/{thread}/stream", headers=headers)).status_code == 204:
            break
        await asyncio.sleep(0.02)
    async with chat_app.state.db.read() as session:
        events = list(
            await session.scalars(select(UsageEvent).where(UsageEvent.user_id == user_id))
        )
        final = await billing.balance(session, user_id)
    assert len(events) == 1
    assert events[0].priced_by == "price_table"  # the provider never reported the cut call
    assert events[0].prompt_tokens > 0
    assert events[0].completion_tokens > 0
    assert events[0].credits >= 1
    assert final == 100 - events[0].credits
    assert await ledger_sum(chat_app, user_id) == -events[0].credits


async def test_a_call_costing_more_than_the_reservation_takes_the_rest_from_the_balance(
    chat: httpx.AsyncClient, chat_app: FastAPI, users: Users, provider: ScriptedProvider
) -> None:
    costly = Usage(cost=(FREE.run_reservation + 30) / 1000)  # credits: the reservation + 30
    headers, user_id = await user_with_balance(chat, chat_app, users, 100)
    provider.push(TextReply("Expensive.", usage=costly))
    status, _chunks = await chat_once(chat, headers)
    assert status == 200

    async with chat_app.state.db.read() as session:
        final = await billing.balance(session, user_id)
    assert final == 100 - (FREE.run_reservation + 30)
    assert await ledger_sum(chat_app, user_id) == -(FREE.run_reservation + 30)
    assert await ledger_replays_above_zero(chat_app, user_id)


async def test_beyond_the_reservation_a_call_takes_what_is_left_and_never_more(
    chat: httpx.AsyncClient, chat_app: FastAPI, users: Users, provider: ScriptedProvider
) -> None:
    costly = Usage(cost=(FREE.run_reservation + 30) / 1000)
    headers, user_id = await user_with_balance(chat, chat_app, users, FREE.run_reservation + 5)
    provider.push(TextReply("Expensive.", usage=costly))
    status, _chunks = await chat_once(chat, headers)
    assert status == 200

    async with chat_app.state.db.read() as session:
        final = await billing.balance(session, user_id)
        (event,) = await session.scalars(select(UsageEvent).where(UsageEvent.user_id == user_id))
        beyond = await session.scalar(
            select(LedgerEntry).where(LedgerEntry.user_id == user_id, LedgerEntry.reason == "usage")
        )
    assert final == 0
    assert event.credits == FREE.run_reservation + 30  # metered in full, collected in part
    assert beyond is not None
    assert beyond.meta == {"beyond_reservation": 30, "unpaid": 25}
    assert await ledger_replays_above_zero(chat_app, user_id)


async def test_a_plan_changed_elsewhere_gets_its_grant_at_the_next_chat(
    chat: httpx.AsyncClient, chat_app: FastAPI, users: Users, provider: ScriptedProvider
) -> None:
    headers, user_id = await user_with_balance(chat, chat_app, users, 1_000)
    status, _ = await chat_once(chat, headers)  # this process now knows the free plan's grant
    assert status == 200
    async with chat_app.state.db.write() as session:  # as another process's webhook would
        user = await session.get(User, user_id)
        assert user is not None
        user.plan = "pro"

    status, _ = await chat_once(chat, headers)
    assert status == 200
    async with chat_app.state.db.read() as session:
        grants = list(
            await session.scalars(
                select(LedgerEntry.meta).where(
                    LedgerEntry.user_id == user_id, LedgerEntry.reason == "grant"
                )
            )
        )
    assert sorted(grant["plan"] for grant in grants) == ["free", "pro"]
