"""Provider webhooks: no bearer token; the signature over the raw body is the authentication."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from pydantic import ValidationError

from backend.deps import DatabaseDep, SettingsDep
from backend.errors import AppError, error_responses, validation_error
from backend.routing import TurboKitRoute
from backend.webhooks import service
from backend.webhooks.schemas import WebhookReceived
from backend.webhooks.stripe import SignatureError, StripeEvent, verify_signature

# Left out of the OpenAPI document: clients never call these; providers do, with signatures a
# client (or a schema fuzzer) cannot make, and a 503 until the provider's secret is configured.
router = APIRouter(
    route_class=TurboKitRoute, prefix="/webhooks", tags=["webhooks"], include_in_schema=False
)


@router.post("/stripe", responses=error_responses(400, 422, 503))
async def stripe_webhook(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    stripe_signature: Annotated[str | None, Header()] = None,
) -> WebhookReceived:
    """A Stripe event, verified with `STRIPE_WEBHOOK_SECRET`; each event id takes effect once."""
    secret = settings.stripe_webhook_secret
    if not secret:
        raise AppError(
            "NOT_CONFIGURED",
            "Stripe webhooks are not configured: set STRIPE_WEBHOOK_SECRET",
            503,
            {"setting": "STRIPE_WEBHOOK_SECRET"},
        )
    body = await request.body()
    try:
        verify_signature(body, stripe_signature, secret)
    except SignatureError as exc:
        raise AppError("INVALID_SIGNATURE", str(exc), 400) from exc
    payload, event = _parse(body)
    async with db.write() as session:
        await service.handle_event(session, event, payload)
    return WebhookReceived()


def _parse(body: bytes) -> tuple[dict[str, Any], StripeEvent]:
    """The event, read only once its signature holds."""
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise validation_error(["body"], "The body is not JSON") from exc
    try:
        event = StripeEvent.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise validation_error(
            ["body", *first["loc"]], f"Not a Stripe event: {first['msg']}"
        ) from exc
    return payload, event
