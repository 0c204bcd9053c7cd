"""The workflow engine: start a run once, execute it under a lease, replay completed steps.

A workflow is `async def flow(ctx: WorkflowContext, **args) -> JSON`, registered by name with
`@workflow("name")`. Starting one inserts its `workflow_runs` row (a repeated idempotency key
returns the existing run) and enqueues `execute_workflow(run_id)` after the commit. An execution
first claims the run with a conditional UPDATE (a lease), so a second job of the same run finds it
taken and does nothing. Each `ctx.step` is recorded in `workflow_steps`: a step that completed
returns its saved result on every later execution; its result is saved in the same transaction
that marks it completed, and only while the lease is still ours.

Steps run at least once, not exactly once: a crash after a step's effect and before its row is
saved runs it again. So every step function must be idempotent (safe to repeat).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from backend.jobs import Jobs
from backend.workflows.models import RunStatus, StepStatus, WorkflowRun, WorkflowStep
from config.database import Database, dialect_name, utcnow
from config.ids import new_id
from config.settings import Settings

log = logging.getLogger("turbokit.workflows")

EXECUTE_JOB = "backend.workflows.jobs.execute_workflow"
LEASE_SECONDS = 60.0
"""How long a claim lasts without renewal; a crashed execution's run is free again after it."""
MAX_ERROR = 2000
"""Characters of an error message kept on a run or step."""
DEFINITION_MODULES = ("backend.users.deletion",)
"""Modules whose `@workflow` functions are looked up by name (imported on first use)."""

runs: Table = WorkflowRun.__table__  # type: ignore[assignment]
steps: Table = WorkflowStep.__table__  # type: ignore[assignment]

P = ParamSpec("P")
T = TypeVar("T")
WorkflowFunction = Callable[..., Awaitable[Any]]

_registry: dict[str, WorkflowFunction] = {}


def workflow(name: str) -> Callable[[WorkflowFunction], WorkflowFunction]:
    """Register `flow` under `name`: the name runs are started and stored with."""

    def register(flow: WorkflowFunction) -> WorkflowFunction:
        _registry[name] = flow
        return flow

    return register


def definition(name: str) -> WorkflowFunction | None:
    for module in DEFINITION_MODULES:
        importlib.import_module(module)
    return _registry.get(name)


class WorkflowError(RuntimeError):
    """The workflow cannot go on as written: unknown, changed, or a step result not JSON."""


class LeaseLost(RuntimeError):
    """Another execution holds the run now (ours outlived its lease): stop without saving."""


@dataclass(frozen=True, slots=True)
class SavedStep:
    name: str
    status: str
    result: Any


@dataclass
class WorkflowContext:
    """What a workflow function works with, and its one way to run side effects: `step`."""

    db: Database
    settings: Settings
    run_id: str
    owner: str
    saved: dict[int, SavedStep] = field(default_factory=dict)
    _next: int = 0

    async def step(
        self, name: str, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run `fn(*args)` once for this run and return its JSON result; on a re-run, return the
        saved result instead. `fn` must be idempotent: a crash before its result is saved runs it
        again, and a step that raised is run again on the run's next attempt."""
        ordinal = self._next
        self._next += 1
        saved = self.saved.get(ordinal)
        if saved is not None and saved.name != name:
            raise WorkflowError(
                f"step {ordinal} of run {self.run_id} was {saved.name!r}, now {name!r}: "
                "the workflow changed under a started run"
            )
        if saved is not None and saved.status == StepStatus.completed:
            return saved.result  # type: ignore[no-any-return]
        await self._begin(ordinal, name)
        try:
            result = await fn(*args, **kwargs)
            stored = _as_json(result, name)
        except LeaseLost:
            raise
        except Exception as exc:
            await self._end(ordinal, StepStatus.failed, None, _message(exc))
            raise
        await self._end(ordinal, StepStatus.completed, stored, None)
        self.saved[ordinal] = SavedStep(name, StepStatus.completed, stored)
        return result

    async def _begin(self, ordinal: int, name: str) -> None:
        now = utcnow()
        async with self.db.write() as session:
            await _renew(session, self.run_id, self.owner)
            insert = pg_insert if dialect_name(session) == "postgresql" else sqlite_insert
            statement = insert(steps).values(
                run_id=self.run_id,
                ordinal=ordinal,
                name=name,
                status=StepStatus.running.value,
                attempts=1,
                started_at=now,
            )
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=[steps.c.run_id, steps.c.ordinal],
                    set_={
                        "status": StepStatus.running.value,
                        "attempts": steps.c.attempts + 1,
                        "error": None,
                        "started_at": now,
                        "finished_at": None,
                    },
                )
            )

    async def _end(self, ordinal: int, status: StepStatus, result: Any, error: str | None) -> None:
        """Save the step's outcome, together with a renewal of our lease: a step finished by an
        execution that lost the run is not saved (the new holder runs it again)."""
        async with self.db.write() as session:
            await _renew(session, self.run_id, self.owner)
            await session.execute(
                update(steps)
                .where(steps.c.run_id == self.run_id, steps.c.ordinal == ordinal)
                .values(status=status.value, result=result, error=error, finished_at=utcnow())
            )


async def _renew(session: AsyncSession, run_id: str, owner: str) -> None:
    """Extend our lease; raise `LeaseLost` when the run is no longer ours (on PostgreSQL the
    row stays locked until the commit, so no other execution can claim it in between)."""
    now = utcnow()
    renewed = await session.scalar(
        update(runs)
        .where(
            runs.c.id == run_id,
            runs.c.lease_owner == owner,
            runs.c.status == RunStatus.running.value,
        )
        .values(lease_until=now + timedelta(seconds=LEASE_SECONDS), updated_at=now)
        .returning(runs.c.id)
    )
    if renewed is None:
        raise LeaseLost(f"workflow run {run_id} is no longer held by this execution")


def _as_json(value: Any, step: str) -> Any:
    """The value as the database will give it back, so a replay returns exactly this."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise WorkflowError(f"step {step!r} returned a value that is not JSON: {exc}") from exc


def _message(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text[:MAX_ERROR]


# --- starting -------------------------------------------------------------------------------


async def start(
    session: AsyncSession,
    jobs: Jobs,
    name: str,
    args: dict[str, Any],
    *,
    idempotency_key: str | None = None,
) -> tuple[str, bool]:
    """Insert a run of `name` and queue its execution once `session` commits. With a key
    already used, nothing new happens: the existing run's id, and False."""
    if name not in _registry and definition(name) is None:
        raise WorkflowError(f"no workflow named {name!r}")
    now = utcnow()
    insert = pg_insert if dialect_name(session) == "postgresql" else sqlite_insert
    statement = insert(runs).values(
        id=new_id("wfr"),
        name=name,
        args=_as_json(args, "arguments"),
        status=RunStatus.queued.value,
        attempts=0,
        idempotency_key=idempotency_key,
        created_at=now,
        updated_at=now,
    )
    if idempotency_key is not None:
        statement = statement.on_conflict_do_nothing(index_elements=[runs.c.idempotency_key])
    run_id = await session.scalar(statement.returning(runs.c.id))
    if run_id is None:
        existing = await session.scalar(
            select(runs.c.id).where(runs.c.idempotency_key == idempotency_key)
        )
        assert existing is not None
        return str(existing), False
    jobs.enqueue_after_commit(session, EXECUTE_JOB, run_id)
    log.info("workflow %s started as run %s", name, run_id)
    return str(run_id), True


async def retry(session: AsyncSession, jobs: Jobs, run_id: str) -> bool:
    """Put a failed run (or one whose execution died: running, lease expired) back in the
    queue with its attempts reset; its completed steps stay done. False if it is neither."""
    now = utcnow()
    stalled = (runs.c.status == RunStatus.running.value) & (runs.c.lease_until < now)
    retried = await session.scalar(
        update(runs)
        .where(runs.c.id == run_id, (runs.c.status == RunStatus.failed.value) | stalled)
        .values(
            status=RunStatus.queued.value,
            attempts=0,
            error=None,
            lease_owner=None,
            lease_until=None,
            finished_at=None,
            updated_at=now,
        )
        .returning(runs.c.id)
    )
    if retried is None:
        return False
    jobs.enqueue_after_commit(session, EXECUTE_JOB, run_id)
    return True


async def requeue(db: Database, jobs: Jobs, limit: int = 500) -> int:
    """Enqueue the runs whose job was lost with a stopped process: queued ones, and running ones
    whose lease has expired (their execution died), oldest first, at most `limit` of each."""
    now = utcnow()
    stalled = runs.c.lease_until.is_(None) | (runs.c.lease_until < now)
    ids: list[str] = []
    async with db.read() as session:
        for status, condition in (
            (RunStatus.queued, None),
            (RunStatus.running, stalled),
        ):
            query = select(runs.c.id).where(runs.c.status == status.value)
            if condition is not None:
                query = query.where(condition)
            query = query.order_by(runs.c.created_at).limit(limit)
            ids.extend(await session.scalars(query))
    for run_id in ids:
        await jobs.enqueue(EXECUTE_JOB, run_id)
    return len(ids)


# --- executing ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Claim:
    name: str
    args: dict[str, Any]
    attempts: int


async def execute(db: Database, settings: Settings, run_id: str) -> str | None:
    """Execute the run if no other execution holds it; its status afterwards, or None when it
    was not ours to run (finished, unknown, or held). A failure is re-raised for the job
    runner to retry, until the last attempt (`JOB_RETRIES` + 1), which marks the run failed."""
    owner = uuid.uuid4().hex
    claim = await _claim(db, run_id, owner)
    if claim is None:
        log.info("workflow run %s is finished, unknown or held elsewhere: skipped", run_id)
        return None
    flow = definition(claim.name)
    if flow is None:
        await _finish(db, run_id, owner, RunStatus.failed, error=f"no workflow {claim.name!r}")
        return RunStatus.failed.value
    ctx = WorkflowContext(db, settings, run_id, owner, await _saved_steps(db, run_id))
    heartbeat = asyncio.create_task(_heartbeat(db, run_id, owner))
    try:
        result = await flow(ctx, **claim.args)
    except LeaseLost:
        log.warning("workflow run %s: lease lost, another execution goes on", run_id)
        return None
    except Exception as exc:
        final = claim.attempts > settings.job_retries or isinstance(exc, WorkflowError)
        status = RunStatus.failed if final else RunStatus.queued
        await _finish(db, run_id, owner, status, error=_message(exc))
        log.warning("workflow run %s attempt %d failed: %s", run_id, claim.attempts, exc)
        if final:
            return status.value
        raise
    finally:
        heartbeat.cancel()
    await _finish(db, run_id, owner, RunStatus.completed, result=_as_json(result, "result"))
    log.info("workflow run %s (%s) completed", run_id, claim.name)
    return RunStatus.completed.value


async def _claim(db: Database, run_id: str, owner: str) -> _Claim | None:
    """Take the run with one conditional UPDATE: queued, or running with an expired lease."""
    now = utcnow()
    free = runs.c.lease_until.is_(None) | (runs.c.lease_until < now)
    async with db.write() as session:
        row = (
            await session.execute(
                update(runs)
                .where(
                    runs.c.id == run_id,
                    runs.c.status.in_([RunStatus.queued.value, RunStatus.running.value]),
                    free,
                )
                .values(
                    status=RunStatus.running.value,
                    lease_owner=owner,
                    lease_until=now + timedelta(seconds=LEASE_SECONDS),
                    attempts=runs.c.attempts + 1,
                    started_at=func.coalesce(runs.c.started_at, now),
                    updated_at=now,
                )
                .returning(runs.c.name, runs.c.args, runs.c.attempts)
            )
        ).first()
    return None if row is None else _Claim(row.name, dict(row.args or {}), row.attempts)


async def _saved_steps(db: Database, run_id: str) -> dict[int, SavedStep]:
    async with db.read() as session:
        rows = await session.execute(
            select(steps.c.ordinal, steps.c.name, steps.c.status, steps.c.result).where(
                steps.c.run_id == run_id
            )
        )
        return {row.ordinal: SavedStep(row.name, row.status, row.result) for row in rows}


async def _heartbeat(db: Database, run_id: str, owner: str) -> None:
    """Renew the lease while a long step runs, so no other execution takes the run meanwhile."""
    while True:
        await asyncio.sleep(LEASE_SECONDS / 3)
        try:
            async with db.write() as session:
                await _renew(session, run_id, owner)
        except LeaseLost:
            return
        except Exception:
            log.exception("workflow run %s: could not renew its lease", run_id)


async def _finish(
    db: Database,
    run_id: str,
    owner: str,
    status: RunStatus,
    *,
    result: Any = None,
    error: str | None = None,
) -> None:
    """End this execution: completed, failed for good, or queued again for the next attempt;
    the lease is released. Nothing changes if the run is no longer ours."""
    now = utcnow()
    done = status in (RunStatus.completed, RunStatus.failed)
    async with db.write() as session:
        await session.execute(
            update(runs)
            .where(runs.c.id == run_id, runs.c.lease_owner == owner)
            .values(
                status=status.value,
                result=result,
                error=error,
                lease_owner=None,
                lease_until=None,
                finished_at=now if done else None,
                updated_at=now,
            )
        )


# --- reading --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunView:
    run: dict[str, Any]
    steps: list[dict[str, Any]]


async def list_runs(db: Database, status: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest runs, of one status or all (served by the status and created_at indexes)."""
    query = select(runs).order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(runs.c.status == status)
    async with db.read() as session:
        return [dict(row._mapping) for row in await session.execute(query)]


async def get_run(db: Database, run_id: str) -> RunView | None:
    async with db.read() as session:
        run = (await session.execute(select(runs).where(runs.c.id == run_id))).first()
        if run is None:
            return None
        rows = await session.execute(
            select(steps).where(steps.c.run_id == run_id).order_by(steps.c.ordinal)
        )
        return RunView(dict(run._mapping), [dict(row._mapping) for row in rows])


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
