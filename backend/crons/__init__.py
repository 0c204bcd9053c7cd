"""Crons: job functions run on a schedule, once per due tick across every server process.

Each `turbokit serve` process runs a `Scheduler` (unless CRONS_ENABLED is off). A due tick is
claimed in the `crons` table by a conditional UPDATE, so of several processes (or machines on one
PostgreSQL) exactly one runs it; the claim moves the next due time past now, so ticks missed while
nothing ran become one run, not a burst. The claimed cron goes to the job runner: in-process by
default, rq on Redis with REDIS_URL (a `turbokit worker` runs it).
"""

from __future__ import annotations

from backend.crons.registry import CRONS, Cron, find, next_due
from backend.crons.scheduler import Scheduler

__all__ = ["CRONS", "Cron", "Scheduler", "find", "next_due"]
