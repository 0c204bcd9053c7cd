"""Background jobs: the in-process runner and rq on a real Redis run the same job functions,
with the same retry policy; jobs queued in a transaction run only once it commits."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from rq import Queue
from sqlalchemy import select

from backend.email import service as email_service
from backend.email.models import Email
from backend.email.schemas import OutgoingEmail
from backend.jobs import JobContext, LocalJobs, RedisJobs, RetryPolicy, make_jobs
from backend.jobs.context import use_worker_settings
from tests.support import jobs as test_jobs
from tests.support.cli import turbokit
from tests.support.databases import REDIS_URL
from tests.support.rq_worker import own_queue, work

FLAKY = "tests.support.jobs.flaky"
QUERY = "tests.support.jobs.query_database"


def key() -> str:
    return uuid.uuid4().hex


@pytest.fixture
async def local(app: FastAPI) -> AsyncIterator[LocalJobs]:
    """An in-process runner on the app's database, retrying at once."""
    runner = LocalJobs(JobContext(app.state.settings, app.state.db), RetryPolicy(2, 0))
    await runner.start()
    yield runner
    await runner.stop()


# --- the policy -----------------------------------------------------------------------------------


def test_retries_back_off_four_times_longer_each_time() -> None:
    policy = RetryPolicy(retries=3, first_delay=10)
    assert [policy.delay(n) for n in (1, 2, 3)] == [10, 40, 160]
    assert policy.delays == [10, 40, 160]
    assert RetryPolicy(2, 0.1).delays == [1, 1]  # rq takes whole seconds: rounded up
    assert RetryPolicy(0, 10).delays == []


# --- the in-process runner ------------------------------------------------------------


async def test_the_app_runs_jobs_in_process_without_redis(app: FastAPI) -> None:
    assert app.state.settings.redis_url is None
    assert isinstance(app.state.jobs, LocalJobs)


async def test_a_failing_job_runs_again_until_it_succeeds(local: LocalJobs) -> None:
    name = key()
    await local.enqueue(FLAKY, name, 2)
    await local.wait_idle()
    assert test_jobs.attempts[name] == 3


async def test_a_job_that_keeps_failing_stops_after_its_retries_and_is_logged(
    local: LocalJobs, caplog: pytest.LogCaptureFixture
) -> None:
    name = key()
    with caplog.at_level(logging.WARNING, logger="turbokit.jobs"):
        await local.enqueue(FLAKY, name, 99)
        await local.wait_idle()
    assert test_jobs.attempts[name] == 3  # the first run and two retries
    final = [r for r in caplog.records if "failed for good" in r.getMessage()]
    assert len(final) == 1
    assert name in final[0].getMessage()
    assert final[0].exc_info is not None


async def test_a_retry_waits_its_backoff(app: FastAPI) -> None:
    runner = LocalJobs(JobContext(app.state.settings, app.state.db), RetryPolicy(1, 0.2))
    await runner.start()
    name = key()
    try:
        started = time.monotonic()
        await runner.enqueue(FLAKY, name, 1)
        await runner.wait_idle()
        elapsed = time.monotonic() - started
    finally:
        await runner.stop()
    assert test_jobs.attempts[name] == 2
    assert elapsed >= 0.2


async def test_jobs_open_what_they_need_through_the_job_context(local: LocalJobs) -> None:
    name = key()
    await local.enqueue(QUERY, name)
    await local.wait_idle()
    assert test_jobs.answers[name] == 42


async def test_a_job_queued_in_a_transaction_runs_only_once_it_commits(
    app: FastAPI, local: LocalJobs
) -> None:
    committed, rolled_back = key(), key()

    async def abandoned() -> None:
        async with app.state.db.write() as session:
            local.enqueue_after_commit(session, FLAKY, rolled_back, 0)
            raise RuntimeError("abandon the transaction")

    with pytest.raises(RuntimeError, match="abandon"):
        await abandoned()
    async with app.state.db.write() as session:
        local.enqueue_after_commit(session, FLAKY, committed, 0)
        await local.wait_idle()
        assert test_jobs.attempts[committed] == 0  # not before the commit
    await local.wait_idle()
    assert test_jobs.attempts[committed] == 1
    assert test_jobs.attempts[rolled_back] == 0


@pytest.mark.parametrize(
    "path",
    [
        "tests.support.jobs.missing",
        "tests.support.jobs.not_async",
        "tests.support.no_such_module.job",
        "flaky",
    ],
)
async def test_only_async_functions_named_by_import_path_are_jobs(
    local: LocalJobs, path: str
) -> None:
    with pytest.raises(ValueError, match=r"job function|no module"):
        await local.enqueue(path, "x")


async def test_stopping_the_runner_reports_jobs_it_did_not_run(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    runner = LocalJobs(JobContext(app.state.settings, app.state.db), RetryPolicy(1, 60))
    await runner.start()
    name = key()
    await runner.enqueue(FLAKY, name, 1)
    await test_jobs.ran[name].wait()  # the first run fails; its retry waits a minute
    with caplog.at_level(logging.WARNING, logger="turbokit.jobs"):
        await runner.stop()
    assert test_jobs.attempts[name] == 1
    assert any("not run" in r.getMessage() for r in caplog.records)


# --- rq on Redis ----------------------------------------------------------------------


@pytest.fixture
def redis_queue() -> Iterator[str]:
    with own_queue() as name:
        yield name


@pytest.mark.redis
async def test_rq_runs_the_same_jobs_with_the_same_retries(redis_queue: str) -> None:
    jobs = RedisJobs(REDIS_URL, redis_queue, RetryPolicy(2, 0))
    flaky, failing = key(), key()
    try:
        await jobs.enqueue(FLAKY, flaky, 1)
        await jobs.enqueue(FLAKY, failing, 99)
        assert test_jobs.attempts[flaky] == 0  # nothing runs until a worker takes it
        await asyncio.to_thread(work, redis_queue)
    finally:
        await jobs.stop()
    assert test_jobs.attempts[flaky] == 2
    assert test_jobs.attempts[failing] == 3


@pytest.mark.redis
async def test_rq_jobs_build_their_own_context_from_the_worker_settings(
    app: FastAPI, redis_queue: str
) -> None:
    settings = app.state.settings.model_copy(update={"redis_url": REDIS_URL})
    jobs = make_jobs(settings, app.state.db)
    assert isinstance(jobs, RedisJobs)
    jobs.queue = Queue(redis_queue, connection=jobs.connection)
    name = key()
    use_worker_settings(settings)
    try:
        await jobs.enqueue(QUERY, name)
        await asyncio.to_thread(work, redis_queue)
    finally:
        use_worker_settings(None)
        await jobs.stop()
    assert test_jobs.answers[name] == 42


# --- turbokit worker ----------------------------------------------------------------------------


def test_the_worker_needs_redis_url_and_says_so(tmp_path: Path) -> None:
    result = turbokit("worker", REDIS_URL="", DATA_DIR=str(tmp_path))
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.redis
async def test_turbokit_worker_runs_what_the_app_enqueued(
    app: FastAPI, redis_queue: str, tmp_path: Path
) -> None:
    """The real command, in its own process: it finds the job on Redis and delivers the email
    (kept in the outbox: no RESEND_API_KEY)."""
    settings = app.state.settings.model_copy(
        update={"redis_url": REDIS_URL, "job_queue": redis_queue}
    )
    jobs = make_jobs(settings, app.state.db)
    to = f"{key()}@example.com"
    outgoing = OutgoingEmail(to=to, subject="Hi", text="Hi", idempotency_key=key())
    async with app.state.db.write() as session:
        email_id = await email_service.queue_email(session, jobs, outgoing)
    await jobs.stop()
    assert email_id is not None

    result = await asyncio.to_thread(
        turbokit,
        "worker",
        "--burst",
        REDIS_URL=REDIS_URL,
        JOB_QUEUE=redis_queue,
        DATABASE_URL=settings.resolved_database_url,
        DATA_DIR=str(tmp_path),
        RESEND_API_KEY="",
    )
    assert result.returncode == 0, result.stderr
    async with app.state.db.read() as session:
        status = await session.scalar(select(Email.status).where(Email.id == email_id))
    assert status == "logged"
