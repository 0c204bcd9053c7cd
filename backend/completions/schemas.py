"""OpenAI's chat completions shapes, as far as this door supports them.

The request accepts the fields the official SDKs send for a text conversation; anything else is a
422, as on every route. Fields that only make sense when the *client* runs the tools (`tools`,
`tool_choice`, the older `functions`) are refused with a message saying why: an agent's tools run on
the server and are not exposed as `tool_calls`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic.json_schema import SkipJsonSchema

from backend.chat.schemas import MAX_TEXT_CHARS

OWNED_BY = "turbokit"
TEXT_SEPARATOR = "\n\n"
"""Between the text parts of one answer (e.g. before and after a tool call), in both the JSON
reply and the stream, so the two spell the same content."""

Role = Literal["system", "developer", "user", "assistant"]
INSTRUCTION_ROLES: frozenset[str] = frozenset({"system", "developer"})
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]


class TextContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text"]
    text: str = Field(max_length=MAX_TEXT_CHARS)


class ChatMessage(BaseModel):
    """One message of the conversation; content is text (a string or a list of text parts)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    role: Role
    content: (
        Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
        | Annotated[list[TextContentPart], Field(max_length=100)]
    )
    name: Annotated[str, Field(max_length=64)] | None = None
    """Accepted as OpenAI does; not passed to the agent."""

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool | None = None
    """Send a last chunk with `usage` and empty `choices` before `[DONE]`."""
    include_obfuscation: bool | None = None
    """Accepted for compatibility; chunks are never padded."""


_CLIENT_TOOLS = "client-side tools are not supported: the agent runs its own tools on the server"


class ChatCompletionRequest(BaseModel):
    """`POST /v1/chat/completions`: `model` names an agent (see `GET /v1/models`).

    Sampling fields (`temperature`, `top_p`, `max_tokens`, `max_completion_tokens`) and `user` are
    accepted so existing clients work unchanged; the agent's own settings decide them.
    `metadata` becomes the new thread's metadata when the request starts a thread.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    model: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    n: Literal[1] | None = None
    """Only one choice is ever produced."""
    user: Annotated[str, Field(max_length=256)] | None = None
    metadata: Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)] | None = None
    tools: SkipJsonSchema[Any] = None
    tool_choice: SkipJsonSchema[Any] = None
    functions: SkipJsonSchema[Any] = None
    function_call: SkipJsonSchema[Any] = None

    @field_validator("tools", "tool_choice", "functions", "function_call", mode="before")
    @classmethod
    def _no_client_tools(cls, value: Any) -> None:
        if value is not None:
            raise ValueError(_CLIENT_TOOLS)
        return None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


FinishReason = Literal["stop", "length", "content_filter"]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """The reply once the run has ended; `id` is `chatcmpl-` and the run's id."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage


class ModelCard(BaseModel):
    id: str
    """An agent's name: the `model` of a chat completion."""
    object: Literal["model"] = "model"
    created: int
    owned_by: str = OWNED_BY


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
