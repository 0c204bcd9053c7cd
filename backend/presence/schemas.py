from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from threads.schemas import UTCTimestamp

ROOM_CHARS = r"[A-Za-z0-9_:-]{1,100}"
ROOM_PATTERN = rf"^{ROOM_CHARS}$"
"""A room names what people look at together, e.g. `project:prj_...`; no commas (topic lists)."""
SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""A session is one open tab or device; the client picks its id (e.g. a random UUID)."""

MAX_DATA_ENTRIES = 32
MAX_DATA_TEXT = 256
SAFE_INTEGER = 2**53 - 1
"""Beyond this a JavaScript client cannot read an integer exactly."""

DataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
DataValue = (
    Annotated[str, StringConstraints(max_length=MAX_DATA_TEXT)]
    | bool
    | Annotated[int, Field(ge=-SAFE_INTEGER, le=SAFE_INTEGER)]
    | Annotated[float, Field(allow_inf_nan=False)]
    | None
)
PresenceData = Annotated[dict[DataKey, DataValue], Field(max_length=MAX_DATA_ENTRIES)]
"""What a session shows others (status, cursor, page): a small flat object, so every row stays
small (at most 32 entries of short text or numbers) and the schema itself states the bound."""

SessionId = Annotated[str, Field(pattern=SESSION_ID_PATTERN, examples=["tab_3f9c2a"])]


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    session_id: SessionId
    data: PresenceData | None = None


class Leave(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    session_id: SessionId


class PresenceEntry(BaseModel):
    user_id: str
    name: str | None
    session_id: str
    data: dict[str, DataValue] | None
    last_seen: UTCTimestamp


class Online(BaseModel):
    """The room's live sessions, most recently seen first (at most 100)."""

    online: list[PresenceEntry]
