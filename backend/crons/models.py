from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from config.database import Base, UTCDateTime


class CronState(Base):
    """One registered cron's schedule state: when it is next due (the claim moves it on) and how
    its last run went. One row per cron in the registry: a handful, never a growing table."""

    __tablename__ = "crons"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    schedule: Mapped[str] = mapped_column(String(100))
    """The schedule the next due time was computed from; a changed schedule recomputes it."""
    next_due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status: Mapped[str | None] = mapped_column(String(20))
    """queued (claimed, not finished yet), ok or failed."""
    last_duration_ms: Mapped[float | None] = mapped_column(Float())
    last_result: Mapped[str | None] = mapped_column(Text)
    """What the last run did, or its error."""
