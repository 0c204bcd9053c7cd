"""Usage reports: what a user (or, for admins, everyone) spent over a range of UTC days.

Reports by day, model, agent or user read only the `usage_daily` rollup, which `settle_call` keeps
in step with every event, so their cost depends on days x models x agents, never on the number of
calls. Per-thread reports and the raw events read `usage_events` through its `(user_id, ...)`
indexes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.billing.models import UsageDaily, UsageEvent
from backend.billing.schemas import UsageEventPublic, UsageGroup, UsageTotals
from backend.errors import validation_error
from backend.pagination import PageParams, next_cursor
from config.database import Database

DEFAULT_RANGE_DAYS = 30
"""The range when neither `from` nor `to` is given: the last 30 days, today (UTC) included."""

MAX_RANGE_DAYS = 366
"""The longest range a report or export covers (a leap year), so no request reads unbounded."""

EXPORT_BATCH = 2000
"""Events per query (and per short read session) while streaming an export."""

EXPORT_COLUMNS = (
    "id",
    "thread_id",
    "run_id",
    "agent",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "credits",
    "created_at",
)

_EVENT_COLUMNS = tuple(getattr(UsageEvent, name) for name in EXPORT_COLUMNS)


@dataclass(frozen=True, slots=True)
class DayRange:
    """Inclusive UTC days."""

    start: date
    end: date

    @property
    def since(self) -> datetime:
        return datetime.combine(self.start, time(), UTC)

    @property
    def until(self) -> datetime:
        """The first instant after the range."""
        return datetime.combine(self.end + timedelta(days=1), time(), UTC)


def day_range(start: date | None, end: date | None) -> DayRange:
    """The range a request asks for: `to` defaults to today (UTC), `from` to 30 days ending at
    `to`. `from` after `to`, or more than 366 days, is a 422."""
    end = end or datetime.now(UTC).date()
    start = start or end - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if start > end:
        raise validation_error(["query", "from"], "from must not be after to")
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise validation_error(
            ["query", "to"], f"the range may cover at most {MAX_RANGE_DAYS} days"
        )
    return DayRange(start, end)


# --- reports -------------------------------------------------------------------------------------


async def daily_report(
    session: AsyncSession, days: DayRange, group_by: str, user_id: str | None = None
) -> tuple[UsageTotals, list[UsageGroup]]:
    """Usage grouped by `day`, `model`, `agent` or `user` from the daily rollup; one user's when
    `user_id` is given, everyone's otherwise."""
    key = _DAILY_KEYS[group_by]
    where: list[ColumnElement[bool]] = [UsageDaily.day >= days.start, UsageDaily.day <= days.end]
    if user_id is not None:
        where.append(UsageDaily.user_id == user_id)
    query = _summed(
        key,
        func.sum(UsageDaily.requests),
        func.sum(UsageDaily.prompt_tokens),
        func.sum(UsageDaily.completion_tokens),
        func.sum(UsageDaily.cost_usd),
        func.sum(UsageDaily.credits),
    ).where(*where)
    query = (
        query.order_by(key) if group_by == "day" else _by_credits(query, key, UsageDaily.credits)
    )
    return _report(await session.execute(query))


async def thread_report(
    session: AsyncSession, user_id: str, days: DayRange
) -> tuple[UsageTotals, list[UsageGroup]]:
    """One user's usage grouped by thread, from the events in the range (index `(user_id,
    created_at)`)."""
    key = UsageEvent.thread_id
    query = _summed(
        key,
        func.count(),
        func.sum(UsageEvent.prompt_tokens),
        func.sum(UsageEvent.completion_tokens),
        func.sum(UsageEvent.cost_usd),
        func.sum(UsageEvent.credits),
    ).where(
        UsageEvent.user_id == user_id,
        UsageEvent.created_at >= days.since,
        UsageEvent.created_at < days.until,
    )
    return _report(await session.execute(_by_credits(query, key, UsageEvent.credits)))


_DAILY_KEYS: dict[str, Any] = {
    "day": UsageDaily.day,
    "model": UsageDaily.model,
    "agent": UsageDaily.agent,
    "user": UsageDaily.user_id,
}


def _summed(key: Any, *sums: Any) -> Select[Any]:
    return select(key, *sums).group_by(key)


def _by_credits(query: Select[Any], key: Any, credits: Any) -> Select[Any]:
    return query.order_by(func.sum(credits).desc(), key.asc().nulls_last())


def _report(rows: Any) -> tuple[UsageTotals, list[UsageGroup]]:
    """Groups from `(key, requests, prompt, completion, cost, credits)` rows, and their totals
    (the cost summed exactly, as decimals)."""
    groups: list[UsageGroup] = []
    cost = Decimal(0)
    for key, requests, prompt, completion, cost_usd, credits in rows:
        cost += _decimal(cost_usd)
        groups.append(
            UsageGroup(
                key=_key_text(key),
                requests=int(requests),
                prompt_tokens=int(prompt),
                completion_tokens=int(completion),
                cost_usd=float(_decimal(cost_usd)),
                credits=int(credits),
            )
        )
    totals = UsageTotals(
        requests=sum(group.requests for group in groups),
        prompt_tokens=sum(group.prompt_tokens for group in groups),
        completion_tokens=sum(group.completion_tokens for group in groups),
        cost_usd=float(cost),
        credits=sum(group.credits for group in groups),
    )
    return totals, groups


def _key_text(key: object) -> str | None:
    if key is None:
        return None
    return key.isoformat() if isinstance(key, date) else str(key)


def _decimal(value: object) -> Decimal:
    if value is None:
        return Decimal(0)
    return value if isinstance(value, Decimal) else Decimal(str(value))


# --- events --------------------------------------------------------------------------------------


async def events_page(
    session: AsyncSession, user_id: str, page: PageParams
) -> tuple[list[UsageEventPublic], str | None]:
    """One user's events, newest first (index `(user_id, id)`)."""
    query = select(*_EVENT_COLUMNS).where(UsageEvent.user_id == user_id)
    if page.cursor is not None:
        query = query.where(UsageEvent.id < page.cursor)
    query = query.order_by(UsageEvent.id.desc()).limit(page.limit + 1)
    rows = (await session.execute(query)).all()
    items = [_event(row) for row in rows[: page.limit]]
    return items, next_cursor([row.id for row in rows], page.limit)


def _event(row: Row[Any]) -> UsageEventPublic:
    return UsageEventPublic.model_validate(row._mapping)


async def export_csv(db: Database, user_id: str, days: DayRange) -> AsyncIterator[str]:
    """One user's events in the range as CSV text, oldest first, header row first.

    Read in batches of `EXPORT_BATCH`, each in its own short read session, keyed on
    `(created_at, id)`: a slow download holds no connection and no transaction between batches.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    yield _drain(buffer)
    after: tuple[datetime, str] | None = None
    while True:
        async with db.read() as session:
            rows = (await session.execute(_export_batch(user_id, days, after))).all()
        for row in rows:
            writer.writerow(_csv_row(row))
        if rows:
            yield _drain(buffer)
        if len(rows) < EXPORT_BATCH:
            return
        after = (rows[-1].created_at, rows[-1].id)


def _export_batch(user_id: str, days: DayRange, after: tuple[datetime, str] | None) -> Select[Any]:
    query = select(*_EVENT_COLUMNS).where(
        UsageEvent.user_id == user_id, UsageEvent.created_at < days.until
    )
    if after is None:
        query = query.where(UsageEvent.created_at >= days.since)
    else:
        created_at, event_id = after
        query = query.where(
            UsageEvent.created_at >= created_at,
            or_(UsageEvent.created_at > created_at, UsageEvent.id > event_id),
        )
    return query.order_by(UsageEvent.created_at, UsageEvent.id).limit(EXPORT_BATCH)


def _csv_row(row: Row[Any]) -> list[object]:
    return [
        row.id,
        row.thread_id or "",
        row.run_id or "",
        row.agent,
        row.model,
        row.prompt_tokens,
        row.completion_tokens,
        _decimal_text(_decimal(row.cost_usd)),
        row.credits,
        row.created_at.isoformat().replace("+00:00", "Z"),
    ]


def _decimal_text(value: Decimal) -> str:
    """Plain notation without trailing zeros: `0.0072`, never `7.2E-3` or `0.0072000000`."""
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
