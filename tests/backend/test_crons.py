"""Crons: each due tick runs once however many schedulers see it, a missed window runs once, a
failing cron is recorded and the others go on; the product's crons clean up what dead processes
and silent clients leave; `turbokit crons`; the schedule runs on rq with Redis."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from backend.billing import service as billing
from backend.crons import CRONS, Cron, Scheduler, find, next_due
from backend.crons import service as cron_service
from backend.crons.models import CronState
from backend.crons.scheduler import RUN_JOB
from backend.email.models import Email
from backend.jobs import JobContext, LocalJobs, RedisJobs, RetryPolicy
from backend.jobs.context import use_worker_settings
from backend.presence.models import Presence
from backend.users.models import User
from config.database import Database
from tests.conftest import Users
from tests.support import cli
from tests.support import crons as cron_jobs
from tests.support.databases import REDIS_URL
from tests.support.rq_worker import own_queue, work
from threads import store

COUNT = "tests.support.crons.count"
FAIL = "tests.support.crons.fail"
T0 = datetime(2031, 1, 1, 12, 0, tzinfo=UTC)
"""The injected clock starts far after any real time, so rows of earlier runs never interfere."""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def local(app: FastAPI) -> AsyncIterator[LocalJobs]:
    runner = LocalJobs(JobContext(app.state.settings, app.state.db), RetryPolicy(0, 0))
    await runner.start()
    yield runner
    await runner.stop()


async def state(app: FastAPI, name: str) -> CronState:
    async with app.state.db.read() as session:
        row = await session.get(CronState, name)
    assert row is not None
    return row


async def run_now(app: FastAPI, local: LocalJobs, name: str) -> CronState:
    """Run a product cron as the scheduler would (through the job runner) and return its row."""
    cron = find(name)
    assert cron is not None
    await local.enqueue(RUN_JOB, cron.name, cron.job)
    await local.wait_idle()
    async with app.state.db.read() as session:
        row = await session.get(CronState, name)
    assert row is not None
    assert row.last_status == "ok", row.last_result
    return row


@pytest.fixture(autouse=True)
async def registered(app: FastAPI) -> None:
    """The product's crons have their rows (as a server's first tick makes them)."""
    await cron_service.register(app.state.db, CRONS, datetime.now(UTC))


# --- schedules -----------------------------------------------------------------------------------


def test_a_schedule_is_an_interval_or_a_utc_cron_expression() -> None:
    every = Cron("every", timedelta(minutes=5), COUNT)
    hourly = Cron("hourly", "17 * * * *", COUNT)
    at = datetime(2030, 5, 1, 10, 20, tzinfo=UTC)
    assert next_due(every, at) == at + timedelta(minutes=5)
    assert next_due(hourly, at) == datetime(2030, 5, 1, 11, 17, tzinfo=UTC)
    assert (every.schedule_text, hourly.schedule_text) == ("every 300s", "17 * * * *")
    with pytest.raises(ValueError, match="not a cron expression"):
        Cron("bad", "every tuesday", COUNT)
    with pytest.raises(ValueError, match="positive"):
        Cron("bad", timedelta(0), COUNT)
    with pytest.raises(ValueError, match="async job function"):
        Cron("bad", timedelta(minutes=1), "tests.support.crons.nothing_here").check()


# --- claiming ------------------------------------------------------------------------------------


async def test_a_due_cron_runs_once_when_two_schedulers_tick_together(
    app: FastAPI, local: LocalJobs
) -> None:
    """Two servers on one database: each has its own engine and scheduler; one claim wins."""
    cron = Cron(unique("both"), timedelta(minutes=1), COUNT)
    other_db = Database(app.state.settings)
    other_jobs = LocalJobs(JobContext(app.state.settings, other_db), RetryPolicy(0, 0))
    await other_jobs.start()
    clock = Clock(T0)
    one = Scheduler(app.state.db, local, 1, (cron,), clock)
    two = Scheduler(other_db, other_jobs, 1, (cron,), clock)
    before = cron_jobs.runs["count"]
    try:
        await one.tick()  # registers the cron, and runs its first tick
        await local.wait_idle()
        clock.now = T0 + timedelta(minutes=1)
        for _ in range(3):
            claims = await asyncio.gather(one.tick(), two.tick())
            assert sorted(len(c) for c in claims) == [0, 1]
            clock.now += timedelta(minutes=1)
        await local.wait_idle()
        await other_jobs.wait_idle()
    finally:
        await other_jobs.stop()
        await other_db.dispose()
    assert cron_jobs.runs["count"] - before == 4  # the first tick and three contested ones
    row = await state(app, cron.name)
    assert row.last_status == "ok"
    assert row.next_due_at == T0 + timedelta(minutes=4)


async def test_missed_ticks_run_once_not_as_a_burst(app: FastAPI, local: LocalJobs) -> None:
    cron = Cron(unique("missed"), timedelta(minutes=1), COUNT)
    clock = Clock(T0)
    scheduler = Scheduler(app.state.db, local, 1, (cron,), clock)
    assert await scheduler.tick() == [cron.name]
    assert await scheduler.tick() == []  # not due again until a minute later

    clock.now = T0 + timedelta(hours=3)  # nothing ran for 180 ticks
    assert await scheduler.tick() == [cron.name]
    assert await scheduler.tick() == []
    assert (await state(app, cron.name)).next_due_at == clock.now + timedelta(minutes=1)


async def test_a_changed_schedule_takes_effect(app: FastAPI, local: LocalJobs) -> None:
    name = unique("changed")
    clock = Clock(T0)
    every = Cron(name, timedelta(minutes=1), COUNT)
    await Scheduler(app.state.db, local, 1, (every,), clock).tick()
    hourly = Cron(name, "0 * * * *", COUNT)
    assert await Scheduler(app.state.db, local, 1, (hourly,), clock).tick() == []
    row = await state(app, name)
    assert (row.schedule, row.next_due_at) == ("0 * * * *", T0 + timedelta(hours=1))


async def test_a_failing_cron_is_logged_and_recorded_and_the_others_still_run(
    app: FastAPI, local: LocalJobs, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Cron(unique("broken"), timedelta(minutes=1), FAIL)
    fine = Cron(unique("fine"), timedelta(minutes=1), COUNT)
    clock = Clock(T0)
    scheduler = Scheduler(app.state.db, local, 1, (broken, fine), clock)
    with caplog.at_level("INFO", logger="turbokit.crons"):
        assert await scheduler.tick() == [broken.name, fine.name]
        await local.wait_idle()
        clock.now += timedelta(minutes=1)
        assert await scheduler.tick() == [broken.name, fine.name]  # still scheduled
        await local.wait_idle()
    failed, ok = await state(app, broken.name), await state(app, fine.name)
    assert (failed.last_status, failed.last_result) == ("failed", "RuntimeError: the cron broke")
    assert ok.last_status == "ok"
    assert ok.last_duration_ms is not None
    assert ok.last_started_at is not None
    messages = [r.getMessage() for r in caplog.records]
    assert f"cron {broken.name} failed" in messages
    assert any(m.startswith(f"cron {fine.name} ran in ") for m in messages)


async def test_the_server_runs_the_scheduler_unless_crons_are_disabled(app: FastAPI) -> None:
    from backend.app import create_app

    assert app.state.settings.crons_enabled is False
    assert app.state.crons._task is None
    enabled = create_app(app.state.settings.model_copy(update={"crons_enabled": True}))
    async with enabled.router.lifespan_context(enabled):
        assert enabled.state.crons._task is not None
        assert not enabled.state.crons._task.done()


# --- the product's crons -------------------------------------------------------------------------


async def me(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await client.get("/v1/me", headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


async def test_an_abandoned_run_is_ended_and_its_reservation_released(
    app: FastAPI, client: httpx.AsyncClient, users: Users, local: LocalJobs
) -> None:
    user_id = await me(client, users.headers())
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    async with app.state.db.write() as session:
        before = await billing.balance(session, user_id)
        thread = await store.create_thread(session, user_id)
        dead = await store.create_run(
            session, thread_id=thread.id, user_id=user_id, agent="assistant", model="m"
        )
        await store.mark_run_running(session, dead.id)
        dead.created_at = dead.started_at = long_ago
        user = await session.get(User, user_id)
        assert user is not None
        await billing.reserve(session, user, dead.id)
        live_thread = await store.create_thread(session, user_id)
        live = await store.create_run(
            session, thread_id=live_thread.id, user_id=user_id, agent="assistant", model="m"
        )
        await store.mark_run_running(session, live.id)
    async with app.state.db.read() as session:
        assert await billing.balance(session, user_id) < before

    row = await run_now(app, local, "end-abandoned-runs")

    assert row.last_result is not None
    assert row.last_result.startswith("ended ")
    async with app.state.db.read() as session:
        ended = await store.get_run(session, dead.id)
        running = await store.get_run(session, live.id)
        assert await billing.balance(session, user_id) == before
    assert ended is not None
    assert running is not None
    assert (ended.status, ended.error) == (
        "failed",
        {"code": "INTERRUPTED", "message": "The server stopped during the run"},
    )
    assert running.status == "running"  # recent: its process may well be alive


async def test_an_email_stuck_in_the_outbox_is_delivered(app: FastAPI, local: LocalJobs) -> None:
    old = datetime.now(UTC) - timedelta(minutes=10)
    stuck, fresh = Email(**_email(), created_at=old, updated_at=old), Email(**_email())
    async with app.state.db.write() as session:
        session.add_all([stuck, fresh])

    await run_now(app, local, "deliver-stuck-emails")

    async with app.state.db.read() as session:
        statuses = {
            e.id: e.status
            for e in await session.scalars(select(Email).where(Email.id.in_([stuck.id, fresh.id])))
        }
    # No RESEND_API_KEY: delivery keeps it in the local outbox as `logged`. The fresh one may
    # still have its own delivery job on the way: left alone.
    assert statuses == {stuck.id: "logged", fresh.id: "queued"}


def _email() -> dict[str, str]:
    return {
        "to": f"{uuid.uuid4().hex}@example.com",
        "subject": "Hi",
        "text": "Hi",
        "status": "queued",
        "idempotency_key": uuid.uuid4().hex,
    }


async def test_a_stale_presence_row_is_pruned_with_its_left_event(
    app: FastAPI, client: httpx.AsyncClient, users: Users, local: LocalJobs
) -> None:
    room = unique("room")
    ada, bob = users.headers(name="Ada"), users.headers(name="Bob")
    for who, tab in ((ada, "tab"), (bob, "desk")):
        path = f"/v1/presence/{room}/heartbeat"
        beat = await client.post(path, headers=who, json={"session_id": tab})
        assert beat.status_code == 200, beat.text
    ada_id = await me(client, ada)
    async with app.state.db.write() as session:
        await session.execute(
            update(Presence)
            .where(Presence.room == room, Presence.user_id == ada_id)
            .values(last_seen=datetime.now(UTC) - timedelta(minutes=5))
        )

    async with app.state.events.subscribe([f"presence:{room}"]) as subscription:
        await run_now(app, local, "prune-presence")
        message = await subscription.next(5)

    assert message is not None
    data = next(line for line in message.decode().splitlines() if line.startswith("data: "))
    event = json.loads(data.removeprefix("data: "))
    assert (event["type"], event["data"]) == (
        "left",
        {"user_id": ada_id, "session_id": "tab", "reason": "timeout"},
    )
    async with app.state.db.read() as session:
        left = list(await session.scalars(select(Presence.session_id).where(Presence.room == room)))
    assert left == ["desk"]


async def test_leftover_upload_staging_files_are_deleted_after_an_hour(
    app: FastAPI, local: LocalJobs
) -> None:
    staging: Path = app.state.storage.staging_dir()
    old, recent = staging / unique("recv"), staging / unique("recv")
    old.write_bytes(b"half an upload")
    recent.write_bytes(b"an upload in progress")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))

    await run_now(app, local, "clean-upload-staging")

    assert not old.exists()
    assert recent.exists()
    recent.unlink()


# --- turbokit crons ------------------------------------------------------------------------------


def turbokit(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The command without Redis unless `env` gives one."""
    return cli.turbokit(*args, **{"REDIS_URL": "", **env})


async def test_turbokit_crons_lists_and_runs_them(app: FastAPI, tmp_path: Path) -> None:
    env = {"DATABASE_URL": app.state.settings.resolved_database_url, "DATA_DIR": str(tmp_path)}
    ran = await asyncio.to_thread(turbokit, "crons", "run", "prune-presence", **env)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("prune-presence: pruned ")

    listed = await asyncio.to_thread(turbokit, "crons", "list", **env)
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert set(lines) == {cron.name for cron in CRONS}
    assert "every 60s" in lines["prune-presence"]
    assert "ok: pruned " in lines["prune-presence"]
    assert "17 * * * *" in lines["clean-upload-staging"]

    unknown = await asyncio.to_thread(turbokit, "crons", "run", "nope", **env)
    assert unknown.returncode == 2
    assert "no cron named 'nope'" in unknown.stderr
    assert "prune-presence" in unknown.stderr


# --- rq on Redis ---------------------------------------------------------------------------------


@pytest.fixture
def redis_queue() -> Iterator[str]:
    with own_queue() as name:
        yield name


@pytest.mark.redis
async def test_with_redis_the_schedule_enqueues_onto_rq_and_a_worker_runs_it(
    app: FastAPI, redis_queue: str
) -> None:
    settings = app.state.settings.model_copy(update={"redis_url": REDIS_URL})
    jobs = RedisJobs(REDIS_URL, redis_queue, RetryPolicy(0, 0))
    cron = Cron(unique("rq"), timedelta(minutes=1), COUNT)
    scheduler = Scheduler(app.state.db, jobs, 1, (cron,), Clock(T0))
    before = cron_jobs.runs["count"]
    use_worker_settings(settings)
    try:
        assert await scheduler.tick() == [cron.name]
        assert jobs.queue.count == 1
        assert cron_jobs.runs["count"] == before  # nothing runs until a worker takes it
        assert (await state(app, cron.name)).last_status == "queued"
        await asyncio.to_thread(work, redis_queue)
    finally:
        use_worker_settings(None)
        await jobs.stop()
    assert cron_jobs.runs["count"] == before + 1
    row = await state(app, cron.name)
    assert (row.last_status, row.last_result) == ("ok", f"run {before + 1}")
