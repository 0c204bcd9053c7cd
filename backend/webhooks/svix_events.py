"""Clerk and Resend events, each Svix message taking effect once.

As for Stripe, the message's row in `webhook_events` (keyed by `svix-id`, the same on every retry)
is claimed in the same transaction as the effect: a repeat delivery changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from backend.email import service as email
from backend.jobs import Jobs
from backend.users import service as users
from backend.users.deletion import start_account_deletion
from backend.users.models import User
from backend.webhooks.clerk import ClerkUser
from backend.webhooks.service import APPLIED, IGNORED, claim, record_outcome
from backend.webhooks.svix_signature import SvixEvent
from config.settings import Settings

log = logging.getLogger("turbokit.webhooks")

DUPLICATE = "duplicate"


@dataclass(frozen=True)
class SvixHandling:
    """What a handler may use besides the session: settings and the job queue."""

    settings: Settings
    jobs: Jobs


_Handler = Callable[[AsyncSession, SvixHandling, SvixEvent], Awaitable[bool]]


async def handle(
    session: AsyncSession,
    handling: SvixHandling,
    provider: str,
    message_id: str,
    event: SvixEvent,
    payload: dict[str, Any],
) -> str:
    """Record and apply one message once; the outcome, or "duplicate" for a repeat."""
    row_id = await claim(session, provider, message_id, event.type, payload)
    if row_id is None:
        log.info("%s message %s (%s) already received", provider, message_id, event.type)
        return DUPLICATE
    handler = _HANDLERS[provider].get(event.type)
    applied = handler is not None and await handler(session, handling, event)
    outcome = APPLIED if applied else IGNORED
    await record_outcome(session, row_id, outcome)
    log.info("%s message %s (%s): %s", provider, message_id, event.type, outcome)
    return outcome


async def _user_updated(session: AsyncSession, handling: SvixHandling, event: SvixEvent) -> bool:
    """Upsert; a user we had never seen (its `user.created` lost or late) is welcomed too."""
    user, created = await users.upsert_profile(session, _clerk_user(event.data).profile())
    if created:
        await _welcome(session, handling, user)
    return True


async def _user_created(session: AsyncSession, handling: SvixHandling, event: SvixEvent) -> bool:
    """Upsert, and welcome the user even if a token request created the row first: the welcome
    is keyed by the user, so it is queued once however often this arrives."""
    user, _ = await users.upsert_profile(session, _clerk_user(event.data).profile())
    await _welcome(session, handling, user)
    return True


async def _user_deleted(session: AsyncSession, handling: SvixHandling, event: SvixEvent) -> bool:
    """Soft-delete the user at once (their tokens stop working), then clean up what they left
    (runs, uploads, presence) in the `delete_account` workflow, started once per user."""
    clerk_id = event.data.get("id")
    if not isinstance(clerk_id, str) or not clerk_id or len(clerk_id) > 255 or "\x00" in clerk_id:
        log.warning("clerk user.deleted without a usable user id")
        return False
    if not await users.delete_by_clerk_id(session, clerk_id):
        return False
    user = await users.get_by_clerk_id(session, clerk_id)
    assert user is not None
    await start_account_deletion(session, handling.jobs, user.id)
    return True


async def _welcome(session: AsyncSession, handling: SvixHandling, user: User) -> None:
    if user.deleted_at is not None or not user.email:
        log.info("no welcome email for user %s (deleted, or no email address)", user.id)
        return
    message = email.welcome_email(user.email, user.name, user.id, handling.settings.app_name)
    await email.queue_email(session, handling.jobs, message)


async def _email_event(session: AsyncSession, _handling: SvixHandling, event: SvixEvent) -> bool:
    """A delivery event of an email we sent; an unknown email id is acknowledged and ignored."""
    provider_id = event.data.get("email_id")
    if not isinstance(provider_id, str) or not provider_id:
        log.warning("resend %s without an email_id", event.type)
        return False
    return await email.apply_provider_event(session, provider_id, event.type)


CLERK = "clerk"
RESEND = "resend"

_HANDLERS: dict[str, dict[str, _Handler]] = {
    CLERK: {
        "user.created": _user_created,
        "user.updated": _user_updated,
        "user.deleted": _user_deleted,
    },
    RESEND: dict.fromkeys(email.PROVIDER_EVENTS, _email_event),
}


def _clerk_user(data: dict[str, Any]) -> ClerkUser:
    try:
        return ClerkUser.model_validate(data)
    except ValidationError as exc:
        raise InvalidEvent(exc) from exc


class InvalidEvent(ValueError):
    """A verified event whose data is not what its type promises."""

    def __init__(self, error: ValidationError) -> None:
        first = error.errors()[0]
        self.loc: list[str | int] = ["body", "data", *first["loc"]]
        super().__init__(f"Not a usable user: {first['msg']}")
