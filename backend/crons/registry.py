"""The crons of the product: a name, a schedule (an interval or a UTC cron expression) and the
job function it runs, named by import path as `backend.jobs` takes it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from croniter import croniter

from backend.jobs.base import resolve


@dataclass(frozen=True)
class Cron:
    name: str
    schedule: timedelta | str
    """Every so long (from the end of the last claim), or a cron expression read in UTC."""
    job: str
    """`package.module.function`: an async function taking no arguments that returns a short
    account of what it did (logged, and stored as the cron's last result)."""

    def __post_init__(self) -> None:
        if isinstance(self.schedule, timedelta):
            if self.schedule <= timedelta(0):
                raise ValueError(f"cron {self.name!r}: the interval must be positive")
        elif not croniter.is_valid(self.schedule):
            raise ValueError(f"cron {self.name!r}: {self.schedule!r} is not a cron expression")

    @property
    def schedule_text(self) -> str:
        """How the schedule is stored and listed: `every 60s` or the cron expression."""
        if isinstance(self.schedule, timedelta):
            return f"every {self.schedule.total_seconds():g}s"
        return self.schedule

    def check(self) -> Cron:
        """Fail now, not at the first tick, if the job path names no async function."""
        resolve(self.job)
        return self


def next_due(cron: Cron, after: datetime) -> datetime:
    """The first due time strictly after `after` (an aware UTC datetime)."""
    if isinstance(cron.schedule, timedelta):
        return after + cron.schedule
    following: datetime = croniter(cron.schedule, after).get_next(datetime)
    return following


def first_due(cron: Cron, now: datetime) -> datetime:
    """When a cron never seen before first runs: an interval at once (its work may be overdue),
    a cron expression at its next matching time."""
    return now if isinstance(cron.schedule, timedelta) else next_due(cron, now)


JOBS = "backend.crons.jobs"

CRONS: tuple[Cron, ...] = (
    Cron("end-abandoned-runs", timedelta(minutes=1), f"{JOBS}.end_abandoned_runs"),
    Cron("deliver-stuck-emails", timedelta(minutes=5), f"{JOBS}.deliver_stuck_emails"),
    Cron("prune-presence", timedelta(minutes=1), f"{JOBS}.prune_presence"),
    Cron("clean-upload-staging", "17 * * * *", f"{JOBS}.clean_upload_staging"),
)
"""Every cron the scheduler runs. Each job is idempotent and bounded per run."""


def find(name: str, crons: tuple[Cron, ...] = CRONS) -> Cron | None:
    return next((cron for cron in crons if cron.name == name), None)
