from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, Date, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from config.database import Base, UTCDateTime, utcnow
from config.ids import new_id
from threads.models import COST_TYPE, json_type


class LedgerEntry(Base):
    """One change of a user's balance; the sum of a user's entries is what their balance moved."""

    __tablename__ = "credit_ledger"
    __table_args__ = (Index("ix_credit_ledger_user_id_id", "user_id", "id"),)

    id: Mapped[str] = mapped_column(String(30), primary_key=True, default=lambda: new_id("led"))
    user_id: Mapped[str] = mapped_column(String(30), ForeignKey("users.id", ondelete="CASCADE"))
    delta: Mapped[int] = mapped_column(Integer)
    balance_after: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(32))
    """usage, reservation, release, grant, purchase, refund, adjustment"""
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    run_id: Mapped[str | None] = mapped_column(String(30))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", json_type(), default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Reservation(Base):
    """Credits held for a run before it calls a model, consumed per call, released at its end."""

    __tablename__ = "credit_reservations"

    run_id: Mapped[str] = mapped_column(String(30), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(30), ForeignKey("users.id", ondelete="CASCADE"))
    reserved: Mapped[int] = mapped_column(Integer)
    used: Mapped[int] = mapped_column(Integer, default=0)
    released: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class UsageEvent(Base):
    """One metered LLM call, exactly once (unique per call)."""

    __tablename__ = "usage_events"
    __table_args__ = (
        Index("ix_usage_events_user_id_id", "user_id", "id"),
        Index("ix_usage_events_user_id_created_at", "user_id", "created_at"),
        Index("ix_usage_events_created_at", "created_at"),
        Index("ix_usage_events_autumn_synced_at_id", "autumn_synced_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(30), primary_key=True, default=lambda: new_id("evt"))
    llm_call_id: Mapped[str] = mapped_column(String(30), unique=True)
    user_id: Mapped[str] = mapped_column(String(30), ForeignKey("users.id", ondelete="CASCADE"))
    thread_id: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(30))
    agent: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    generation_id: Mapped[str | None] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(COST_TYPE)
    credits: Mapped[int] = mapped_column(Integer)
    priced_by: Mapped[str] = mapped_column(String(20))
    """`provider` (the provider's reported cost) or `price_table` (configured prices)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    autumn_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """When Autumn acknowledged this event (null while it waits, if Autumn is configured)."""


class UsageDaily(Base):
    """Usage summed per user, day, model and agent, kept in step with each event so dashboards
    never scan events."""

    __tablename__ = "usage_daily"
    __table_args__ = (
        UniqueConstraint("user_id", "day", "model", "agent"),
        Index("ix_usage_daily_day", "day"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(30), ForeignKey("users.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)
    model: Mapped[str] = mapped_column(String(200))
    agent: Mapped[str] = mapped_column(String(64))
    requests: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(COST_TYPE, default=Decimal(0))
    credits: Mapped[int] = mapped_column(Integer, default=0)


class WebhookEvent(Base):
    """A webhook delivery taken into account once: the effect and this row commit together."""

    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("provider", "event_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(20))
    event_id: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(20))
    """applied, ignored (a type or user we do not act on)"""
    payload: Mapped[dict[str, Any]] = mapped_column(json_type())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
