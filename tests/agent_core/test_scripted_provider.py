"""The scripted provider speaks OpenAI's wire format: checked with the official SDK and httpx."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.scripted_provider import (
    DEFAULT_TEXT,
    ErrorReply,
    MidStreamError,
    ScriptedProvider,
    TextReply,
    ToolCall,
    ToolCallReply,
    Usage,
)


def client(provider: ScriptedProvider) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=provider.base_url, api_key="test-key", max_retries=0)


async def test_the_openai_sdk_reads_a_streamed_tool_call(provider: ScriptedProvider) -> None:
    provider.push(ToolCallReply([ToolCall("search", {"q": "x"}, id="call_1")], text="Let me look."))

    async with client(provider) as sdk:
        stream = await sdk.chat.completions.create(
            model="vendor/model",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert text == "Let me look."
    assert next((tc.id, tc.function.name if tc.function else None) for tc in calls) == (
        "call_1",
        "search",
    )
    assert "".join(tc.function.arguments or "" for tc in calls if tc.function) == '{"q": "x"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_extra == {"cost": Usage().cost}


async def test_non_streaming_answers_and_records(provider: ScriptedProvider) -> None:
    provider.push(TextReply("Plain answer.", id="gen-x"))

    async with client(provider) as sdk:
        completion = await sdk.chat.completions.create(
            model="vendor/model", messages=[{"role": "user", "content": "hi"}]
        )

    assert completion.id == "gen-x"
    assert completion.choices[0].message.content == "Plain answer."
    assert provider.requests[0].outcome == "completed"
    assert provider.requests[0].body["messages"] == [{"role": "user", "content": "hi"}]


async def test_an_error_mid_stream_reaches_the_sdk_as_an_api_error(
    provider: ScriptedProvider,
) -> None:
    provider.push(MidStreamError(message="upstream fell over"))

    async with client(provider) as sdk:
        stream = await sdk.chat.completions.create(
            model="vendor/model", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError, match="upstream fell over"):
            async for _ in stream:
                pass


async def test_replies_can_be_built_from_the_request(provider: ScriptedProvider) -> None:
    provider.push(lambda body: TextReply(f"model was {body['model']}"))

    async with client(provider) as sdk:
        completion = await sdk.chat.completions.create(
            model="vendor/model", messages=[{"role": "user", "content": "hi"}]
        )

    assert completion.choices[0].message.content == "model was vendor/model"


def test_a_background_thread_server_for_sync_callers() -> None:
    with ScriptedProvider(ErrorReply(429, headers={"Retry-After": "7"})) as provider:
        url = f"{provider.base_url}/chat/completions"
        limited = httpx.post(url, json={"model": "m", "messages": []})
        default = httpx.post(url, json={"model": "m", "messages": []})
        missing = httpx.get(url)

    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "7"
    assert limited.json() == {"error": {"code": 429, "message": "scripted upstream error"}}
    assert default.json()["choices"][0]["message"]["content"] == DEFAULT_TEXT
    assert missing.status_code == 404
    assert [r.outcome for r in provider.requests] == ["error", "completed"]
