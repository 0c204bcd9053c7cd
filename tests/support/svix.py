"""Svix-signed deliveries, signed for real with the `svix` package (as Clerk and Resend sign)."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from svix.webhooks import Webhook


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def signed_headers(
    body: bytes, secret: str, message_id: str | None = None, age: timedelta = timedelta(0)
) -> dict[str, str]:
    """Svix headers for `body`, as if sent `age` ago (negative: from the future)."""
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    when = datetime.now(UTC) - age
    signature = Webhook(secret).sign(message_id, when, body.decode())
    return {
        "svix-id": message_id,
        "svix-timestamp": str(int(when.timestamp())),
        "svix-signature": signature,
        "content-type": "application/json",
    }


async def deliver(
    http: httpx.AsyncClient,
    path: str,
    event: dict[str, Any],
    secret: str,
    message_id: str | None = None,
) -> httpx.Response:
    body = json.dumps(event).encode()
    return await http.post(path, content=body, headers=signed_headers(body, secret, message_id))
