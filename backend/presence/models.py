from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from config.database import Base, UTCDateTime


class Presence(Base):
    """One live session of a user in a room. The natural key (room, session_id, user_id) is the
    primary key, so a heartbeat upserts its row in one statement; rows older than the TTL are
    offline and pruned a batch at a time."""

    __tablename__ = "presence"
    __table_args__ = (
        Index("ix_presence_room_last_seen", "room", "last_seen"),  # a room's live rows
        Index("ix_presence_last_seen", "last_seen"),  # the stalest rows, to prune
        Index("ix_presence_user_id", "user_id"),  # a deleted account's sessions
    )

    room: Mapped[str] = mapped_column(String(100), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        String(30), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
    )
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime())
    """When this session came online (again): a heartbeat after the TTL counts as a new join."""
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime())
