"""Account deletion, as a durable workflow: what a deleted user leaves behind is cleaned up step
by step, and a crash or a failing step never leaves it half done for good.

Clerk's `user.deleted` soft-deletes the user (no token of theirs works from then on) and starts
`delete_account` once per user. Every step is idempotent and works in bounded batches: a
re-run after a partial step finds less left to do and finishes it.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend import metrics
from backend.billing import service as billing
from backend.chat.service import STOPPED, end_paused_run
from backend.events import service as events
from backend.jobs import Jobs
from backend.presence import service as presence
from backend.storage import Storage, make_storage
from backend.uploads.models import Upload
from backend.workflows import service as workflows
from backend.workflows.service import WorkflowContext, workflow
from config.database import Database, after_commit, utcnow
from threads import store
from threads.models import ACTIVE_RUN_STATUSES, Run, RunStatus, Thread
from threads.store import RunError

log = logging.getLogger("turbokit.users")

DELETE_ACCOUNT = "delete_account"
BATCH = 100
"""Rows one transaction handles at most."""
ACCOUNT_DELETED = RunError(code="ACCOUNT_DELETED", message="The account was deleted")


async def start_account_deletion(session: AsyncSession, jobs: Jobs, user_id: str) -> str:
    """Start `delete_account` for the user in this transaction; once per user, however often
    asked (the idempotency key is the user id). The run's id."""
    run_id, _ = await workflows.start(
        session, jobs, DELETE_ACCOUNT, {"user_id": user_id}, idempotency_key=f"delete:{user_id}"
    )
    return run_id


@workflow(DELETE_ACCOUNT)
async def delete_account(ctx: WorkflowContext, user_id: str) -> dict[str, Any]:
    stopped = await ctx.step("stop_runs", stop_runs, ctx.db, user_id)
    storage = make_storage(ctx.settings)
    uploads = await ctx.step("delete_uploads", delete_uploads, ctx.db, storage, user_id)
    sessions = await ctx.step("remove_presence", remove_presence, ctx.db, user_id)
    done = await ctx.step("record_completion", record_completion, user_id)
    return {
        "runs_stopped": stopped,
        "uploads_deleted": uploads,
        "presence_removed": sessions,
        **done,
    }


async def stop_runs(db: Database, user_id: str) -> int:
    """End the user's runs that have not ended (stopped, `ACCOUNT_DELETED`) and release their
    credit reservations; a batch per transaction. Idempotent: an ended run is not active, and a
    reservation is released once. A run executing in some process sees its run ended and saves
    nothing over it."""
    stopped = 0
    while True:
        async with db.write() as session:
            active = list(
                await session.scalars(
                    select(Run)
                    .join(Thread, Thread.id == Run.thread_id)
                    .where(Thread.user_id == user_id, Run.status.in_(ACTIVE_RUN_STATUSES))
                    .order_by(Run.id)
                    .limit(BATCH)
                )
            )
            for run in active:
                await _stop_run(session, run)
        stopped += len(active)
        if len(active) < BATCH:
            return stopped


async def _stop_run(session: AsyncSession, run: Run) -> None:
    if run.status is RunStatus.awaiting_approval:
        await end_paused_run(session, run, STOPPED, RunStatus.stopped)
        return
    await billing.release(session, run.id)
    if await store.finish_run(session, run.id, RunStatus.stopped, error=ACCOUNT_DELETED):
        events.run_finished(session, run.user_id, run.thread_id, run.id, "stopped", None)
        after_commit(session, lambda: metrics.observe_run_end(RunStatus.stopped))


async def delete_uploads(db: Database, storage: Storage, user_id: str) -> int:
    """Delete every upload of the user: each object first, then its row, a batch at a time.
    Idempotent: removing a missing object is not an error, and a row whose object went in a
    crashed attempt is found again and finished."""
    deleted = 0
    while True:
        async with db.read() as session:
            ids = list(
                await session.scalars(
                    select(Upload.id)
                    .where(Upload.user_id == user_id)
                    .order_by(Upload.id)
                    .limit(BATCH)
                )
            )
        for upload_id in ids:
            await storage.delete(upload_id)
        if ids:
            async with db.write() as session:
                await session.execute(delete(Upload).where(Upload.id.in_(ids)))
        deleted += len(ids)
        if len(ids) < BATCH:
            return deleted


async def remove_presence(db: Database, user_id: str) -> int:
    """End the user's presence sessions in every room. Idempotent."""
    async with db.write() as session:
        return await presence.remove_user(session, user_id)


async def record_completion(user_id: str) -> dict[str, Any]:
    """The time the account's data was gone, kept as this step's (and the run's) result."""
    completed_at = utcnow().isoformat()
    log.info("account %s deleted: runs stopped, uploads and presence removed", user_id)
    return {"user_id": user_id, "completed_at": completed_at}
