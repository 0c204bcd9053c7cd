"""Provider webhooks: no bearer token; the signature over the raw body is the authentication."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from pydantic import ValidationError

from backend.deps import DatabaseDep, JobsDep, SettingsDep
from backend.errors import AppError, error_responses, validation_error
from backend.routing import TurboKitRoute
from backend.webhooks import service, svix_events, svix_signature
from backend.webhooks.schemas import WebhookReceived
from backend.webhooks.stripe import SignatureError, StripeEvent, verify_signature
from backend.webhooks.svix_events import InvalidEvent, SvixHandling
from backend.webhooks.svix_signature import SvixEvent

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
    secret = _secret(settings.stripe_webhook_secret, "Stripe", "STRIPE_WEBHOOK_SECRET")
    body = await request.body()
    try:
        verify_signature(body, stripe_signature, secret)
    except SignatureError as exc:
        raise AppError("INVALID_SIGNATURE", str(exc), 400) from exc
    payload, event = _parse(body)
    async with db.write() as session:
        await service.handle_event(session, event, payload)
    return WebhookReceived()


@router.post("/clerk", responses=error_responses(400, 422, 503))
async def clerk_webhook(
    request: Request, db: DatabaseDep, settings: SettingsDep, jobs: JobsDep
) -> WebhookReceived:
    """A Clerk user event, verified with `CLERK_WEBHOOK_SECRET`; each Svix message once."""
    secret = _secret(settings.clerk_webhook_secret, "Clerk", "CLERK_WEBHOOK_SECRET")
    await _svix(request, db, SvixHandling(settings, jobs), svix_events.CLERK, secret)
    return WebhookReceived()


@router.post("/resend", responses=error_responses(400, 422, 503))
async def resend_webhook(
    request: Request, db: DatabaseDep, settings: SettingsDep, jobs: JobsDep
) -> WebhookReceived:
    """A Resend delivery event, verified with `RESEND_WEBHOOK_SECRET`; each Svix message once."""
    secret = _secret(settings.resend_webhook_secret, "Resend", "RESEND_WEBHOOK_SECRET")
    await _svix(request, db, SvixHandling(settings, jobs), svix_events.RESEND, secret)
    return WebhookReceived()


def _secret(value: str | None, provider: str, setting: str) -> str:
    if not value:
        raise AppError(
            "NOT_CONFIGURED",
            f"{provider} webhooks are not configured: set {setting}",
            503,
            {"setting": setting},
        )
    return value


async def _svix(
    request: Request, db: DatabaseDep, handling: SvixHandling, provider: str, secret: str
) -> None:
    """Verify the raw body, then apply the event once; nothing is read before the check."""
    try:
        webhook = svix_signature.verifier(secret)
    except svix_signature.SecretError as exc:
        raise AppError(
            "NOT_CONFIGURED",
            f"The {provider} webhook secret is not a Svix secret (whsec_...): {exc}",
            503,
        ) from exc
    body = await request.body()
    headers = {name: request.headers.get(name, "") for name in svix_signature.HEADERS}
    try:
        message_id = svix_signature.verify(webhook, body, headers)
    except SignatureError as exc:
        raise AppError("INVALID_SIGNATURE", str(exc), 400) from exc
    payload, event = _parse_svix(body)
    try:
        async with db.write() as session:
            await svix_events.handle(session, handling, provider, message_id, event, payload)
    except InvalidEvent as exc:
        raise validation_error(exc.loc, str(exc)) from exc


def _parse_svix(body: bytes) -> tuple[dict[str, Any], SvixEvent]:
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise validation_error(["body"], "The body is not JSON") from exc
    try:
        event = SvixEvent.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise validation_error(["body", *first["loc"]], f"Not an event: {first['msg']}") from exc
    return payload, event


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
