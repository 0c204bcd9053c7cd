"""The dependencies routes name in their signatures: `SessionDep`, `CurrentUser`, `AdminUser`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from backend.auth import Identity, TokenVerifier, bearer_token
from backend.errors import AppError, unauthenticated
from backend.jobs import Jobs
from backend.users import service as users
from backend.users.models import User
from backend.users.service import Caller
from config.database import Database
from config.settings import Settings

# Dependencies are `async def` even when they do not await: FastAPI runs plain `def` ones in a
# thread pool, a hop per request that costs more than the work.
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_bearer = HTTPBearer(auto_error=False, description="A Clerk session token, or `turbokit token`")


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A read session for safe methods, a write session (committed before the response is sent)
    for the rest."""
    db: Database = request.app.state.db
    if request.method in _READ_METHODS:
        async with db.read() as session:
            session.info["write"] = False
            yield session
    else:
        async with db.write() as session:
            session.info["write"] = True
            yield session


async def get_jobs(request: Request) -> Jobs:
    jobs: Jobs = request.app.state.jobs
    return jobs


SettingsDep = Annotated[Settings, Depends(get_settings)]
JobsDep = Annotated[Jobs, Depends(get_jobs)]
DatabaseDep = Annotated[Database, Depends(get_db)]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def get_identity(request: Request, credentials: BearerCredentials) -> Identity:
    return await _identify(request, credentials)


async def _identify(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Identity:
    if credentials is None:
        raise unauthenticated("Missing bearer token")
    token = bearer_token(f"{credentials.scheme} {credentials.credentials}")
    verifier: TokenVerifier = request.app.state.verifier
    return await verifier.verify(token)


IdentityDep = Annotated[Identity, Depends(get_identity)]


async def get_current_user(identity: IdentityDep, session: SessionDep, db: DatabaseDep) -> User:
    user = await users.get_by_clerk_id(session, identity.subject)
    if user is None:
        user = await _provision(identity, session, db)
    if user.deleted_at is not None:
        raise unauthenticated("This account has been deleted")
    return user


async def _provision(identity: Identity, session: AsyncSession, db: Database) -> User:
    if session.info.get("write"):
        return await users.provision(session, identity)
    # End the read transaction first: it holds a pooled connection, and many first requests at
    # once would otherwise hold every connection while waiting for one to write with.
    await session.rollback()
    async with db.write() as write_session:
        return await users.provision(write_session, identity)


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_caller(request: Request, credentials: BearerCredentials) -> Caller:
    """The caller for routes that need only who is calling: no session, and on SQLite the user
    row is read again only once something has been committed since (`run_read_cached`), so a
    deleted user is refused at once. It verifies the token itself rather than through
    `get_identity`, and takes the database from the app: each dependency FastAPI solves costs
    about what the read does."""
    identity = await _identify(request, credentials)
    db: Database = request.app.state.db
    caller = await db.run_read_cached(users.find_caller, identity.subject)
    if caller is None:
        async with db.write() as session:
            caller = Caller.of(await users.provision(session, identity))
    if caller.deleted:
        raise unauthenticated("This account has been deleted")
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_admin_user(user: CurrentUser, identity: IdentityDep) -> User:
    if not (identity.is_admin or user.role == "admin"):
        raise AppError("FORBIDDEN", "Admin role required", 403)
    return user


AdminUser = Annotated[User, Depends(get_admin_user)]
