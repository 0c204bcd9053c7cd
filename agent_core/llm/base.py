"""The interface the agent loop talks to: one streaming call, whatever the provider.

litellm is one implementation (`LiteLLMModel`), a script is another (`ScriptedModel`); the loop
never imports either directly, so tests swap them freely.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from pydantic import BaseModel, Field

from agent_core.llm.types import ChatMessage, Completed, ModelResponse, StreamEvent, ToolSpec


class LLMRequest(BaseModel):
    """One model call; `metadata` is for logs and tracing and is never sent to the provider."""

    model: str
    messages: list[ChatMessage]
    tools: list[ToolSpec] = Field(default_factory=list)
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    fallback_models: list[str] = Field(default_factory=list)
    """Tried in order by the provider when `model` fails (OpenRouter's `models`)."""
    metadata: dict[str, Any] = Field(default_factory=dict)


class LLM(Protocol):
    """A chat model that streams."""

    def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        """Yield text and tool-call deltas, then exactly one `Completed`; raise `LLMError`."""
        ...


async def complete(llm: LLM, request: LLMRequest) -> ModelResponse:
    """Run a call to the end and return the assembled turn (for callers that do not stream)."""
    response: ModelResponse | None = None
    async for event in llm.stream(request):
        if isinstance(event, Completed):
            response = event.response
    if response is None:
        raise RuntimeError("model stream ended without a Completed event")
    return response
