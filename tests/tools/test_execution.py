"""Executing calls: tool problems become error results for the model; cancellation propagates."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging

import pytest
from pydantic import BaseModel

from tools import (
    ToolCall,
    ToolContext,
    ToolError,
    ToolRegistry,
    ToolResult,
    execute,
    execute_all,
)

registry = ToolRegistry()


class Hit(BaseModel):
    title: str
    created: dt.date


@dataclasses.dataclass
class Page:
    hits: list[Hit]
    total: int


@registry.tool
async def search(ctx: ToolContext, query: str, limit: int = 2) -> Page:
    """Search."""
    hits = [Hit(title=f"{query} {i}", created=dt.date(2024, 1, i + 1)) for i in range(limit)]
    return Page(hits=hits, total=limit)


@registry.tool
async def whoami(ctx: ToolContext) -> dict[str, str | None]:
    """Who the run acts for."""
    return {"user_id": ctx.user_id, "thread_id": ctx.thread_id, "run_id": ctx.run_id}


@registry.tool
async def explode(ctx: ToolContext) -> None:
    """Fail like a bug."""
    raise RuntimeError("database is on fire")


@registry.tool
async def refuse(ctx: ToolContext, name: str) -> None:
    """Fail on purpose."""
    raise ToolError(f"No project named {name!r}. Ask the user which project they mean.")


@registry.tool
async def inner_timeout(ctx: ToolContext) -> None:
    """Time out inside, on its own."""
    raise TimeoutError("upstream API did not answer")


@registry.tool
async def unserialisable(ctx: ToolContext) -> object:
    """Return something that is not JSON."""
    return object()


@registry.tool(timeout=0.01)
async def hang(ctx: ToolContext) -> None:
    """Never finish."""
    await asyncio.Event().wait()


def call(name: str, arguments: str = "{}", id: str = "call_1") -> ToolCall:
    return ToolCall(id=id, name=name, arguments=arguments)


async def test_valid_call_returns_json_ready_output(ctx: ToolContext) -> None:
    result = await execute(registry, call("search", '{"query": "q"}'), ctx)

    assert result == ToolResult(
        call_id="call_1",
        name="search",
        ok=True,
        output={
            "hits": [
                {"title": "q 0", "created": "2024-01-01"},
                {"title": "q 1", "created": "2024-01-02"},
            ],
            "total": 2,
        },
        input={"query": "q"},
    )


async def test_identity_comes_from_the_context(ctx: ToolContext) -> None:
    result = await execute(registry, call("whoami"), ctx)

    assert result.output == {"user_id": "user_1", "thread_id": "thread_1", "run_id": "run_1"}


async def test_empty_arguments_mean_no_arguments(ctx: ToolContext) -> None:
    result = await execute(registry, call("whoami", arguments=""), ctx)

    assert result.ok
    assert result.input == {}


async def test_arguments_are_validated_in_json_mode(ctx: ToolContext) -> None:
    result = await execute(registry, call("search", '{"query": "q", "limit": "1"}'), ctx)

    assert result.ok
    assert result.output["total"] == 1


async def test_malformed_json_is_an_error_result(ctx: ToolContext) -> None:
    result = await execute(registry, call("search", '{"query": '), ctx)

    assert result == ToolResult(
        call_id="call_1",
        name="search",
        ok=False,
        error="Invalid JSON arguments: Expecting value: line 1 column 11 (char 10)",
    )


async def test_json_that_is_not_an_object_is_an_error_result(ctx: ToolContext) -> None:
    result = await execute(registry, call("search", '["q"]'), ctx)

    assert result.error == "Invalid JSON arguments: expected a JSON object, got list"


async def test_wrong_arguments_are_listed_for_the_model_to_fix(ctx: ToolContext) -> None:
    arguments = '{"limit": "ten", "sort": "new"}'

    result = await execute(registry, call("search", arguments), ctx)

    assert not result.ok
    assert result.input == {"limit": "ten", "sort": "new"}
    assert result.error == (
        "Invalid arguments for tool search:\n"
        "- query: Field required\n"
        "- limit: Input should be a valid integer, unable to parse string as an integer"
        ' (got "ten")\n'
        "- sort: Extra inputs are not permitted"
    )


async def test_unknown_tool_names_the_available_ones(ctx: ToolContext) -> None:
    small = registry.subset(["search", "whoami"])

    result = await execute(small, call("delete_everything"), ctx)

    assert result == ToolResult(
        call_id="call_1",
        name="delete_everything",
        ok=False,
        error="Unknown tool 'delete_everything'. Available tools: search, whoami.",
    )


async def test_raised_exception_is_named_for_the_model_and_logged_with_traceback(
    ctx: ToolContext, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="tools.execution"):
        result = await execute(registry, call("explode"), ctx)

    assert result.error == "RuntimeError: database is on fire"
    assert "Traceback" not in result.error
    [record] = caplog.records
    assert record.getMessage() == "Tool explode failed (call call_1, run run_1, user user_1)"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


async def test_tool_error_message_is_sent_verbatim_and_not_logged(
    ctx: ToolContext, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="tools.execution"):
        result = await execute(registry, call("refuse", '{"name": "Apollo"}'), ctx)

    assert result.error == "No project named 'Apollo'. Ask the user which project they mean."
    assert result.input == {"name": "Apollo"}
    assert caplog.records == []


async def test_slow_tool_times_out(ctx: ToolContext) -> None:
    result = await execute(registry, call("hang"), ctx)

    assert result.error == "Tool hang timed out after 0.01s"


async def test_timeout_error_raised_by_the_tool_itself_is_an_ordinary_failure(
    ctx: ToolContext,
) -> None:
    result = await execute(registry, call("inner_timeout"), ctx)

    assert result.error == "TimeoutError: upstream API did not answer"


async def test_output_that_is_not_json_is_an_error_result(ctx: ToolContext) -> None:
    result = await execute(registry, call("unserialisable"), ctx)

    assert result.error == "Tool unserialisable returned a value that cannot be sent as JSON"


async def test_cancellation_propagates(ctx: ToolContext) -> None:
    local = ToolRegistry()
    started = asyncio.Event()

    @local.tool(timeout=None)
    async def wait_forever(ctx: ToolContext) -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(execute_all(local, [call("wait_forever")], ctx))
    await started.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


async def test_execute_all_returns_results_in_call_order(ctx: ToolContext) -> None:
    local = ToolRegistry()
    finished: list[int] = []
    turn = asyncio.Condition()
    total = 4

    @local.tool
    async def step(ctx: ToolContext, position: int) -> int:
        """The last call finishes first."""
        async with turn:
            await turn.wait_for(lambda: len(finished) == total - 1 - position)
            finished.append(position)
            turn.notify_all()
        return position

    calls = [call("step", f'{{"position": {i}}}', id=f"call_{i}") for i in range(total)]
    results = await execute_all(local, calls, ctx, max_concurrency=total)

    assert finished == [3, 2, 1, 0]
    assert [(r.call_id, r.output) for r in results] == [(f"call_{i}", i) for i in range(total)]


async def test_execute_all_caps_calls_in_flight(ctx: ToolContext) -> None:
    local = ToolRegistry()
    in_flight = 0
    peak = 0
    full = asyncio.Event()
    gate = asyncio.Event()

    @local.tool
    async def work(ctx: ToolContext) -> None:
        """Hold a slot until the gate opens."""
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 3:
            full.set()
        await gate.wait()
        in_flight -= 1

    task = asyncio.create_task(
        execute_all(local, [call("work", id=str(i)) for i in range(10)], ctx, max_concurrency=3)
    )
    await full.wait()
    gate.set()
    results = await task

    assert peak == 3
    assert all(result.ok for result in results)


async def test_execute_all_mixes_successes_and_failures(ctx: ToolContext) -> None:
    calls = [call("whoami", id="a"), call("explode", id="b"), call("nope", id="c")]

    results = await execute_all(registry, calls, ctx)

    assert [(r.call_id, r.ok) for r in results] == [("a", True), ("b", False), ("c", False)]


async def test_execute_all_refuses_a_cap_below_one(ctx: ToolContext) -> None:
    with pytest.raises(ValueError, match="max_concurrency must be at least 1"):
        await execute_all(registry, [], ctx, max_concurrency=0)
