"""The credits ledger: every balance change is one ledger row with a unique idempotency key, in
the same transaction as the balance. Balances never go below zero: debits are conditional
updates, and a run holds a reservation before it calls a model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from backend.billing.models import LedgerEntry, Reservation, UsageDaily, UsageEvent
from backend.billing.plans import plan_for
from backend.errors import AppError
from backend.users.models import User
from config.database import dialect_name, utcnow
from config.ids import new_id
from config.settings import Settings
from threads.models import LLMCall, Run


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens, for models whose provider does not report a cost."""

    prompt: Decimal
    completion: Decimal


def credits_for(cost_usd: Decimal, credits_per_usd: int) -> int:
    return math.ceil(cost_usd * credits_per_usd)


async def balance(session: AsyncSession, user_id: str) -> int:
    value = await session.scalar(select(User.credits).where(User.id == user_id))
    return int(value or 0)


async def change_balance(
    session: AsyncSession,
    user_id: str,
    delta: int,
    *,
    reason: str,
    key: str,
    run_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> LedgerEntry | None:
    """Apply `delta` once per `key`; a debit the balance cannot cover raises 402. Returns None
    when this key was already applied (a repeated delivery)."""
    if await session.scalar(select(LedgerEntry.id).where(LedgerEntry.idempotency_key == key)):
        return None
    statement = (
        update(User)
        .where(User.id == user_id)
        .values(credits=User.credits + delta)
        .returning(User.credits)
    )
    if delta < 0:
        statement = statement.where(User.credits >= -delta)
    after = await session.scalar(statement)
    if after is None:
        available = await balance(session, user_id)
        raise AppError(
            "INSUFFICIENT_CREDITS",
            "Not enough credits",
            402,
            {"required": -delta, "available": available},
        )
    entry = LedgerEntry(
        id=new_id("led"),
        user_id=user_id,
        delta=delta,
        balance_after=after,
        reason=reason,
        idempotency_key=key,
        run_id=run_id,
        meta=metadata or {},
        created_at=utcnow(),
    )
    session.add(entry)
    await session.flush()
    return entry


async def grant_monthly(session: AsyncSession, user: User, when: datetime | None = None) -> bool:
    """The plan's monthly credits, once per user, plan and calendar month (UTC); keyed by plan
    too, so an upgrade in the middle of a month still receives the new plan's grant."""
    period = (when or datetime.now(UTC)).strftime("%Y-%m")
    amount = plan_for(user.plan).monthly_credits
    entry = await change_balance(
        session,
        user.id,
        amount,
        reason="grant",
        key=f"monthly:{user.id}:{period}:{user.plan}",
        metadata={"plan": user.plan, "period": period},
    )
    return entry is not None


async def reserve(session: AsyncSession, user: User, run_id: str) -> int:
    """Hold the plan's reservation for `run_id`, or refuse with 402 before any model call."""
    await grant_monthly(session, user)
    amount = plan_for(user.plan).run_reservation
    await change_balance(
        session, user.id, -amount, reason="reservation", key=f"reserve:{run_id}", run_id=run_id
    )
    session.add(
        Reservation(
            run_id=run_id,
            user_id=user.id,
            reserved=amount,
            used=0,
            released=False,
            created_at=utcnow(),
        )
    )
    await session.flush()
    return amount


async def settle_call(
    session: AsyncSession,
    run: Run,
    call: LLMCall,
    settings: Settings,
    prices: dict[str, Price] | None = None,
) -> UsageEvent:
    """Meter one LLM call: a usage event, the daily rollup, and the credits taken from the run's
    reservation (beyond it, from the balance, never below zero)."""
    cost, priced_by = _cost(call, prices if prices is not None else price_table(settings))
    credits = credits_for(cost, settings.credits_per_usd) if cost is not None else None
    reservation = await session.get(Reservation, run.id, with_for_update=True)
    if credits is None:  # no price known: charge what the run still holds, never nothing
        credits = reservation.reserved - reservation.used if reservation else 0
        cost, priced_by = Decimal(credits) / settings.credits_per_usd, "reservation"
    await _take(session, run, reservation, credits, key=f"usage:{call.id}")
    event = UsageEvent(
        id=new_id("evt"),
        llm_call_id=call.id,
        user_id=run.user_id,
        thread_id=run.thread_id,
        run_id=run.id,
        agent=run.agent,
        model=call.model,
        generation_id=call.generation_id,
        prompt_tokens=call.prompt_tokens,
        completion_tokens=call.completion_tokens,
        cached_tokens=call.cached_tokens,
        reasoning_tokens=call.reasoning_tokens,
        cost_usd=cost,
        credits=credits,
        priced_by=priced_by,
        created_at=call.created_at,
    )
    session.add(event)
    await session.flush()
    await _roll_up(session, event)
    return event


async def release(session: AsyncSession, run_id: str) -> int:
    """Return what the run did not use; once, also after a failure or a stop."""
    reservation = await session.get(Reservation, run_id, with_for_update=True)
    if reservation is None or reservation.released:
        return 0
    reservation.released = True
    unused = reservation.reserved - reservation.used
    if unused > 0:
        await change_balance(
            session,
            reservation.user_id,
            unused,
            reason="release",
            key=f"release:{run_id}",
            run_id=run_id,
        )
    await session.flush()
    return unused


async def _take(
    session: AsyncSession, run: Run, reservation: Reservation | None, credits: int, *, key: str
) -> None:
    held = (
        reservation.reserved - reservation.used if reservation and not reservation.released else 0
    )
    from_reservation = min(credits, held)
    if reservation is not None:
        reservation.used += from_reservation
    extra = credits - from_reservation
    if extra <= 0:
        return
    payable = min(extra, await balance(session, run.user_id))
    if payable > 0:
        await change_balance(
            session,
            run.user_id,
            -payable,
            reason="usage",
            key=f"usage:{run.id}:{new_id('led')}",
            run_id=run.id,
            metadata={"beyond_reservation": extra, "unpaid": extra - payable},
        )


def price_table(settings: Settings) -> dict[str, Price]:
    return {
        model: Price(Decimal(str(prompt)), Decimal(str(completion)))
        for model, (prompt, completion) in settings.model_prices.items()
    }


def _cost(call: LLMCall, prices: dict[str, Price]) -> tuple[Decimal | None, str]:
    if call.cost_usd is not None:
        return Decimal(call.cost_usd), "provider"
    price = prices.get(call.model.removeprefix("openrouter/"))
    if price is None:
        return None, "none"
    million = Decimal(1_000_000)
    cost = (call.prompt_tokens * price.prompt + call.completion_tokens * price.completion) / million
    return cost, "price_table"


async def _roll_up(session: AsyncSession, event: UsageEvent) -> None:
    day: date = event.created_at.astimezone(UTC).date()
    insert = pg_insert if dialect_name(session) == "postgresql" else sqlite_insert
    values = {
        "user_id": event.user_id,
        "day": day,
        "model": event.model,
        "agent": event.agent,
        "requests": 1,
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "cost_usd": event.cost_usd,
        "credits": event.credits,
    }
    statement = insert(UsageDaily).values(**values)
    table = UsageDaily.__table__
    statement = statement.on_conflict_do_update(
        index_elements=["user_id", "day", "model", "agent"],
        set_={
            name: table.c[name] + statement.excluded[name]
            for name in ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "credits")
        },
    )
    await session.execute(statement)
