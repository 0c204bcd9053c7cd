from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, UrlConstraints, model_validator
from pydantic.json_schema import SkipJsonSchema

from backend.schemas import reject_nulls

Plan = Literal["free", "pro", "enterprise"]


class UserUpdate(BaseModel):
    """What a user may change about themselves; credits, plan and role are not among it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | SkipJsonSchema[None] = Field(default=None, min_length=1, max_length=200)
    image_url: Annotated[AnyHttpUrl, UrlConstraints(max_length=2048)] | None = None
    onboarding_completed: bool | SkipJsonSchema[None] = None

    _no_nulls = model_validator(mode="before")(reject_nulls("name", "onboarding_completed"))


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
