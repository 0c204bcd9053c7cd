from __future__ import annotations

from fastapi import APIRouter

from backend.billing.plans import plan_for
from backend.billing.schemas import BillingPublic
from backend.deps import CurrentUser, SettingsDep
from backend.errors import error_responses
from backend.routing import TurboKitRoute

router = APIRouter(route_class=TurboKitRoute, tags=["billing"], responses=error_responses(401, 422))


@router.get("/v1/billing")
async def get_billing(user: CurrentUser, settings: SettingsDep) -> BillingPublic:
    """The caller's plan and balance."""
    return BillingPublic(
        plan=user.plan,
        credits=user.credits,
        credits_per_usd=settings.credits_per_usd,
        monthly_credits=plan_for(user.plan).monthly_credits,
    )
