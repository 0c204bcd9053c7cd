"""Taking a Stripe event into account exactly once (and the shared `claim` the Svix-signed
providers use too, see svix_events.py).

The event's row in `webhook_events` is claimed first (an insert that does nothing on a repeated
`(provider, event_id)`), then the effect is applied in the same transaction. A repeat delivery,
even one racing the first, finds the row taken and changes nothing: on PostgreSQL the second insert
waits for the first transaction and then does nothing; SQLite serialises writers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from backend.billing.models import WebhookEvent
from backend.billing.plans import PLANS
from backend.billing.service import change_balance, grant_monthly
from backend.users.models import User
from backend.webhooks.stripe import StripeEvent
from config.database import dialect_name, utcnow
from config.ids import is_id

log = logging.getLogger("turbokit.webhooks")

PROVIDER = "stripe"
APPLIED = "applied"
"""The event changed something (credits, plan, or both)."""
IGNORED = "ignored"
"""The event changed nothing: a type we do not act on, an unknown user, unusable metadata, or an
effect already in place (this month's grant)."""

MAX_PURCHASED_CREDITS = 1_000_000_000
"""`metadata.credits` above this is a mistake in the price's metadata, not a purchase."""

_Handler = Callable[[AsyncSession, StripeEvent], Awaitable[bool]]


async def handle_event(session: AsyncSession, event: StripeEvent, payload: dict[str, Any]) -> str:
    """Record and apply `event` once; returns the outcome, or `"duplicate"` for a repeat."""
    row_id = await _claim(session, event, payload)
    if row_id is None:
        log.info("stripe event %s (%s) already received", event.id, event.type)
        return "duplicate"
    handler = _HANDLERS.get(event.type)
    outcome = APPLIED if handler is not None and await handler(session, event) else IGNORED
    await record_outcome(session, row_id, outcome)
    log.info("stripe event %s (%s): %s", event.id, event.type, outcome)
    return outcome


async def _claim(session: AsyncSession, event: StripeEvent, payload: dict[str, Any]) -> int | None:
    return await claim(session, PROVIDER, event.id, event.type, payload)


async def claim(
    session: AsyncSession, provider: str, event_id: str, event_type: str, payload: dict[str, Any]
) -> int | None:
    """Record a delivery as received; its row id, or None when it was received before."""
    insert = pg_insert if dialect_name(session) == "postgresql" else sqlite_insert
    statement = (
        insert(WebhookEvent)
        .values(
            provider=provider,
            event_id=event_id,
            type=event_type,
            outcome=IGNORED,
            payload=payload,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["provider", "event_id"])
        .returning(WebhookEvent.id)
    )
    return await session.scalar(statement)


async def record_outcome(session: AsyncSession, row_id: int, outcome: str) -> None:
    await session.execute(
        update(WebhookEvent).where(WebhookEvent.id == row_id).values(outcome=outcome)
    )


async def _checkout_completed(session: AsyncSession, event: StripeEvent) -> bool:
    """A paid checkout: `client_reference_id` is our user; `metadata.credits` buys credits,
    `metadata.plan` sets the plan. An unpaid one (delayed payment) waits for
    `checkout.session.async_payment_succeeded`."""
    checkout = event.data.object
    if checkout.get("payment_status") == "unpaid":
        return False
    user = await _user(session, checkout.get("client_reference_id"), event)
    if user is None:
        return False
    metadata = _mapping(checkout.get("metadata"))
    credits = _credits(metadata.get("credits"), event)
    plan = _plan(metadata.get("plan"), event)
    changed = False
    if credits is not None:
        entry = await change_balance(
            session,
            user.id,
            credits,
            reason="purchase",
            key=f"stripe:{event.id}",
            metadata={"stripe_event": event.id, "checkout_session": checkout.get("id")},
        )
        changed = entry is not None
    if plan is not None:
        changed = _set_plan(user, plan, event) or changed
    return changed


async def _subscription_updated(session: AsyncSession, event: StripeEvent) -> bool:
    subscription = event.data.object
    metadata = _mapping(subscription.get("metadata"))
    user = await _user(session, metadata.get("user_id"), event)
    plan = _plan(metadata.get("plan"), event)
    return user is not None and plan is not None and _set_plan(user, plan, event)


async def _subscription_deleted(session: AsyncSession, event: StripeEvent) -> bool:
    metadata = _mapping(event.data.object.get("metadata"))
    user = await _user(session, metadata.get("user_id"), event)
    return user is not None and _set_plan(user, "free", event)


async def _invoice_paid(session: AsyncSession, event: StripeEvent) -> bool:
    """The monthly grant of the user's plan, once per user and calendar month of the event."""
    invoice = event.data.object
    user = await _user(session, _invoice_user_id(invoice), event)
    if user is None:
        return False
    when = datetime.fromtimestamp(event.created, UTC) if event.created else None
    return await grant_monthly(session, user, when)


_HANDLERS: dict[str, _Handler] = {
    "checkout.session.completed": _checkout_completed,
    "checkout.session.async_payment_succeeded": _checkout_completed,
    "customer.subscription.updated": _subscription_updated,
    "customer.subscription.deleted": _subscription_deleted,
    "invoice.paid": _invoice_paid,
}


def _invoice_user_id(invoice: dict[str, Any]) -> Any:
    """`metadata.user_id` on the invoice, else on its subscription (where older API versions put
    `subscription_details` at the top and newer ones under `parent`)."""
    candidates = (
        _mapping(invoice.get("metadata")),
        _mapping(_mapping(invoice.get("subscription_details")).get("metadata")),
        _mapping(
            _mapping(_mapping(invoice.get("parent")).get("subscription_details")).get("metadata")
        ),
    )
    return next((found["user_id"] for found in candidates if found.get("user_id")), None)


async def _user(session: AsyncSession, user_id: Any, event: StripeEvent) -> User | None:
    if not isinstance(user_id, str) or not is_id("usr", user_id):
        log.warning("stripe event %s (%s) names no user id of ours", event.id, event.type)
        return None
    user = await session.get(User, user_id)
    if user is None or user.deleted_at is not None:
        log.warning("stripe event %s (%s) names no live user %s", event.id, event.type, user_id)
        return None
    return user


def _set_plan(user: User, plan: str, event: StripeEvent) -> bool:
    """Set the plan, unless a newer event already set it (Stripe does not deliver in order;
    events of the same second apply in arrival order)."""
    newest = user.plan_event_created
    if event.created is not None and newest is not None and event.created < newest:
        log.info("stripe event %s is older than the one that set the plan: ignored", event.id)
        return False
    if event.created is not None:
        user.plan_event_created = max(event.created, newest or 0)
    if user.plan == plan:
        return False
    user.plan = plan
    user.updated_at = utcnow()
    return True


def _credits(value: Any, event: StripeEvent) -> int | None:
    """A positive whole number of credits from metadata (Stripe metadata values are strings)."""
    if value is None:
        return None
    amount: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        amount = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        amount = int(value.strip())
    if amount is None or not 0 < amount <= MAX_PURCHASED_CREDITS:
        log.warning("stripe event %s: unusable metadata.credits %r", event.id, value)
        return None
    return amount


def _plan(value: Any, event: StripeEvent) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in PLANS:
        log.warning("stripe event %s: unknown metadata.plan %r", event.id, value)
        return None
    return value


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
