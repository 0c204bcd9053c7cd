"""Stripe's signed deliveries: the `Stripe-Signature` check and the event envelope.

The header is `t=<unix seconds>,v1=<hex>[,v1=<hex>...]` (other schemes, such as `v0`, are ignored).
Each `v1` is HMAC-SHA256, keyed with the whole `whsec_...` secret as text, over `"{t}.{raw body}"`;
several appear while a secret is being rolled, and one match is enough.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Any

from pydantic import BaseModel, Field

TOLERANCE_SECONDS = 300
"""How far the signed timestamp may be from our clock, either way, before a delivery is refused
as a replay."""

_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


class SignatureError(ValueError):
    """The delivery is not proven to come from Stripe; the message says why."""


def verify_signature(
    payload: bytes,
    header: str | None,
    secret: str,
    *,
    tolerance: int = TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Raise `SignatureError` unless `header` signs exactly `payload` with `secret`, recently."""
    if not header:
        raise SignatureError("Missing Stripe-Signature header")
    timestamp, signatures = _parse_header(header)
    expected = sign(payload, secret, timestamp)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise SignatureError("No signature in Stripe-Signature matches the payload")
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        raise SignatureError("Stripe-Signature timestamp is outside the tolerance")


def sign(payload: bytes, secret: str, timestamp: str) -> str:
    """The `v1` signature of `payload` at `timestamp` (the header's `t`, verbatim)."""
    message = timestamp.encode("ascii") + b"." + payload
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _parse_header(header: str) -> tuple[str, list[str]]:
    timestamp: str | None = None
    signatures: list[str] = []
    for item in header.split(","):
        scheme, _, value = item.strip().partition("=")
        if scheme == "t":
            timestamp = value
        elif scheme == "v1" and _HEX_DIGEST.fullmatch(value):
            signatures.append(value)
    if timestamp is None or not (timestamp.isascii() and timestamp.isdigit()):
        raise SignatureError("Malformed Stripe-Signature header: no valid timestamp")
    if not signatures:
        raise SignatureError("Malformed Stripe-Signature header: no v1 signature")
    return timestamp, signatures


class StripeEventData(BaseModel):
    object: dict[str, Any]


class StripeEvent(BaseModel):
    """The envelope of a Stripe event; handlers read what they need from `data.object`."""

    id: str = Field(min_length=1, max_length=200)
    type: str = Field(min_length=1, max_length=100)
    created: int | None = None
    """Unix seconds when Stripe created the event (not when it was delivered)."""
    data: StripeEventData
