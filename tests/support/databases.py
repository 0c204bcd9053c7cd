"""Test databases: a SQLite file, and a throwaway PostgreSQL database when one is reachable.

PostgreSQL tests skip with the reason when the server is absent; with TURBOKIT_REQUIRE_SERVICES=1
(as CI sets) they fail instead, so a green CI run proves both databases were exercised.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def services_required() -> bool:
    return os.environ.get("TURBOKIT_REQUIRE_SERVICES", "") not in ("", "0", "false")


def unavailable(what: str, error: BaseException) -> None:
    """Skip, or fail when services are required, naming what could not be reached."""
    message = f"{what} unreachable: {error!r}"
    if services_required():
        pytest.fail(f"{message} (TURBOKIT_REQUIRE_SERVICES is set)")
    pytest.skip(message)


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh database on the test server, dropped afterwards; yields its SQLAlchemy URL."""
    import asyncpg

    admin_dsn = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")
    try:
        admin = await asyncpg.connect(admin_dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable("PostgreSQL", exc)
        raise
    name = f"turbokit_test_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
