"""Resend webhooks: Svix-signed delivery events move a sent email's status forward, each message
once; events about emails we do not know are acknowledged and ignored."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from backend.app import create_app
from backend.billing.models import WebhookEvent
from backend.email.models import Email
from config.database import utcnow
from config.ids import new_id
from tests.conftest import asgi_client, make_settings
from tests.support.svix import deliver, new_secret, signed_headers

SECRET = new_secret()
PATH = "/webhooks/resend"


@pytest.fixture(scope="module")
async def resend_app(data_dir: Path, database_url: str) -> AsyncIterator[FastAPI]:
    settings = make_settings(data_dir, database_url, resend_webhook_secret=SECRET)
    application = create_app(settings, migrate=True)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def resend(resend_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(resend_app) as http:
        yield http


async def sent_email(app: FastAPI) -> str:
    """An email Resend accepted; returns Resend's id for it."""
    provider_id = str(uuid.uuid4())
    now = utcnow()
    async with app.state.db.write() as session:
        session.add(
            Email(
                id=new_id("eml"),
                to="reader@example.com",
                subject="Hello",
                text="Hi",
                status="sent",
                provider_id=provider_id,
                idempotency_key=f"test:{provider_id}",
                attempts=0,
                created_at=now,
                updated_at=now,
                sent_at=now,
            )
        )
    return provider_id


async def status(app: FastAPI, provider_id: str) -> str:
    async with app.state.db.read() as session:
        value = await session.scalar(select(Email.status).where(Email.provider_id == provider_id))
    assert value is not None
    return value


def event(type_: str, provider_id: str | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "created_at": "2026-01-01T00:00:00.000Z",
        "from": "TurboKit <noreply@example.com>",
        "to": ["reader@example.com"],
        "subject": "Hello",
    }
    if provider_id is not None:
        data["email_id"] = provider_id
    return {"type": type_, "created_at": "2026-01-01T00:00:01.000Z", "data": data}


async def outcome(app: FastAPI, message_id: str) -> list[str]:
    async with app.state.db.read() as session:
        rows = await session.scalars(
            select(WebhookEvent.outcome).where(
                WebhookEvent.provider == "resend", WebhookEvent.event_id == message_id
            )
        )
        return list(rows)


@pytest.mark.parametrize(
    ("type_", "expected"),
    [
        ("email.delivered", "delivered"),
        ("email.delivery_delayed", "delivery_delayed"),
        ("email.bounced", "bounced"),
        ("email.complained", "complained"),
        ("email.failed", "failed"),
        ("email.suppressed", "suppressed"),
    ],
)
async def test_delivery_events_set_the_emails_status(
    resend_app: FastAPI, resend: httpx.AsyncClient, type_: str, expected: str
) -> None:
    provider_id = await sent_email(resend_app)
    response = await deliver(resend, PATH, event(type_, provider_id), SECRET)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": True}
    assert await status(resend_app, provider_id) == expected


async def test_a_status_only_moves_forward_when_events_arrive_out_of_order(
    resend_app: FastAPI, resend: httpx.AsyncClient
) -> None:
    provider_id = await sent_email(resend_app)
    for type_ in ("email.delivered", "email.sent", "email.delivery_delayed"):
        assert (await deliver(resend, PATH, event(type_, provider_id), SECRET)).status_code == 200
    assert await status(resend_app, provider_id) == "delivered"
    await deliver(resend, PATH, event("email.complained", provider_id), SECRET)
    assert await status(resend_app, provider_id) == "complained"


async def test_a_repeated_message_takes_effect_once(
    resend_app: FastAPI, resend: httpx.AsyncClient
) -> None:
    provider_id, message_id = await sent_email(resend_app), f"msg_{uuid.uuid4().hex}"
    first = await deliver(
        resend, PATH, event("email.delivery_delayed", provider_id), SECRET, message_id
    )
    # The same message id again, even with another body, is the same message: no effect.
    again = await deliver(resend, PATH, event("email.bounced", provider_id), SECRET, message_id)
    assert (first.status_code, again.status_code) == (200, 200)
    assert await status(resend_app, provider_id) == "delivery_delayed"
    assert await outcome(resend_app, message_id) == ["applied"]


@pytest.mark.parametrize(
    "payload",
    [
        event("email.delivered", "00000000-0000-0000-0000-000000000000"),
        event("email.delivered", None),
        {"type": "email.delivered", "data": {"email_id": 42}},
    ],
    ids=["unknown-id", "no-id", "id-not-text"],
)
async def test_events_about_unknown_emails_are_acknowledged_and_ignored(
    resend_app: FastAPI, resend: httpx.AsyncClient, payload: dict[str, Any]
) -> None:
    message_id = f"msg_{uuid.uuid4().hex}"
    response = await deliver(resend, PATH, payload, SECRET, message_id)
    assert response.status_code == 200, response.text
    assert await outcome(resend_app, message_id) == ["ignored"]


@pytest.mark.parametrize("type_", ["email.opened", "email.clicked", "contact.created"])
async def test_other_event_types_change_nothing(
    resend_app: FastAPI, resend: httpx.AsyncClient, type_: str
) -> None:
    provider_id, message_id = await sent_email(resend_app), f"msg_{uuid.uuid4().hex}"
    response = await deliver(resend, PATH, event(type_, provider_id), SECRET, message_id)
    assert response.status_code == 200, response.text
    assert await status(resend_app, provider_id) == "sent"
    assert await outcome(resend_app, message_id) == ["ignored"]


@pytest.mark.parametrize(
    "age", [timedelta(minutes=6), -timedelta(minutes=6)], ids=["stale", "future"]
)
async def test_a_signature_outside_the_tolerance_is_400(
    resend_app: FastAPI, resend: httpx.AsyncClient, age: timedelta
) -> None:
    provider_id = await sent_email(resend_app)
    body = httpx.Request("POST", "/", json=event("email.bounced", provider_id)).content
    response = await resend.post(PATH, content=body, headers=signed_headers(body, SECRET, age=age))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_SIGNATURE"
    assert await status(resend_app, provider_id) == "sent"


async def test_a_wrong_or_missing_signature_is_400(
    resend_app: FastAPI, resend: httpx.AsyncClient
) -> None:
    provider_id = await sent_email(resend_app)
    body = httpx.Request("POST", "/", json=event("email.bounced", provider_id)).content
    for headers in (signed_headers(body, new_secret()), {"content-type": "application/json"}):
        response = await resend.post(PATH, content=body, headers=headers)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "INVALID_SIGNATURE"
    assert await status(resend_app, provider_id) == "sent"


async def test_without_a_secret_the_webhook_is_refused(client: httpx.AsyncClient) -> None:
    body = httpx.Request("POST", "/", json=event("email.delivered", str(uuid.uuid4()))).content
    response = await client.post(PATH, content=body, headers=signed_headers(body, SECRET))
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "NOT_CONFIGURED"
    assert "RESEND_WEBHOOK_SECRET" in error["message"]
