"""The agent loop as named steps: call the model, stream its output, run the tools it asked for,
resolve the step, repeat until it answers, is stopped, fails, or reaches `max_steps`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent_core.agent import Agent
from agent_core.context import count_message_tokens, count_tokens
from agent_core.events import (
    AgentEvent,
    FinishReason,
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
from agent_core.llm.base import LLM, LLMRequest
from agent_core.llm.types import (
    ChatMessage,
    Completed,
    LLMError,
    LLMUsage,
    ModelResponse,
    StreamEvent,
    ToolCallDelta,
    ToolMessage,
    ToolSpec,
)
from agent_core.llm.types import TextDelta as ModelTextDelta
from config.ids import new_id
from tools import ToolCall, ToolContext, ToolResult, approval_required, execute_all

log = logging.getLogger("turbokit.agent")

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content-filter",
    "tool_calls": "tool-calls",
}


@dataclass
class _Step:
    """What one model call produced so far; survives a stop mid-stream."""

    number: int
    text_id: str | None = None
    text: str = ""
    calls: dict[int, tuple[str, str]] = field(default_factory=dict)
    arguments: dict[int, str] = field(default_factory=dict)
    response: ModelResponse | None = None


async def run_agent(
    agent: Agent,
    llm: LLM,
    messages: Sequence[ChatMessage],
    ctx: ToolContext,
    *,
    model: str,
    stop: asyncio.Event | None = None,
    first_step: int = 1,
) -> AsyncIterator[AgentEvent]:
    """Run `agent` over `messages` (system prompt first) and yield what happens, in order.

    A run that goes on after approvals starts at `first_step`: `max_steps` counts the whole run.
    """
    stop = stop or asyncio.Event()
    working = list(messages)
    tools = [
        ToolSpec(name=t.name, description=t.description, parameters=t.parameters)
        for t in agent.tools
    ]
    for number in range(first_step, agent.max_steps + 1):
        yield StepStarted(number)
        request = _request(agent, model, working, tools, number, ctx)
        step = _Step(number)
        started = time.perf_counter()
        try:
            async for event in _call_model(llm, request, step, stop):
                yield event
        except LLMError as exc:
            log.warning("run %s: model call failed: %s", ctx.run_id, exc.message)
            yield RunFailed("UPSTREAM_ERROR", _public_message(exc))
            return
        latency_ms = (time.perf_counter() - started) * 1000
        if step.response is None and not stop.is_set():
            yield RunFailed("UPSTREAM_ERROR", "The model's answer ended before it was complete.")
            return
        if step.response is None:  # stopped mid-stream
            yield ModelCalled(number, _estimate(request, step), latency_ms, estimated=True)
            yield StepFinished(number)
            yield RunFinished("other")
            return
        response = step.response
        yield ModelCalled(number, response.usage, latency_ms)
        if not response.tool_calls:
            yield StepFinished(number)
            yield RunFinished(_FINISH_REASONS.get(response.finish_reason or "stop", "stop"))
            return
        calls = [ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in response.tool_calls]
        for call in calls:
            yield ToolInputAvailable(call.id, call.name, _parsed(call.arguments))
        if stop.is_set():
            yield StepFinished(number)
            yield RunFinished("other")
            return
        waiting = [call for call in calls if approval_required(agent.tools, call)]
        ready = [call for call in calls if call not in waiting]
        results = await execute_all(agent.tools, ready, ctx, agent.max_tool_concurrency)
        for call, result in zip(ready, results, strict=True):
            yield _tool_output(call, result)
        if waiting:
            for call in waiting:
                yield ToolApprovalRequested(call.id, call.name, new_id("apr"))
            yield StepFinished(number)
            yield RunPaused()
            return
        working.append(response.to_message())
        working.extend(
            ToolMessage(tool_call_id=r.call_id, content=_result_text(r)) for r in results
        )
        yield StepFinished(number)
        if stop.is_set():
            yield RunFinished("other")
            return
    yield RunFinished("tool-calls")


@dataclass(frozen=True, slots=True)
class Decision:
    """A person's answer to one approval request."""

    call: ToolCall
    approval_id: str
    approved: bool
    reason: str | None = None


async def run_decided_calls(
    agent: Agent, decisions: Sequence[Decision], ctx: ToolContext
) -> AsyncIterator[AgentEvent]:
    """Carry out approval decisions before a paused run goes on: approved calls run (together,
    as a step's calls do), denied ones become a denial the model reads as the call's result."""
    approved = [d.call for d in decisions if d.approved]
    results = await execute_all(agent.tools, approved, ctx, agent.max_tool_concurrency)
    outcomes = dict(zip([call.id for call in approved], results, strict=True))
    for decision in decisions:
        call = decision.call
        if decision.approved:
            yield _tool_output(call, outcomes[call.id])
        else:
            yield ToolDenied(call.id, call.name, decision.approval_id, decision.reason)


def _public_message(exc: LLMError) -> str:
    """What the user is told: the provider failed, with its status; details stay in the logs."""
    status = f" (status {exc.status_code})" if exc.status_code else ""
    return f"The model provider failed{status}. Please try again in a moment."


def _request(
    agent: Agent,
    model: str,
    messages: list[ChatMessage],
    tools: list[ToolSpec],
    step: int,
    ctx: ToolContext,
) -> LLMRequest:
    return LLMRequest(
        model=model,
        messages=list(messages),
        tools=tools,
        temperature=agent.temperature,
        top_p=agent.top_p,
        max_tokens=agent.max_tokens,
        fallback_models=list(agent.fallback_models),
        metadata={"agent": agent.name, "step": step, "run_id": ctx.run_id, "user_id": ctx.user_id},
    )


async def _call_model(
    llm: LLM, request: LLMRequest, step: _Step, stop: asyncio.Event
) -> AsyncIterator[AgentEvent]:
    """Stream one model call as text and tool-input events; returns early when stopped."""
    stream = llm.stream(request)
    try:
        async for event in _until_stopped(stream, stop):
            if isinstance(event, ModelTextDelta) and event.text:
                if step.text_id is None:
                    step.text_id = f"text-{step.number}-{len(step.text)}"
                    yield TextStarted(step.text_id)
                step.text += event.text
                yield TextDelta(step.text_id, event.text)
            elif isinstance(event, ToolCallDelta):
                for ended in _end_text(step):
                    yield ended
                for tool_event in _tool_delta(step, event):
                    yield tool_event
            elif isinstance(event, Completed):
                step.response = event.response
            if stop.is_set() and step.response is None:
                break
    finally:
        await _close(stream)
    for ended in _end_text(step):
        yield ended


async def _until_stopped(
    stream: AsyncIterator[StreamEvent], stop: asyncio.Event
) -> AsyncIterator[StreamEvent]:
    """The stream's events, ending as soon as `stop` is set, also while the provider is silent
    (a model thinking for a minute must not keep a stopped run waiting).

    Only a wait for the provider is interrupted, never the caller's own work between events: the
    stop cancels this task just while it awaits the stream's next event, and the cancellation is
    absorbed here."""
    task = asyncio.current_task()
    assert task is not None
    waiting = interrupted = False

    def interrupt(_: asyncio.Task[bool]) -> None:
        nonlocal interrupted
        if waiting and not interrupted:
            interrupted = True
            task.cancel()

    watcher = asyncio.create_task(stop.wait())
    watcher.add_done_callback(interrupt)
    iterator = aiter(stream)
    try:
        while not stop.is_set():
            waiting = True
            try:
                event = await anext(iterator)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if not interrupted or task.uncancel() > 0:
                    raise  # cancelled by someone else too: not ours to absorb
                return
            finally:
                waiting = False
            yield event
    finally:
        watcher.remove_done_callback(interrupt)
        watcher.cancel()


def _end_text(step: _Step) -> list[AgentEvent]:
    if step.text_id is None:
        return []
    text_id, step.text_id = step.text_id, None
    return [TextEnded(text_id)]


def _tool_delta(step: _Step, delta: ToolCallDelta) -> list[AgentEvent]:
    events: list[AgentEvent] = []
    if delta.index not in step.calls and delta.id and delta.name:
        step.calls[delta.index] = (delta.id, delta.name)
        step.arguments[delta.index] = ""
        events.append(ToolInputStarted(delta.id, delta.name))
    if delta.index in step.calls and delta.arguments_delta:
        step.arguments[delta.index] += delta.arguments_delta
        events.append(ToolInputDelta(step.calls[delta.index][0], delta.arguments_delta))
    return events


def _tool_output(call: ToolCall, result: ToolResult) -> ToolOutput:
    tool_input = result.input if result.input is not None else _parsed(call.arguments)
    return ToolOutput(call.id, call.name, tool_input, result.ok, result.output, result.error)


def _result_text(result: ToolResult) -> str:
    if not result.ok:
        return f"Error: {result.error}"
    output = result.output
    return output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)


def _parsed(arguments: str) -> Any:
    try:
        return json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        return arguments


def _estimate(request: LLMRequest, step: _Step) -> LLMUsage:
    """Usage of a call cut short: the provider never reported it, so count with tiktoken."""
    prompt = sum(count_message_tokens(message) for message in request.messages)
    completion = count_tokens(step.text + "".join(step.arguments.values()))
    return LLMUsage(prompt_tokens=prompt, completion_tokens=completion, model=request.model)


async def _close(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
