from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from config.database import Base, UTCDateTime, utcnow
from config.ids import new_id


class Email(Base):
    """One message to send: queued in the same transaction as what caused it, delivered by a job,
    then followed by the provider's delivery events."""

    __tablename__ = "emails"
    __table_args__ = (Index("ix_emails_status_created_at", "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(30), primary_key=True, default=lambda: new_id("eml"))
    to: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(998))
    html: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    """queued, logged, sent, delivery_delayed, delivered, bounced, complained, failed, suppressed"""
    provider_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    """Resend's id of the sent message; delivery webhooks name it."""
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    """Whoever queues the email names it, so the same email is never queued twice."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    """Failed delivery attempts so far."""
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
