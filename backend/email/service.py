"""Queueing, delivering and following emails.

Queueing inserts an outbox row (its idempotency key dedupes) and, once that commits, enqueues the
delivery job. Delivery is at least once: the job does nothing unless the row is still queued, and
Resend itself dedupes on the `Idempotency-Key` (the email's id), so a retry after a crash between
Resend's answer and our commit does not send twice.
"""

from __future__ import annotations

import html
import logging
from typing import Any

import resend
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from backend.email.models import Email
from backend.email.schemas import EmailStatus, OutgoingEmail
from backend.jobs import Jobs
from config.database import Database, dialect_name, utcnow
from config.ids import new_id
from config.settings import Settings

log = logging.getLogger("turbokit.email")

DELIVER_JOB = "backend.email.jobs.deliver_email"

_RANK = {
    EmailStatus.sent: 1,
    EmailStatus.delivery_delayed: 2,
    EmailStatus.delivered: 3,
    EmailStatus.bounced: 4,
    EmailStatus.failed: 4,
    EmailStatus.suppressed: 4,
    EmailStatus.complained: 5,
}
"""How far along a sent email is. Resend's events arrive out of order; a status only moves
forward (a late `email.sent` does not undo `email.delivered`)."""

PROVIDER_EVENTS = {
    "email.sent": EmailStatus.sent,
    "email.delivered": EmailStatus.delivered,
    "email.delivery_delayed": EmailStatus.delivery_delayed,
    "email.bounced": EmailStatus.bounced,
    "email.complained": EmailStatus.complained,
    "email.failed": EmailStatus.failed,
    "email.suppressed": EmailStatus.suppressed,
}
"""Resend event types that change an email's status; others (opened, clicked...) do not."""

_PERMANENT_CODES = frozenset({400, 401, 403, 404, 405, 422})
"""Resend answers that another attempt would only repeat (bad address, bad key...)."""


async def queue_email(session: AsyncSession, jobs: Jobs, message: OutgoingEmail) -> str | None:
    """Put `message` in the outbox and deliver it after commit; None if its key was queued
    before (the earlier email stands)."""
    insert = pg_insert if dialect_name(session) == "postgresql" else sqlite_insert
    now = utcnow()
    statement = (
        insert(Email)
        .values(
            id=new_id("eml"),
            **message.model_dump(),
            status=EmailStatus.queued.value,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(Email.id)
    )
    email_id = await session.scalar(statement)
    if email_id is not None:
        jobs.enqueue_after_commit(session, DELIVER_JOB, email_id)
    return email_id


async def requeue(db: Database, jobs: Jobs, limit: int = 500) -> int:
    """Enqueue delivery of emails still queued (their job was lost with a stopped process or a
    failed enqueue), oldest first, at most `limit`; returns how many."""
    async with db.read() as session:
        ids = list(
            await session.scalars(
                select(Email.id)
                .where(Email.status == EmailStatus.queued.value)
                .order_by(Email.created_at)
                .limit(limit)
            )
        )
    for email_id in ids:
        await jobs.enqueue(DELIVER_JOB, email_id)
    return len(ids)


async def deliver(db: Database, settings: Settings, email_id: str) -> None:
    """Send a queued email through Resend, or keep it in the outbox without `RESEND_API_KEY`.
    Raises on a failure worth retrying, until the retries are spent; then it is `failed`."""
    async with db.read() as session:
        email = await session.get(Email, email_id)
    if email is None or email.status != EmailStatus.queued:
        return  # unknown, or already handled by an earlier delivery of this job
    if not settings.resend_api_key:
        await _set_status(db, email_id, EmailStatus.logged)
        log.info(
            "email %s to %s kept in the local outbox (RESEND_API_KEY is unset): %s",
            email.id,
            email.to,
            email.subject,
        )
        return
    try:
        provider_id = await _send_with_resend(settings, email)
    except resend.exceptions.ResendError as exc:
        await _failed_attempt(db, settings, email, exc)
        return
    await _set_status(db, email_id, EmailStatus.sent, provider_id=provider_id, sent_at=utcnow())
    log.info("email %s sent through Resend as %s", email_id, provider_id)


async def apply_provider_event(session: AsyncSession, provider_id: str, event_type: str) -> bool:
    """Move the email Resend calls `provider_id` to the event's status; False when the event
    changes nothing (an unknown id or type, or an older status)."""
    status = PROVIDER_EVENTS.get(event_type)
    if status is None:
        return False
    email = await session.scalar(select(Email).where(Email.provider_id == provider_id))
    if email is None:
        return False
    if _RANK[status] <= _RANK.get(EmailStatus(email.status), 0):
        return False
    email.status = status.value
    email.updated_at = utcnow()
    return True


def welcome_email(to: str, name: str | None, user_id: str, app_name: str) -> OutgoingEmail:
    """The one welcome a new user gets: keyed by the user, so it is queued once."""
    greeting = f"Hi {name}," if name else "Hi,"
    text = f"{greeting}\n\nWelcome to {app_name}! Your account is ready.\n"
    body = (
        f"<p>{html.escape(greeting)}</p>"
        f"<p>Welcome to {html.escape(app_name)}! Your account is ready.</p>"
    )
    return OutgoingEmail(
        to=to,
        subject=f"Welcome to {app_name}",
        html=body,
        text=text,
        idempotency_key=f"welcome:{user_id}",
    )


async def _send_with_resend(settings: Settings, email: Email) -> str:
    # The resend package keeps its key and URL in module globals; every job of a process sets
    # the same values.
    resend.api_key = settings.resend_api_key
    resend.api_url = settings.resend_base_url.rstrip("/")
    params: dict[str, Any] = {
        "from": settings.email_from,
        "to": [email.to],
        "subject": email.subject,
    }
    if email.html is not None:
        params["html"] = email.html
    if email.text is not None:
        params["text"] = email.text
    sent = await resend.Emails.send_async(params, {"idempotency_key": email.id})  # type: ignore[arg-type]
    provider_id = sent["id"]
    if not isinstance(provider_id, str) or not provider_id:
        raise resend.exceptions.ResendError(502, "invalid_response", "Resend returned no id", "")
    return provider_id


async def _failed_attempt(
    db: Database, settings: Settings, email: Email, exc: resend.exceptions.ResendError
) -> None:
    """Record the failure; raise again (for a retry) unless it is permanent or the last."""
    attempts = email.attempts + 1
    permanent = _status_code(exc.code) in _PERMANENT_CODES
    final = permanent or attempts > settings.job_retries
    error = f"{exc.error_type} ({exc.code}): {exc.message}"[:2000]
    await _set_status(
        db,
        email.id,
        EmailStatus.failed if final else EmailStatus.queued,
        attempts=attempts,
        error=error,
    )
    if final:
        log.error("email %s failed after %d attempt(s): %s", email.id, attempts, error)
        return
    raise exc


async def _set_status(db: Database, email_id: str, status: EmailStatus, **values: Any) -> None:
    """Write the outcome of a delivery, only while the email is still queued (a concurrent
    delivery of the same job may have written it first)."""
    async with db.write() as session:
        await session.execute(
            update(Email)
            .where(Email.id == email_id, Email.status == EmailStatus.queued.value)
            .values(status=status.value, updated_at=utcnow(), **values)
        )


def _status_code(code: object) -> int | None:
    try:
        return int(str(code))
    except ValueError:
        return None
