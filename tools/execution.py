"""Run the tool calls a model asked for: validated, time-limited, concurrent.

Every problem the model can act on (an unknown tool, bad JSON, wrong arguments, a failure, a
timeout) becomes an error `ToolResult` whose text goes back to the model, so one bad call never
ends the run. Cancellation is not a tool problem: it propagates to the caller.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from tools.context import ToolContext
from tools.registry import Tool, ToolRegistry

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONCURRENCY = 4
"""Calls of one step run at once up to this many; enough for parallel look-ups, bounded for the
database and the APIs the tools call."""

_OUTPUT = TypeAdapter[Any](Any)
"""Serialises whatever a tool returns (models, dataclasses, dates, ...) to JSON-able data."""

_MAX_VALUE_CHARS = 80
"""How much of a rejected value to quote back to the model: enough to spot the mistake."""


class ToolError(Exception):
    """Raised by a tool to tell the model something; the message is sent to it verbatim.

    For expected failures the model can act on ("no project named X"); unlike other exceptions it
    is not logged as a bug.
    """


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call the model asked for."""

    id: str
    name: str
    arguments: str
    """The arguments as raw JSON text, exactly as the model produced them (possibly invalid)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult:
    """The outcome of one call: an output, or an error text meant for the model."""

    call_id: str
    name: str
    ok: bool
    output: Any = None
    """JSON-able data (already serialised) when `ok`."""
    error: str | None = None
    """What went wrong, written for the model to correct its call, when not `ok`."""
    input: dict[str, Any] | None = None
    """The parsed arguments, when they were a JSON object."""


async def execute(registry: ToolRegistry, call: ToolCall, ctx: ToolContext) -> ToolResult:
    """Run one call; every tool-level failure becomes an error result."""
    tool = registry.get(call.name)
    if tool is None:
        available = ", ".join(registry.names()) or "(none)"
        return _failure(call, f"Unknown tool {call.name!r}. Available tools: {available}.")
    text = call.arguments if call.arguments.strip() else "{}"
    try:
        arguments = _parse_object(text)
    except ValueError as exc:
        return _failure(call, f"Invalid JSON arguments: {exc}")
    try:
        kwargs = tool.schema.validate_json(text)
    except ValidationError as exc:
        return _failure(call, _describe_invalid(tool.name, exc), arguments)
    return await _invoke(tool, call, ctx, kwargs, arguments)


def approval_required(registry: ToolRegistry, call: ToolCall) -> bool:
    """Whether the call must wait for a person. A call that would fail anyway (unknown tool,
    invalid arguments) is not put to anyone: it runs, and the model sees its error. A policy that
    raises asks for approval: when unsure, ask."""
    tool = registry.get(call.name)
    if tool is None or tool.needs_approval is False:
        return False
    text = call.arguments if call.arguments.strip() else "{}"
    try:
        arguments = _parse_object(text)
        tool.schema.validate_json(text)
    except (ValueError, ValidationError):
        return False
    try:
        return bool(tool.approval_required(arguments))
    except Exception:
        logger.exception("Approval policy of tool %s failed; asking for approval", tool.name)
        return True


async def execute_all(
    registry: ToolRegistry,
    calls: Sequence[ToolCall],
    ctx: ToolContext,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
) -> list[ToolResult]:
    """Run calls concurrently, at most `max_concurrency` at a time; results in call order."""
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
    semaphore = asyncio.Semaphore(max_concurrency)

    async def run(call: ToolCall) -> ToolResult:
        async with semaphore:
            return await execute(registry, call, ctx)

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(run(call)) for call in calls]
    return [task.result() for task in tasks]


def _parse_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(str(exc)) from exc
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


async def _invoke(
    tool: Tool, call: ToolCall, ctx: ToolContext, kwargs: dict[str, Any], arguments: dict[str, Any]
) -> ToolResult:
    timeout = asyncio.timeout(tool.timeout_seconds)
    try:
        async with timeout:
            value = await tool.function(ctx, **kwargs)
    except Exception as exc:
        if isinstance(exc, TimeoutError) and timeout.expired():
            error = f"Tool {tool.name} timed out after {tool.timeout_seconds:g}s"
        else:
            error = _describe_exception(tool, call, ctx, exc)
        return _failure(call, error, arguments)
    return _success(tool, call, ctx, value, arguments)


def _success(
    tool: Tool, call: ToolCall, ctx: ToolContext, value: Any, arguments: dict[str, Any]
) -> ToolResult:
    try:
        output = _OUTPUT.dump_python(value, mode="json")
    except Exception as exc:
        _log_failure(tool, call, ctx, exc)
        return _failure(call, f"Tool {tool.name} returned a value that cannot be sent as JSON")
    return ToolResult(call_id=call.id, name=call.name, ok=True, output=output, input=arguments)


def _failure(call: ToolCall, error: str, arguments: dict[str, Any] | None = None) -> ToolResult:
    return ToolResult(call_id=call.id, name=call.name, ok=False, error=error, input=arguments)


def _describe_exception(tool: Tool, call: ToolCall, ctx: ToolContext, exc: Exception) -> str:
    """`ToolError` speaks to the model as written; anything else is a bug: log it, name it."""
    if isinstance(exc, ToolError):
        return str(exc) or "ToolError"
    _log_failure(tool, call, ctx, exc)
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _log_failure(tool: Tool, call: ToolCall, ctx: ToolContext, exc: Exception) -> None:
    logger.error(
        "Tool %s failed (call %s, run %s, user %s)",
        tool.name,
        call.id,
        ctx.run_id,
        ctx.user_id,
        exc_info=exc,
    )


def _describe_invalid(tool_name: str, exc: ValidationError) -> str:
    """One line per problem, located by argument path, so the model can correct its call."""
    problems = [_describe_problem(error) for error in exc.errors(include_url=False)]
    return f"Invalid arguments for tool {tool_name}:\n" + "\n".join(problems)


def _describe_problem(error: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "arguments"
    line = f"- {where}: {error['msg']}"
    if error["type"] in ("missing", "extra_forbidden"):
        return line
    return f"{line} (got {_quote(error['input'])})"


def _quote(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    if len(text) <= _MAX_VALUE_CHARS:
        return text
    return text[: _MAX_VALUE_CHARS - 3] + "..."
