"""The `crons` table: registering crons, claiming due ticks, and recording how runs went.

A claim is one conditional UPDATE (`WHERE name = ... AND next_due_at <= now`) that moves the next
due time past now: of several schedulers that see the same due tick, the first to commit claims
it and the others update nothing (PostgreSQL re-checks the condition after the winner's commit;
SQLite writes one transaction at a time).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from backend.crons.models import CronState
from backend.crons.registry import Cron, first_due, next_due
from backend.jobs.base import resolve
from config.database import Database, dialect_name, utcnow

log = logging.getLogger("turbokit.crons")

RESULT_CHARS = 2000
"""What a row keeps of a run's account or error."""


async def states(db: Database) -> list[CronState]:
    """Every cron row, by name (a handful: one per registered cron)."""
    async with db.read() as session:
        return list(await session.scalars(select(CronState).order_by(CronState.name)))


async def due(db: Database, now: datetime) -> set[str]:
    """Names of the crons due at `now` (claiming decides which process runs them)."""
    async with db.read() as session:
        return set(
            await session.scalars(select(CronState.name).where(CronState.next_due_at <= now))
        )


async def register(db: Database, crons: tuple[Cron, ...], now: datetime) -> None:
    """Give every cron its row (first due as `first_due` says), and recompute the next due time
    of a cron whose schedule changed since its row was written."""
    async with db.write() as session:
        insert = pg_insert if dialect_name(session) == "postgresql" else sqlite_insert
        for cron in crons:
            await session.execute(
                insert(CronState)
                .values(
                    name=cron.name, schedule=cron.schedule_text, next_due_at=first_due(cron, now)
                )
                .on_conflict_do_nothing(index_elements=["name"])
            )
            await session.execute(
                update(CronState)
                .where(CronState.name == cron.name, CronState.schedule != cron.schedule_text)
                .values(schedule=cron.schedule_text, next_due_at=first_due(cron, now))
            )


async def claim(db: Database, cron: Cron, now: datetime) -> bool:
    """Take the cron's due tick for this process; False when it is not due (or another process
    took it first). The next tick is the schedule's first after `now`, however many were missed."""
    async with db.write() as session:
        result = await session.execute(
            update(CronState)
            .where(CronState.name == cron.name, CronState.next_due_at <= now)
            .values(next_due_at=next_due(cron, now), last_claimed_at=now, last_status="queued")
        )
    return bool(getattr(result, "rowcount", 0))


async def run(db: Database, name: str, job: str) -> tuple[bool, str]:
    """Run the cron's job function now, log and record how it went; (succeeded, account). A
    failure is caught here: it is the next tick's turn, not a retry's."""
    started, clock = utcnow(), time.perf_counter()
    try:
        account = str(await resolve(job)())
        ok = True
    except Exception as exc:
        log.exception("cron %s failed", name)
        account = f"{type(exc).__name__}: {exc}"
        ok = False
    elapsed_ms = (time.perf_counter() - clock) * 1000
    if ok:
        log.info("cron %s ran in %.0f ms: %s", name, elapsed_ms, account)
    await record(db, name, started, "ok" if ok else "failed", elapsed_ms, account)
    return ok, account


async def record(
    db: Database,
    name: str,
    started: datetime | None,
    status: str,
    elapsed_ms: float | None,
    account: str,
) -> None:
    """Store a run's outcome on the cron's row (a cron not registered here has none: skipped)."""
    try:
        async with db.write() as session:
            await session.execute(
                update(CronState)
                .where(CronState.name == name)
                .values(
                    last_started_at=started,
                    last_status=status,
                    last_duration_ms=elapsed_ms,
                    last_result=account[:RESULT_CHARS],
                )
            )
    except Exception:
        log.exception("could not record the run of cron %s", name)
