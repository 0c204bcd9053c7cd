"""Clerk's user events, as far as we read them: who the user is, by Clerk id."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from backend.users.service import Profile

MAX_EMAIL = 320
MAX_NAME = 200


class ClerkEmailAddress(BaseModel):
    id: str | None = None
    email_address: str | None = None


class ClerkUser(BaseModel):
    """The `data` of `user.created` / `user.updated`; `user.deleted` carries only `id`."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=255, pattern=r"^[^\x00]+$")
    email_addresses: list[ClerkEmailAddress] = Field(default_factory=list)
    primary_email_address_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    image_url: str | None = None
    profile_image_url: str | None = None
    """Older API versions' name for `image_url`."""

    def profile(self) -> Profile:
        return Profile(
            clerk_id=self.id,
            email=self._primary_email(),
            name=_name(self.first_name, self.last_name),
            image_url=_clean(self.image_url or self.profile_image_url),
        )

    def _primary_email(self) -> str | None:
        """The primary address, else the first one; None if it cannot be an address."""
        chosen = next(
            (a for a in self.email_addresses if a.id and a.id == self.primary_email_address_id),
            self.email_addresses[0] if self.email_addresses else None,
        )
        email = _clean(chosen.email_address) if chosen else None
        if email is None or len(email) > MAX_EMAIL or "@" not in email:
            return None
        return email


def _name(first: str | None, last: str | None) -> str | None:
    name = " ".join(part.strip() for part in (first, last) if part and part.strip())
    return _clean(name[:MAX_NAME])


def _clean(value: Any) -> str | None:
    """Text as we can store it (PostgreSQL refuses NUL), or None when nothing is left."""
    if not isinstance(value, str):
        return None
    cleaned = value.replace("\x00", "").strip()
    return cleaned or None
