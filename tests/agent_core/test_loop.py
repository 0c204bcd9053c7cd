"""The agent loop, specified with a scripted model: the events a run yields in order, what the model
is sent back after each step, and how a run ends (answer, max_steps, stop, provider failure)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from agent_core.agent import Agent
from agent_core.events import (
    AgentEvent,
    ModelCalled,
    RunFailed,
    RunFinished,
    RunPaused,
    StepFinished,
    StepStarted,
    TextDelta,
    TextEnded,
    TextStarted,
    ToolApprovalRequested,
    ToolDenied,
    ToolInputAvailable,
    ToolInputDelta,
    ToolInputStarted,
    ToolOutput,
)
from agent_core.llm import (
    LLMError,
    LLMRequest,
    LLMUsage,
    ScriptedModel,
    ScriptedTurn,
    SystemMessage,
    ToolCallRequest,
    ToolMessage,
    UserMessage,
    tool_call,
)
from agent_core.llm.types import AssistantMessage
from agent_core.loop import Decision, run_agent, run_decided_calls
from config.settings import Settings
from tools import ToolCall, ToolContext, ToolError, ToolRegistry

MODEL = "test/model"
SYSTEM = SystemMessage(content="You are a calculator.")
QUESTION = UserMessage(content="What is 2 + 3?")

registry = ToolRegistry()


@registry.tool
async def add(ctx: ToolContext, a: int, b: int) -> dict[str, int]:
    """Add two numbers."""
    return {"sum": a + b}


@registry.tool
async def broken(ctx: ToolContext) -> None:
    """Fail like a bug."""
    raise ValueError("the abacus is broken")


@registry.tool
async def refuse(ctx: ToolContext, name: str) -> None:
    """Fail on purpose, with a message for the model."""
    raise ToolError(f"No project named {name!r}. Ask the user which project they mean.")


@registry.tool(timeout=0.05)
async def hang(ctx: ToolContext) -> None:
    """Never finish."""
    await asyncio.Event().wait()


@pytest.fixture
def ctx() -> ToolContext:
    settings = Settings(_env_file=None)
    return ToolContext(
        user_id="user_1", thread_id="thr_1", run_id="run_1", settings=settings, db=None
    )


def usage(prompt: int, completion: int) -> LLMUsage:
    return LLMUsage(prompt_tokens=prompt, completion_tokens=completion)


def reported(scripted: LLMUsage, call_number: int) -> LLMUsage:
    """The usage a ModelCalled carries: the script's, completed by ScriptedModel."""
    return scripted.model_copy(update={"model": MODEL, "generation_id": f"scripted-{call_number}"})


def calculator(**overrides: Any) -> Agent:
    fields: dict[str, Any] = {"tools": registry, **overrides}
    return Agent(
        name="calculator", description="Adds numbers.", instructions=SYSTEM.content, **fields
    )


def events_of(
    agent: Agent, model: ScriptedModel, ctx: ToolContext, stop: asyncio.Event | None = None
) -> AsyncIterator[AgentEvent]:
    return run_agent(agent, model, [SYSTEM, QUESTION], ctx, model=MODEL, stop=stop)


async def run(
    agent: Agent, model: ScriptedModel, ctx: ToolContext, stop: asyncio.Event | None = None
) -> list[AgentEvent]:
    return [event async for event in events_of(agent, model, ctx, stop)]


def without_latency(events: Sequence[AgentEvent]) -> list[AgentEvent]:
    """Events with `ModelCalled.latency_ms` zeroed, so a run compares with a literal list."""
    return [
        dataclasses.replace(e, latency_ms=0.0) if isinstance(e, ModelCalled) else e for e in events
    ]


def transcript(events: Sequence[AgentEvent]) -> list[AgentEvent]:
    """`without_latency`, with consecutive deltas of one text or one tool input merged."""
    merged: list[AgentEvent] = []
    for event in without_latency(events):
        previous = merged[-1] if merged else None
        if isinstance(event, TextDelta) and isinstance(previous, TextDelta):
            if previous.id == event.id:
                merged[-1] = TextDelta(event.id, previous.delta + event.delta)
                continue
        if isinstance(event, ToolInputDelta) and isinstance(previous, ToolInputDelta):
            if previous.call_id == event.call_id:
                merged[-1] = ToolInputDelta(event.call_id, previous.delta + event.delta)
                continue
        merged.append(event)
    return merged


def text_ids(events: Sequence[AgentEvent]) -> list[str]:
    return [event.id for event in events if isinstance(event, TextStarted)]


def tool_outputs(events: Sequence[AgentEvent]) -> list[ToolOutput]:
    return [event for event in events if isinstance(event, ToolOutput)]


def model_calls(events: Sequence[AgentEvent]) -> list[ModelCalled]:
    return [event for event in events if isinstance(event, ModelCalled)]


# --- answers and tool steps --------------------------------------------------------------------


async def test_a_text_answer_streams_then_reports_usage_and_stops(ctx: ToolContext) -> None:
    answer_usage = usage(12, 3)
    model = ScriptedModel([ScriptedTurn(text="It is 5.", usage=answer_usage)])

    events = await run(calculator(), model, ctx)

    [text_id] = text_ids(events)
    assert without_latency(events) == [
        StepStarted(1),
        TextStarted(text_id),
        TextDelta(text_id, "It "),
        TextDelta(text_id, "is "),
        TextDelta(text_id, "5."),
        TextEnded(text_id),
        ModelCalled(1, reported(answer_usage, 1), 0.0),
        StepFinished(1),
        RunFinished("stop"),
    ]
    [call] = model_calls(events)
    assert call.latency_ms >= 0
    assert not call.estimated


async def test_the_model_is_sent_the_system_prompt_history_and_tools(ctx: ToolContext) -> None:
    model = ScriptedModel(["It is 5."])

    await run(calculator(temperature=0.2), model, ctx)

    [request] = model.requests
    assert request.model == MODEL
    assert request.messages == [SYSTEM, QUESTION]
    assert [tool.name for tool in request.tools] == registry.names()
    assert request.temperature == 0.2
    assert request.metadata == {
        "agent": "calculator",
        "step": 1,
        "run_id": "run_1",
        "user_id": "user_1",
    }


async def test_a_tool_step_runs_the_tool_and_sends_its_result_back(ctx: ToolContext) -> None:
    call_usage, answer_usage = usage(20, 8), usage(40, 4)
    model = ScriptedModel(
        [
            ScriptedTurn(tool_calls=[tool_call("add", {"a": 2, "b": 3})], usage=call_usage),
            ScriptedTurn(text="It is 5.", usage=answer_usage),
        ]
    )

    events = await run(calculator(), model, ctx)

    [text_id] = text_ids(events)
    assert transcript(events) == [
        StepStarted(1),
        ToolInputStarted("call_1_0", "add"),
        ToolInputDelta("call_1_0", '{"a": 2, "b": 3}'),
        ModelCalled(1, reported(call_usage, 1), 0.0),
        ToolInputAvailable("call_1_0", "add", {"a": 2, "b": 3}),
        ToolOutput("call_1_0", "add", {"a": 2, "b": 3}, ok=True, output={"sum": 5}),
        StepFinished(1),
        StepStarted(2),
        TextStarted(text_id),
        TextDelta(text_id, "It is 5."),
        TextEnded(text_id),
        ModelCalled(2, reported(answer_usage, 2), 0.0),
        StepFinished(2),
        RunFinished("stop"),
    ]
    assert model.requests[1].messages == [
        SYSTEM,
        QUESTION,
        AssistantMessage(
            tool_calls=[ToolCallRequest(id="call_1_0", name="add", arguments='{"a": 2, "b": 3}')]
        ),
        ToolMessage(tool_call_id="call_1_0", content='{"sum": 5}'),
    ]
    assert model.requests[1].metadata["step"] == 2


# --- tool failures become text for the model ---------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error_start"),
    [
        pytest.param(tool_call("broken"), "ValueError: the abacus is broken", id="raises"),
        pytest.param(
            tool_call("refuse", {"name": "Apollo"}),
            "No project named 'Apollo'. Ask the user which project they mean.",
            id="tool-error",
        ),
        pytest.param(tool_call("hang"), "Tool hang timed out after 0.05s", id="timeout"),
        pytest.param(tool_call("add", '{"a": 2, "b":'), "Invalid JSON arguments: ", id="bad-json"),
        pytest.param(
            tool_call("subtract", {"a": 2, "b": 3}),
            "Unknown tool 'subtract'.",
            id="unknown-tool",
        ),
    ],
)
async def test_a_failed_tool_call_is_reported_to_the_model_and_the_run_goes_on(
    ctx: ToolContext, call: ToolCallRequest, error_start: str
) -> None:
    model = ScriptedModel([ScriptedTurn(tool_calls=[call]), "Sorry, I could not do that."])

    events = await run(calculator(), model, ctx)

    [output] = tool_outputs(events)
    assert (output.call_id, output.tool_name, output.ok, output.output) == (
        "call_1_0",
        call.name,
        False,
        None,
    )
    assert output.error is not None
    assert output.error.startswith(error_start)
    tool_message = model.requests[1].messages[-1]
    assert tool_message == ToolMessage(tool_call_id="call_1_0", content=f"Error: {output.error}")
    assert events[-1] == RunFinished("stop")


async def test_malformed_arguments_are_reported_as_the_raw_text(ctx: ToolContext) -> None:
    model = ScriptedModel([ScriptedTurn(tool_calls=[tool_call("add", '{"a": 2,')]), "Oops."])

    events = await run(calculator(), model, ctx)

    [available] = [e for e in events if isinstance(e, ToolInputAvailable)]
    [output] = tool_outputs(events)
    assert available.input == output.input == '{"a": 2,'


# --- concurrency -------------------------------------------------------------------------------


async def test_calls_of_one_step_run_concurrently_and_report_in_call_order(
    ctx: ToolContext,
) -> None:
    tools = ToolRegistry()
    second_finished = asyncio.Event()
    finished: list[str] = []

    @tools.tool(timeout=2)
    async def first(ctx: ToolContext) -> str:
        """Finish only after `second` has: run one after the other, this times out instead."""
        await second_finished.wait()
        finished.append("first")
        return "first done"

    @tools.tool
    async def second(ctx: ToolContext) -> str:
        """Finish at once."""
        finished.append("second")
        second_finished.set()
        return "second done"

    model = ScriptedModel(
        [ScriptedTurn(tool_calls=[tool_call("first"), tool_call("second")]), "Both done."]
    )

    events = await run(calculator(tools=tools), model, ctx)

    assert [(o.call_id, o.ok, o.output, o.error) for o in tool_outputs(events)] == [
        ("call_1_0", True, "first done", None),
        ("call_1_1", True, "second done", None),
    ]
    assert finished == ["second", "first"]
    assert model.requests[1].messages[-2:] == [
        ToolMessage(tool_call_id="call_1_0", content="first done"),
        ToolMessage(tool_call_id="call_1_1", content="second done"),
    ]


# --- how a run ends ----------------------------------------------------------------------------


async def test_a_model_that_keeps_calling_tools_ends_at_max_steps(ctx: ToolContext) -> None:
    model = ScriptedModel(
        lambda request: ScriptedTurn(tool_calls=[tool_call("add", {"a": 1, "b": 1})])
    )

    events = await run(calculator(max_steps=3), model, ctx)

    assert len(model.requests) == 3
    assert [call.step for call in model_calls(events)] == [1, 2, 3]
    assert [e.step for e in events if isinstance(e, StepStarted)] == [1, 2, 3]
    assert [o.output for o in tool_outputs(events)] == [{"sum": 2}] * 3
    assert events[-2:] == [StepFinished(3), RunFinished("tool-calls")]


async def test_a_stop_while_the_model_streams_ends_the_run_with_estimated_usage(
    ctx: ToolContext,
) -> None:
    stop = asyncio.Event()
    answer_text = "Let me think about this for a very long time."

    def answer(request: LLMRequest) -> ScriptedTurn:
        stop.set()  # the user presses stop as the answer starts streaming
        return ScriptedTurn(text=answer_text)

    model = ScriptedModel(answer)

    events = await run(calculator(), model, ctx, stop)

    assert len(model.requests) == 1
    streamed = "".join(e.delta for e in events if isinstance(e, TextDelta))
    assert streamed
    assert answer_text.startswith(streamed)
    assert streamed != answer_text
    [text_id] = text_ids(events)
    call = model_calls(events)[0]
    assert events[-4:] == [TextEnded(text_id), call, StepFinished(1), RunFinished("other")]
    assert call.estimated
    assert call.usage.prompt_tokens > 0
    assert call.usage.completion_tokens > 0
    assert call.usage.model == MODEL


async def test_a_stop_seen_by_the_consumer_cuts_the_stream_at_once(ctx: ToolContext) -> None:
    stop = asyncio.Event()
    model = ScriptedModel(["One two three four five six.", "Never asked for."])
    before_stop: list[AgentEvent] = []
    after_stop: list[AgentEvent] = []

    async for event in events_of(calculator(), model, ctx, stop):
        (after_stop if stop.is_set() else before_stop).append(event)
        if isinstance(event, TextDelta):
            stop.set()

    assert isinstance(before_stop[-1], TextDelta)
    assert [type(e) for e in after_stop] == [TextEnded, ModelCalled, StepFinished, RunFinished]
    [call] = model_calls(after_stop)
    assert call.estimated
    assert call.usage.prompt_tokens > 0
    assert call.usage.completion_tokens > 0
    assert after_stop[-1] == RunFinished("other")
    assert len(model.requests) == 1
    assert model.remaining == 1


async def test_a_stop_while_tools_run_ends_the_run_before_the_next_model_call(
    ctx: ToolContext,
) -> None:
    tools = ToolRegistry()
    stop = asyncio.Event()

    @tools.tool
    async def press_stop(ctx: ToolContext) -> str:
        """The user presses stop while this tool runs."""
        stop.set()
        return "done"

    model = ScriptedModel([ScriptedTurn(tool_calls=[tool_call("press_stop")]), "Never asked for."])

    events = await run(calculator(tools=tools), model, ctx, stop)

    [output] = tool_outputs(events)
    assert output.ok
    assert events[-2:] == [StepFinished(1), RunFinished("other")]
    assert len(model.requests) == 1


async def test_a_provider_failure_fails_the_run_without_leaking_its_details(
    ctx: ToolContext,
) -> None:
    failure = LLMError("upstream said: invalid api key sk-123", status_code=502)
    model = ScriptedModel([ScriptedTurn(text="Partial answer", error=failure), "Never asked for."])

    events = await run(calculator(), model, ctx)

    assert events[-1] == RunFailed(
        "UPSTREAM_ERROR", "The model provider failed (status 502). Please try again in a moment."
    )
    assert not any(isinstance(e, (ModelCalled, RunFinished)) for e in events)
    assert len(model.requests) == 1


# --- Approvals ---------------------------------------------------------------------------------

guarded = ToolRegistry()


@guarded.tool(needs_approval=True)
async def launch(ctx: ToolContext, target: str) -> str:
    """Launch a rocket at a target."""
    return f"launched at {target}"


@guarded.tool(needs_approval=lambda arguments: arguments["amount"] > 100)
async def pay(ctx: ToolContext, amount: int) -> str:
    """Pay an amount."""
    return f"paid {amount}"


async def test_a_call_needing_approval_pauses_the_run_after_the_other_calls_ran(
    ctx: ToolContext,
) -> None:
    model = ScriptedModel(
        [
            ScriptedTurn(
                tool_calls=[
                    tool_call("pay", {"amount": 5}, id="small"),
                    tool_call("pay", {"amount": 500}, id="large"),
                    tool_call("launch", {"target": "moon"}, id="rocket"),
                    tool_call("pay", {"amount": "lots"}, id="invalid"),
                ]
            )
        ]
    )

    events = await run(calculator(tools=guarded), model, ctx)

    outputs = {e.call_id: e.ok for e in events if isinstance(e, ToolOutput)}
    assert outputs == {"small": True, "invalid": False}  # invalid input is never put to a person
    requests = [e for e in events if isinstance(e, ToolApprovalRequested)]
    assert [(r.call_id, r.tool_name) for r in requests] == [("large", "pay"), ("rocket", "launch")]
    assert all(r.approval_id.startswith("apr_") for r in requests)
    assert events[-2:] == [StepFinished(1), RunPaused()]
    assert len(model.requests) == 1


async def test_decisions_run_the_approved_calls_and_deny_the_rest(ctx: ToolContext) -> None:
    agent = calculator(tools=guarded)
    decisions = [
        Decision(ToolCall("a", "launch", '{"target": "mars"}'), "apr_1", approved=True),
        Decision(ToolCall("b", "pay", '{"amount": 500}'), "apr_2", approved=False, reason="no"),
    ]

    events = [event async for event in run_decided_calls(agent, decisions, ctx)]

    assert events == [
        ToolOutput("a", "launch", {"target": "mars"}, True, "launched at mars"),
        ToolDenied("b", "pay", "apr_2", "no"),
    ]


async def test_a_run_going_on_counts_its_earlier_steps_against_max_steps(
    ctx: ToolContext,
) -> None:
    model = ScriptedModel([ScriptedTurn(tool_calls=[tool_call("add", {"a": 1, "b": 2})])] * 3)

    events = await run_after(calculator(max_steps=3), model, ctx, first_step=3)

    assert [e.step for e in events if isinstance(e, StepStarted)] == [3]
    assert events[-1] == RunFinished("tool-calls")


async def run_after(
    agent: Agent, model: ScriptedModel, ctx: ToolContext, first_step: int
) -> list[AgentEvent]:
    stream = run_agent(agent, model, [SYSTEM, QUESTION], ctx, model=MODEL, first_step=first_step)
    return [event async for event in stream]


async def test_a_stop_while_the_provider_is_silent_ends_the_run_at_once(ctx: ToolContext) -> None:
    stop = asyncio.Event()

    async def thinking_forever(request: LLMRequest) -> ScriptedTurn:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    model = ScriptedModel(thinking_forever)
    asyncio.get_running_loop().call_later(0.05, stop.set)

    async with asyncio.timeout(2):
        events = await run(calculator(), model, ctx, stop)

    assert events[-2:] == [StepFinished(1), RunFinished("other")]
    [call] = model_calls(events)
    assert call.estimated
    assert call.usage.completion_tokens == 0


async def test_a_cancelled_run_is_not_mistaken_for_a_stop(ctx: ToolContext) -> None:
    stop = asyncio.Event()

    async def thinking_forever(request: LLMRequest) -> ScriptedTurn:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    task = asyncio.create_task(run(calculator(), ScriptedModel(thinking_forever), ctx, stop))
    await asyncio.sleep(0.02)
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
