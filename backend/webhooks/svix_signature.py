"""Svix-signed deliveries (Clerk, Resend): the signature check, done by the `svix` package, and
the event envelope both providers use.

Headers `svix-id`, `svix-timestamp`, `svix-signature` (`v1,<base64>` entries, space separated);
each signature is HMAC-SHA256 keyed with the base64-decoded secret (after `whsec_`) over
`"{id}.{timestamp}.{raw body}"`; the timestamp must be within five minutes of our clock.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from svix.webhooks import Webhook, WebhookVerificationError

from backend.webhooks.stripe import SignatureError

HEADERS = ("svix-id", "svix-timestamp", "svix-signature")

MAX_MESSAGE_ID = 200
"""The longest `svix-id` we record (Svix's are about 30 characters)."""


class SecretError(ValueError):
    """The configured secret is not a Svix secret (`whsec_` and base64)."""


def verifier(secret: str) -> Webhook:
    """The svix verifier for `secret`; raises `SecretError` when it cannot be one."""
    try:
        return Webhook(secret)
    except Exception as exc:  # bad base64 (binascii.Error), or svix's EmptyWebhookSecretError
        raise SecretError(str(exc) or type(exc).__name__) from exc


def verify(webhook: Webhook, body: bytes, headers: dict[str, str]) -> str:
    """Raise `SignatureError` unless the headers sign exactly `body`, recently; returns the
    message id (the same on every retry of one message: the key to take effect once)."""
    message_id = headers.get("svix-id", "")
    try:
        webhook.verify(body, headers)
    except (WebhookVerificationError, ValueError) as exc:  # ValueError: malformed header values
        raise SignatureError(f"Invalid Svix signature: {_reason(exc)}") from exc
    if len(message_id) > MAX_MESSAGE_ID:
        raise SignatureError("svix-id is too long")
    return message_id


def _reason(exc: Exception) -> str:
    if isinstance(exc, WebhookVerificationError):
        return str(exc) or "verification failed"
    return "malformed svix headers"


class SvixEvent(BaseModel):
    """The envelope Clerk and Resend send: a type and its data."""

    type: str = Field(min_length=1, max_length=100)
    data: dict[str, Any]
