"""The credits ledger: every balance change is one ledger row with a unique idempotency key, in
the same transaction as the balance. Balances never go below zero: debits are conditional
updates, and a run holds a reservation before it calls a model.

A chat turn passes through here twice (reserve at the door; settle and release when the run
ends), so those paths use few statements: ledger keys the chat path makes are unique by
construction and are not looked up first, and the monthly grant is checked once per user and
month in a process rather than on every reservation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Integer, Table, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from backend.billing.models import LedgerEntry, Reservation, UsageDaily, UsageEvent
from backend.billing.plans import plan_for
from backend.errors import AppError
from backend.users.models import User
from config.database import Base, after_commit, dialect_name, utcnow
from config.ids import new_id
from config.settings import Settings
from threads.models import LLMCall, Run

_USERS = cast(Table, User.__table__)
_LEDGER = cast(Table, LedgerEntry.__table__)
_RESERVATIONS = cast(Table, Reservation.__table__)
_USAGE_EVENTS = cast(Table, UsageEvent.__table__)
"""A turn's billing writes through these with Core statements (most built once): no unit of
work, no ORM statement built per call."""


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
    entry = await _post(
        session, user_id, delta, reason=reason, key=key, run_id=run_id, metadata=metadata
    )
    if entry is None:
        raise await _insufficient(session, user_id, -delta)
    return entry


async def _post(
    session: AsyncSession,
    user_id: str,
    delta: int,
    *,
    reason: str,
    key: str,
    run_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> LedgerEntry | None:
    """Move the balance by `delta` and write its ledger row, without looking the key up first:
    for keys unique by construction (a new run's id, a released flag already claimed). The key's
    unique index still refuses a second application. `None`: a debit the balance cannot cover."""
    now = utcnow()
    statement = _CREDIT if delta >= 0 else _DEBIT
    params = {"b_user_id": user_id, "b_delta": delta, "b_now": now}
    after = await session.scalar(statement, params)
    if after is None:
        return None
    _sync_loaded_user(session, user_id, after, now)
    entry = LedgerEntry(
        id=new_id("led"),
        user_id=user_id,
        delta=delta,
        balance_after=after,
        reason=reason,
        idempotency_key=key,
        run_id=run_id,
        meta=metadata or {},
        created_at=now,
    )
    await session.execute(insert(_LEDGER), _row(entry))
    return entry


_DELTA = bindparam("b_delta", type_=Integer)
_CREDIT = (
    update(_USERS)
    .where(_USERS.c.id == bindparam("b_user_id"))
    .values(credits=_USERS.c.credits + _DELTA, updated_at=bindparam("b_now"))
    .returning(_USERS.c.credits)
)
_DEBIT = _CREDIT.where(_USERS.c.credits >= -_DELTA)
"""Conditional: no row when the balance cannot cover the debit (and it never goes below 0)."""


def _sync_loaded_user(session: AsyncSession, user_id: str, credits: int, now: datetime) -> None:
    """A User this session has loaded (the caller's, in a request) shows what the UPDATE wrote,
    as an ORM update would have, without marking it changed."""
    user = session.identity_map.get(identity_key(User, user_id))
    if isinstance(user, User):
        set_committed_value(user, "credits", credits)
        set_committed_value(user, "updated_at", now)


async def _insufficient(session: AsyncSession, user_id: str, required: int) -> AppError:
    available = await balance(session, user_id)
    return AppError(
        "INSUFFICIENT_CREDITS",
        "Not enough credits",
        402,
        {"required": required, "available": available},
    )


GRANTS_REMEMBERED = 100_000
"""Users whose grant for the current month this process remembers (then it starts over)."""
_granted: dict[str, str] = {}
"""user id -> the key of the last monthly grant known to be committed, to skip the lookup."""


def _grant_key(user: User, when: datetime | None) -> tuple[str, str]:
    period = (when or datetime.now(UTC)).strftime("%Y-%m")
    return f"monthly:{user.id}:{period}:{user.plan}", period


def _remember_grant(user_id: str, key: str) -> None:
    if len(_granted) >= GRANTS_REMEMBERED:
        _granted.clear()
    _granted[user_id] = key


async def grant_monthly(session: AsyncSession, user: User, when: datetime | None = None) -> bool:
    """The plan's monthly credits, once per user, plan and calendar month (UTC); keyed by plan
    too, so an upgrade in the middle of a month still receives the new plan's grant."""
    key, period = _grant_key(user, when)
    entry = await change_balance(
        session,
        user.id,
        plan_for(user.plan).monthly_credits,
        reason="grant",
        key=key,
        metadata={"plan": user.plan, "period": period},
    )
    after_commit(session, lambda: _remember_grant(user.id, key))
    return entry is not None


async def reserve(session: AsyncSession, user: User, run_id: str) -> int:
    """Hold the plan's reservation for `run_id`, or refuse with 402 before any model call.

    This month's grant comes first (looked up only when this process has not seen it
    committed yet: a user's first chat of the month, or of the process)."""
    if _granted.get(user.id) != _grant_key(user, None)[0]:
        await grant_monthly(session, user)
    amount = plan_for(user.plan).run_reservation
    entry = await _post(
        session, user.id, -amount, reason="reservation", key=f"reserve:{run_id}", run_id=run_id
    )
    if entry is None:
        raise await _insufficient(session, user.id, amount)
    reservation = Reservation(
        run_id=run_id, user_id=user.id, reserved=amount, used=0, released=False, created_at=utcnow()
    )
    await session.execute(insert(_RESERVATIONS), _row(reservation))
    return amount


@dataclass(slots=True)
class _Hold:
    """A run's reservation, read under its row lock and written back once."""

    user_id: str
    reserved: int
    used: int
    released: bool

    @property
    def held(self) -> int:
        return 0 if self.released else self.reserved - self.used


_LOCK_HOLD = (
    select(_RESERVATIONS.c.user_id, _RESERVATIONS.c.reserved, _RESERVATIONS.c.used)
    .add_columns(_RESERVATIONS.c.released)
    .where(_RESERVATIONS.c.run_id == bindparam("run_id"))
    .with_for_update()
)
_SAVE_HOLD = (
    update(_RESERVATIONS)
    .where(_RESERVATIONS.c.run_id == bindparam("hold_run_id"))
    .values(used=bindparam("used"), released=bindparam("released"))
)


async def _lock_hold(session: AsyncSession, run_id: str) -> _Hold | None:
    row = (await session.execute(_LOCK_HOLD, {"run_id": run_id})).first()
    return None if row is None else _Hold(row.user_id, row.reserved, row.used, row.released)


async def _save_hold(session: AsyncSession, run_id: str, hold: _Hold) -> None:
    params = {"hold_run_id": run_id, "used": hold.used, "released": hold.released}
    await session.execute(_SAVE_HOLD, params)


async def settle_call(
    session: AsyncSession,
    run: Run,
    call: LLMCall,
    settings: Settings,
    prices: dict[str, Price] | None = None,
) -> UsageEvent:
    """Meter one LLM call: a usage event, the daily rollup, and the credits taken from the run's
    reservation (beyond it, from the balance, never below zero)."""
    (event,) = await settle_calls(session, run, [call], settings, prices=prices)
    return event


async def settle_calls(
    session: AsyncSession,
    run: Run,
    calls: list[LLMCall],
    settings: Settings,
    *,
    prices: dict[str, Price] | None = None,
    release: bool = False,
) -> list[UsageEvent]:
    """`settle_call` for each call, and with `release` the release of what the reservation
    still holds, all under one read of the reservation: a run's end in few statements."""
    table = prices if prices is not None else price_table(settings)
    hold = await _lock_hold(session, run.id)
    before = (hold.used, hold.released) if hold is not None else None
    events: list[UsageEvent] = []
    for call in calls:
        event = _usage_event(run, call, hold, table, settings)
        await _take(session, run, hold, event.credits, key=f"usage:{call.id}")
        events.append(event)
    if events:
        await session.execute(insert(_USAGE_EVENTS), [_row(event) for event in events])
        for event in events:
            await _roll_up(session, event)
    if hold is not None:
        if release:
            await _release(session, run.id, hold)
        if (hold.used, hold.released) != before:
            await _save_hold(session, run.id, hold)
    return events


async def release(session: AsyncSession, run_id: str) -> int:
    """Return what the run did not use; once, also after a failure or a stop."""
    hold = await _lock_hold(session, run_id)
    if hold is None or hold.released:
        return 0
    unused = await _release(session, run_id, hold)
    await _save_hold(session, run_id, hold)
    return unused


async def _release(session: AsyncSession, run_id: str, hold: _Hold) -> int:
    if hold.released:
        return 0
    unused = hold.held
    hold.released = True
    if unused > 0:
        key = f"release:{run_id}"
        await _post(session, hold.user_id, unused, reason="release", key=key, run_id=run_id)
    return unused


def _usage_event(
    run: Run, call: LLMCall, hold: _Hold | None, prices: dict[str, Price], settings: Settings
) -> UsageEvent:
    cost, priced_by = _cost(call, prices)
    credits = credits_for(cost, settings.credits_per_usd) if cost is not None else None
    if credits is None:  # no price known: charge what the run still holds, never nothing
        credits = hold.reserved - hold.used if hold else 0
        cost, priced_by = Decimal(credits) / settings.credits_per_usd, "reservation"
    return UsageEvent(
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


async def _take(
    session: AsyncSession, run: Run, hold: _Hold | None, credits: int, *, key: str
) -> None:
    held = hold.held if hold is not None else 0
    from_reservation = min(credits, held)
    if hold is not None:
        hold.used += from_reservation
    extra = credits - from_reservation
    if extra <= 0:
        return
    payable = min(extra, await balance(session, run.user_id))
    if payable > 0:
        await _post(
            session,
            run.user_id,
            -payable,
            reason="usage",
            key=key,
            run_id=run.id,
            metadata={"beyond_reservation": extra, "unpaid": extra - payable},
        )


def _row(obj: Base) -> dict[str, Any]:
    """A new ORM object's values by column name, for a Core INSERT (no unit of work)."""
    mapper = obj.__mapper__
    return {
        column.name: getattr(obj, attribute.key)
        for attribute in mapper.column_attrs
        for column in attribute.columns
    }


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


_ROLLUP_SUMS = ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "credits")
_rollups: dict[str, Any] = {}


def _rollup_statement(dialect: str) -> Any:
    """`INSERT ... ON CONFLICT DO UPDATE` adding to the day's row, built once per dialect."""
    statement = _rollups.get(dialect)
    if statement is None:
        table = cast(Table, UsageDaily.__table__)
        insert_ = pg_insert if dialect == "postgresql" else sqlite_insert
        keys = ("user_id", "day", "model", "agent", *_ROLLUP_SUMS)
        base = insert_(table).values({key: bindparam(key) for key in keys})
        statement = _rollups[dialect] = base.on_conflict_do_update(
            index_elements=["user_id", "day", "model", "agent"],
            set_={name: table.c[name] + base.excluded[name] for name in _ROLLUP_SUMS},
        )
    return statement


async def _roll_up(session: AsyncSession, event: UsageEvent) -> None:
    day: date = event.created_at.astimezone(UTC).date()
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
    await session.execute(_rollup_statement(dialect_name(session)), values)
