from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.json_schema import SkipJsonSchema

from threads.schemas import THREAD_ID_PATTERN, UIMessage, Usage

MAX_TEXT_CHARS = 100_000

ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/-]{1,128}$")]


class ClientMessage(BaseModel):
    """A UIMessage as `useChat` sends it; only the last user message's text is used."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(max_length=200)
    role: Literal["user", "assistant", "system"]
    parts: list[dict[str, Any]] = Field(max_length=1000)
    metadata: Any = None


class ChatRequest(BaseModel):
    """The body `DefaultChatTransport` posts to `/v1/chat`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: Annotated[str, StringConstraints(pattern=THREAD_ID_PATTERN)]
    messages: list[ClientMessage] = Field(min_length=1, max_length=1000)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: Annotated[str, Field(max_length=200)] | SkipJsonSchema[None] = None
    model: ModelName | SkipJsonSchema[None] = None


class MessageCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, pattern=r"\S")
    model: ModelName | SkipJsonSchema[None] = None


class ApprovalDecision(BaseModel):
    """A person's answer to a `tool-approval-request`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    approved: bool
    reason: Annotated[str, Field(max_length=1000)] | SkipJsonSchema[None] = None
    """Told to the model with a denial."""


class ApprovalReply(BaseModel):
    run_id: str
    approval_id: str
    approved: bool
    resumed: bool
    """Every approval of the run is decided and the run goes on; follow it with
    `GET /v1/chat/{thread_id}/stream`."""


class MessageReply(BaseModel):
    message: UIMessage | None
    run_id: str
    usage: Usage


class ToolPublic(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any]


class AgentPublic(BaseModel):
    name: str
    description: str
    model: str
    tools: list[ToolPublic]


class AgentList(BaseModel):
    items: list[AgentPublic]
