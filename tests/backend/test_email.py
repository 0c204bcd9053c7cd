"""Email: queued in an outbox, delivered by a job through Resend (a stand-in on loopback, over
real HTTP), retried when Resend fails, kept in the outbox and logged without RESEND_API_KEY."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from backend.app import create_app
from backend.email import service
from backend.email.models import Email
from backend.email.schemas import OutgoingEmail
from backend.jobs import RedisJobs
from backend.jobs.context import use_worker_settings
from config.settings import Settings
from tests.conftest import asgi_client, make_settings
from tests.support.databases import REDIS_URL
from tests.support.jobs import finish_jobs
from tests.support.resend_server import FakeResend, fake_resend
from tests.support.rq_worker import own_queue, work
from tests.support.svix import deliver, new_secret

API_KEY = "re_test_0123456789"
CLERK_SECRET = new_secret()
SENDER = "TurboKit <hello@turbokit.test>"


@pytest.fixture(scope="module")
async def resend_api() -> AsyncIterator[FakeResend]:
    async with fake_resend() as fake:
        yield fake


def email_settings(data_dir: Path, database_url: str, api: FakeResend, **extra: object) -> Settings:
    values: dict[str, object] = {
        "resend_api_key": API_KEY,
        "resend_base_url": api.base_url,
        "email_from": SENDER,
        "clerk_webhook_secret": CLERK_SECRET,
        "job_retries": 2,
        "job_backoff_seconds": 0,
        **extra,
    }
    return make_settings(data_dir, database_url, **values)


@pytest.fixture(scope="module")
async def email_app(
    data_dir: Path, database_url: str, resend_api: FakeResend
) -> AsyncIterator[FastAPI]:
    application = create_app(email_settings(data_dir, database_url, resend_api), migrate=True)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(email_app: FastAPI, resend_api: FakeResend) -> AsyncIterator[httpx.AsyncClient]:
    resend_api.reset()
    async with asgi_client(email_app) as client:
        yield client


def address() -> str:
    return f"reader-{uuid.uuid4().hex}@example.com"


def message(to: str, key: str | None = None) -> OutgoingEmail:
    return OutgoingEmail(
        to=to,
        subject="Your report",
        html="<p>It is ready.</p>",
        text="It is ready.",
        idempotency_key=key or uuid.uuid4().hex,
    )


async def queue(app: FastAPI, outgoing: OutgoingEmail) -> str | None:
    async with app.state.db.write() as session:
        return await service.queue_email(session, app.state.jobs, outgoing)


async def row(app: FastAPI, email_id: str) -> Email:
    async with app.state.db.read() as session:
        email = await session.get(Email, email_id)
    assert email is not None
    return email


async def test_an_email_is_delivered_through_resend(
    email_app: FastAPI, resend_api: FakeResend
) -> None:
    to = address()
    email_id = await queue(email_app, message(to))
    assert email_id is not None
    await finish_jobs(email_app)

    [sent] = resend_api.for_recipient(to)
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.headers["idempotency-key"] == email_id  # Resend dedupes a repeated delivery
    assert sent.body == {
        "from": SENDER,
        "to": [to],
        "subject": "Your report",
        "html": "<p>It is ready.</p>",
        "text": "It is ready.",
    }
    email = await row(email_app, email_id)
    assert email.status == "sent"
    assert email.provider_id == resend_api.ids[email_id]
    assert email.sent_at is not None
    assert (email.attempts, email.error) == (0, None)


async def test_queueing_the_same_key_again_is_a_no_op(
    email_app: FastAPI, resend_api: FakeResend
) -> None:
    to, key = address(), uuid.uuid4().hex
    first = await queue(email_app, message(to, key))
    again = await queue(email_app, message(to, key))
    await finish_jobs(email_app)
    assert first is not None
    assert again is None
    assert len(resend_api.for_recipient(to)) == 1


async def test_a_delivery_job_run_twice_sends_once(
    email_app: FastAPI, resend_api: FakeResend
) -> None:
    """Delivery is at least once: a second run of the job finds the email sent."""
    to = address()
    email_id = await queue(email_app, message(to))
    await finish_jobs(email_app)
    await email_app.state.jobs.enqueue(service.DELIVER_JOB, email_id)
    await finish_jobs(email_app)
    assert len(resend_api.for_recipient(to)) == 1


async def test_a_failure_worth_retrying_is_retried(
    email_app: FastAPI, resend_api: FakeResend
) -> None:
    resend_api.reset((500, "application_error"), (429, "rate_limit_exceeded"))
    to = address()
    email_id = await queue(email_app, message(to))
    assert email_id is not None
    await finish_jobs(email_app)
    assert len(resend_api.for_recipient(to)) == 3
    email = await row(email_app, email_id)
    assert email.status == "sent"
    assert email.attempts == 2
    assert "rate_limit_exceeded" in (email.error or "")


async def test_an_email_fails_for_good_when_its_retries_are_spent(
    email_app: FastAPI, resend_api: FakeResend
) -> None:
    resend_api.reset(*[(503, "application_error")] * 3)
    to = address()
    email_id = await queue(email_app, message(to))
    assert email_id is not None
    await finish_jobs(email_app)
    assert len(resend_api.for_recipient(to)) == 3  # the first attempt and JOB_RETRIES=2
    email = await row(email_app, email_id)
    assert (email.status, email.attempts, email.provider_id) == ("failed", 3, None)
    assert "application_error (503)" in (email.error or "")


async def test_a_refused_email_fails_at_once(email_app: FastAPI, resend_api: FakeResend) -> None:
    resend_api.reset((422, "validation_error"))
    to = address()
    email_id = await queue(email_app, message(to))
    assert email_id is not None
    await finish_jobs(email_app)
    assert len(resend_api.for_recipient(to)) == 1
    email = await row(email_app, email_id)
    assert email.status == "failed"
    assert "validation_error (422)" in (email.error or "")


async def test_a_new_clerk_user_is_welcomed_through_resend(
    email_app: FastAPI, http: httpx.AsyncClient, resend_api: FakeResend
) -> None:
    to = address()
    response = await deliver(http, "/webhooks/clerk", clerk_created(to), CLERK_SECRET)
    assert response.status_code == 200, response.text
    await finish_jobs(email_app)
    [sent] = resend_api.for_recipient(to)
    assert sent.body["subject"] == "Welcome to TurboKit"
    assert "Grace Hopper" in sent.body["text"]


async def test_without_an_api_key_emails_stay_in_the_outbox_and_are_logged(
    data_dir: Path, database_url: str, resend_api: FakeResend, caplog: pytest.LogCaptureFixture
) -> None:
    settings = email_settings(data_dir, database_url, resend_api, resend_api_key=None)
    application = create_app(settings, migrate=True)
    to = address()
    with caplog.at_level(logging.INFO, logger="turbokit.email"):
        async with application.router.lifespan_context(application):
            email_id = await queue(application, message(to))
            assert email_id is not None
            await finish_jobs(application)
            email = await row(application, email_id)
    assert email.status == "logged"
    assert email.provider_id is None
    assert resend_api.for_recipient(to) == []  # nothing left the machine
    assert any(email_id in r.getMessage() and "outbox" in r.getMessage() for r in caplog.records)


async def test_emails_left_queued_are_delivered_when_the_app_starts(
    data_dir: Path, database_url: str, resend_api: FakeResend
) -> None:
    """In-process jobs die with their process; the outbox row does not."""
    settings = email_settings(data_dir, database_url, resend_api)
    stopped = create_app(settings, migrate=True)
    to = address()
    async with stopped.router.lifespan_context(stopped):
        async with stopped.state.db.write() as s:
            s.add(Email(**message(to).model_dump(), status="queued", attempts=0))
    assert resend_api.for_recipient(to) == []

    restarted = create_app(settings, migrate=True)
    async with restarted.router.lifespan_context(restarted):
        await finish_jobs(restarted)
        async with restarted.state.db.read() as session:
            email = await session.scalar(select(Email).where(Email.to == to))
    assert email is not None
    assert email.status == "sent"
    assert len(resend_api.for_recipient(to)) == 1


def clerk_created(to: str) -> dict[str, object]:
    return {
        "type": "user.created",
        "object": "event",
        "data": {
            "id": f"user_{uuid.uuid4().hex}",
            "email_addresses": [{"id": "idn_1", "email_address": to}],
            "primary_email_address_id": "idn_1",
            "first_name": "Grace",
            "last_name": "Hopper",
        },
    }


# --- on Redis -----------------------------------------------------------------------------------


@pytest.fixture
def redis_queue() -> Iterator[str]:
    with own_queue() as name:
        yield name


@pytest.mark.redis
async def test_with_redis_a_worker_delivers_what_the_app_enqueued(
    data_dir: Path, database_url: str, resend_api: FakeResend, redis_queue: str
) -> None:
    settings = email_settings(
        data_dir, database_url, resend_api, redis_url=REDIS_URL, job_queue=redis_queue
    )
    application = create_app(settings, migrate=True)
    to = address()
    async with application.router.lifespan_context(application), asgi_client(application) as http:
        assert isinstance(application.state.jobs, RedisJobs)
        response = await deliver(http, "/webhooks/clerk", clerk_created(to), CLERK_SECRET)
        assert response.status_code == 200, response.text
        await application.state.jobs.settle()
        async with application.state.db.read() as session:
            email = await session.scalar(select(Email).where(Email.to == to))
        assert email is not None
        assert email.status == "queued"  # waiting in Redis for a worker
        assert resend_api.for_recipient(to) == []

        use_worker_settings(settings)
        try:
            await asyncio.to_thread(work, redis_queue)
        finally:
            use_worker_settings(None)
        async with application.state.db.read() as session:
            email = await session.scalar(select(Email).where(Email.to == to))
    assert email is not None
    assert email.status == "sent"
    assert len(resend_api.for_recipient(to)) == 1
