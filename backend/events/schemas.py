from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from backend.presence.schemas import ROOM_CHARS

THREAD_TOPIC = r"thread:[A-Za-z0-9_-]{1,64}"
PRESENCE_TOPIC = rf"presence:{ROOM_CHARS}"
TOPIC = rf"(?:threads|projects|{THREAD_TOPIC}|{PRESENCE_TOPIC})"
MAX_TOPICS = 20
TOPICS_PATTERN = rf"^{TOPIC}(?:,{TOPIC}){{0,{MAX_TOPICS - 1}}}$"
"""`topics=`: up to 20 comma-separated topics."""


class Event(BaseModel):
    """One SSE `data:` line of `/v1/events` (its `id:` line is the event's `evt_` id)."""

    topic: str
    type: str
    data: dict[str, Any]
