"""Clerk webhooks: Svix-signed user events keep users in step with Clerk, each message once, and a
new user gets one welcome email."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from backend.app import create_app
from backend.billing.models import WebhookEvent
from backend.email.models import Email
from backend.users.models import User
from tests.conftest import Users, asgi_client, make_settings
from tests.support.jobs import finish_jobs
from tests.support.svix import deliver, new_secret, signed_headers

SECRET = new_secret()
PATH = "/webhooks/clerk"


@pytest.fixture(scope="module")
async def clerk_app(data_dir: Path, database_url: str) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        data_dir, database_url, clerk_webhook_secret=SECRET, job_backoff_seconds=0
    )
    application = create_app(settings, migrate=True)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def clerk(clerk_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(clerk_app) as http:
        yield http


def clerk_user(clerk_id: str, **fields: Any) -> dict[str, Any]:
    email_id = f"idn_{uuid.uuid4().hex}"
    return {
        "id": clerk_id,
        "object": "user",
        "email_addresses": [
            {"id": f"idn_{uuid.uuid4().hex}", "email_address": "old@example.com"},
            {"id": email_id, "email_address": fields.pop("email", "ada@example.com")},
        ],
        "primary_email_address_id": email_id,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "image_url": "https://img.clerk.com/ada.png",
        **fields,
    }


def event(type_: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"object": "event", "type": type_, "data": data, "timestamp": 1_700_000_000_000}


def new_clerk_id() -> str:
    return f"user_{uuid.uuid4().hex}"


async def user_row(app: FastAPI, clerk_id: str) -> User | None:
    async with app.state.db.read() as session:
        user: User | None = await session.scalar(select(User).where(User.clerk_id == clerk_id))
        return user


async def welcome_emails(app: FastAPI, user_id: str) -> list[Email]:
    await finish_jobs(app)
    async with app.state.db.read() as session:
        rows = await session.scalars(
            select(Email).where(Email.idempotency_key == f"welcome:{user_id}")
        )
        return list(rows)


async def received(app: FastAPI, message_id: str) -> list[str]:
    async with app.state.db.read() as session:
        rows = await session.scalars(
            select(WebhookEvent.outcome).where(
                WebhookEvent.provider == "clerk", WebhookEvent.event_id == message_id
            )
        )
        return list(rows)


# --- user events --------------------------------------------------------------------------------


async def test_user_created_creates_the_user_and_queues_one_welcome_email(
    clerk_app: FastAPI, clerk: httpx.AsyncClient, users: Users
) -> None:
    clerk_id = new_clerk_id()
    response = await deliver(clerk, PATH, event("user.created", clerk_user(clerk_id)), SECRET)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": True}

    me = await clerk.get("/v1/me", headers=users.headers(clerk_id))
    assert me.status_code == 200, me.text
    body = me.json()
    assert (body["email"], body["name"], body["image_url"]) == (
        "ada@example.com",
        "Ada Lovelace",
        "https://img.clerk.com/ada.png",
    )
    assert body["credits"] > 0  # the plan's monthly grant, as for a user first seen by token
    [welcome] = await welcome_emails(clerk_app, body["id"])
    assert welcome.to == "ada@example.com"
    assert "Welcome" in welcome.subject
    assert "Ada Lovelace" in (welcome.text or "")
    assert welcome.status == "logged"  # no RESEND_API_KEY: kept in the local outbox


async def test_a_repeated_message_takes_effect_once(
    clerk_app: FastAPI, clerk: httpx.AsyncClient
) -> None:
    clerk_id, message_id = new_clerk_id(), f"msg_{uuid.uuid4().hex}"
    created = event("user.created", clerk_user(clerk_id))
    first = await deliver(clerk, PATH, created, SECRET, message_id)
    user = await user_row(clerk_app, clerk_id)
    assert user is not None
    renamed = event("user.created", clerk_user(clerk_id, first_name="Changed"))
    again = await deliver(clerk, PATH, renamed, SECRET, message_id)  # a retry of one message

    assert (first.status_code, again.status_code) == (200, 200)
    after = await user_row(clerk_app, clerk_id)
    assert after is not None
    assert after.name == "Ada Lovelace"
    assert after.updated_at == user.updated_at
    assert await received(clerk_app, message_id) == ["applied"]
    assert len(await welcome_emails(clerk_app, user.id)) == 1


async def test_the_welcome_email_is_sent_once_per_user(
    clerk_app: FastAPI, clerk: httpx.AsyncClient, users: Users
) -> None:
    """Two messages saying the user was created (Clerk sent it twice, or a token created the
    row first) still make one welcome email."""
    clerk_id = new_clerk_id()
    me = await clerk.get("/v1/me", headers=users.headers(clerk_id))  # first seen through a token
    user_id = me.json()["id"]
    for _ in range(2):
        response = await deliver(clerk, PATH, event("user.created", clerk_user(clerk_id)), SECRET)
        assert response.status_code == 200, response.text
    assert len(await welcome_emails(clerk_app, user_id)) == 1
    user = await user_row(clerk_app, clerk_id)
    assert user is not None
    assert user.id == user_id
    assert user.email == "ada@example.com"


async def test_user_updated_changes_email_name_and_image(
    clerk_app: FastAPI, clerk: httpx.AsyncClient, users: Users
) -> None:
    clerk_id = new_clerk_id()
    await deliver(clerk, PATH, event("user.created", clerk_user(clerk_id)), SECRET)
    updated = clerk_user(
        clerk_id, email="countess@example.com", first_name="Augusta", image_url=None
    )
    response = await deliver(clerk, PATH, event("user.updated", updated), SECRET)
    assert response.status_code == 200, response.text
    me = (await clerk.get("/v1/me", headers=users.headers(clerk_id))).json()
    assert (me["email"], me["name"], me["image_url"]) == (
        "countess@example.com",
        "Augusta Lovelace",
        None,
    )
    assert len(await welcome_emails(clerk_app, me["id"])) == 1  # not again on an update


async def test_user_updated_for_an_unknown_user_creates_and_welcomes_it(
    clerk_app: FastAPI, clerk: httpx.AsyncClient
) -> None:
    clerk_id = new_clerk_id()
    data = clerk_user(clerk_id, first_name=None, last_name=None, email="solo@example.com")
    response = await deliver(clerk, PATH, event("user.updated", data), SECRET)
    assert response.status_code == 200, response.text
    user = await user_row(clerk_app, clerk_id)
    assert user is not None
    assert (user.email, user.name) == ("solo@example.com", None)
    [welcome] = await welcome_emails(clerk_app, user.id)
    assert welcome.to == "solo@example.com"


async def test_user_deleted_soft_deletes_and_the_users_tokens_stop_working(
    clerk_app: FastAPI, clerk: httpx.AsyncClient, users: Users
) -> None:
    clerk_id = new_clerk_id()
    headers = users.headers(clerk_id)
    await deliver(clerk, PATH, event("user.created", clerk_user(clerk_id)), SECRET)
    assert (await clerk.get("/v1/me", headers=headers)).status_code == 200

    deleted = {"id": clerk_id, "object": "user", "deleted": True}
    response = await deliver(clerk, PATH, event("user.deleted", deleted), SECRET)
    assert response.status_code == 200, response.text

    user = await user_row(clerk_app, clerk_id)
    assert user is not None
    assert user.deleted_at is not None
    refused = await clerk.get("/v1/me", headers=headers)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "UNAUTHENTICATED"


async def test_a_deletion_delivered_before_the_creation_keeps_the_user_deleted(
    clerk_app: FastAPI, clerk: httpx.AsyncClient, users: Users
) -> None:
    clerk_id = new_clerk_id()
    deleted = {"id": clerk_id, "object": "user", "deleted": True}
    assert (await deliver(clerk, PATH, event("user.deleted", deleted), SECRET)).status_code == 200
    late = await deliver(clerk, PATH, event("user.created", clerk_user(clerk_id)), SECRET)
    assert late.status_code == 200, late.text

    user = await user_row(clerk_app, clerk_id)
    assert user is not None
    assert user.deleted_at is not None
    assert await welcome_emails(clerk_app, user.id) == []
    assert (await clerk.get("/v1/me", headers=users.headers(clerk_id))).status_code == 401


async def test_a_user_without_an_email_address_gets_no_welcome(
    clerk_app: FastAPI, clerk: httpx.AsyncClient
) -> None:
    clerk_id = new_clerk_id()
    data = {**clerk_user(clerk_id), "email_addresses": [], "primary_email_address_id": None}
    assert (await deliver(clerk, PATH, event("user.created", data), SECRET)).status_code == 200
    user = await user_row(clerk_app, clerk_id)
    assert user is not None
    assert user.email is None
    assert await welcome_emails(clerk_app, user.id) == []


async def test_unknown_event_types_are_acknowledged_and_ignored(
    clerk_app: FastAPI, clerk: httpx.AsyncClient
) -> None:
    message_id = f"msg_{uuid.uuid4().hex}"
    session_event = event("session.created", {"id": "sess_1", "user_id": new_clerk_id()})
    response = await deliver(clerk, PATH, session_event, SECRET, message_id)
    assert response.status_code == 200, response.text
    assert await received(clerk_app, message_id) == ["ignored"]


async def test_a_verified_event_that_is_not_a_user_is_refused_and_not_recorded(
    clerk_app: FastAPI, clerk: httpx.AsyncClient
) -> None:
    message_id = f"msg_{uuid.uuid4().hex}"
    response = await deliver(
        clerk, PATH, event("user.created", {"first_name": "X"}), SECRET, message_id
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["data"]["errors"][0]["loc"] == ["body", "data", "id"]
    assert await received(clerk_app, message_id) == []  # a fixed retry can still take effect


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", json.dumps({"type": "user.created"}).encode()],
    ids=["not-json", "not-an-object", "no-data"],
)
async def test_verified_bodies_that_are_not_events_are_422(
    clerk: httpx.AsyncClient, body: bytes
) -> None:
    response = await clerk.post(PATH, content=body, headers=signed_headers(body, SECRET))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


# --- signatures ---------------------------------------------------------------------------------


def _created(clerk_id: str) -> bytes:
    return json.dumps(event("user.created", clerk_user(clerk_id))).encode()


def _tampered(body: bytes) -> dict[str, str]:
    return signed_headers(body.replace(b"Ada", b"Eve"), SECRET)


@pytest.mark.parametrize(
    "make_headers",
    [
        pytest.param(lambda body: {}, id="missing"),
        pytest.param(lambda body: signed_headers(body, new_secret()), id="other-secret"),
        pytest.param(_tampered, id="other-body"),
        pytest.param(
            lambda body: signed_headers(body, SECRET, age=timedelta(minutes=6)), id="stale"
        ),
        pytest.param(
            lambda body: signed_headers(body, SECRET, age=-timedelta(minutes=6)), id="future"
        ),
        pytest.param(
            lambda body: {**signed_headers(body, SECRET), "svix-signature": "v1"}, id="no-comma"
        ),
        pytest.param(
            lambda body: {**signed_headers(body, SECRET), "svix-signature": "v1,!!!"},
            id="not-base64",
        ),
        pytest.param(
            lambda body: {**signed_headers(body, SECRET), "svix-timestamp": "soon"},
            id="bad-timestamp",
        ),
        pytest.param(
            lambda body: {**signed_headers(body, SECRET), "svix-id": "x" * 300}, id="long-id"
        ),
    ],
)
async def test_a_bad_signature_is_400_and_changes_nothing(
    clerk_app: FastAPI, clerk: httpx.AsyncClient, make_headers: Any
) -> None:
    clerk_id = new_clerk_id()
    body = _created(clerk_id)
    response = await clerk.post(PATH, content=body, headers=make_headers(body))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_SIGNATURE"
    assert await user_row(clerk_app, clerk_id) is None


async def test_a_body_that_is_not_utf8_is_refused_as_unsigned(clerk: httpx.AsyncClient) -> None:
    body = b"\xff\xfe{}"
    headers = signed_headers(b"{}", SECRET)
    response = await clerk.post(PATH, content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_SIGNATURE"


async def test_without_a_secret_the_webhook_is_refused_and_nothing_is_read(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    assert app.state.settings.clerk_webhook_secret is None
    clerk_id = new_clerk_id()
    body = _created(clerk_id)
    response = await client.post(PATH, content=body, headers=signed_headers(body, SECRET))
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "NOT_CONFIGURED"
    assert "CLERK_WEBHOOK_SECRET" in error["message"]
    assert await user_row(app, clerk_id) is None


async def test_a_secret_that_is_not_a_svix_secret_is_a_configuration_error(
    data_dir: Path, database_url: str
) -> None:
    settings = make_settings(data_dir, database_url, clerk_webhook_secret="whsec_%%%")
    application = create_app(settings, migrate=True)
    async with application.router.lifespan_context(application), asgi_client(application) as http:
        body = _created(new_clerk_id())
        response = await http.post(PATH, content=body, headers=signed_headers(body, SECRET))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "NOT_CONFIGURED"


async def test_webhook_rows_count_once_per_message(
    clerk_app: FastAPI, clerk: httpx.AsyncClient
) -> None:
    message_id = f"msg_{uuid.uuid4().hex}"
    created = event("user.created", clerk_user(new_clerk_id()))
    for _ in range(3):
        assert (await deliver(clerk, PATH, created, SECRET, message_id)).status_code == 200
    async with clerk_app.state.db.read() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(WebhookEvent)
            .where(WebhookEvent.event_id == message_id)
        )
    assert count == 1
