"""Usage reports, the raw events, the CSV export and the admin view: each agrees with the metered
events, shows a user only their own calls, and refuses bad ranges."""

from __future__ import annotations

import csv
import io
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from backend.billing import service as billing
from backend.billing import usage
from backend.billing.models import UsageEvent
from config.ids import new_id
from tests.conftest import Users
from tests.support.scripted_provider import ScriptedProvider, TextReply, Usage
from tests.support.ui_stream import chat_body, read_chunks
from threads.models import LLMCall, Run

TODAY = datetime.now(UTC).date()
MINI = "openai/gpt-4o-mini"
HAIKU = "anthropic/claude-3.5-haiku"
TOTAL_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "credits")
CSV_COLUMNS = [
    "id",
    "thread_id",
    "run_id",
    "agent",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "credits",
    "created_at",
]


@dataclass(frozen=True)
class Call:
    """One LLM call to meter, `days_ago` UTC days before today."""

    days_ago: int = 0
    model: str = MINI
    agent: str = "assistant"
    thread_id: str | None = "thr-one"
    prompt: int = 100
    completion: int = 20
    cost: str = "0.0012"
    at: time = time(12)


async def add_usage(app: FastAPI, user_id: str, calls: list[Call]) -> None:
    """Meter the calls through `settle_call`, as a run does: events and the daily rollup."""
    async with app.state.db.write() as session:
        for call in calls:
            when = datetime.combine(TODAY - timedelta(days=call.days_ago), call.at, UTC)
            run = Run(
                id=new_id("run"),
                thread_id=call.thread_id,
                user_id=user_id,
                agent=call.agent,
                model=call.model,
            )
            llm_call = LLMCall(
                id=new_id("llm"),
                run_id=run.id,
                user_id=user_id,
                thread_id=call.thread_id,
                agent=call.agent,
                model=call.model,
                generation_id=None,
                prompt_tokens=call.prompt,
                completion_tokens=call.completion,
                cached_tokens=0,
                reasoning_tokens=0,
                cost_usd=Decimal(call.cost),
                created_at=when,
            )
            await billing.settle_call(session, run, llm_call, app.state.settings)


async def new_user(
    http: httpx.AsyncClient, users: Users, **claims: Any
) -> tuple[dict[str, str], str]:
    headers = users.headers(**claims)
    response = await http.get("/v1/me", headers=headers)
    assert response.status_code == 200
    return headers, response.json()["id"]


async def events_of(app: FastAPI, user_id: str) -> list[UsageEvent]:
    async with app.state.db.read() as session:
        query = select(UsageEvent).where(UsageEvent.user_id == user_id)
        return list(await session.scalars(query.order_by(UsageEvent.id)))


def in_range(events: list[UsageEvent], start: date, end: date) -> list[UsageEvent]:
    return [e for e in events if start <= e.created_at.astimezone(UTC).date() <= end]


def summed(events: list[UsageEvent]) -> dict[str, Any]:
    return {
        "requests": len(events),
        "prompt_tokens": sum(e.prompt_tokens for e in events),
        "completion_tokens": sum(e.completion_tokens for e in events),
        "cost_usd": sum((e.cost_usd for e in events), Decimal(0)),
        "credits": sum(e.credits for e in events),
    }


KEYS: dict[str, Callable[[UsageEvent], str | None]] = {
    "day": lambda e: e.created_at.astimezone(UTC).date().isoformat(),
    "model": lambda e: e.model,
    "agent": lambda e: e.agent,
    "thread": lambda e: e.thread_id,
    "user": lambda e: e.user_id,
}


def expected_groups(events: list[UsageEvent], group_by: str) -> dict[str | None, dict[str, Any]]:
    by_key: dict[str | None, list[UsageEvent]] = defaultdict(list)
    for event in events:
        by_key[KEYS[group_by](event)].append(event)
    return {key: summed(group) for key, group in by_key.items()}


def assert_totals(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert {k: actual[k] for k in TOTAL_FIELDS if k != "cost_usd"} == {
        k: expected[k] for k in TOTAL_FIELDS if k != "cost_usd"
    }
    assert actual["cost_usd"] == pytest.approx(float(expected["cost_usd"]), rel=1e-9, abs=1e-12)


def assert_report(report: dict[str, Any], events: list[UsageEvent], group_by: str) -> None:
    """Totals and groups equal the sums over `events`, in the documented order."""
    assert_totals(report["totals"], summed(events))
    expected = expected_groups(events, group_by)
    assert sorted(expected, key=str) == sorted((g["key"] for g in report["groups"]), key=str)
    for group in report["groups"]:
        assert_totals(group, expected[group["key"]])
    keys = [g["key"] for g in report["groups"]]
    if group_by == "day":
        assert keys == sorted(keys)
    else:
        ranks = [(-g["credits"], g["key"] is None, g["key"] or "") for g in report["groups"]]
        assert ranks == sorted(ranks)


def parse_csv(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert reader.fieldnames == CSV_COLUMNS
    return list(reader)


def assert_csv_matches(rows: list[dict[str, str]], events: list[UsageEvent]) -> None:
    ordered = sorted(events, key=lambda e: (e.created_at, e.id))
    assert [row["id"] for row in rows] == [e.id for e in ordered]
    for row, event in zip(rows, ordered, strict=True):
        assert row["thread_id"] == (event.thread_id or "")
        assert row["run_id"] == (event.run_id or "")
        assert (row["agent"], row["model"]) == (event.agent, event.model)
        assert int(row["prompt_tokens"]) == event.prompt_tokens
        assert int(row["completion_tokens"]) == event.completion_tokens
        assert Decimal(row["cost_usd"]) == event.cost_usd
        assert int(row["credits"]) == event.credits
        assert row["created_at"].endswith("Z")
        assert datetime.fromisoformat(row["created_at"].replace("Z", "+00:00")) == event.created_at


def span(days_back: int) -> dict[str, str]:
    return {"from": (TODAY - timedelta(days=days_back)).isoformat(), "to": TODAY.isoformat()}


MIXED = [
    Call(days_ago=0, model=MINI, agent="assistant", thread_id="thr-a", cost="0.0012"),
    Call(days_ago=0, model=HAIKU, agent="assistant", thread_id="thr-a", cost="0.0101"),
    Call(days_ago=1, model=MINI, agent="researcher", thread_id="thr-b", cost="0.0004"),
    Call(days_ago=1, model=MINI, agent="researcher", thread_id="thr-b", cost="0.0021", at=time(0)),
    Call(days_ago=3, model=HAIKU, agent="assistant", thread_id=None, cost="0.0035"),
    Call(days_ago=3, model=MINI, agent="assistant", thread_id="thr-c", at=time(23, 59, 59)),
    Call(days_ago=29, model=MINI, agent="researcher", thread_id="thr-c", cost="0.0007"),
    Call(days_ago=30, model=HAIKU, agent="assistant", thread_id="thr-a", cost="0.0200"),
    Call(days_ago=200, model=MINI, agent="assistant", thread_id="thr-d", cost="0.0050"),
]


# --- reports -------------------------------------------------------------------------------------


@pytest.mark.parametrize("group_by", ["day", "model", "agent", "thread"])
async def test_a_report_equals_the_sums_over_the_events(
    client: httpx.AsyncClient, app: FastAPI, users: Users, group_by: str
) -> None:
    headers, user_id = await new_user(client, users)
    await add_usage(app, user_id, MIXED)
    events = await events_of(app, user_id)
    assert len(events) == len(MIXED)

    for days_back in (0, 3, 29, 365):
        params = {**span(days_back), "group_by": group_by}
        response = await client.get("/v1/usage", params=params, headers=headers)
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["from"] == params["from"]
        assert report["to"] == params["to"]
        assert report["group_by"] == group_by
        assert_report(report, in_range(events, TODAY - timedelta(days=days_back), TODAY), group_by)


async def test_the_default_range_is_the_last_30_days_and_by_day(
    client: httpx.AsyncClient, app: FastAPI, users: Users
) -> None:
    headers, user_id = await new_user(client, users)
    await add_usage(app, user_id, MIXED)
    events = await events_of(app, user_id)

    report = (await client.get("/v1/usage", headers=headers)).json()

    assert (report["from"], report["to"], report["group_by"]) == (
        (TODAY - timedelta(days=29)).isoformat(),
        TODAY.isoformat(),
        "day",
    )
    last_30 = in_range(events, TODAY - timedelta(days=29), TODAY)
    assert len(last_30) == 7  # 30 and 200 days ago are outside
    assert_report(report, last_30, "day")
    only_to = {"to": (TODAY - timedelta(days=1)).isoformat()}
    report = (await client.get("/v1/usage", params=only_to, headers=headers)).json()
    assert report["from"] == (TODAY - timedelta(days=30)).isoformat()
    assert_report(report, in_range(events, TODAY - timedelta(days=30), TODAY - timedelta(1)), "day")


async def test_no_usage_is_zero_totals_and_no_groups(
    client: httpx.AsyncClient, users: Users
) -> None:
    headers, _ = await new_user(client, users)
    for group_by in ("day", "model", "agent", "thread"):
        response = await client.get("/v1/usage", params={"group_by": group_by}, headers=headers)
        assert response.status_code == 200
        assert response.json()["totals"] == dict.fromkeys(TOTAL_FIELDS, 0)
        assert response.json()["groups"] == []


async def test_reports_from_real_chats_agree_with_the_events(
    chat: httpx.AsyncClient, chat_app: FastAPI, users: Users, provider: ScriptedProvider
) -> None:
    headers, user_id = await new_user(chat, users)
    provider.push(
        TextReply("One.", usage=Usage(prompt_tokens=321, completion_tokens=45, cost=0.0072)),
        TextReply("Two.", usage=Usage(prompt_tokens=50, completion_tokens=5, cost=0.0001)),
        TextReply("Three.", usage=Usage(prompt_tokens=77, completion_tokens=9, cost=0.0123)),
    )
    threads = [f"usage-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    for thread_id in (threads[0], threads[1], threads[0]):
        async with chat.stream(
            "POST", "/v1/chat", json=chat_body(thread_id, "Hi"), headers=headers
        ) as response:
            assert response.status_code == 200
            assert (await read_chunks(response))[-1]["type"] == "finish"
    events = await events_of(chat_app, user_id)
    assert len(events) == 3

    for group_by in ("day", "model", "agent", "thread"):
        response = await chat.get("/v1/usage", params={"group_by": group_by}, headers=headers)
        assert_report(response.json(), events, group_by)
    by_thread = (await chat.get("/v1/usage?group_by=thread", headers=headers)).json()
    assert [g["key"] for g in by_thread["groups"]] == [threads[0], threads[1]]  # 8+13 vs 1 credit
    assert by_thread["totals"]["credits"] == 8 + 1 + 13

    page = (await chat.get("/v1/usage/events", headers=headers)).json()
    assert [item["id"] for item in page["items"]] == [e.id for e in reversed(events)]
    assert {item["thread_id"] for item in page["items"]} == set(threads)

    export = await chat.get("/v1/usage/export.csv", headers=headers)
    assert_csv_matches(parse_csv(export.text), events)


# --- events --------------------------------------------------------------------------------------


async def test_events_are_pages_newest_first(
    client: httpx.AsyncClient, app: FastAPI, users: Users
) -> None:
    headers, user_id = await new_user(client, users)
    await add_usage(app, user_id, [Call(prompt=n, thread_id=f"thr-{n % 3}") for n in range(23)])
    events = await events_of(app, user_id)

    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 10} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/usage/events", params=params, headers=headers)).json()
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(seen), cursor] == [23, None]
    newest_first = list(reversed(events))
    assert [item["id"] for item in seen] == [e.id for e in newest_first]
    first, event = seen[0], newest_first[0]
    assert set(first) == set(CSV_COLUMNS)
    assert first == {
        "id": event.id,
        "thread_id": event.thread_id,
        "run_id": event.run_id,
        "agent": event.agent,
        "model": event.model,
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "cost_usd": pytest.approx(float(event.cost_usd)),
        "credits": event.credits,
        "created_at": event.created_at.isoformat().replace("+00:00", "Z"),
    }


async def test_events_refuse_a_malformed_cursor_and_limit(
    client: httpx.AsyncClient, users: Users
) -> None:
    headers, _ = await new_user(client, users)
    for params in ({"cursor": "thr_01JD0000000000000000000000"}, {"limit": 0}, {"limit": 101}):
        response = await client.get("/v1/usage/events", params=params, headers=headers)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"


# --- export --------------------------------------------------------------------------------------


async def test_the_export_is_a_csv_of_the_events_in_the_range(
    client: httpx.AsyncClient, app: FastAPI, users: Users, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers, user_id = await new_user(client, users)
    same_instant = [Call(days_ago=2, at=time(9, 30), prompt=n) for n in range(5)]
    await add_usage(app, user_id, [*MIXED, *same_instant])
    events = await events_of(app, user_id)
    monkeypatch.setattr(usage, "EXPORT_BATCH", 2)  # batches split the equal timestamps

    params = span(29)
    response = await client.get("/v1/usage/export.csv", params=params, headers=headers)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    disposition = response.headers["content-disposition"]
    assert disposition == f'attachment; filename="usage-{params["from"]}-{params["to"]}.csv"'
    rows = parse_csv(response.text)
    assert len(rows) == 7 + 5
    assert_csv_matches(rows, in_range(events, TODAY - timedelta(days=29), TODAY))
    costs = sum((Decimal(row["cost_usd"]) for row in rows), Decimal(0))
    report = (await client.get("/v1/usage", params=params, headers=headers)).json()
    assert report["totals"]["cost_usd"] == pytest.approx(float(costs))
    assert report["totals"]["credits"] == sum(int(row["credits"]) for row in rows)


async def test_an_empty_export_is_the_header_row(client: httpx.AsyncClient, users: Users) -> None:
    headers, _ = await new_user(client, users)
    response = await client.get("/v1/usage/export.csv", headers=headers)
    assert response.status_code == 200
    assert response.text == ",".join(CSV_COLUMNS) + "\r\n"


# --- isolation and admin -------------------------------------------------------------------------


async def test_another_user_sees_none_of_it(
    client: httpx.AsyncClient, app: FastAPI, users: Users
) -> None:
    _, owner_id = await new_user(client, users)
    await add_usage(app, owner_id, MIXED)
    other, _ = await new_user(client, users)

    for group_by in ("day", "model", "agent", "thread"):
        params = {**span(365), "group_by": group_by}
        report = (await client.get("/v1/usage", params=params, headers=other)).json()
        assert (report["totals"]["requests"], report["groups"]) == (0, [])
    page = (await client.get("/v1/usage/events", headers=other)).json()
    assert page == {"items": [], "next_cursor": None}
    export = await client.get("/v1/usage/export.csv", params=span(365), headers=other)
    assert parse_csv(export.text) == []


async def test_admins_see_everyone_and_others_are_forbidden(
    client: httpx.AsyncClient, app: FastAPI, users: Users
) -> None:
    _, alice = await new_user(client, users)
    _, bob = await new_user(client, users)
    await add_usage(app, alice, MIXED)
    await add_usage(app, bob, [Call(days_ago=1, model=HAIKU, cost="0.5"), Call(days_ago=400)])
    admin = users.headers(admin=True)
    ours = [*await events_of(app, alice), *await events_of(app, bob)]

    for group_by in ("user", "day", "model"):
        params = {**span(365), "group_by": group_by}
        response = await client.get("/v1/admin/usage", params=params, headers=admin)
        assert response.status_code == 200, response.text
        report = response.json()
        groups = {g["key"]: g for g in report["groups"]}
        recent = in_range(ours, TODAY - timedelta(days=365), TODAY)
        for key, sums in expected_groups(recent, group_by).items():
            if group_by == "user":
                assert_totals(groups[key], sums)
            else:  # other tests' users count too
                assert groups[key]["requests"] >= sums["requests"]
        assert report["totals"]["requests"] == sum(g["requests"] for g in report["groups"])
        assert report["totals"]["credits"] == sum(g["credits"] for g in report["groups"])
    by_user = (await client.get("/v1/admin/usage?group_by=user", headers=admin)).json()
    assert by_user["groups"][0]["credits"] >= 500  # bob's 0.5 USD call, most credits first
    ranks = [(-g["credits"], g["key"]) for g in by_user["groups"]]
    assert ranks == sorted(ranks)

    for headers in (users.headers(), {}):
        response = await client.get("/v1/admin/usage", headers=headers)
        expected = (403, "FORBIDDEN") if headers else (401, "UNAUTHENTICATED")
        assert (response.status_code, response.json()["error"]["code"]) == expected
    for path, group_by in (("/v1/admin/usage", "thread"), ("/v1/usage", "user")):
        response = await client.get(path, params={"group_by": group_by}, headers=admin)
        assert response.status_code == 422
        assert response.json()["error"]["data"]["errors"][0]["loc"] == ["query", "group_by"]


async def test_every_usage_route_needs_a_token(client: httpx.AsyncClient) -> None:
    for path in ("/v1/usage", "/v1/usage/events", "/v1/usage/export.csv"):
        response = await client.get(path)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "UNAUTHENTICATED"


# --- ranges --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2025-03-02", "to": "2025-03-01"},
        {"from": "2024-01-01", "to": "2025-01-01"},  # 367 days
        {"from": (TODAY + timedelta(days=1)).isoformat()},  # after the default `to`, today
        {"from": (TODAY - timedelta(days=366)).isoformat()},  # 367 days up to today
        {"from": "2025-02-30"},
        {"to": "yesterday"},
    ],
)
@pytest.mark.parametrize("path", ["/v1/usage", "/v1/usage/export.csv", "/v1/admin/usage"])
async def test_bad_ranges_are_422(
    client: httpx.AsyncClient, users: Users, path: str, params: dict[str, str]
) -> None:
    response = await client.get(path, params=params, headers=users.headers(admin=True))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["data"]["errors"][0]["loc"][0] == "query"


async def test_a_range_of_366_days_and_of_one_day_are_accepted(
    client: httpx.AsyncClient, users: Users
) -> None:
    headers = users.headers()
    for params in (
        {"from": "2024-01-01", "to": "2024-12-31"},  # leap year: 366 days
        {"from": "2025-06-01", "to": "2025-06-01"},
    ):
        response = await client.get("/v1/usage", params=params, headers=headers)
        assert response.status_code == 200, response.text
        assert (response.json()["from"], response.json()["to"]) == (params["from"], params["to"])
