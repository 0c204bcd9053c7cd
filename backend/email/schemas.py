from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class EmailStatus(StrEnum):
    queued = "queued"
    """In the outbox, waiting for its delivery job."""
    logged = "logged"
    """Kept in the local outbox and logged: no `RESEND_API_KEY`, nothing left the machine."""
    sent = "sent"
    delivery_delayed = "delivery_delayed"
    delivered = "delivered"
    bounced = "bounced"
    complained = "complained"
    failed = "failed"
    suppressed = "suppressed"


class OutgoingEmail(BaseModel):
    """An email to queue; `idempotency_key` makes queueing it again a no-op."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    subject: str = Field(min_length=1, max_length=998)
    html: str | None = None
    text: str | None = None
    idempotency_key: str = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _has_body(self) -> OutgoingEmail:
        if self.html is None and self.text is None:
            raise ValueError("an email needs html or text")
        return self
