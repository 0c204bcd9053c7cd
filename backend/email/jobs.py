"""Job entry points of the email domain: thin, importable, taking ids."""

from __future__ import annotations

from backend.email import service
from backend.jobs import job_context


async def deliver_email(email_id: str) -> None:
    """Deliver one outbox email (see `service.deliver`); safe to run more than once."""
    async with job_context() as ctx:
        await service.deliver(ctx.db, ctx.settings, email_id)
