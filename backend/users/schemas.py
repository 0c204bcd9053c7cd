from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

Plan = Literal["free", "pro", "enterprise"]


class UserUpdate(BaseModel):
    """What a user may change about themselves; credits, plan and role are not among it."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    image_url: AnyHttpUrl | None = Field(default=None, max_length=2048)
    onboarding_completed: bool | None = None

    @field_validator("name", "onboarding_completed", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may be omitted but not null")
        return value


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str | None
    name: str | None
    image_url: str | None
    plan: Plan
    credits: int
    onboarding_completed: bool
    created_at: datetime
    updated_at: datetime
