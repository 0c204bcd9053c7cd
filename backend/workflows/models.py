from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from config.database import Base, UTCDateTime, utcnow
from config.ids import new_id

MAX_NAME = 100
MAX_KEY = 255


class RunStatus(StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"


class StepStatus(StrEnum):
    running = "running"
    completed = "completed"
    failed = "failed"


def _json() -> JSON:
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class WorkflowRun(Base):
    """One execution of a named workflow with its JSON arguments. An execution holds the run
    through a lease (`lease_owner` until `lease_until`), taken by a conditional UPDATE, so two
    jobs of the same run never execute it at once; an expired lease means its holder died."""

    __tablename__ = "workflow_runs"
    __table_args__ = (
        Index("ix_workflow_runs_status_created_at", "status", "created_at"),
        Index("ix_workflow_runs_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(30), primary_key=True, default=lambda: new_id("wfr"))
    name: Mapped[str] = mapped_column(String(MAX_NAME))
    args: Mapped[dict[str, Any]] = mapped_column(_json())
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.queued.value)
    result: Mapped[Any | None] = mapped_column(_json())
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    """Executions that claimed the run since it was started (or last retried by hand)."""
    idempotency_key: Mapped[str | None] = mapped_column(String(MAX_KEY), unique=True)
    lease_owner: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WorkflowStep(Base):
    """One step of a run, by its position in the workflow (its name is checked on replay). A
    completed step's `result` is what a re-run gets back instead of running it again."""

    __tablename__ = "workflow_steps"

    run_id: Mapped[str] = mapped_column(
        String(30), ForeignKey("workflow_runs.id", ondelete="CASCADE"), primary_key=True
    )
    ordinal: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(MAX_NAME))
    status: Mapped[str] = mapped_column(String(16))
    result: Mapped[Any | None] = mapped_column(_json())
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
