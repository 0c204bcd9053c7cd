"""ScriptedModel: streams like a real model, from a list of turns or a function."""

from __future__ import annotations

import pytest

from agent_core.llm import (
    Completed,
    LLMError,
    LLMRequest,
    LLMUsage,
    ScriptedModel,
    ScriptedTurn,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallRequest,
    UserMessage,
    complete,
    tool_call,
)
from agent_core.llm.scripted import ScriptExhaustedError


def ask(text: str = "Hi") -> LLMRequest:
    return LLMRequest(model="test/model", messages=[UserMessage(content=text)])


async def collect(model: ScriptedModel, request: LLMRequest) -> list[StreamEvent]:
    return [event async for event in model.stream(request)]


async def test_text_streams_word_by_word_then_completes() -> None:
    model = ScriptedModel(["Hello there, friend."])

    events = await collect(model, ask())

    assert [e for e in events if isinstance(e, TextDelta)] == [
        TextDelta(text="Hello "),
        TextDelta(text="there, "),
        TextDelta(text="friend."),
    ]
    final = events[-1]
    assert isinstance(final, Completed)
    assert final.response.text == "Hello there, friend."
    assert final.response.finish_reason == "stop"
    assert final.response.usage.model == "test/model"
    assert final.response.usage.generation_id == "scripted-1"
    assert final.response.usage.completion_tokens == 3


async def test_tool_calls_stream_as_id_and_name_then_fragments() -> None:
    model = ScriptedModel([ScriptedTurn(tool_calls=[tool_call("search", {"query": "llm"})])])

    events = await collect(model, ask())

    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert deltas[0] == ToolCallDelta(index=0, id="call_1_0", name="search")
    assert "".join(d.arguments_delta for d in deltas) == '{"query": "llm"}'
    assert len(deltas) > 2
    final = events[-1]
    assert isinstance(final, Completed)
    assert final.response.finish_reason == "tool_calls"
    assert final.response.tool_calls == [
        ToolCallRequest(id="call_1_0", name="search", arguments='{"query": "llm"}')
    ]


async def test_turns_are_used_in_order_and_requests_recorded() -> None:
    usage = LLMUsage(prompt_tokens=5, completion_tokens=1, cost_usd=0.01)
    model = ScriptedModel([ScriptedTurn(text="one", usage=usage), "two"])

    first = await complete(model, ask("a"))
    second = await complete(model, ask("b"))

    assert (first.text, second.text) == ("one", "two")
    assert first.usage.cost_usd == 0.01
    assert first.usage.model == "test/model"
    assert [r.messages for r in model.requests] == [ask("a").messages, ask("b").messages]
    assert model.remaining == 0


async def test_a_function_answers_from_the_request() -> None:
    def echo(request: LLMRequest) -> str:
        message = request.messages[-1]
        assert isinstance(message, UserMessage)
        return f"You said {message.content}"

    model = ScriptedModel(echo)

    assert (await complete(model, ask("ping"))).text == "You said ping"
    assert (await complete(model, ask("pong"))).text == "You said pong"


async def test_an_async_function_works_too() -> None:
    async def answer(request: LLMRequest) -> ScriptedTurn:
        return ScriptedTurn(text=request.model)

    assert (await complete(ScriptedModel(answer), ask())).text == "test/model"


async def test_an_error_turn_raises_after_its_text() -> None:
    model = ScriptedModel([ScriptedTurn(text="Partial", error=LLMError("boom", status_code=502))])
    events: list[StreamEvent] = []

    async def consume() -> None:
        async for event in model.stream(ask()):
            events.append(event)

    with pytest.raises(LLMError, match="boom"):
        await consume()

    assert events == [TextDelta(text="Partial")]


async def test_running_out_of_script_says_so() -> None:
    model = ScriptedModel(["only one"])
    await complete(model, ask())

    with pytest.raises(ScriptExhaustedError, match="request #2"):
        await complete(model, ask())
