"""Tables of the conversation store: threads, messages, runs, run events and LLM calls.

No relationships are declared: the store queries explicitly, so an async lazy load cannot happen,
and deleting a thread relies on the database's ON DELETE CASCADE rather than the ORM walking rows.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Enum,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from config.database import Base, UTCDateTime, utcnow
from config.ids import new_id

ID_LENGTH = 30
"""Length of a generated id: a 3-letter prefix, `_`, and 26 characters (see `config.ids`)."""

THREAD_ID_LENGTH = 64
"""Threads may carry a client-chosen id (`POST /v1/chat` with an unknown `id`), up to 64 chars."""

USER_ID_LENGTH = 64
"""`user_id` is an opaque string owned by whoever embeds the store; leave room beyond `usr_` ids."""

NAME_LENGTH = 64
"""Agent names, finish reasons and statuses."""

MODEL_LENGTH = 200
"""Model names as providers spell them, e.g. `openai/gpt-4o-mini` or long fine-tune names."""

COST_TYPE = Numeric(18, 10)
"""Exact decimals for money: per-call costs are fractions of a cent and credits are
`ceil(cost * credits_per_usd)`, where a float (0.1 * 1000 = 100.00000000000001) would overcharge."""


def json_type(*, none_as_null: bool = False) -> TypeEngine[Any]:
    """JSON on SQLite, JSONB on PostgreSQL (indexable, compact, no duplicate keys)."""
    return JSON(none_as_null=none_as_null).with_variant(
        JSONB(none_as_null=none_as_null), "postgresql"
    )


class ThreadStatus(StrEnum):
    active = "active"
    archived = "archived"


class Role(StrEnum):
    user = "user"
    assistant = "assistant"
    system = "system"


class RunStatus(StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    stopped = "stopped"
    awaiting_approval = "awaiting_approval"


ACTIVE_RUN_STATUSES = (RunStatus.queued, RunStatus.running, RunStatus.awaiting_approval)
"""A run in one of these has not ended: it blocks or queues the thread's next message."""

FINISHED_RUN_STATUSES = (RunStatus.completed, RunStatus.failed, RunStatus.stopped)
"""Terminal states: a finished run is never changed again."""


def _enum(cls: type[StrEnum]) -> Enum:
    """A VARCHAR holding the enum's values, without a CHECK constraint, so adding a status later
    needs no table rebuild on SQLite; the store only writes enum members."""
    return Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=32,
        validate_strings=True,
        values_callable=lambda members: [member.value for member in members],
    )


class Thread(Base):
    __tablename__ = "threads"
    __table_args__ = (
        # (user_id, updated_at, id) serves the keyset page ordered by (updated_at, id).
        Index("ix_threads_user_id_updated_at", "user_id", "updated_at", "id"),
    )

    id: Mapped[str] = mapped_column(
        String(THREAD_ID_LENGTH), primary_key=True, default=lambda: new_id("thr")
    )
    user_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH))
    title: Mapped[str | None] = mapped_column(String(200))
    agent: Mapped[str] = mapped_column(String(NAME_LENGTH))
    status: Mapped[ThreadStatus] = mapped_column(_enum(ThreadStatus), default=ThreadStatus.active)
    # `metadata` is taken by the declarative base, so the attribute is `meta`.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", json_type(), default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Message(Base):
    """One UIMessage. Append-only: a later turn never rewrites a saved message."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_thread_id_seq", "thread_id", "seq", unique=True),)

    id: Mapped[str] = mapped_column(
        String(ID_LENGTH), primary_key=True, default=lambda: new_id("msg")
    )
    thread_id: Mapped[str] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"))
    run_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    role: Mapped[Role] = mapped_column(_enum(Role))
    seq: Mapped[int] = mapped_column(Integer)
    parts: Mapped[list[dict[str, Any]]] = mapped_column(json_type(), default=list)
    # Extra UIMessage metadata (model, usage); created_at and run_id live in their own columns.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", json_type(), default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Run(Base):
    """One agent turn: from the user's message to the saved assistant message."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_thread_id_created_at", "thread_id", "created_at"),
        # Finds a thread's active run; a thread has few runs, so no partial index is needed (a
        # partial one would also need the same literal predicate in every query to be used).
        Index("ix_runs_thread_id_status", "thread_id", "status"),
        # The oldest active runs of all threads, which a cron checks for abandoned ones.
        Index("ix_runs_status_created_at", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(
        String(ID_LENGTH), primary_key=True, default=lambda: new_id("run")
    )
    thread_id: Mapped[str] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH))
    agent: Mapped[str] = mapped_column(String(NAME_LENGTH))
    model: Mapped[str] = mapped_column(String(MODEL_LENGTH))
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus), default=RunStatus.queued)
    finish_reason: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    error: Mapped[dict[str, Any] | None] = mapped_column(json_type(none_as_null=True))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal | None] = mapped_column(COST_TYPE)
    usage: Mapped[dict[str, Any]] = mapped_column(json_type(), default=dict)
    request: Mapped[dict[str, Any]] = mapped_column(json_type(), default=dict)
    assistant_message_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RunEvent(Base):
    """One chunk of a run's event log, numbered from 1 so `after_seq=0` replays everything."""

    __tablename__ = "run_events"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    chunk: Mapped[dict[str, Any]] = mapped_column(json_type())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LLMCall(Base):
    """One completion request to a provider, as metered; billing turns these into usage events."""

    __tablename__ = "llm_calls"
    __table_args__ = (Index("ix_llm_calls_run_id", "run_id"),)

    id: Mapped[str] = mapped_column(
        String(ID_LENGTH), primary_key=True, default=lambda: new_id("llm")
    )
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    # Copied from the run so usage can be grouped without a join.
    user_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH))
    thread_id: Mapped[str] = mapped_column(String(THREAD_ID_LENGTH))
    agent: Mapped[str] = mapped_column(String(NAME_LENGTH))
    model: Mapped[str] = mapped_column(String(MODEL_LENGTH))
    generation_id: Mapped[str | None] = mapped_column(String(MODEL_LENGTH))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal | None] = mapped_column(COST_TYPE)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


TABLES = tuple(
    Base.metadata.tables[name]
    for name in ("threads", "messages", "runs", "run_events", "llm_calls")
)
"""This package's tables in creation order, for `create_all(tables=TABLES)` in tests and tools."""
