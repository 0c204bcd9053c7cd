"""What a job function works with: the settings and a database.

Inside the app's in-process runner a job shares the app's own `Database`. Under rq each job runs
in its own event loop (`asyncio.run`), so it builds a fresh `Database` from the worker's settings
and disposes of it when the job ends: engines and clients cannot outlive their loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from config.database import Database
from config.settings import Settings, get_settings


@dataclass(frozen=True)
class JobContext:
    settings: Settings
    db: Database


_current: ContextVar[JobContext | None] = ContextVar("turbokit_job_context", default=None)
_worker_settings: Settings | None = None


def use_worker_settings(settings: Settings | None) -> None:
    """The settings jobs run with outside the app (default: the environment's). For tests and
    embedders that run an rq worker in-process."""
    global _worker_settings
    _worker_settings = settings


def enter(context: JobContext) -> None:
    """Make `context` the one `job_context()` yields in this task (the in-process runner)."""
    _current.set(context)


@asynccontextmanager
async def job_context() -> AsyncIterator[JobContext]:
    """The app's context when running in-process; otherwise a fresh one for this job."""
    current = _current.get()
    if current is not None:
        yield current
        return
    settings = _worker_settings or get_settings()
    db = Database(settings)
    try:
        yield JobContext(settings, db)
    finally:
        await db.dispose()
