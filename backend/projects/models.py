from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from config.database import Base, UTCDateTime, utcnow
from config.ids import new_id


class Project(Base):
    """Full-text search lives beside the table: FTS5 `projects_fts` on SQLite, a generated
    `search_vector` with a GIN index on PostgreSQL (both created by the migration)."""

    __tablename__ = "projects"
    __table_args__ = (
        # ids are time-ordered, so (user_id, id) is the (user_id, created_at) index
        Index("ix_projects_user_id_id", "user_id", "id"),
        Index("ix_projects_user_id_status_id", "user_id", "status", "id"),
    )

    id: Mapped[str] = mapped_column(String(30), primary_key=True, default=lambda: new_id("prj"))
    user_id: Mapped[str] = mapped_column(String(30), ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="active")
    settings: Mapped[dict[str, Any]] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
