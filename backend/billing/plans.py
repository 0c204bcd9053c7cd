"""Plans as configuration: what each plan grants and allows."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    monthly_credits: int
    chat_requests_per_minute: int
    max_steps: int
    run_reservation: int
    """Credits held when a run starts: enough for a typical turn; the unused part is released."""
    allowed_models: frozenset[str] | None = None
    """None allows every model the agent offers."""


PLANS: dict[str, Plan] = {
    "free": Plan(
        "free", monthly_credits=500, chat_requests_per_minute=10, max_steps=5, run_reservation=20
    ),
    "pro": Plan(
        "pro", monthly_credits=20_000, chat_requests_per_minute=60, max_steps=10, run_reservation=50
    ),
    "enterprise": Plan(
        "enterprise",
        monthly_credits=200_000,
        chat_requests_per_minute=600,
        max_steps=20,
        run_reservation=100,
    ),
}


def plan_for(name: str) -> Plan:
    return PLANS.get(name, PLANS["free"])
