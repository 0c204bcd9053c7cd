"""Pydantic shapes: the AI SDK UIMessage that chat UIs load into `useChat`, and the thread schemas.

Parts are a tagged union validated by one `TypeAdapter` (`PARTS_ADAPTER`). Tool parts carry the tool
name in their tag (`tool-search_projects`), so the union is discriminated by a function rather than
by a literal. Optional fields that are absent are left out when dumping, because the AI SDK's own
validators reject `null` where they expect a field to be missing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self, cast

from pydantic import (
    AfterValidator,
    AliasChoices,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    JsonValue,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    StringConstraints,
    Tag,
    TypeAdapter,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue, SkipJsonSchema
from pydantic_core import CoreSchema

from threads.models import Message, Role, ThreadStatus

THREAD_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""Any id a chat client may give a new thread (API.md, `POST /v1/chat`); ours are `thr_...`."""

TOOL_PART_PREFIX = "tool-"
TOOL_PART_TYPE_PATTERN = r"^tool-[A-Za-z0-9_-]{1,64}$"
"""`tool-` and the tool's name, as the names providers accept for functions."""

METADATA_MAX_BYTES = 16 * 1024
"""Thread metadata is small settings (e.g. `concurrency`), not storage; this bounds row size."""


def _iso_z(value: datetime) -> str:
    """`2024-05-01T12:00:00.123Z`: what JavaScript's `Date.toISOString()` produces."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


UTCTimestamp = Annotated[
    AwareDatetime,
    PlainSerializer(_iso_z, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""A timezone-aware datetime, serialised to JSON as ISO 8601 in UTC with `Z`."""


def _check_size(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > METADATA_MAX_BYTES:
        raise ValueError(
            f"metadata is {size} bytes as JSON; the limit is {METADATA_MAX_BYTES} bytes"
        )
    return value


JsonObject = Annotated[dict[str, JsonValue], AfterValidator(_check_size)]
"""A JSON object of at most `METADATA_MAX_BYTES` bytes when serialised."""


def _blank_to_none(value: str) -> str | None:
    return value or None


Title = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=200), AfterValidator(_blank_to_none)
]
"""At most 200 characters; a blank title is stored as no title."""

AgentName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


# --- UIMessage parts -------------------------------------------------------------------------


class _SDKModel(BaseModel):
    """An AI SDK shape: unknown fields are refused, absent optional fields are not dumped."""

    model_config = ConfigDict(extra="forbid")

    def _kept_nulls(self) -> frozenset[str]:
        """Fields dumped even when `None` (a tool's `output` may legitimately be `null`)."""
        return frozenset()

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        keep = self._kept_nulls()
        return {key: value for key, value in data.items() if value is not None or key in keep}

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """Document the fields in OpenAPI rather than the wrap serializer (an opaque `object`)."""
        return handler(cast(CoreSchema, _without_serializer(dict(core_schema))))


def _without_serializer(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's core schema minus its serializer, looking through validator wrappers."""
    stripped = {key: value for key, value in schema.items() if key != "serialization"}
    inner = schema.get("schema")
    if schema.get("type") != "model" and isinstance(inner, dict):
        stripped["schema"] = _without_serializer(inner)
    return stripped


class TextPart(_SDKModel):
    type: Literal["text"] = "text"
    text: str
    state: Literal["streaming", "done"] | None = None
    providerMetadata: dict[str, JsonValue] | None = None


class ReasoningPart(_SDKModel):
    type: Literal["reasoning"] = "reasoning"
    text: str
    state: Literal["streaming", "done"] | None = None
    providerMetadata: dict[str, JsonValue] | None = None


class StepStartPart(_SDKModel):
    """Marks the start of a model step inside one assistant message."""

    type: Literal["step-start"] = "step-start"


ToolState = Literal[
    "input-available",
    "approval-requested",
    "approval-responded",
    "output-available",
    "output-error",
    "output-denied",
]

_APPROVAL_STATES = frozenset({"approval-requested", "approval-responded", "output-denied"})


class ToolApproval(_SDKModel):
    id: str = Field(min_length=1)
    approved: bool | None = None
    reason: str | None = None


class ToolPart(_SDKModel):
    """One tool call and, once known, its result; `type` is `tool-<tool name>`."""

    type: Annotated[str, StringConstraints(pattern=TOOL_PART_TYPE_PATTERN)]
    toolCallId: str = Field(min_length=1)
    state: ToolState
    input: JsonValue
    output: JsonValue = None
    errorText: str | None = None
    providerExecuted: bool | None = None
    approval: ToolApproval | None = None

    @property
    def tool_name(self) -> str:
        return self.type.removeprefix(TOOL_PART_PREFIX)

    def _kept_nulls(self) -> frozenset[str]:
        if self.state == "output-available":
            return frozenset({"input", "output"})
        return frozenset({"input"})

    @model_validator(mode="after")
    def _fields_match_state(self) -> Self:
        """Reject parts a chat UI would choke on, e.g. an error state without `errorText`."""
        has_output = "output" in self.model_fields_set
        if (self.state == "output-available") != has_output:
            raise ValueError("`output` is required in state output-available and only there")
        if (self.state == "output-error") != (self.errorText is not None):
            raise ValueError("`errorText` is required in state output-error and only there")
        if self.state in _APPROVAL_STATES and self.approval is None:
            raise ValueError(f"`approval` is required in state {self.state}")
        return self


def _part_tag(value: Any) -> str | None:
    """The union member for a part: its `type`, with every `tool-*` mapped to `tool`."""
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if not isinstance(kind, str):
        return None
    return "tool" if kind.startswith(TOOL_PART_PREFIX) else kind


UIMessagePart = Annotated[
    Annotated[TextPart, Tag("text")]
    | Annotated[ReasoningPart, Tag("reasoning")]
    | Annotated[StepStartPart, Tag("step-start")]
    | Annotated[ToolPart, Tag("tool")],
    Discriminator(
        _part_tag,
        custom_error_type="invalid_part",
        custom_error_message="unknown part type: expected text, reasoning, step-start or tool-*",
    ),
]

PARTS_ADAPTER: TypeAdapter[list[UIMessagePart]] = TypeAdapter(list[UIMessagePart])
"""Validates and dumps a message's parts; the one place their JSON shape is decided."""


def validate_parts(raw: object) -> list[UIMessagePart]:
    return PARTS_ADAPTER.validate_python(raw)


def dump_parts(parts: Sequence[UIMessagePart]) -> list[dict[str, Any]]:
    """Parts as JSON-ready dicts, in the form stored in `messages.parts`."""
    dumped: list[dict[str, Any]] = PARTS_ADAPTER.dump_python(list(parts), mode="json")
    return dumped


# --- UIMessage -------------------------------------------------------------------------------


class Usage(BaseModel):
    """Tokens and cost of a run, summed over its LLM calls."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    cost_usd: float | None = None
    credits: int | None = None


class MessageMetadata(_SDKModel):
    """AI SDK message metadata is application-defined: known keys are typed, others pass through."""

    model_config = ConfigDict(extra="allow")

    created_at: UTCTimestamp
    run_id: str | None = None
    model: str | None = None
    usage: Usage | None = None


class UIMessage(_SDKModel):
    id: str = Field(min_length=1)
    role: Role
    parts: list[UIMessagePart]
    metadata: MessageMetadata | None = None

    @classmethod
    def from_row(cls, message: Message) -> Self:
        """A stored message as `useChat` loads it; `created_at` and `run_id` come from columns."""
        metadata = MessageMetadata.model_validate(
            {**message.meta, "created_at": message.created_at, "run_id": message.run_id}
        )
        return cls(
            id=message.id,
            role=message.role,
            parts=validate_parts(message.parts),
            metadata=metadata,
        )


# --- Threads ---------------------------------------------------------------------------------


class ThreadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    agent: AgentName = "assistant"
    metadata: JsonObject = Field(default_factory=dict)


class ThreadUpdate(BaseModel):
    """Only the fields sent are changed; `title: null` clears the title, `metadata` is replaced."""

    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    status: ThreadStatus | SkipJsonSchema[None] = None
    metadata: JsonObject | SkipJsonSchema[None] = None

    @field_validator("status", "metadata")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Runs only for values actually sent: omitting a field is fine, sending null is not.
        if value is None:
            raise ValueError("may be omitted but not null")
        return value


class ThreadPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    user_id: str
    title: str | None
    agent: str
    status: ThreadStatus
    # Read from the model's `meta` attribute (`metadata` is SQLAlchemy's on ORM classes).
    metadata: dict[str, JsonValue] = Field(validation_alias=AliasChoices("meta", "metadata"))
    created_at: UTCTimestamp
    updated_at: UTCTimestamp
