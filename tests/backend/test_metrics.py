"""GET /metrics: Prometheus text that moves with real traffic, LLM calls and runs; a bearer token
guards it when METRICS_TOKEN is set."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from backend.app import create_app
from tests.conftest import Users, asgi_client, make_settings
from tests.support.scripted_provider import ScriptedProvider, TextReply, Usage
from tests.support.ui_stream import chat_body, read_chunks

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: httpx.AsyncClient, headers: dict[str, str] | None = None) -> Samples:
    response = await http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_http_requests_are_counted_by_route_template(
    client: httpx.AsyncClient, users: Users
) -> None:
    me = users.headers()
    missing = "/v1/projects/prj_01JD0000000000000000000000"
    labels = {"method": "GET", "route": "/v1/projects/{project_id}", "status": "404"}
    before = await scrape(client)

    for _ in range(3):
        assert (await client.get(missing, headers=me)).status_code == 404
    assert (await client.post("/v1/projects", headers=me, json={"name": "M"})).status_code == 201
    assert (await client.get(f"/nowhere/{uuid.uuid4().hex}")).status_code == 404

    after = await scrape(client)
    assert (
        value(after, "turbokit_http_requests_total", **labels)
        - value(before, "turbokit_http_requests_total", **labels)
        == 3
    )
    created = {"method": "POST", "route": "/v1/projects", "status": "201"}
    assert value(after, "turbokit_http_requests_total", **created) == 1 + value(
        before, "turbokit_http_requests_total", **created
    )
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(after, "turbokit_http_requests_total", **unmatched) >= 1
    duration = {"method": "GET", "route": "/v1/projects/{project_id}"}
    assert (
        value(after, "turbokit_http_request_duration_seconds_count", **duration)
        - value(before, "turbokit_http_request_duration_seconds_count", **duration)
        == 3
    )
    routes = {dict(labels_)["route"] for (_, labels_) in after if "route" in dict(labels_)}
    assert not any(route.startswith(("/v1/projects/prj_", "/nowhere")) for route in routes)


async def test_a_chat_turn_counts_its_llm_call_tokens_cost_and_run(
    chat: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    model = f"scripted/metrics-{uuid.uuid4().hex[:8]}"  # a label no other test touches
    provider.push(
        TextReply("Counted.", model=model, usage=Usage(prompt_tokens=30, completion_tokens=4))
    )
    before = await scrape(chat)

    async with chat.stream(
        "POST", "/v1/chat", json=chat_body(f"chat-{uuid.uuid4().hex[:16]}", "Hi"), headers=me
    ) as response:
        assert response.status_code == 200
        chunks = await read_chunks(response)
    assert chunks[-1]["type"] == "finish"

    after = await scrape(chat)
    assert value(after, "turbokit_llm_calls_total", model=model) == 1
    assert value(after, "turbokit_llm_tokens_total", model=model, kind="prompt") == 30
    assert value(after, "turbokit_llm_tokens_total", model=model, kind="completion") == 4
    assert value(after, "turbokit_llm_cost_usd_total", model=model) == pytest.approx(Usage().cost)
    completed = value(after, "turbokit_runs_total", status="completed")
    assert completed == value(before, "turbokit_runs_total", status="completed") + 1
    chat_route = {"method": "POST", "route": "/v1/chat", "status": "200"}
    assert value(after, "turbokit_http_requests_total", **chat_route) == 1 + value(
        before, "turbokit_http_requests_total", **chat_route
    )


async def test_active_runs_rise_while_a_run_executes(
    chat: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    provider.push(TextReply("one two three four five six", delay=0.05))
    before = value(await scrape(chat), "turbokit_active_runs")

    body = chat_body(f"chat-{uuid.uuid4().hex[:16]}", "Slowly")
    async with chat.stream("POST", "/v1/chat", json=body, headers=me) as response:
        lines = response.aiter_lines()
        assert (await anext(lines)).startswith("data:")  # the run has started
        assert value(await scrape(chat), "turbokit_active_runs") == before + 1
        async for _ in lines:
            pass

    for _ in range(100):  # the run's task ends just after its stream does
        if value(await scrape(chat), "turbokit_active_runs") == before:
            break
    assert value(await scrape(chat), "turbokit_active_runs") == before


@pytest.fixture
async def guarded(data_dir: Path, database_url: str) -> AsyncIterator[FastAPI]:
    settings = make_settings(data_dir, database_url, metrics_token="s3cret-metrics-token")
    application = create_app(settings, migrate=True)
    async with application.router.lifespan_context(application):
        yield application


async def test_metrics_token_is_required_when_set(guarded: FastAPI, users: Users) -> None:
    async with asgi_client(guarded) as http:
        attempts: list[dict[str, str | bytes]] = [
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Bearer s3cret-metrics-tokenX"},
            {"Authorization": "Basic s3cret-metrics-token"},
            {"Authorization": "Bearer é".encode("latin-1")},
            {**users.headers()},  # a user's token is not the metrics token
        ]
        for headers in attempts:
            response = await http.get("/metrics", headers=headers)
            assert response.status_code == 401, headers
            assert response.json()["error"]["code"] == "UNAUTHENTICATED"
        samples = await scrape(http, {"Authorization": "Bearer s3cret-metrics-token"})
    assert ("turbokit_active_runs", frozenset()) in samples


async def test_no_token_is_needed_when_unset(client: httpx.AsyncClient) -> None:
    assert "turbokit_http_requests_total" in {name for name, _ in await scrape(client)}
