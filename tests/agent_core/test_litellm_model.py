"""LiteLLMModel against the scripted provider over real HTTP: streaming, usage, retries, errors."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from agent_core.llm import (
    AssistantMessage,
    ChatMessage,
    Completed,
    LLMError,
    LLMRequest,
    LLMUsage,
    ModelResponse,
    StreamEvent,
    SystemMessage,
    TextDelta,
    ToolCallDelta,
    ToolCallRequest,
    ToolMessage,
    ToolSpec,
    UserMessage,
    complete,
)
from agent_core.llm.litellm_model import (
    LiteLLMModel,
    _retry_after,
    _StreamAssembler,
    bare_model_id,
    openrouter_model_id,
)
from tests.agent_core.conftest import APP_NAME, APP_URL, BACKOFF_BASE, RecordingSleep
from tests.support.scripted_provider import (
    CutStream,
    ErrorReply,
    MidStreamError,
    ScriptedProvider,
    TextReply,
    ToolCall,
    ToolCallReply,
    Usage,
)

pytestmark = pytest.mark.filterwarnings(
    # litellm's response models are rebuilt lazily on first use, and pydantic warns about a
    # `ReadOnly` TypedDict item in them; under `error` litellm swallows the raised warning and
    # reports a bogus APIConnectionError instead of the real outcome.
    "ignore:.*is using the `ReadOnly` qualifier:UserWarning"
)

SEARCH = ToolSpec(
    name="search_projects",
    description="Find the user's projects.",
    parameters={"type": "object", "properties": {"query": {"type": "string"}}},
)


def ask(text: str = "Hi", tools: list[ToolSpec] | None = None) -> LLMRequest:
    messages = [UserMessage(content=text)]
    return LLMRequest(model="openai/gpt-4o-mini", messages=messages, tools=tools or [])


async def collect(model: LiteLLMModel, request: LLMRequest) -> list[StreamEvent]:
    return [event async for event in model.stream(request)]


# ----------------------------------------------------------------------------------- streaming


async def test_text_streams_in_deltas_with_the_servers_usage_and_cost(
    provider: ScriptedProvider, model: LiteLLMModel
) -> None:
    usage = Usage(
        prompt_tokens=21, completion_tokens=4, cost=0.00042, cached_tokens=3, reasoning_tokens=2
    )
    provider.push(
        TextReply(
            "The quick brown fox.", usage=usage, id="gen-abc", model="openai/gpt-4o-mini-2024"
        )
    )

    events = await collect(model, ask())

    assert events == [
        TextDelta(text="The "),
        TextDelta(text="quick "),
        TextDelta(text="brown "),
        TextDelta(text="fox."),
        Completed(
            response=ModelResponse(
                text="The quick brown fox.",
                finish_reason="stop",
                usage=LLMUsage(
                    prompt_tokens=21,
                    completion_tokens=4,
                    cached_tokens=3,
                    reasoning_tokens=2,
                    cost_usd=0.00042,
                    model="openai/gpt-4o-mini-2024",
                    generation_id="gen-abc",
                ),
            )
        ),
    ]


async def test_tool_calls_are_assembled_from_fragments(
    provider: ScriptedProvider, model: LiteLLMModel
) -> None:
    provider.push(
        ToolCallReply(
            [
                ToolCall("search_projects", {"query": "llm"}, id="call_a"),
                ToolCall("get_project", {"id": 7}, id="call_b"),
            ],
            text="Looking.",
        )
    )

    events = await collect(model, ask(tools=[SEARCH]))

    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [(d.index, d.id, d.name) for d in deltas if d.id] == [
        (0, "call_a", "search_projects"),
        (1, "call_b", "get_project"),
    ]
    assert len(deltas) > 2, "arguments arrive in fragments"
    final = events[-1]
    assert isinstance(final, Completed)
    assert final.response.text == "Looking."
    assert final.response.finish_reason == "tool_calls"
    assert final.response.tool_calls == [
        ToolCallRequest(id="call_a", name="search_projects", arguments='{"query": "llm"}'),
        ToolCallRequest(id="call_b", name="get_project", arguments='{"id": 7}'),
    ]


async def test_the_request_reaching_the_server(
    provider: ScriptedProvider, model: LiteLLMModel
) -> None:
    """Attribution headers are the app's, fallbacks and usage accounting are in the body."""
    call = ToolCallRequest(id="call_1", name="search_projects", arguments='{"query": "llm"}')
    history: list[ChatMessage] = [
        SystemMessage(content="Be brief."),
        UserMessage(content="Find my LLM project"),
        AssistantMessage(tool_calls=[call]),
        ToolMessage(tool_call_id="call_1", content='[{"id": 7, "name": "LLM"}]'),
    ]
    request = LLMRequest(
        model="openrouter/openai/gpt-4o-mini",
        messages=history,
        tools=[SEARCH],
        temperature=0.2,
        max_tokens=100,
        fallback_models=["anthropic/claude-3.5-haiku", "openrouter/google/gemini-2.0-flash"],
        metadata={"run_id": "run_1"},
    )

    await complete(model, request)

    [seen] = provider.requests
    assert seen.headers["http-referer"] == APP_URL
    assert seen.headers["x-title"] == APP_NAME
    assert seen.headers["authorization"] == "Bearer test-key"
    body = seen.body
    assert body["model"] == "openai/gpt-4o-mini"
    assert body["models"] == [
        "openai/gpt-4o-mini",
        "anthropic/claude-3.5-haiku",
        "google/gemini-2.0-flash",
    ]
    assert body["usage"] == {"include": True}
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 100
    assert body["tools"] == [SEARCH.to_openai()]
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Find my LLM project"},
        {"role": "assistant", "tool_calls": [call.to_openai()]},
        {"role": "tool", "tool_call_id": "call_1", "content": '[{"id": 7, "name": "LLM"}]'},
    ], "litellm drops the assistant's null content"
    assert "metadata" not in body
    assert "run_1" not in str(body)


async def test_no_models_list_without_fallbacks(
    provider: ScriptedProvider, model: LiteLLMModel
) -> None:
    await complete(model, ask())

    assert "models" not in provider.requests[0].body
    assert "tools" not in provider.requests[0].body


async def test_stopping_early_closes_the_connection(
    provider: ScriptedProvider, model: LiteLLMModel
) -> None:
    provider.push(TextReply("one two three four five six seven eight", delay=0.05))

    stream = model.stream(ask())
    first = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]

    assert first == TextDelta(text="one ")
    assert await provider.requests[0].wait_ended() == "disconnected"


# ------------------------------------------------------------------------------------- retries


async def test_a_500_is_retried_after_backoff(
    provider: ScriptedProvider, model: LiteLLMModel, sleep: RecordingSleep
) -> None:
    provider.push(ErrorReply(500), TextReply("Recovered."))

    response = await complete(model, ask())

    assert response.text == "Recovered."
    assert len(provider.requests) == 2
    [delay] = sleep.delays
    assert BACKOFF_BASE / 2 <= delay <= BACKOFF_BASE


async def test_retry_after_is_honoured(
    provider: ScriptedProvider, model: LiteLLMModel, sleep: RecordingSleep
) -> None:
    provider.push(ErrorReply(429, headers={"Retry-After": "0.3"}), TextReply("Fine."))

    started = time.monotonic()
    response = await complete(model, ask())

    assert response.text == "Fine."
    assert sleep.delays == [0.3]
    assert time.monotonic() - started >= 0.3


async def test_a_retry_after_beyond_the_limit_fails_at_once_as_retryable(
    provider: ScriptedProvider, model: LiteLLMModel
) -> None:
    provider.push(ErrorReply(429, headers={"Retry-After": "120"}))

    with pytest.raises(LLMError, match="retry after 120s") as raised:
        await complete(model, ask())

    assert raised.value.retryable is True
    assert raised.value.status_code == 429
    assert len(provider.requests) == 1


async def test_a_provider_that_stays_down_fails_after_all_attempts(
    provider: ScriptedProvider, model: LiteLLMModel, sleep: RecordingSleep
) -> None:
    provider.default = ErrorReply(503, message="no provider available")

    with pytest.raises(LLMError, match=r"after 3 attempts \(upstream status 503") as raised:
        await complete(model, ask())

    assert raised.value.retryable is False
    assert raised.value.status_code == 503
    assert len(provider.requests) == model.retry.max_retries + 1
    assert len(sleep.delays) == model.retry.max_retries


async def test_a_client_error_is_not_retried(
    provider: ScriptedProvider, model: LiteLLMModel
) -> None:
    provider.push(ErrorReply(400, message="bad tool schema"))

    with pytest.raises(LLMError, match="upstream status 400") as raised:
        await complete(model, ask())

    assert raised.value.status_code == 400
    assert raised.value.retryable is False
    assert len(provider.requests) == 1


async def test_a_read_timeout_before_output_is_retried(
    provider: ScriptedProvider, sleep: RecordingSleep
) -> None:
    impatient = LiteLLMModel(
        api_key="test-key",
        base_url=provider.base_url,
        app_url=APP_URL,
        app_name=APP_NAME,
        timeout=0.3,
        max_retries=2,
        backoff_base=0.01,
        sleep=sleep,
    )
    provider.push(TextReply("Too slow.", delay=2.0), TextReply("On time."))

    response = await complete(impatient, ask())

    assert response.text == "On time."
    assert len(provider.requests) == 2
    assert await provider.requests[0].wait_ended() == "disconnected"


async def test_an_error_event_before_any_output_is_retried(
    provider: ScriptedProvider, model: LiteLLMModel
) -> None:
    provider.push(MidStreamError(text=""), TextReply("Second time lucky."))

    response = await complete(model, ask())

    assert response.text == "Second time lucky."
    assert len(provider.requests) == 2


# -------------------------------------------------------------------------------- mid-stream


@pytest.mark.parametrize(
    ("code", "status"),
    [(502, 502), ("server_error", None)],
    ids=["numeric-code", "string-code"],
)
async def test_an_error_mid_stream_becomes_llm_error(
    provider: ScriptedProvider, model: LiteLLMModel, code: int | str, status: int | None
) -> None:
    provider.push(MidStreamError(text="Partial answer ", code=code))
    events: list[StreamEvent] = []

    async def consume() -> None:
        async for event in model.stream(ask()):
            events.append(event)

    with pytest.raises(LLMError, match="after output started") as raised:
        await consume()

    assert events == [TextDelta(text="Partial "), TextDelta(text="answer ")]
    assert raised.value.status_code == status
    assert raised.value.retryable is False
    assert len(provider.requests) == 1, "no retry once the user has seen output"


async def test_a_stream_cut_without_finish_reason_is_an_error(
    provider: ScriptedProvider, model: LiteLLMModel
) -> None:
    """litellm reports such a stream as a normal "stop"; it must not pass as a full answer."""
    provider.push(CutStream(text="The answer is"))

    with pytest.raises(LLMError, match="without a finish reason"):
        await complete(model, ask())


# ------------------------------------------------------------------------------------ model ids


@pytest.mark.parametrize(
    ("given", "litellm_id", "openrouter_id"),
    [
        ("openai/gpt-4o-mini", "openrouter/openai/gpt-4o-mini", "openai/gpt-4o-mini"),
        ("openrouter/openai/gpt-4o-mini", "openrouter/openai/gpt-4o-mini", "openai/gpt-4o-mini"),
        ("openrouter/auto", "openrouter/openrouter/auto", "openrouter/auto"),
    ],
)
def test_model_ids(given: str, litellm_id: str, openrouter_id: str) -> None:
    assert openrouter_model_id(given) == litellm_id
    assert bare_model_id(given) == openrouter_id


async def test_openrouters_own_auto_router_id_survives_litellm(
    provider: ScriptedProvider, model: LiteLLMModel
) -> None:
    await complete(model, LLMRequest(model="openrouter/auto", messages=[UserMessage(content="Hi")]))

    assert provider.requests[0].body["model"] == "openrouter/auto"


# ---------------------------------------------------------------------------------- assembling


def _chunk(tool_call: dict[str, Any]) -> SimpleNamespace:
    function = SimpleNamespace(name=tool_call.get("name"), arguments=tool_call.get("arguments"))
    delta = SimpleNamespace(
        content=None,
        tool_calls=[SimpleNamespace(index=0, id=tool_call.get("id"), function=function)],
    )
    choice = SimpleNamespace(delta=delta, finish_reason=None)
    return SimpleNamespace(id="gen-1", model="m", choices=[choice])


def test_a_call_is_announced_once_with_id_and_name_whatever_order_they_arrive_in() -> None:
    """Some providers send the name after the first argument fragment, or repeat the id."""
    assembler = _StreamAssembler()
    fragments = [
        {"id": "call_x", "arguments": '{"q"'},
        {"id": "call_x", "name": "search", "arguments": ": "},
        {"id": "call_x", "name": "search", "arguments": '"x"}'},
    ]

    events = [event for fragment in fragments for event in assembler.feed(_chunk(fragment))]

    assert events == [
        ToolCallDelta(index=0, id="call_x", name="search", arguments_delta='{"q": '),
        ToolCallDelta(index=0, arguments_delta='"x"}'),
    ]
    assert assembler.response().tool_calls == [
        ToolCallRequest(id="call_x", name="search", arguments='{"q": "x"}')
    ]


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
    ids=["seconds", "millis-first", "past-http-date", "garbage", "absent"],
)
def test_retry_after_parsing(headers: dict[str, str], seconds: float | None) -> None:
    error = SimpleNamespace(litellm_response_headers=headers)
    assert _retry_after(error) == seconds  # type: ignore[arg-type]
