from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

UsageGroupBy = Literal["day", "model", "agent", "thread"]
AdminUsageGroupBy = Literal["user", "day", "model"]


class BillingPublic(BaseModel):
    plan: str
    credits: int
    credits_per_usd: int
    monthly_credits: int


class UsageTotals(BaseModel):
    """Usage summed over LLM calls; `cost_usd` is what the provider charged, in US dollars."""

    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    credits: int


class UsageGroup(UsageTotals):
    key: str | None = Field(
        description="The day (`YYYY-MM-DD`, UTC), model, agent, thread id or user id; a thread "
        "key is null for calls made outside a thread"
    )


class UsageReport(BaseModel):
    """Usage over the inclusive UTC days `from`..`to`, as totals and as groups."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    from_: date = Field(alias="from", description="First day of the range (UTC), inclusive")
    to: date = Field(description="Last day of the range (UTC), inclusive")
    group_by: str
    totals: UsageTotals
    groups: list[UsageGroup] = Field(
        description="Only keys with usage. By day: oldest first. By any other key: most credits "
        "first, then by key (a null thread last)"
    )


class UsageEventPublic(BaseModel):
    """One metered LLM call."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    thread_id: str | None
    run_id: str | None
    agent: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    credits: int
    created_at: datetime
