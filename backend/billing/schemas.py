from __future__ import annotations

from pydantic import BaseModel


class BillingPublic(BaseModel):
    plan: str
    credits: int
    credits_per_usd: int
    monthly_credits: int
