"""The OpenAI-compatible door, end to end: the official `openai` SDK (strict response validation)
talks real HTTP to the app, whose agent talks real HTTP (through litellm) to the scripted provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionChunk

from backend.agents import ASSISTANT_INSTRUCTIONS
from backend.billing.plans import plan_for
from tests.backend.test_billing import user_with_balance
from tests.conftest import Users
from tests.support.scripted_provider import (
    ErrorReply,
    ScriptedProvider,
    TextReply,
    ToolCall,
    ToolCallReply,
    Usage,
)
from threads import store
from threads.schemas import ThreadCreate

THREAD = "X-Thread-Id"
USAGE = {
    "prompt_tokens": Usage().prompt_tokens,
    "completion_tokens": Usage().completion_tokens,
    "total_tokens": Usage().prompt_tokens + Usage().completion_tokens,
}
"""What one scripted model call costs, as OpenAI's usage."""


def sdk(chat_url: str, token: str) -> AsyncOpenAI:
    """The SDK as an application would configure it; no retries, so each call is one request."""
    return AsyncOpenAI(
        base_url=f"{chat_url}/v1", api_key=token, max_retries=0, _strict_response_validation=True
    )


@pytest.fixture
async def sdk_client(
    chat: httpx.AsyncClient, chat_url: str, users: Users
) -> AsyncIterator[AsyncOpenAI]:
    """A fresh user's SDK client (the `chat` fixture resets the provider's script)."""
    async with sdk(chat_url, users.token()) as openai_client:
        yield openai_client


def bearer(sdk_client: AsyncOpenAI) -> dict[str, str]:
    return {"Authorization": f"Bearer {sdk_client.api_key}"}


async def saved_messages(
    http: httpx.AsyncClient, sdk_client: AsyncOpenAI, thread_id: str
) -> list[tuple[str, str]]:
    """(role, text) of each message the thread holds, oldest first."""
    response = await http.get(
        f"/v1/threads/{thread_id}/messages?order=asc", headers=bearer(sdk_client)
    )
    assert response.status_code == 200, response.text
    return [
        (m["role"], "".join(p["text"] for p in m["parts"] if p["type"] == "text"))
        for m in response.json()["items"]
    ]


async def collect(
    stream: openai.AsyncStream[ChatCompletionChunk], into: list[ChatCompletionChunk]
) -> list[ChatCompletionChunk]:
    """Read the stream to its end into `into` (which keeps what came before an error)."""
    async for chunk in stream:
        into.append(chunk)
    return into


def content(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# --------------------------------------------------------------------------------------- models


async def test_models_are_the_agents(chat: httpx.AsyncClient, sdk_client: AsyncOpenAI) -> None:
    models = [model async for model in sdk_client.models.list()]

    agents = (await chat.get("/v1/agents", headers=bearer(sdk_client))).json()["items"]
    assert [m.id for m in models] == [agent["name"] for agent in agents]
    assert "assistant" in [m.id for m in models]
    assert {(m.object, m.owned_by) for m in models} == {("model", "turbokit")}
    assert all(m.created > 0 for m in models)


# ------------------------------------------------------------------------------ a chat.completion


async def test_create_runs_the_agent_over_the_conversation_and_saves_it(
    chat: httpx.AsyncClient, sdk_client: AsyncOpenAI, provider: ScriptedProvider
) -> None:
    provider.push(TextReply("Ça va bien."))

    raw = await sdk_client.chat.completions.with_raw_response.create(
        model="assistant",
        messages=[
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
        ],
        temperature=0.2,
        user="end-user-1",
    )

    completion = raw.parse()
    assert completion.id.startswith("chatcmpl-run_")
    assert completion.object == "chat.completion"
    assert completion.model == "assistant"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert (choice.message.role, choice.message.content) == ("assistant", "Ça va bien.")
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.model_dump(exclude_none=True) == USAGE

    sent = provider.requests[0].messages
    system = sent[0]["content"]
    assert sent[0]["role"] == "system"
    assert system.startswith(ASSISTANT_INSTRUCTIONS.split("{")[0])
    assert system.endswith("\n\nAnswer in French.")
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "How are you?"),
    ]

    thread_id = raw.headers[THREAD]
    assert await saved_messages(chat, sdk_client, thread_id) == [
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "How are you?"),
        ("assistant", "Ça va bien."),
    ]


async def test_x_thread_id_continues_the_thread(
    chat: httpx.AsyncClient, sdk_client: AsyncOpenAI, provider: ScriptedProvider
) -> None:
    provider.push(TextReply("Zephyr is on track."), TextReply("Launch is Friday."))
    first = await sdk_client.chat.completions.with_raw_response.create(
        model="assistant", messages=[{"role": "user", "content": "How is Zephyr?"}]
    )
    thread_id = first.headers[THREAD]

    second = await sdk_client.chat.completions.with_raw_response.create(
        model="assistant",
        messages=[
            {"role": "user", "content": "ignored: the thread holds the history"},
            {"role": "user", "content": "When is the launch?"},
        ],
        extra_headers={THREAD: thread_id},
    )

    assert second.headers[THREAD] == thread_id
    assert second.parse().choices[0].message.content == "Launch is Friday."
    history = [(m["role"], m["content"]) for m in provider.requests[1].messages[1:]]
    assert history == [
        ("user", "How is Zephyr?"),
        ("assistant", "Zephyr is on track."),
        ("user", "When is the launch?"),
    ]
    assert len(await saved_messages(chat, sdk_client, thread_id)) == 4


# ------------------------------------------------------------------------------------ streaming


async def test_stream_sends_the_role_once_then_text_then_usage(
    chat: httpx.AsyncClient, sdk_client: AsyncOpenAI, provider: ScriptedProvider
) -> None:
    provider.push(TextReply("Streaming works fine."))

    raw = await sdk_client.chat.completions.with_raw_response.create(
        model="assistant",
        messages=[{"role": "user", "content": "Stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = await collect(raw.parse(), [])

    assert raw.headers["content-type"].startswith("text/event-stream")
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].id.startswith("chatcmpl-run_")
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert {c.model for c in chunks} == {"assistant"}
    roles = [c.choices[0].delta.role for c in chunks if c.choices]
    assert roles[0] == "assistant"
    assert set(roles[1:]) == {None}
    assert content(chunks) == "Streaming works fine."
    assert all(not c.choices[0].delta.tool_calls for c in chunks if c.choices)
    finish, usage = chunks[-2], chunks[-1]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][:-1] == [None] * (
        len(chunks) - 2
    )
    assert finish.choices[0].finish_reason == "stop"
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.model_dump(exclude_none=True) == USAGE
    assert await saved_messages(chat, sdk_client, raw.headers[THREAD]) == [
        ("user", "Stream please"),
        ("assistant", "Streaming works fine."),
    ]


async def test_stream_helper_gets_the_answer_of_a_tool_using_turn(
    chat: httpx.AsyncClient, sdk_client: AsyncOpenAI, provider: ScriptedProvider
) -> None:
    created = await chat.post(
        "/v1/projects",
        headers=bearer(sdk_client),
        json={"name": "Zephyr launch", "description": "rockets"},
    )
    project = created.json()
    provider.push(
        ToolCallReply(calls=[ToolCall("search_projects", {"query": "zephyr"})]),
        TextReply("You have one: Zephyr launch."),
    )

    async with sdk_client.chat.completions.stream(
        model="assistant", messages=[{"role": "user", "content": "Find Zephyr"}]
    ) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_completion()

    deltas = [e.delta for e in events if e.type == "content.delta"]
    assert "".join(deltas) == "You have one: Zephyr launch."
    assert not [e for e in events if e.type.startswith("tool_calls.")]
    assert [e.chunk.usage for e in events if e.type == "chunk"] == [None] * len(
        [e for e in events if e.type == "chunk"]
    )
    message = final.choices[0].message
    assert (message.role, message.content, message.tool_calls) == (
        "assistant",
        "You have one: Zephyr launch.",
        None,
    )
    assert final.choices[0].finish_reason == "stop"
    tool_result = provider.requests[1].messages[-1]
    assert tool_result["role"] == "tool"
    assert project["id"] in tool_result["content"]


async def test_an_answer_in_several_steps_reads_the_same_streamed_or_not(
    sdk_client: AsyncOpenAI, provider: ScriptedProvider
) -> None:
    def turn() -> tuple[ToolCallReply, TextReply]:
        search = ToolCall("search_projects", {"query": "nebula"})
        return ToolCallReply(calls=[search], text="Let me look."), TextReply("Nothing found.")

    question: list[Any] = [{"role": "user", "content": "Any nebula project?"}]
    provider.push(*turn())
    completion = await sdk_client.chat.completions.create(model="assistant", messages=question)
    provider.push(*turn())
    stream = await sdk_client.chat.completions.create(
        model="assistant", messages=question, stream=True
    )
    chunks = await collect(stream, [])

    answer = "Let me look.\n\nNothing found."
    assert completion.choices[0].message.content == answer
    assert content(chunks) == answer
    assert completion.usage is not None
    assert completion.usage.total_tokens == 2 * USAGE["total_tokens"]  # two model calls
    assert len(provider.requests) == 4


async def test_a_call_waiting_for_approval_ends_the_answer_as_cut_short(
    chat: httpx.AsyncClient, sdk_client: AsyncOpenAI, provider: ScriptedProvider
) -> None:
    """OpenAI clients cannot approve a tool call: the answer so far comes back with `length`,
    streamed or not, and the paused call waits on the thread for `/v1/chat/{id}/approvals`."""
    project = (
        await chat.post("/v1/projects", headers=bearer(sdk_client), json={"name": "Doomed"})
    ).json()

    def asks() -> ToolCallReply:
        delete = ToolCall("delete_project", {"project_id": project["id"]})
        return ToolCallReply(calls=[delete], text="Deleting it.")

    question: list[Any] = [{"role": "user", "content": "Delete Doomed"}]
    provider.push(asks())
    raw = await sdk_client.chat.completions.with_raw_response.create(
        model="assistant", messages=question
    )
    provider.push(asks())
    stream = await sdk_client.chat.completions.create(
        model="assistant", messages=question, stream=True
    )
    chunks = await collect(stream, [])

    choice = raw.parse().choices[0]
    assert (choice.message.content, choice.finish_reason) == ("Deleting it.", "length")
    assert (content(chunks), chunks[-1].choices[0].finish_reason) == ("Deleting it.", "length")
    saved = await chat.get(
        f"/v1/threads/{raw.headers[THREAD]}/messages?order=asc", headers=bearer(sdk_client)
    )
    answer = saved.json()["items"][-1]
    assert [p["state"] for p in answer["parts"] if p["type"] == "tool-delete_project"] == [
        "approval-requested"
    ]
    assert len(provider.requests) == 2


# ------------------------------------------------------------------------------------ refusals


async def test_another_users_thread_is_not_found(
    chat_url: str, sdk_client: AsyncOpenAI, users: Users, provider: ScriptedProvider
) -> None:
    provider.push(TextReply("Mine."))
    mine = await sdk_client.chat.completions.with_raw_response.create(
        model="assistant", messages=[{"role": "user", "content": "Hi"}]
    )
    async with sdk(chat_url, users.token()) as stranger:
        with pytest.raises(openai.NotFoundError) as caught:
            await stranger.chat.completions.create(
                model="assistant",
                messages=[{"role": "user", "content": "Let me in"}],
                extra_headers={THREAD: mine.headers[THREAD]},
            )

    assert caught.value.body == {"code": "NOT_FOUND", "message": "Thread not found", "data": {}}
    assert len(provider.requests) == 1


async def test_an_unknown_model_is_not_found(sdk_client: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk_client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}]
        )
    assert caught.value.body == {"code": "NOT_FOUND", "message": "Model not found", "data": {}}


@pytest.mark.parametrize(
    ("body", "where", "says"),
    [
        ({"extra_body": {"frequency_boost": 1}}, ["body", "frequency_boost"], "Extra inputs"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
            ["body", "tools"],
            "client-side tools are not supported",
        ),
        ({"tool_choice": "none"}, ["body", "tool_choice"], "client-side tools"),
        ({"n": 2}, ["body", "n"], "1"),
        (
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "!"},
                ]
            },
            ["body", "messages", 1, "role"],
            "the last message must be a user's",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            ["body", "messages", 0, "content"],
            "",
        ),
        (
            {"messages": [{"role": "tool", "content": "42", "tool_call_id": "c1"}]},
            ["body", "messages", 0],
            "",
        ),
    ],
    ids=["unknown-field", "tools", "tool-choice", "n", "last-not-user", "image", "tool-message"],
)
async def test_a_request_outside_the_contract_is_422(
    sdk_client: AsyncOpenAI,
    provider: ScriptedProvider,
    body: dict[str, Any],
    where: list[str | int],
    says: str,
) -> None:
    request: dict[str, Any] = {
        "model": "assistant",
        "messages": [{"role": "user", "content": "Hi"}],
        **body,
    }
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        await sdk_client.chat.completions.create(**request)

    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "VALIDATION_ERROR"
    located = [e for e in error["data"]["errors"] if e["loc"][: len(where)] == where]
    assert located, error
    assert says in located[0]["msg"]
    assert provider.requests == []


async def test_a_thread_of_another_agent_refuses_the_model(
    chat: httpx.AsyncClient, chat_app: FastAPI, sdk_client: AsyncOpenAI, provider: ScriptedProvider
) -> None:
    user_id = (await chat.get("/v1/me", headers=bearer(sdk_client))).json()["id"]
    async with chat_app.state.db.write() as session:
        thread = await store.create_thread(session, user_id, ThreadCreate(agent="researcher"))

    with pytest.raises(openai.UnprocessableEntityError) as caught:
        await sdk_client.chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": "Hi"}],
            extra_headers={THREAD: thread.id},
        )
    assert caught.value.body == {
        "code": "VALIDATION_ERROR",
        "message": "this thread talks to 'researcher'",
        "data": {
            "errors": [{"loc": ["body", "model"], "msg": "this thread talks to 'researcher'"}]
        },
    }
    assert provider.requests == []


async def test_a_balance_below_the_reservation_is_402(
    chat: httpx.AsyncClient,
    chat_app: FastAPI,
    chat_url: str,
    users: Users,
    provider: ScriptedProvider,
) -> None:
    available = plan_for("free").run_reservation - 1
    headers, _ = await user_with_balance(chat, chat_app, users, available)
    token = headers["Authorization"].removeprefix("Bearer ")

    async with sdk(chat_url, token) as poor:
        with pytest.raises(openai.APIStatusError) as caught:
            await poor.chat.completions.create(
                model="assistant", messages=[{"role": "user", "content": "Hi"}]
            )

    assert caught.value.status_code == 402
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "INSUFFICIENT_CREDITS"
    assert error["data"] == {"required": available + 1, "available": available}
    assert provider.requests == []


# -------------------------------------------------------------------------------- provider down


async def test_a_provider_that_stays_down_is_a_502(
    sdk_client: AsyncOpenAI, provider: ScriptedProvider
) -> None:
    provider.reset(default=ErrorReply(503, "overloaded"))

    with pytest.raises(openai.InternalServerError) as caught:
        await sdk_client.chat.completions.with_raw_response.create(
            model="assistant", messages=[{"role": "user", "content": "Anyone?"}]
        )

    assert caught.value.status_code == 502
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "UPSTREAM_ERROR"
    assert "503" in caught.value.body["message"]
    assert caught.value.response.headers[THREAD].startswith("thr_")
    assert len(provider.requests) == 3  # the call and litellm's two retries


async def test_a_stream_whose_provider_stays_down_raises_an_api_error(
    chat: httpx.AsyncClient, sdk_client: AsyncOpenAI, provider: ScriptedProvider
) -> None:
    provider.reset(default=ErrorReply(503, "overloaded"))
    raw = await sdk_client.chat.completions.with_raw_response.create(
        model="assistant", messages=[{"role": "user", "content": "Anyone?"}], stream=True
    )
    received: list[ChatCompletionChunk] = []

    with pytest.raises(openai.APIError) as caught:
        await collect(raw.parse(), received)

    assert caught.value.code == "UPSTREAM_ERROR"
    assert caught.value.type == "server_error"
    assert "503" in caught.value.message
    assert [c.choices[0].delta.role for c in received] == ["assistant"]
    thread_id = raw.headers[THREAD]
    assert await saved_messages(chat, sdk_client, thread_id) == [("user", "Anyone?")]
