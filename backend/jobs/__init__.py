"""Background jobs: an async function named by import path, run later, at least once.

`make_jobs(settings, db)` picks the runner: rq on Redis when `REDIS_URL` is set (`turbokit worker`
processes run the jobs), otherwise an in-process asyncio runner started by the app's lifespan.
Both run the very same job functions with the same retry policy; a job function opens what it
needs through `job_context()`.
"""

from __future__ import annotations

from backend.jobs.base import JobArg, Jobs, RetryPolicy
from backend.jobs.context import JobContext, job_context
from backend.jobs.local import LocalJobs
from backend.jobs.redis_queue import RedisJobs
from config.database import Database
from config.settings import Settings

__all__ = [
    "JobArg",
    "JobContext",
    "Jobs",
    "LocalJobs",
    "RedisJobs",
    "RetryPolicy",
    "job_context",
    "make_jobs",
]


def make_jobs(settings: Settings, db: Database) -> Jobs:
    """rq on Redis when `REDIS_URL` is set, else the in-process runner."""
    policy = RetryPolicy.from_settings(settings)
    if settings.redis_url:
        return RedisJobs(settings.redis_url, settings.job_queue, policy)
    return LocalJobs(JobContext(settings, db), policy)
