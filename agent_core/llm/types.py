"""Provider-neutral types for talking to a chat model.

Messages mirror OpenAI's chat roles so they pass to any OpenAI-compatible API with `to_openai()`
and parse back from that shape; stream events are a tagged union so consumers can `match` on them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


# ------------------------------------------------------------------------------------- messages


class ToolCallRequest(_Model):
    """A function call the model asked for; `arguments` is the raw JSON text it produced."""

    id: str
    name: str
    arguments: str = "{}"

    @model_validator(mode="before")
    @classmethod
    def _from_openai(cls, data: Any) -> Any:
        """Accept OpenAI's nested `{"id", "type", "function": {"name", "arguments"}}` too."""
        if isinstance(data, dict) and isinstance(data.get("function"), dict):
            function = data["function"]
            return {"id": data.get("id"), **function}
        return data

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


class SystemMessage(_Model):
    role: Literal["system"] = "system"
    content: str

    def to_openai(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content}


class UserMessage(_Model):
    """`content` is text or OpenAI content parts (`{"type": "text" | "image_url", ...}`)."""

    role: Literal["user"] = "user"
    content: str | list[dict[str, Any]]

    def to_openai(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content}


class AssistantMessage(_Model):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCallRequest] = Field(default_factory=list)

    def to_openai(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [call.to_openai() for call in self.tool_calls]
        return message


class ToolMessage(_Model):
    """The result of one tool call, sent back to the model."""

    role: Literal["tool"] = "tool"
    tool_call_id: str
    content: str

    def to_openai(self) -> dict[str, Any]:
        return {"role": self.role, "tool_call_id": self.tool_call_id, "content": self.content}


ChatMessage = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]
chat_messages_adapter: TypeAdapter[list[ChatMessage]] = TypeAdapter(list[ChatMessage])
"""Parses a list of OpenAI-shaped message dicts."""


class ToolSpec(_Model):
    """A tool offered to the model; `parameters` is its arguments' JSON Schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    def to_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


# ------------------------------------------------------------------------------------- results


class LLMUsage(_Model):
    """What one model call consumed; `cost_usd` is the provider's figure when it reports one."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    """Part of `prompt_tokens` served from the provider's prompt cache."""
    reasoning_tokens: int = 0
    """Part of `completion_tokens` spent on hidden reasoning."""
    cost_usd: float | None = None
    model: str | None = None
    """The model that actually answered (a fallback model when OpenRouter used one)."""
    generation_id: str | None = None
    """The provider's response id; OpenRouter's generation id, for looking the call up later."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ModelResponse(_Model):
    """One assistant turn, assembled from a stream."""

    text: str = ""
    tool_calls: list[ToolCallRequest] = Field(default_factory=list)
    finish_reason: str | None = None
    usage: LLMUsage = Field(default_factory=LLMUsage)

    def to_message(self) -> AssistantMessage:
        return AssistantMessage(content=self.text or None, tool_calls=self.tool_calls)


# --------------------------------------------------------------------------------------- events


class TextDelta(_Model):
    type: Literal["text_delta"] = "text_delta"
    text: str


class ToolCallDelta(_Model):
    """A fragment of tool call `index`.

    The first delta for an index carries its id and name (and any argument text so far); the
    later ones carry argument fragments only.
    """

    type: Literal["tool_call_delta"] = "tool_call_delta"
    index: int
    id: str | None = None
    name: str | None = None
    arguments_delta: str = ""


class Completed(_Model):
    """The last event of every successful stream."""

    type: Literal["completed"] = "completed"
    response: ModelResponse


StreamEvent = Annotated[TextDelta | ToolCallDelta | Completed, Field(discriminator="type")]


# --------------------------------------------------------------------------------------- errors


class LLMError(Exception):
    """A model call failed. `retryable` says whether the caller may try the same call again."""

    def __init__(self, message: str, *, status_code: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retryable = retryable

    def __repr__(self) -> str:
        return (
            f"LLMError({self.message!r}, status_code={self.status_code}, "
            f"retryable={self.retryable})"
        )
