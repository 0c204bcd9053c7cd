from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from backend.schemas import reject_nulls

ProjectStatus = Literal["active", "archived", "draft"]
NOT_BLANK = r"\S"


class ProjectSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    is_public: bool = False
    allow_comments: bool = True


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=200, pattern=NOT_BLANK)
    description: str | None = Field(default=None, max_length=10_000)
    status: ProjectStatus = "active"
    settings: ProjectSettings = Field(default_factory=ProjectSettings)


class ProjectUpdate(BaseModel):
    """Every field optional; only `description` may be null (to clear it)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | SkipJsonSchema[None] = Field(
        default=None, min_length=1, max_length=200, pattern=NOT_BLANK
    )
    description: str | None = Field(default=None, max_length=10_000)
    status: ProjectStatus | SkipJsonSchema[None] = None
    settings: ProjectSettings | SkipJsonSchema[None] = None

    _no_nulls = model_validator(mode="before")(reject_nulls("name", "status", "settings"))


class ProjectPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    user_id: str
    name: str
    description: str | None
    status: ProjectStatus
    settings: ProjectSettings
    created_at: datetime
    updated_at: datetime


class ProjectSearchResults(BaseModel):
    items: list[ProjectPublic]
