"""Job functions of the crons: `run_cron` (what the scheduler enqueues) and the product's crons.

Each cron job is idempotent and does a bounded amount of work per run (what is left waits for the
next tick), and returns a short account of what it did.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from backend.chat import runs
from backend.crons import service
from backend.email import service as email
from backend.email.models import Email
from backend.email.schemas import EmailStatus
from backend.events import service as events
from backend.events.broker import make_broker
from backend.jobs import JobContext, job_context
from backend.jobs import context as job_contexts
from backend.presence import service as presence
from backend.storage import make_storage
from config.database import utcnow
from threads import store
from threads.models import Run, RunStatus

RUNS_BATCH = 100
"""Active runs a pass checks for abandonment, oldest first."""
EMAILS_BATCH = 50
"""Stuck emails a pass delivers, oldest first."""
EMAIL_STUCK_AFTER = timedelta(minutes=5)
"""An email still queued this long after its last change lost its delivery job (its retries,
4 by default, are over within about 4 minutes)."""
PRESENCE_ROUNDS = 10
"""Batches of `presence.PRUNE_BATCH` offline rows a pass deletes at most."""
STAGING_MAX_AGE_SECONDS = 3600
"""An upload's temporary file older than this belongs to a request that died mid-way."""
STAGING_BATCH = 1000
"""Temporary files a pass deletes at most."""


async def run_cron(name: str, job: str) -> None:
    """Run one claimed tick of cron `name` (its job function at `job`) and record the outcome.
    A failure is recorded, not raised: the next tick runs it again, no retry is wanted."""
    async with job_context() as ctx, _publishing(ctx):
        job_contexts.enter(ctx)  # the cron's job shares this context (and its broker)
        await service.run(ctx.db, name, job)


@asynccontextmanager
async def _publishing(ctx: JobContext) -> AsyncIterator[None]:
    """Events a cron causes reach the servers' streams: inside the app its broker is installed
    already; in an rq worker, publish through Redis for the job's duration."""
    if events.BROKER_KEY in ctx.db.session_info or not ctx.settings.redis_url:
        yield
        return
    broker = make_broker(ctx.settings.redis_url)
    events.install(ctx.db, broker)
    try:
        yield
    finally:
        ctx.db.session_info.pop(events.BROKER_KEY, None)
        await broker.close()


async def end_abandoned_runs() -> str:
    """End runs whose process died (as a thread's next message would): failed, INTERRUPTED,
    reservation released. Only a thread's oldest active run, by the rules of `active_run`."""
    async with job_context() as ctx:
        stale = ctx.settings.run_stale_seconds
        cutoff = utcnow() - timedelta(seconds=stale)
        async with ctx.db.read() as session:
            candidates = list(
                await session.execute(
                    select(Run.id, Run.thread_id)
                    .where(
                        Run.status.in_((RunStatus.queued, RunStatus.running)),
                        Run.created_at < cutoff,  # a younger run cannot be silent long enough
                    )
                    .order_by(Run.created_at, Run.id)
                    .limit(RUNS_BATCH)
                )
            )
        ended = 0
        for run_id, thread_id in candidates:
            async with ctx.db.write() as session:
                run = await store.get_active_run(session, thread_id)
                if run is None or run.id != run_id:
                    continue  # ended meanwhile, or waiting behind the thread's first run
                if await runs.silent_too_long(session, run, stale):
                    ended += await runs.end_abandoned(session, run)
        return f"ended {ended} abandoned run(s) of {len(candidates)} checked"


async def deliver_stuck_emails() -> str:
    """Deliver emails left `queued` by a lost delivery job (a process that stopped, an enqueue
    that failed); delivery itself only acts on a still-queued email, so a race is harmless."""
    async with job_context() as ctx:
        cutoff = utcnow() - EMAIL_STUCK_AFTER
        async with ctx.db.read() as session:
            ids = list(
                await session.scalars(
                    select(Email.id)
                    .where(
                        Email.status == EmailStatus.queued.value,
                        Email.created_at < cutoff,
                        Email.updated_at < cutoff,
                    )
                    .order_by(Email.created_at)
                    .limit(EMAILS_BATCH)
                )
            )
        failed = 0
        for email_id in ids:
            try:
                await email.deliver(ctx.db, ctx.settings, email_id)
            except Exception:
                failed += 1  # recorded on the email (attempts, error); the next pass retries
        return f"delivered {len(ids) - failed} stuck email(s), {failed} failed again"


async def prune_presence() -> str:
    """Delete presence rows past the TTL, each with its `left` (timeout) event, also in rooms
    where nobody writes any more (writes prune only as they come)."""
    async with job_context() as ctx:
        pruned = 0
        for _ in range(PRESENCE_ROUNDS):
            cutoff = utcnow() - timedelta(seconds=ctx.settings.presence_ttl_seconds)
            async with ctx.db.write() as session:
                batch = await presence.prune(session, cutoff)
            pruned += batch
            if batch < presence.PRUNE_BATCH:
                break
        return f"pruned {pruned} stale presence row(s)"


async def clean_upload_staging() -> str:
    """Delete temporary upload files a process left behind when it died mid-request (a live
    request removes its own). Staging is this machine's directory."""
    async with job_context() as ctx:
        staging = make_storage(ctx.settings).staging_dir()
        removed = await asyncio.to_thread(_sweep, staging, time.time() - STAGING_MAX_AGE_SECONDS)
        return f"removed {removed} leftover upload file(s) from {staging}"


def _sweep(directory: Path, older_than: float) -> int:
    removed = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if removed >= STAGING_BATCH:
                break
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < older_than:
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
    return removed
