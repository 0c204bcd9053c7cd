"""What a run emits, in order. Each door (AI SDK stream, OpenAI chunks, JSON) adapts this one
sequence to its wire format, and the store persists it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from agent_core.llm.types import LLMUsage

FinishReason = Literal["stop", "length", "content-filter", "tool-calls", "error", "other"]
"""The AI SDK's finish reasons: `tool-calls` when max_steps ended a tool loop, `other` on stop."""


@dataclass(frozen=True, slots=True)
class StepStarted:
    step: int


@dataclass(frozen=True, slots=True)
class TextStarted:
    id: str


@dataclass(frozen=True, slots=True)
class TextDelta:
    id: str
    delta: str


@dataclass(frozen=True, slots=True)
class TextEnded:
    id: str


@dataclass(frozen=True, slots=True)
class ToolInputStarted:
    call_id: str
    tool_name: str


@dataclass(frozen=True, slots=True)
class ToolInputDelta:
    call_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class ToolInputAvailable:
    call_id: str
    tool_name: str
    input: Any
    """The parsed arguments, or the raw text when the model sent invalid JSON."""


@dataclass(frozen=True, slots=True)
class ToolOutput:
    call_id: str
    tool_name: str
    input: Any
    ok: bool
    output: Any = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ToolApprovalRequested:
    """A call waits for a person's decision; the run pauses after this step."""

    call_id: str
    tool_name: str
    approval_id: str


@dataclass(frozen=True, slots=True)
class ToolDenied:
    """A person denied the call; the model is told so instead of getting a result."""

    call_id: str
    tool_name: str
    approval_id: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ModelCalled:
    """One LLM call finished (or was cut short by a stop, with `estimated` usage)."""

    step: int
    usage: LLMUsage
    latency_ms: float
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class StepFinished:
    step: int


@dataclass(frozen=True, slots=True)
class RunFinished:
    finish_reason: FinishReason


@dataclass(frozen=True, slots=True)
class RunPaused:
    """The run waits for tool approvals; it goes on once every one is decided."""


@dataclass(frozen=True, slots=True)
class RunFailed:
    code: str
    message: str


AgentEvent = (
    StepStarted
    | TextStarted
    | TextDelta
    | TextEnded
    | ToolInputStarted
    | ToolInputDelta
    | ToolInputAvailable
    | ToolOutput
    | ToolApprovalRequested
    | ToolDenied
    | ModelCalled
    | StepFinished
    | RunFinished
    | RunPaused
    | RunFailed
)
