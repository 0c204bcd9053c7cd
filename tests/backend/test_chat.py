"""Chat end to end over real HTTP: the app streams the AI SDK protocol while litellm talks real HTTP
to a scripted OpenAI-compatible provider on loopback."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import Users
from tests.support.scripted_provider import (
    ErrorReply,
    ScriptedProvider,
    TextReply,
    ToolCall,
    ToolCallReply,
    Usage,
)
from tests.support.ui_stream import chat_body, read_chunks, text_of, types, wait_idle, without_ids
from threads import store


def new_thread_id() -> str:
    return f"chat-{uuid.uuid4().hex[:16]}"


async def send(
    http: httpx.AsyncClient, headers: dict[str, str], thread_id: str, text: str
) -> list[dict[str, Any]]:
    async with http.stream(
        "POST", "/v1/chat", json=chat_body(thread_id, text), headers=headers
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
        assert response.headers["content-type"].startswith("text/event-stream")
        return await read_chunks(response)


async def messages(
    http: httpx.AsyncClient, headers: dict[str, str], thread_id: str
) -> list[dict[str, Any]]:
    response = await http.get(f"/v1/threads/{thread_id}/messages?order=asc", headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_a_tool_using_turn_streams_saves_and_meters(
    chat: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    project = (
        await chat.post(
            "/v1/projects", headers=me, json={"name": "Zephyr launch", "description": "rockets"}
        )
    ).json()
    provider.push(
        ToolCallReply(calls=[ToolCall("search_projects", {"query": "zephyr"})]),
        TextReply("You have one: Zephyr launch."),
    )
    thread_id = new_thread_id()

    chunks = await send(chat, me, thread_id, "Find my project named Zephyr")

    kinds = types(chunks)
    assert kinds[0] == "start"
    assert kinds[-1] == "finish"
    assert [c["_id"] for c in chunks] == [str(n) for n in range(1, len(chunks) + 1)]
    tool_input = next(c for c in chunks if c["type"] == "tool-input-available")
    assert tool_input["toolName"] == "search_projects"
    assert tool_input["input"] == {"query": "zephyr"}
    tool_output = next(c for c in chunks if c["type"] == "tool-output-available")
    assert tool_output["toolCallId"] == tool_input["toolCallId"]
    assert [hit["id"] for hit in tool_output["output"]] == [project["id"]]
    assert kinds.index("tool-output-available") < kinds.index("text-start")
    assert text_of(chunks) == "You have one: Zephyr launch."

    second = provider.requests[1].messages
    assert second[-1]["role"] == "tool"
    assert project["id"] in second[-1]["content"]
    assert second[-2]["tool_calls"][0]["function"]["name"] == "search_projects"

    finish = chunks[-1]
    assert finish["finishReason"] == "stop"
    usage = finish["messageMetadata"]["usage"]
    assert usage["prompt_tokens"] == 2 * Usage().prompt_tokens
    assert usage["completion_tokens"] == 2 * Usage().completion_tokens
    assert usage["cost_usd"] == pytest.approx(2 * Usage().cost)  # type: ignore[operator]

    saved = await messages(chat, me, thread_id)
    assert [m["role"] for m in saved] == ["user", "assistant"]
    assert saved[0]["parts"] == [{"type": "text", "text": "Find my project named Zephyr"}]
    assistant = saved[1]
    assert assistant["id"] == chunks[0]["messageId"]
    assert [p["type"] for p in assistant["parts"]] == [
        "step-start",
        "tool-search_projects",
        "step-start",
        "text",
    ]
    tool_part = assistant["parts"][1]
    assert tool_part["state"] == "output-available"
    assert tool_part["toolCallId"] == tool_input["toolCallId"]
    assert tool_part["output"] == tool_output["output"]
    assert assistant["parts"][3]["text"] == "You have one: Zephyr launch."
    assert assistant["metadata"]["run_id"] == finish["messageMetadata"]["run_id"]
    assert assistant["metadata"]["usage"] == usage


async def test_run_and_llm_calls_record_the_providers_usage(
    chat: httpx.AsyncClient, chat_app: FastAPI, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    provider.push(
        TextReply("Hi.", usage=Usage(prompt_tokens=100, completion_tokens=5, cost=0.0042))
    )
    chunks = await send(chat, me, new_thread_id(), "Hello")
    run_id = chunks[-1]["messageMetadata"]["run_id"]
    async with chat_app.state.db.read() as session:
        run = await store.get_run(session, run_id)
        calls = await store.list_llm_calls(session, run_id)
    assert run is not None
    assert (run.status, run.prompt_tokens, run.completion_tokens) == ("completed", 100, 5)
    assert run.cost_usd == Decimal("0.0042")
    assert [(c.prompt_tokens, c.completion_tokens, c.cost_usd) for c in calls] == [
        (100, 5, Decimal("0.0042"))
    ]
    assert calls[0].generation_id


async def test_a_dropped_connection_loses_nothing(
    chat: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    words = " ".join(f"word{n}" for n in range(40))
    provider.push(TextReply(words, delay=0.02))
    thread_id = new_thread_id()
    async with chat.stream(
        "POST", "/v1/chat", json=chat_body(thread_id, "Talk"), headers=me
    ) as response:
        async for line in response.aiter_lines():
            if '"text-delta"' in line:
                break  # the client goes away mid-answer

    async with chat.stream("GET", f"/v1/chat/{thread_id}/stream", headers=me) as resumed:
        assert resumed.status_code == 200
        replay = await read_chunks(resumed)
    assert replay[0]["type"] == "start"
    assert replay[0]["_id"] == "1"
    assert replay[-1]["type"] == "finish"
    assert text_of(replay) == words

    async with chat.stream(
        "GET", f"/v1/chat/{thread_id}/stream", headers={**me, "Last-Event-ID": "3"}
    ) as partial:
        assert partial.status_code in (200, 204)

    await wait_idle(chat, me, thread_id)
    saved = await messages(chat, me, thread_id)
    assert saved[-1]["parts"][-1] == {"type": "text", "text": words}


async def test_last_event_id_replays_only_what_follows(
    chat: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    provider.push(TextReply(" ".join(f"w{n}" for n in range(30)), delay=0.02))
    thread_id = new_thread_id()
    async with chat.stream(
        "POST", "/v1/chat", json=chat_body(thread_id, "Go"), headers=me
    ) as first:
        async with chat.stream(
            "GET", f"/v1/chat/{thread_id}/stream", headers={**me, "Last-Event-ID": "4"}
        ) as resumed:
            tail = await read_chunks(resumed)
        whole = await read_chunks(first)
    assert tail[0]["_id"] == "5"
    assert without_ids(tail) == without_ids(whole[4:])


async def test_stop_saves_the_partial_answer_with_usage(
    chat: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    provider.push(TextReply(" ".join(f"slow{n}" for n in range(200)), delay=0.02))
    thread_id = new_thread_id()
    async with chat.stream(
        "POST", "/v1/chat", json=chat_body(thread_id, "Go on"), headers=me
    ) as response:
        chunks: list[dict[str, Any]] = []
        stopped = False
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                chunks.append(__import__("json").loads(line[6:]))
                if chunks[-1]["type"] == "text-delta" and not stopped:
                    stop = await chat.post(f"/v1/chat/{thread_id}/stop", headers=me)
                    assert stop.status_code == 202
                    stopped = True
    finish = chunks[-1]
    assert finish["type"] == "finish"
    assert finish["finishReason"] == "other"
    assert finish["messageMetadata"]["usage"]["prompt_tokens"] > 0

    await wait_idle(chat, me, thread_id)
    saved = await messages(chat, me, thread_id)
    partial = saved[-1]
    assert partial["role"] == "assistant"
    assert 0 < len(partial["parts"][-1]["text"]) < len(" ".join(f"slow{n}" for n in range(200)))
    assert partial["metadata"]["usage"]["completion_tokens"] > 0

    provider.push(TextReply("Fine."))
    after = await send(chat, me, thread_id, "Next question")
    assert text_of(after) == "Fine."


async def test_tool_failures_go_back_to_the_model_and_the_run_goes_on(
    chat: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    provider.push(
        ToolCallReply(
            calls=[
                ToolCall("search_projects", "{not json", id="bad_json"),
                ToolCall("drop_database", {}, id="unknown"),
                ToolCall("search_projects", {"query": 42}, id="bad_type"),
                ToolCall(
                    "get_project", {"project_id": "prj_01JD0000000000000000000000"}, id="raises"
                ),
            ]
        ),
        TextReply("Sorry, I could not find that."),
    )
    chunks = await send(chat, me, new_thread_id(), "Break things")
    errors = {c["toolCallId"]: c["errorText"] for c in chunks if c["type"] == "tool-output-error"}
    assert set(errors) == {"bad_json", "unknown", "bad_type", "raises"}
    assert "Invalid JSON" in errors["bad_json"]
    assert "drop_database" in errors["unknown"]
    assert "query" in errors["bad_type"]
    assert "No project" in errors["raises"]
    results = {
        m["tool_call_id"]: m["content"]
        for m in provider.requests[1].messages
        if m["role"] == "tool"
    }
    assert set(results) == set(errors)
    assert text_of(chunks) == "Sorry, I could not find that."
    assert chunks[-1]["finishReason"] == "stop"


async def test_a_provider_500_is_retried(
    chat: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    provider.push(ErrorReply(500), TextReply("Recovered."))
    chunks = await send(chat, users.headers(), new_thread_id(), "Hi")
    assert text_of(chunks) == "Recovered."
    assert len(provider.requests) == 2


async def test_a_provider_that_stays_down_fails_the_run_cleanly(
    chat: httpx.AsyncClient, chat_app: FastAPI, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    provider.reset(default=ErrorReply(503, "overloaded"))
    thread_id = new_thread_id()
    chunks = await send(chat, me, thread_id, "Anyone there?")
    assert chunks[-1]["type"] == "error"
    assert "503" in chunks[-1]["errorText"]
    assert len(provider.requests) == 3  # the call and two retries

    saved = await messages(chat, me, thread_id)
    assert [m["role"] for m in saved] == ["user"]
    async with chat_app.state.db.read() as session:
        run = await store.get_active_run(session, thread_id)
        assert run is None
        page = await store.list_messages(session, thread_id)
    assert len(page.items) == 1

    reply = await chat.post(
        f"/v1/threads/{thread_id}/messages", headers=me, json={"text": "Again?"}
    )
    assert reply.status_code == 502
    assert reply.json()["error"]["code"] == "UPSTREAM_ERROR"


async def test_max_steps_ends_a_tool_loop(
    chat: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    provider.reset(default=ToolCallReply(calls=[ToolCall("search_projects", {"query": "loop"})]))
    chunks = await send(chat, users.headers(), new_thread_id(), "Search forever")
    assert chunks[-1]["type"] == "finish"
    assert chunks[-1]["finishReason"] == "tool-calls"
    assert types(chunks).count("start-step") == 5  # the free plan's max_steps
    assert len(provider.requests) == 5


async def test_json_door_returns_the_assistant_message(
    chat: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    thread = (await chat.post("/v1/threads", headers=me, json={"title": "Script"})).json()
    provider.push(TextReply("Plain JSON."))
    reply = await chat.post(f"/v1/threads/{thread['id']}/messages", headers=me, json={"text": "Hi"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["message"]["role"] == "assistant"
    assert body["message"]["parts"][-1] == {"type": "text", "text": "Plain JSON."}
    assert body["usage"]["prompt_tokens"] == Usage().prompt_tokens
    assert body["run_id"].startswith("run_")

    provider.push(TextReply("Streamed."))
    async with chat.stream(
        "POST",
        f"/v1/threads/{thread['id']}/messages",
        headers={**me, "Accept": "text/event-stream"},
        json={"text": "Again"},
    ) as response:
        assert text_of(await read_chunks(response)) == "Streamed."


async def test_a_second_message_during_a_run_conflicts_or_queues(
    chat: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    thread_id = new_thread_id()
    provider.push(TextReply("one two three four five six", delay=0.05))
    async with chat.stream(
        "POST", "/v1/chat", json=chat_body(thread_id, "First"), headers=me
    ) as first:
        conflict = await chat.post("/v1/chat", json=chat_body(thread_id, "Second"), headers=me)
        assert conflict.status_code == 409
        assert conflict.json()["error"]["code"] == "CONFLICT"
        await read_chunks(first)

    await chat.patch(
        f"/v1/threads/{thread_id}", headers=me, json={"metadata": {"concurrency": "queue"}}
    )
    provider.push(TextReply("alpha beta gamma delta", delay=0.05), TextReply("Queued answer."))
    async with chat.stream(
        "POST", "/v1/chat", json=chat_body(thread_id, "Third"), headers=me
    ) as third:
        async with chat.stream(
            "POST", "/v1/chat", json=chat_body(thread_id, "Fourth"), headers=me
        ) as fourth:
            queued = await read_chunks(fourth)
        await read_chunks(third)
    assert text_of(queued) == "Queued answer."
    await wait_idle(chat, me, thread_id)
    saved = await messages(chat, me, thread_id)
    assert [(m["role"], m["parts"][-1].get("text")) for m in saved][-4:] == [
        ("user", "Third"),
        ("assistant", "alpha beta gamma delta"),
        ("user", "Fourth"),
        ("assistant", "Queued answer."),
    ]


async def test_another_users_thread_is_404_on_every_route(
    chat: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    owner, stranger = users.headers(), users.headers()
    thread_id = new_thread_id()
    await send(chat, owner, thread_id, "Mine")
    attempts = [
        chat.get(f"/v1/threads/{thread_id}", headers=stranger),
        chat.patch(f"/v1/threads/{thread_id}", headers=stranger, json={"title": "x"}),
        chat.get(f"/v1/threads/{thread_id}/messages", headers=stranger),
        chat.post(f"/v1/threads/{thread_id}/messages", headers=stranger, json={"text": "hi"}),
        chat.post("/v1/chat", headers=stranger, json=chat_body(thread_id, "hi")),
        chat.get(f"/v1/chat/{thread_id}/stream", headers=stranger),
        chat.post(f"/v1/chat/{thread_id}/stop", headers=stranger),
        chat.delete(f"/v1/threads/{thread_id}", headers=stranger),
    ]
    for response in await asyncio.gather(*attempts):
        assert response.status_code == 404, (response.request.url, response.text)
        assert response.json()["error"]["code"] == "NOT_FOUND"
    listed = (await chat.get("/v1/threads", headers=stranger)).json()["items"]
    assert thread_id not in [t["id"] for t in listed]
    assert len(await messages(chat, owner, thread_id)) == 2


async def test_agents_list_their_tools_with_schemas(chat: httpx.AsyncClient, users: Users) -> None:
    agents = (await chat.get("/v1/agents", headers=users.headers())).json()["items"]
    assistant = next(a for a in agents if a["name"] == "assistant")
    tools = {t["name"]: t for t in assistant["tools"]}
    assert {"search_projects", "get_project", "create_project", "update_project"} <= set(tools)
    schema = tools["search_projects"]["parameters"]
    assert schema["type"] == "object"
    assert schema["required"] == ["query"]
    assert "user_id" not in schema["properties"]


async def test_chat_without_a_provider_names_the_setting(
    client: httpx.AsyncClient, users: Users
) -> None:
    response = await client.post("/v1/chat", headers=users.headers(), json=chat_body("t-1", "Hi"))
    assert response.status_code == 503
    assert "OPENROUTER_API_KEY" in response.json()["error"]["message"]
    assert (await client.get("/v1/projects", headers=users.headers())).status_code == 200


async def test_a_run_abandoned_by_a_dead_process_does_not_block_the_thread(
    chat: httpx.AsyncClient, chat_app: FastAPI, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    user_id = (await chat.get("/v1/me", headers=me)).json()["id"]
    thread_id = new_thread_id()
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    async with chat_app.state.db.write() as session:
        await store.create_thread(session, user_id, thread_id=thread_id)
        run = await store.create_run(
            session, thread_id=thread_id, user_id=user_id, agent="assistant", model="m"
        )
        await store.mark_run_running(session, run.id)
        run.created_at = run.started_at = long_ago
    assert (await chat.get(f"/v1/chat/{thread_id}/stream", headers=me)).status_code == 204

    provider.push(TextReply("Back again."))
    assert text_of(await send(chat, me, thread_id, "Hello?")) == "Back again."
    async with chat_app.state.db.read() as session:
        dead = await store.get_run(session, run.id)
    assert dead is not None
    assert (dead.status, dead.error) == (
        "failed",
        {"code": "INTERRUPTED", "message": "The server stopped during the run"},
    )


async def test_the_provider_sees_the_apps_attribution_and_fallback_models(
    chat: httpx.AsyncClient, chat_app: FastAPI, users: Users, provider: ScriptedProvider
) -> None:
    settings = chat_app.state.settings
    provider.push(TextReply("Hello."))

    await send(chat, users.headers(), new_thread_id(), "Hi")

    [seen] = provider.requests
    assert seen.headers["http-referer"] == settings.app_url
    assert seen.headers["x-title"] == settings.app_name == "TurboKit"
    assert "litellm" not in seen.headers["http-referer"] + seen.headers["x-title"]
    assert seen.body["model"] == settings.openrouter_model
    assert seen.body["models"] == [settings.openrouter_model, "anthropic/claude-3.5-haiku"]
