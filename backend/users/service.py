"""Finding, provisioning, updating and soft-deleting users."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from backend.auth import Identity
from backend.billing import service as billing
from backend.users.models import User
from backend.users.schemas import UserUpdate
from config.database import dialect_name, utcnow
from config.ids import new_id


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as most routes need it: the user's id and standing, not the whole row."""

    id: str
    plan: str
    role: str
    deleted: bool

    @classmethod
    def of(cls, user: User) -> Caller:
        return cls(user.id, user.plan, user.role, user.deleted_at is not None)


_users: Table = User.__table__  # type: ignore[assignment]
_CALLER = select(_users.c.id, _users.c.plan, _users.c.role, _users.c.deleted_at).where(
    _users.c.clerk_id == bindparam("clerk_id")
)


def find_caller(conn: Connection, clerk_id: str) -> Caller | None:
    """A read unit: the caller with this Clerk id, read fresh (a deletion counts at once)."""
    row = conn.execute(_CALLER, {"clerk_id": clerk_id}).first()
    return None if row is None else Caller(row.id, row.plan, row.role, row.deleted_at is not None)


async def get_by_clerk_id(session: AsyncSession, clerk_id: str) -> User | None:
    result = await session.execute(select(User).where(User.clerk_id == clerk_id))
    return result.scalar_one_or_none()


async def provision(session: AsyncSession, identity: Identity) -> User:
    """The user for this identity, created on first sight; racing first requests make one row."""
    role = "admin" if identity.is_admin else "user"
    profile = Profile(identity.subject, identity.email, identity.name, identity.image_url)
    await session.execute(_insert_new(session, profile, role, utcnow()))
    user = await get_by_clerk_id(session, identity.subject)
    assert user is not None
    await billing.grant_monthly(session, user)  # a new user starts with the plan's credits
    return user


async def update(session: AsyncSession, user: User, changes: UserUpdate) -> User:
    data = changes.model_dump(exclude_unset=True, mode="json")
    for field, value in data.items():
        setattr(user, field, value)
    if data:
        user.updated_at = utcnow()
    await session.flush()
    return user


async def soft_delete(session: AsyncSession, user: User) -> None:
    user.deleted_at = utcnow()
    user.updated_at = user.deleted_at
    await session.flush()


@dataclass(frozen=True, slots=True)
class Profile:
    """What Clerk says about a user: it wins over what tokens said at first sight."""

    clerk_id: str
    email: str | None
    name: str | None
    image_url: str | None


async def upsert_profile(session: AsyncSession, profile: Profile) -> tuple[User, bool]:
    """Create or update the user with this Clerk id; True when this call created the row. A
    soft-deleted user stays deleted (Clerk's events may arrive after its `user.deleted`)."""
    now = utcnow()
    statement = _insert_new(session, profile, "user", now).returning(User.id)
    created = await session.scalar(statement) is not None
    user = await get_by_clerk_id(session, profile.clerk_id)
    assert user is not None
    if created:
        await billing.grant_monthly(session, user)  # as for a user first seen through a token
    elif (user.email, user.name, user.image_url) != (
        profile.email,
        profile.name,
        profile.image_url,
    ):
        user.email, user.name, user.image_url = profile.email, profile.name, profile.image_url
        user.updated_at = now
        await session.flush()
    return user, created


def _insert_new(session: AsyncSession, profile: Profile, role: str, now: datetime) -> Any:
    """An INSERT of a new free-plan user that does nothing when the Clerk id already has a row
    (racing first requests, or a webhook and a token, make one row)."""
    insert = pg_insert if dialect_name(session) == "postgresql" else sqlite_insert
    values = {
        "id": new_id("usr"),
        "clerk_id": profile.clerk_id,
        "email": profile.email,
        "name": profile.name,
        "image_url": profile.image_url,
        "plan": "free",
        "credits": 0,
        "onboarding_completed": False,
        "role": role,
        "created_at": now,
        "updated_at": now,
    }
    return insert(User).values(**values).on_conflict_do_nothing(index_elements=["clerk_id"])


async def delete_by_clerk_id(session: AsyncSession, clerk_id: str) -> bool:
    """Soft-delete the user with this Clerk id; False if already deleted. An unknown id leaves a
    deleted row behind, so a `user.created` delivered late, or a token still in flight, cannot
    bring the user back."""
    user = await get_by_clerk_id(session, clerk_id)
    if user is None:
        user, _ = await upsert_profile(session, Profile(clerk_id, None, None, None))
    if user.deleted_at is not None:
        return False
    await soft_delete(session, user)
    return True
