"""A real database for the store: a SQLite file, and a throwaway PostgreSQL database when reachable.

Tests that take `db` run once per backend (`[sqlite]`, `[postgres]`) on one database per session,
created with `create_all` from the models; tests keep apart by using fresh user ids. PostgreSQL
skips with the reason when unreachable, and fails instead under TURBOKIT_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from config.database import Base, Database
from config.settings import Settings
from tests.support.databases import postgres_database
from threads.models import TABLES

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@asynccontextmanager
async def empty_database(backend: str, directory: Path) -> AsyncIterator[Database]:
    """A `Database` on a new, empty database of this backend, disposed (and dropped) afterwards."""
    if backend == "sqlite":
        async with _database(f"sqlite+aiosqlite:///{directory / 't.db'}") as db:
            yield db
        return
    async with postgres_database() as url, _database(url) as db:
        yield db


@asynccontextmanager
async def _database(url: str) -> AsyncIterator[Database]:
    settings = Settings(_env_file=None, environment="test", database_url=url)
    db = Database(settings)
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
async def db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Database]:
    async with empty_database(request.param, tmp_path_factory.mktemp("threads")) as database:
        async with database.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all, tables=list(TABLES))
        yield database


@pytest.fixture(params=BACKENDS)
async def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A database with no tables at all, for migration tests."""
    async with empty_database(request.param, tmp_path) as database:
        yield database


@pytest.fixture
def user_id() -> str:
    return f"usr_{uuid.uuid4().hex}"
