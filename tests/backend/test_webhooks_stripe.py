"""Stripe webhooks: signed with a real HMAC over the raw body; each event id takes effect once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from backend.app import create_app
from backend.billing.models import LedgerEntry, WebhookEvent
from backend.billing.plans import plan_for
from tests.conftest import Users, asgi_client, make_settings

SECRET = "whsec_test_3f9a1c0b7e2d4a6f8b1c3e5d7f9a2b4c"


@pytest.fixture(scope="module")
async def stripe_app(data_dir: Path, database_url: str) -> AsyncIterator[FastAPI]:
    settings = make_settings(data_dir, database_url, stripe_webhook_secret=SECRET)
    application = create_app(settings, migrate=True)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def stripe(stripe_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(stripe_app) as http:
        yield http


def signature(body: bytes, timestamp: int, secret: str = SECRET) -> str:
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signed_header(body: bytes, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={signature(body, timestamp)}"


def event(type_: str, obj: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": type_,
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": obj},
    }


def checkout(user_id: str, **metadata: Any) -> dict[str, Any]:
    return event(
        "checkout.session.completed",
        {
            "id": f"cs_test_{uuid.uuid4().hex}",
            "object": "checkout.session",
            "client_reference_id": user_id,
            "payment_status": "paid",
            "metadata": metadata,
        },
    )


def subscription(type_: str, user_id: str, **metadata: Any) -> dict[str, Any]:
    return event(
        type_,
        {
            "id": f"sub_{uuid.uuid4().hex}",
            "object": "subscription",
            "status": "active",
            "metadata": {"user_id": user_id, **metadata},
        },
    )


async def post(http: httpx.AsyncClient, body: bytes, header: str | None = "sign") -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if header == "sign":
        headers["Stripe-Signature"] = signed_header(body)
    elif header is not None:
        headers["Stripe-Signature"] = header
    return await http.post("/webhooks/stripe", content=body, headers=headers)


async def deliver(http: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response:
    return await post(http, json.dumps(payload).encode())


async def new_user(http: httpx.AsyncClient, users: Users) -> tuple[dict[str, str], str]:
    headers = users.headers()
    response = await http.get("/v1/me", headers=headers)
    assert response.status_code == 200, response.text
    return headers, response.json()["id"]


async def billing(http: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await http.get("/v1/billing", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def ledger_rows(app: FastAPI, key: str) -> int:
    async with app.state.db.read() as session:
        count = await session.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.idempotency_key == key)
        )
    return int(count or 0)


async def recorded(app: FastAPI, event_id: str) -> list[tuple[str, str]]:
    async with app.state.db.read() as session:
        rows = await session.execute(
            select(WebhookEvent.type, WebhookEvent.outcome).where(
                WebhookEvent.provider == "stripe", WebhookEvent.event_id == event_id
            )
        )
    return [(row.type, row.outcome) for row in rows]


def next_month() -> int:
    """Unix seconds on the first of next month (UTC): an invoice of the next period."""
    first = datetime.now(UTC).replace(day=1, hour=12, minute=0, second=0, microsecond=0)
    return int((first + timedelta(days=32)).replace(day=1).timestamp())


def assert_ok(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.json() == {"received": True}


def assert_invalid_signature(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "INVALID_SIGNATURE"
    assert set(error) == {"code", "message", "data"}


# --- taking effect once ---------------------------------------------------------------------------


async def test_checkout_adds_credits_once_over_sequential_and_concurrent_repeats(
    stripe: httpx.AsyncClient, stripe_app: FastAPI, users: Users
) -> None:
    headers, user_id = await new_user(stripe, users)
    start = (await billing(stripe, headers))["credits"]
    sequential, concurrent = checkout(user_id, credits="1500"), checkout(user_id, credits=700)

    for _ in range(3):
        assert_ok(await deliver(stripe, sequential))
    for response in await asyncio.gather(*(deliver(stripe, concurrent) for _ in range(3))):
        assert_ok(response)

    assert (await billing(stripe, headers))["credits"] == start + 1500 + 700
    for payload in (sequential, concurrent):
        assert await ledger_rows(stripe_app, f"stripe:{payload['id']}") == 1
        assert await recorded(stripe_app, payload["id"]) == [
            ("checkout.session.completed", "applied")
        ]


async def test_several_v1_signatures_one_valid_is_accepted(
    stripe: httpx.AsyncClient, users: Users
) -> None:
    headers, user_id = await new_user(stripe, users)
    start = (await billing(stripe, headers))["credits"]
    body = json.dumps(checkout(user_id, credits="42")).encode()
    now = int(time.time())
    header = (
        f"t={now},v1={signature(body, now, 'whsec_old_secret')},v0={'0' * 64},"
        f"v1={signature(body, now)}"
    )

    assert_ok(await post(stripe, body, header))
    assert (await billing(stripe, headers))["credits"] == start + 42


async def test_checkout_plan_then_subscription_updated_then_deleted(
    stripe: httpx.AsyncClient, stripe_app: FastAPI, users: Users
) -> None:
    headers, user_id = await new_user(stripe, users)
    start = (await billing(stripe, headers))["credits"]

    assert_ok(await deliver(stripe, checkout(user_id, plan="pro")))
    assert (await billing(stripe, headers))["plan"] == "pro"

    assert_ok(
        await deliver(
            stripe, subscription("customer.subscription.updated", user_id, plan="enterprise")
        )
    )
    assert (await billing(stripe, headers))["plan"] == "enterprise"

    deleted = subscription("customer.subscription.deleted", user_id, plan="enterprise")
    assert_ok(await deliver(stripe, deleted))
    me = await billing(stripe, headers)
    assert me["plan"] == "free"
    assert me["credits"] == start  # plan changes move no credits
    assert await recorded(stripe_app, deleted["id"]) == [
        ("customer.subscription.deleted", "applied")
    ]


async def test_an_older_subscription_event_delivered_late_changes_nothing(
    stripe: httpx.AsyncClient, stripe_app: FastAPI, users: Users
) -> None:
    headers, user_id = await new_user(stripe, users)
    upgraded = subscription("customer.subscription.updated", user_id, plan="enterprise")
    earlier = subscription("customer.subscription.updated", user_id, plan="pro")
    cancelled_before = subscription("customer.subscription.deleted", user_id)
    earlier["created"] = upgraded["created"] - 60
    cancelled_before["created"] = upgraded["created"] - 30

    for payload in (upgraded, earlier, cancelled_before):
        assert_ok(await deliver(stripe, payload))

    assert (await billing(stripe, headers))["plan"] == "enterprise"
    assert await recorded(stripe_app, earlier["id"]) == [
        ("customer.subscription.updated", "ignored")
    ]
    assert await recorded(stripe_app, cancelled_before["id"]) == [
        ("customer.subscription.deleted", "ignored")
    ]
    newer = subscription("customer.subscription.deleted", user_id)
    newer["created"] = upgraded["created"] + 1
    assert_ok(await deliver(stripe, newer))
    assert (await billing(stripe, headers))["plan"] == "free"


async def test_invoice_paid_grants_the_month_once(
    stripe: httpx.AsyncClient, stripe_app: FastAPI, users: Users
) -> None:
    headers, user_id = await new_user(stripe, users)  # granted this month's free credits
    assert_ok(
        await deliver(stripe, subscription("customer.subscription.updated", user_id, plan="pro"))
    )
    start = (await billing(stripe, headers))["credits"]
    first, second = (
        event(
            "invoice.paid",
            {
                "id": f"in_{uuid.uuid4().hex}",
                "object": "invoice",
                "metadata": {},
                "subscription_details": {"metadata": {"user_id": user_id}},
            },
        )
        for _ in range(2)
    )
    first["created"] = second["created"] = next_month()

    assert_ok(await deliver(stripe, first))
    assert_ok(await deliver(stripe, second))  # another invoice in the same month

    assert (await billing(stripe, headers))["credits"] == start + plan_for("pro").monthly_credits
    assert await recorded(stripe_app, first["id"]) == [("invoice.paid", "applied")]
    assert await recorded(stripe_app, second["id"]) == [("invoice.paid", "ignored")]


# --- answered 200, recorded as ignored ------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda: checkout("usr_01JZZZZZZZZZZZZZZZZZZZZZZZ", credits="100"), id="unknown"
        ),
        pytest.param(lambda: checkout("user_2abc", credits="100"), id="not-our-id"),
        pytest.param(
            lambda: subscription("customer.subscription.deleted", "usr_01JZZZZZZZZZZZZZZZZZZZZZZZ"),
            id="unknown-subscription",
        ),
        pytest.param(lambda: event("charge.refunded", {"id": "ch_1"}), id="unhandled-type"),
    ],
)
async def test_events_we_do_not_act_on_are_recorded_as_ignored(
    stripe: httpx.AsyncClient, stripe_app: FastAPI, make: Any
) -> None:
    payload = make()

    assert_ok(await deliver(stripe, payload))
    assert_ok(await deliver(stripe, payload))

    assert await recorded(stripe_app, payload["id"]) == [(payload["type"], "ignored")]
    assert await ledger_rows(stripe_app, f"stripe:{payload['id']}") == 0


async def test_unusable_metadata_and_unpaid_checkouts_change_nothing(
    stripe: httpx.AsyncClient, stripe_app: FastAPI, users: Users
) -> None:
    headers, user_id = await new_user(stripe, users)
    before = await billing(stripe, headers)
    unpaid = checkout(user_id, credits="100", plan="pro")
    unpaid["data"]["object"]["payment_status"] = "unpaid"
    payloads = [
        checkout(user_id, credits="-5"),
        checkout(user_id, credits="lots"),
        checkout(user_id, plan="platinum"),
        unpaid,
    ]

    for payload in payloads:
        assert_ok(await deliver(stripe, payload))

    assert await billing(stripe, headers) == before
    for payload in payloads:
        assert await recorded(stripe_app, payload["id"]) == [(payload["type"], "ignored")]


# --- refused, and nothing changes -----------------------------------------------------------------


def _wrong_secret(body: bytes) -> str:
    now = int(time.time())
    return f"t={now},v1={signature(body, now, 'whsec_someone_else')}"


def _stale(body: bytes) -> str:
    return signed_header(body, int(time.time()) - 600)


def _future(body: bytes) -> str:
    return signed_header(body, int(time.time()) + 600)


def _tampered(body: bytes) -> str:
    return signed_header(body.replace(b'"credits"', b'"credits" ', 1))


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(_wrong_secret, id="wrong-signature"),
        pytest.param(_stale, id="stale-10-minutes"),
        pytest.param(_future, id="future-10-minutes"),
        pytest.param(_tampered, id="body-changed"),
        pytest.param(None, id="missing"),
        pytest.param(lambda _body: "garbage", id="malformed"),
        pytest.param(lambda body: f"t=soon,v1={signature(body, 0)}", id="bad-timestamp"),
        pytest.param(lambda body: f"t={int(time.time())}", id="no-v1"),
        pytest.param(
            lambda body: f"t={int(time.time())},v0={signature(body, int(time.time()))}",
            id="only-v0",
        ),
    ],
)
async def test_bad_signatures_are_refused_and_change_nothing(
    stripe: httpx.AsyncClient, stripe_app: FastAPI, users: Users, header: Any
) -> None:
    headers, user_id = await new_user(stripe, users)
    before = await billing(stripe, headers)
    payload = checkout(user_id, credits="900", plan="enterprise")
    body = json.dumps(payload).encode()

    assert_invalid_signature(await post(stripe, body, header(body) if header else None))

    assert await billing(stripe, headers) == before
    assert await recorded(stripe_app, payload["id"]) == []
    assert await ledger_rows(stripe_app, f"stripe:{payload['id']}") == 0


async def test_a_signed_body_that_is_not_an_event_is_a_422(stripe: httpx.AsyncClient) -> None:
    response = await post(stripe, b'{"id": "evt_1"}')

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_without_a_secret_the_webhook_is_unavailable(
    client: httpx.AsyncClient, app: FastAPI, users: Users
) -> None:
    headers, user_id = await new_user(client, users)
    before = await billing(client, headers)
    payload = checkout(user_id, credits="900")

    response = await deliver(client, payload)

    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "NOT_CONFIGURED"
    assert "STRIPE_WEBHOOK_SECRET" in error["message"]
    assert await billing(client, headers) == before
    assert await recorded(app, payload["id"]) == []
