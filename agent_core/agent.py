"""An agent: who it is, what it may do, and how it calls its model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tools import ToolContext, ToolRegistry

Instructions = str | Callable[[ToolContext], str]
"""Static system instructions, or a function of the run's context (user, thread)."""


@dataclass(frozen=True, kw_only=True)
class Agent:
    name: str
    description: str
    instructions: Instructions
    tools: ToolRegistry = field(default_factory=ToolRegistry)
    model: str | None = None
    """The model as OpenRouter names it; None means the service's default (OPENROUTER_MODEL)."""
    fallback_models: tuple[str, ...] = ()
    max_steps: int = 8
    """Model calls per run; a run still calling tools after this many ends with `tool-calls`."""
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    context_tokens: int = 64_000
    """Budget for instructions plus history; older messages are dropped to fit."""
    max_tool_concurrency: int = 4

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"agent {self.name!r}: max_steps must be at least 1")

    def system_prompt(self, ctx: ToolContext) -> str:
        return self.instructions(ctx) if callable(self.instructions) else self.instructions
