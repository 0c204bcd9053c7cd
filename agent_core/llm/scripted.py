"""An in-process model that replays a script, for unit tests and offline tool development.

Give it a list of turns (one is used per call) or a function from the request to a turn, in the
spirit of pydantic-ai's TestModel/FunctionModel. It streams like a real model (text in several
deltas, tool calls as id/name then argument fragments, then `Completed`) and records every request.

    model = ScriptedModel([ScriptedTurn(tool_calls=[tool_call("search", {"q": "x"})]), "Done."])
"""

from __future__ import annotations

import inspect
import json
import re
from collections import deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any

from agent_core.llm.base import LLMRequest
from agent_core.llm.types import (
    Completed,
    LLMError,
    LLMUsage,
    ModelResponse,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallRequest,
)


@dataclass(frozen=True)
class ScriptedTurn:
    """What the model answers to one call.

    Tool calls with an empty id get `call_<request>_<index>`. `usage` defaults to a word-count
    estimate. `error` is raised after `text` has streamed, like a provider failing mid-answer.
    """

    text: str = ""
    tool_calls: Sequence[ToolCallRequest] = ()
    usage: LLMUsage | None = None
    finish_reason: str | None = None
    error: LLMError | None = None


Turn = ScriptedTurn | str
"""A plain string is a text-only turn."""
TurnFunction = Callable[[LLMRequest], Turn | Awaitable[Turn]]


def tool_call(
    name: str, arguments: Mapping[str, Any] | str | None = None, id: str = ""
) -> ToolCallRequest:
    """A scripted tool call; `arguments` may be a dict (encoded as JSON) or raw JSON text."""
    if arguments is None or not isinstance(arguments, str):
        arguments = json.dumps(dict(arguments or {}))
    return ToolCallRequest(id=id, name=name, arguments=arguments)


class ScriptExhaustedError(RuntimeError):
    """The model was called more times than the script has turns."""


class ScriptedModel:
    """An `LLM` answering from a script; `requests` holds every request it received."""

    def __init__(self, script: Iterable[Turn] | TurnFunction) -> None:
        self._function: TurnFunction | None = script if callable(script) else None
        self._turns: deque[Turn] = deque() if callable(script) else deque(script)
        self.requests: list[LLMRequest] = []

    @property
    def remaining(self) -> int:
        """Turns not used yet (0 for a function-driven model)."""
        return len(self._turns)

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        number = len(self.requests)
        turn = _as_turn(await self._next_turn(request))
        calls = [_with_id(call, number, i) for i, call in enumerate(turn.tool_calls)]
        for word in _words(turn.text):
            yield TextDelta(text=word)
        if turn.error is not None:
            raise turn.error
        for index, call in enumerate(calls):
            for delta in _tool_call_deltas(index, call):
                yield delta
        yield Completed(response=_response(turn, calls, request, number))

    async def _next_turn(self, request: LLMRequest) -> Turn:
        if self._function is not None:
            result = self._function(request)
            return await result if inspect.isawaitable(result) else result
        if not self._turns:
            raise ScriptExhaustedError(
                f"ScriptedModel received request #{len(self.requests)} but its script has no "
                "turns left"
            )
        return self._turns.popleft()


def _as_turn(turn: Turn) -> ScriptedTurn:
    return ScriptedTurn(text=turn) if isinstance(turn, str) else turn


def _with_id(call: ToolCallRequest, number: int, index: int) -> ToolCallRequest:
    return call if call.id else call.model_copy(update={"id": f"call_{number}_{index}"})


def _words(text: str) -> list[str]:
    """Word-sized deltas that join back to the original text."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


def _tool_call_deltas(index: int, call: ToolCallRequest) -> Iterator[ToolCallDelta]:
    yield ToolCallDelta(index=index, id=call.id, name=call.name)
    size = max(1, -(-len(call.arguments) // 3))
    for start in range(0, len(call.arguments), size):
        yield ToolCallDelta(index=index, arguments_delta=call.arguments[start : start + size])


def _response(
    turn: ScriptedTurn, calls: list[ToolCallRequest], request: LLMRequest, number: int
) -> ModelResponse:
    finish_reason = turn.finish_reason or ("tool_calls" if calls else "stop")
    usage = turn.usage or _estimated_usage(turn, calls, request)
    usage = usage.model_copy(
        update={
            "model": usage.model or request.model,
            "generation_id": usage.generation_id or f"scripted-{number}",
        }
    )
    return ModelResponse(text=turn.text, tool_calls=calls, finish_reason=finish_reason, usage=usage)


def _estimated_usage(
    turn: ScriptedTurn, calls: list[ToolCallRequest], request: LLMRequest
) -> LLMUsage:
    """Roughly one token per word: enough for tests that check usage is recorded and summed."""
    prompt = sum(len(json.dumps(m.to_openai()).split()) for m in request.messages)
    completion = len(turn.text.split()) + sum(len(c.arguments.split()) + 1 for c in calls)
    return LLMUsage(prompt_tokens=prompt, completion_tokens=completion)
