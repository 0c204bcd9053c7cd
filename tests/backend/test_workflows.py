"""Durable workflows: each step runs once per run, whatever fails, crashes or races; and account
deletion, the workflow Clerk's `user.deleted` starts, end to end."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from backend.billing import service as billing
from backend.jobs import JobArg, Jobs, RetryPolicy
from backend.presence.models import Presence
from backend.uploads.models import Upload
from backend.users.models import User
from backend.workflows import service
from backend.workflows.models import WorkflowRun, WorkflowStep
from backend.workflows.service import WorkflowContext, workflow
from config.database import utcnow
from tests.conftest import Users, asgi_client, make_settings
from tests.support.cli import turbokit
from tests.support.jobs import finish_jobs
from tests.support.svix import deliver, new_secret
from threads.models import Run, RunStatus, Thread

SECRET = new_secret()
RETRIES = 2
"""JOB_RETRIES of the app under test: a run gets three attempts."""

calls: Counter[tuple[str, str]] = Counter()
"""(test key, step name) -> times the step's function actually ran."""
failures_left: dict[str, int] = {}
pauses: dict[str, asyncio.Event] = {}


async def effect(key: str, name: str) -> dict[str, Any]:
    calls[(key, name)] += 1
    return {"step": name, "n": calls[(key, name)]}


async def flaky(key: str) -> str:
    calls[(key, "flaky")] += 1
    if failures_left.get(key, 0) > 0:
        failures_left[key] -= 1
        raise RuntimeError(f"flaky failure of {key}")
    return "ok"


async def slow(key: str, name: str) -> str:
    calls[(key, name)] += 1
    await asyncio.sleep(0.05)
    return name


@workflow("test_three_steps")
async def three_steps(ctx: WorkflowContext, key: str) -> dict[str, Any]:
    first = await ctx.step("first", effect, key, "first")
    second = await ctx.step("flaky", flaky, key)
    third = await ctx.step("third", effect, key, "third")
    return {"first": first, "second": second, "third": third}


@workflow("test_pausing")
async def pausing(ctx: WorkflowContext, key: str) -> str:
    await ctx.step("before", effect, key, "before")
    pause = pauses.pop(key, None)
    if pause is not None:
        await pause.wait()  # the test kills the execution here
    await ctx.step("after", effect, key, "after")
    return "done"


@workflow("test_slow")
async def slow_flow(ctx: WorkflowContext, key: str) -> str:
    for name in ("a", "b", "c"):
        await ctx.step(name, slow, key, name)
    return "done"


class RecordingJobs(Jobs):
    """Enqueues nothing, so a test executes the run itself; remembers what it was asked."""

    def __init__(self) -> None:
        super().__init__(RetryPolicy(0, 0))
        self.enqueued: list[tuple[str, tuple[JobArg, ...]]] = []

    async def enqueue(self, function: str, *args: JobArg) -> None:
        self.enqueued.append((function, args))


@pytest.fixture(scope="module")
async def wf_app(data_dir: Path, database_url: str) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        data_dir,
        database_url,
        clerk_webhook_secret=SECRET,
        job_backoff_seconds=0,
        job_retries=RETRIES,
    )
    from backend.app import create_app

    application = create_app(settings, migrate=True)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(wf_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(wf_app) as client:
        yield client


def new_key() -> str:
    return uuid.uuid4().hex


async def start(app: FastAPI, name: str, key: str, jobs: Jobs | None = None) -> str:
    async with app.state.db.write() as session:
        run_id, _ = await service.start(session, jobs or app.state.jobs, name, {"key": key})
    return run_id


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def run_row(app: FastAPI, run_id: str) -> WorkflowRun:
    async with app.state.db.read() as session:
        run = await session.get(WorkflowRun, run_id)
        assert run is not None
        return run


async def step_rows(app: FastAPI, run_id: str) -> list[WorkflowStep]:
    async with app.state.db.read() as session:
        rows = await session.scalars(
            select(WorkflowStep).where(WorkflowStep.run_id == run_id).order_by("ordinal")
        )
        return list(rows)


# --- the engine ----------------------------------------------------------------------------------


async def test_a_failing_step_is_retried_and_earlier_steps_do_not_run_again(
    wf_app: FastAPI,
) -> None:
    key = new_key()
    failures_left[key] = 1
    run_id = await start(wf_app, "test_three_steps", key)
    await finish_jobs(wf_app)

    run = await run_row(wf_app, run_id)
    assert (run.status, run.attempts, run.error) == ("completed", 2, None)
    assert run.result == {
        "first": {"step": "first", "n": 1},
        "second": "ok",
        "third": {"step": "third", "n": 1},
    }
    assert calls[(key, "first")] == 1
    assert calls[(key, "flaky")] == 2
    assert calls[(key, "third")] == 1
    steps = await step_rows(wf_app, run_id)
    assert [(s.name, s.status, s.attempts) for s in steps] == [
        ("first", "completed", 1),
        ("flaky", "completed", 2),
        ("third", "completed", 1),
    ]
    assert steps[1].error is None


async def test_after_the_last_attempt_the_run_is_failed_with_the_error(wf_app: FastAPI) -> None:
    key = new_key()
    failures_left[key] = 100
    run_id = await start(wf_app, "test_three_steps", key)
    await finish_jobs(wf_app)

    run = await run_row(wf_app, run_id)
    assert run.status == "failed"
    assert run.attempts == RETRIES + 1
    assert run.error == f"RuntimeError: flaky failure of {key}"
    assert run.lease_owner is None
    assert run.finished_at is not None
    assert calls[(key, "first")] == 1
    assert calls[(key, "flaky")] == RETRIES + 1
    assert calls[(key, "third")] == 0
    steps = await step_rows(wf_app, run_id)
    assert [(s.name, s.status, s.attempts) for s in steps] == [
        ("first", "completed", 1),
        ("flaky", "failed", RETRIES + 1),
    ]
    assert steps[1].error == run.error

    # A retry by hand starts from the failed step; the first one stays done.
    failures_left[key] = 0
    async with wf_app.state.db.write() as session:
        assert await service.retry(session, wf_app.state.jobs, run_id)
    await finish_jobs(wf_app)
    run = await run_row(wf_app, run_id)
    assert (run.status, run.attempts) == ("completed", 1)
    assert calls[(key, "first")] == 1
    assert calls[(key, "flaky")] == RETRIES + 2
    assert calls[(key, "third")] == 1


async def test_a_crash_between_steps_does_not_repeat_completed_steps(wf_app: FastAPI) -> None:
    db, settings = wf_app.state.db, wf_app.state.settings
    key = new_key()
    pauses[key] = asyncio.Event()
    run_id = await start(wf_app, "test_pausing", key, RecordingJobs())
    crashed = asyncio.create_task(service.execute(db, settings, run_id))
    await until(lambda: key not in pauses)  # its first step is saved; it waits before the next
    crashed.cancel()  # the process dies between the two steps
    with pytest.raises(asyncio.CancelledError):
        await crashed

    run = await run_row(wf_app, run_id)
    assert run.status == "running"  # nobody ended it: its lease is all that is left
    assert await service.execute(db, settings, run_id) is None  # the lease still holds

    async with db.write() as session:  # time passes: the lease expires
        await session.execute(
            update(WorkflowRun).where(WorkflowRun.id == run_id).values(lease_until=utcnow())
        )
    assert await service.execute(db, settings, run_id) == "completed"

    assert calls[(key, "before")] == 1
    assert calls[(key, "after")] == 1
    run = await run_row(wf_app, run_id)
    assert (run.status, run.attempts, run.result) == ("completed", 2, "done")


async def test_concurrent_executions_of_one_run_run_each_step_once(wf_app: FastAPI) -> None:
    db, settings = wf_app.state.db, wf_app.state.settings
    key = new_key()
    run_id = await start(wf_app, "test_slow", key, RecordingJobs())

    outcomes = await asyncio.gather(*(service.execute(db, settings, run_id) for _ in range(4)))

    assert Counter(outcomes) == {"completed": 1, None: 3}
    assert [calls[(key, name)] for name in "abc"] == [1, 1, 1]
    run = await run_row(wf_app, run_id)
    assert (run.status, run.attempts) == ("completed", 1)
    # A late duplicate job of a finished run does nothing either.
    assert await service.execute(db, settings, run_id) is None
    assert [calls[(key, name)] for name in "abc"] == [1, 1, 1]


async def test_an_execution_that_lost_its_lease_runs_and_saves_nothing_more(
    wf_app: FastAPI,
) -> None:
    db, settings = wf_app.state.db, wf_app.state.settings
    key = new_key()
    pause = pauses[key] = asyncio.Event()
    run_id = await start(wf_app, "test_pausing", key, RecordingJobs())
    stuck = asyncio.create_task(service.execute(db, settings, run_id))
    await until(lambda: key not in pauses)  # it has taken the pause: stuck after its first step
    async with db.write() as session:  # stuck longer than its lease
        await session.execute(
            update(WorkflowRun).where(WorkflowRun.id == run_id).values(lease_until=utcnow())
        )
    assert await service.execute(db, settings, run_id) == "completed"  # another one took over

    pause.set()
    assert await stuck is None  # it wakes, finds the run no longer its own, and stops
    assert calls[(key, "before")] == 1
    assert calls[(key, "after")] == 1
    run = await run_row(wf_app, run_id)
    assert (run.status, run.result, run.attempts) == ("completed", "done", 2)


async def test_runs_whose_job_was_lost_are_found_again_at_startup(wf_app: FastAPI) -> None:
    db, settings = wf_app.state.db, wf_app.state.settings
    lost = await start(wf_app, "test_slow", new_key(), RecordingJobs())  # its job never ran
    key = new_key()
    pause = pauses[key] = asyncio.Event()
    died = await start(wf_app, "test_pausing", key, RecordingJobs())
    execution = asyncio.create_task(service.execute(db, settings, died))
    await until(lambda: key not in pauses)

    found = RecordingJobs()
    await service.requeue(db, found)
    assert (service.EXECUTE_JOB, (lost,)) in found.enqueued
    assert (service.EXECUTE_JOB, (died,)) not in found.enqueued  # its execution is alive

    execution.cancel()  # the process dies; later its lease has expired
    await asyncio.gather(execution, return_exceptions=True)
    async with db.write() as session:
        await session.execute(
            update(WorkflowRun).where(WorkflowRun.id == died).values(lease_until=utcnow())
        )
    found = RecordingJobs()
    await service.requeue(db, found)
    assert (service.EXECUTE_JOB, (died,)) in found.enqueued
    pause.set()
    for run_id in (lost, died):
        assert await service.execute(db, settings, run_id) == "completed"


async def test_a_start_with_a_used_idempotency_key_returns_the_same_run(wf_app: FastAPI) -> None:
    jobs = RecordingJobs()
    key = new_key()
    ids = []
    for _ in range(2):
        async with wf_app.state.db.write() as session:
            ids.append(
                await service.start(
                    session, jobs, "test_slow", {"key": key}, idempotency_key=f"test:{key}"
                )
            )
    await jobs.settle()
    assert ids[0][0] == ids[1][0]
    assert [created for _, created in ids] == [True, False]
    assert jobs.enqueued == [(service.EXECUTE_JOB, (ids[0][0],))]
    async with wf_app.state.db.read() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(WorkflowRun)
            .where(WorkflowRun.idempotency_key == f"test:{key}")
        )
    assert count == 1


async def test_a_run_that_rolls_back_is_never_executed(wf_app: FastAPI) -> None:
    jobs = RecordingJobs()

    async def start_then_fail() -> None:
        async with wf_app.state.db.write() as session:
            await service.start(session, jobs, "test_slow", {"key": new_key()})
            raise RuntimeError("the caller's transaction fails")

    with pytest.raises(RuntimeError):
        await start_then_fail()
    await jobs.settle()
    assert jobs.enqueued == []


async def test_an_unknown_workflow_cannot_be_started(wf_app: FastAPI) -> None:
    async with wf_app.state.db.write() as session:
        with pytest.raises(service.WorkflowError, match="no workflow named 'nope'"):
            await service.start(session, RecordingJobs(), "nope", {})


# --- account deletion ----------------------------------------------------------------------------


async def active_run(app: FastAPI, user_id: str) -> str:
    """A run in progress with its credit reservation held, as a chat turn leaves it."""
    async with app.state.db.write() as session:
        thread = Thread(user_id=user_id, agent="assistant")
        session.add(thread)
        await session.flush()
        run = Run(thread_id=thread.id, user_id=user_id, agent="assistant", model="m")
        run.status = RunStatus.running
        session.add(run)
        await session.flush()
        user = await session.get(User, user_id)
        assert user is not None
        await billing.reserve(session, user, run.id)
        return run.id


async def balance(app: FastAPI, user_id: str) -> int:
    async with app.state.db.read() as session:
        return await billing.balance(session, user_id)


def user_deleted(clerk_id: str) -> dict[str, Any]:
    return {"object": "event", "type": "user.deleted", "data": {"id": clerk_id, "deleted": True}}


async def test_a_deleted_clerk_user_loses_runs_uploads_and_presence(
    wf_app: FastAPI, http: httpx.AsyncClient, users: Users
) -> None:
    clerk_id = f"user_{uuid.uuid4().hex}"
    headers = users.headers(clerk_id)
    me = await http.get("/v1/me", headers=headers)
    assert me.status_code == 200, me.text
    user_id = me.json()["id"]
    files = {"file": ("notes.txt", b"private", "text/plain")}
    uploaded = await http.post("/v1/uploads", headers=headers, files=files)
    assert uploaded.status_code == 201, uploaded.text
    upload_id = uploaded.json()["id"]
    object_path = wf_app.state.storage.root / upload_id
    assert object_path.exists()
    beat = await http.post(
        "/v1/presence/lobby/heartbeat", headers=headers, json={"session_id": "tab-1"}
    )
    assert beat.status_code == 200, beat.text
    before = await balance(wf_app, user_id)
    run_id = await active_run(wf_app, user_id)
    assert await balance(wf_app, user_id) < before

    response = await deliver(http, "/webhooks/clerk", user_deleted(clerk_id), SECRET)
    assert response.status_code == 200, response.text
    await finish_jobs(wf_app)

    async with wf_app.state.db.read() as session:
        workflow_run = await session.scalar(
            select(WorkflowRun).where(WorkflowRun.idempotency_key == f"delete:{user_id}")
        )
        assert workflow_run is not None
        assert workflow_run.status == "completed", workflow_run.error
        chat_run = await session.get(Run, run_id)
        assert chat_run is not None
        assert chat_run.status is RunStatus.stopped
        assert chat_run.error == {"code": "ACCOUNT_DELETED", "message": "The account was deleted"}
        assert await session.get(Upload, upload_id) is None
        presence = await session.scalar(
            select(func.count()).select_from(Presence).where(Presence.user_id == user_id)
        )
        assert presence == 0
    assert not object_path.exists()
    assert await balance(wf_app, user_id) == before  # the reservation came back
    assert workflow_run.result is not None
    assert {k: workflow_run.result[k] for k in ("runs_stopped", "uploads_deleted")} == {
        "runs_stopped": 1,
        "uploads_deleted": 1,
    }
    assert workflow_run.result["presence_removed"] == 1
    steps = await step_rows(wf_app, workflow_run.id)
    assert [(s.name, s.status) for s in steps] == [
        ("stop_runs", "completed"),
        ("delete_uploads", "completed"),
        ("remove_presence", "completed"),
        ("record_completion", "completed"),
    ]
    assert (await http.get("/v1/me", headers=headers)).status_code != 200

    # Clerk sends it again (a new message id): the user is deleted already, nothing restarts.
    again = await deliver(http, "/webhooks/clerk", user_deleted(clerk_id), SECRET)
    assert again.status_code == 200
    await finish_jobs(wf_app)
    async with wf_app.state.db.read() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(WorkflowRun)
            .where(WorkflowRun.args["user_id"].as_string() == user_id)
        )
    assert count == 1


async def test_each_deletion_step_is_safe_to_repeat(wf_app: FastAPI, users: Users) -> None:
    from backend.users import deletion

    db, storage = wf_app.state.db, wf_app.state.storage
    async with asgi_client(wf_app) as http:
        headers = users.headers()
        user_id = (await http.get("/v1/me", headers=headers)).json()["id"]
        files = {"file": ("a.txt", b"a", "text/plain")}
        upload_id = (await http.post("/v1/uploads", headers=headers, files=files)).json()["id"]
    run_id = await active_run(wf_app, user_id)
    # A crashed attempt removed the object but not its row.
    await storage.delete(upload_id)

    assert await deletion.stop_runs(db, user_id) == 1
    assert await deletion.stop_runs(db, user_id) == 0
    assert await deletion.delete_uploads(db, storage, user_id) == 1
    assert await deletion.delete_uploads(db, storage, user_id) == 0
    assert await deletion.remove_presence(db, user_id) == 0
    async with db.read() as session:
        run = await session.get(Run, run_id)
        assert run is not None
        assert run.status is RunStatus.stopped
        releases = await billing.release(session, run_id)
        assert releases == 0


# --- the CLI -------------------------------------------------------------------------------------


def cli(database_url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return turbokit(
        "workflows",
        *args,
        unset=["REDIS_URL"],
        DATABASE_URL=database_url,
        DATA_DIR=str(data_dir),
        LOG_LEVEL="WARNING",
    )


async def test_cli_lists_shows_and_retries_runs(
    wf_app: FastAPI, database_url: str, data_dir: Path
) -> None:
    key = new_key()
    failures_left[key] = 100
    failed_id = await start(wf_app, "test_three_steps", key)
    await finish_jobs(wf_app)
    # A failed account deletion (of a user with nothing left), to retry from the CLI.
    async with wf_app.state.db.write() as session:
        deletion_id, _ = await service.start(
            session, RecordingJobs(), "delete_account", {"user_id": f"usr_{key}"}
        )
        await session.execute(
            update(WorkflowRun)
            .where(WorkflowRun.id == deletion_id)
            .values(status="failed", error="RuntimeError: storage was down", attempts=3)
        )

    listed = await asyncio.to_thread(cli, database_url, data_dir, "list", "--status", "failed")
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "STATUS", "ATTEMPTS", "CREATED", "ERROR"]
    assert lines[0].startswith(deletion_id)  # newest first
    assert any(line.startswith(failed_id) and "flaky failure" in line for line in lines)
    assert all(" failed " in line for line in lines)

    as_json = await asyncio.to_thread(cli, database_url, data_dir, "list", "--limit", "1", "--json")
    assert as_json.returncode == 0, as_json.stderr
    (newest,) = json.loads(as_json.stdout)
    assert newest["id"] == deletion_id
    assert "lease_owner" not in newest

    shown = await asyncio.to_thread(cli, database_url, data_dir, "show", failed_id)
    assert shown.returncode == 0, shown.stderr
    assert f"id:              {failed_id}" in shown.stdout
    assert "status:          failed" in shown.stdout
    step_lines = [line.split() for line in shown.stdout.splitlines() if line[:2] in ("0 ", "1 ")]
    assert [line[:4] for line in step_lines] == [
        ["0", "first", "completed", "1"],
        ["1", "flaky", "failed", str(RETRIES + 1)],
    ]
    shown_json = await asyncio.to_thread(cli, database_url, data_dir, "show", failed_id, "--json")
    data = json.loads(shown_json.stdout)
    assert [step["name"] for step in data["steps"]] == ["first", "flaky"]
    assert data["steps"][0]["result"] == {"step": "first", "n": 1}

    retried = await asyncio.to_thread(cli, database_url, data_dir, "retry", deletion_id)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip() == f"run {deletion_id}: completed"
    run = await run_row(wf_app, deletion_id)
    assert (run.status, run.error) == ("completed", None)
    assert len(await step_rows(wf_app, deletion_id)) == 4

    again = await asyncio.to_thread(cli, database_url, data_dir, "retry", deletion_id)
    assert again.returncode == 1
    assert "not a failed or stalled run" in again.stderr
    missing = await asyncio.to_thread(cli, database_url, data_dir, "show", "wfr_nope")
    assert missing.returncode == 1
    assert "no run 'wfr_nope'" in missing.stderr
