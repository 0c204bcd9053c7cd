"""Job functions for the runner tests, importable by path as real jobs are, and a wait for an
app's in-process jobs."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict

from fastapi import FastAPI
from sqlalchemy import text

from backend.jobs import LocalJobs, job_context

attempts: Counter[str] = Counter()
"""How many times each key's job has run."""
answers: dict[str, int] = {}
ran: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
"""Set once each key's job has run (in-process runners only: one event loop)."""


async def flaky(key: str, failures: int) -> None:
    """Fails its first `failures` runs, then succeeds."""
    attempts[key] += 1
    ran[key].set()
    if attempts[key] <= failures:
        raise RuntimeError(f"flaky job {key} fails on attempt {attempts[key]}")


async def query_database(key: str) -> None:
    """Reads through the job's own context, as real jobs do."""
    async with job_context() as ctx, ctx.db.read() as session:
        answers[key] = int(await session.scalar(text("SELECT 41 + 1")) or 0)


def not_async(key: str) -> None:
    attempts[key] += 1


async def finish_jobs(app: FastAPI) -> None:
    """Wait until every job the app queued in-process, retries included, has run to its end."""
    jobs = app.state.jobs
    assert isinstance(jobs, LocalJobs)
    await jobs.wait_idle()
