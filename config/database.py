"""The database engine and sessions, for SQLite (the embedded default) and PostgreSQL.

SQLite allows one writer at a time. A deferred transaction that reads and then writes fails with
"database is locked" whatever the busy timeout, so write sessions start with `BEGIN IMMEDIATE` and,
inside one process, queue on an asyncio lock instead of spinning in SQLite's busy handler. Read
sessions use plain deferred transactions and run concurrently under WAL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from config.settings import Settings

log = logging.getLogger("turbokit.db")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_WRITE_OPTION = "turbokit_write"
_AFTER_COMMIT = "after_commit"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def after_commit(session: AsyncSession, callback: Callable[[], object]) -> None:
    """Run `callback` once this write session has committed (never if it rolls back): work that
    must see the committed rows, such as starting a run or enqueueing a job."""
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


def dialect_name(session: AsyncSession) -> str:
    """'sqlite' or 'postgresql': where SQL differs (full-text search, upserts)."""
    return session.get_bind().dialect.name


class Database:
    """Owns the engine; hands out read and write sessions that commit or roll back as a unit."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.resolved_database_url
        self.is_sqlite = self.url.startswith("sqlite")
        self.engine = _create_engine(self.url, settings)
        self._write_engine = self.engine.execution_options(**{_WRITE_OPTION: True})
        self._read_sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(self._write_engine, expire_on_commit=False)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        _install_slow_query_log(self.engine, settings.slow_query_ms)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads; anything it writes is rolled back."""
        async with self._read_sessions() as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session whose work commits when the block ends and rolls back if it raises; then
        the callbacks registered with `after_commit` run."""
        async with self._write_sessions() as session:
            async with self._locked(), session.begin():
                yield session
            for callback in session.info.pop(_AFTER_COMMIT, []):
                callback()

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        if self._write_lock is None:
            yield
            return
        async with self._write_lock:
            yield

    async def dispose(self) -> None:
        await self.engine.dispose()


def _create_engine(url: str, settings: Settings) -> AsyncEngine:
    if not url.startswith("sqlite"):
        return create_async_engine(
            url, pool_size=settings.db_pool_size, max_overflow=20, pool_pre_ping=True
        )
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, pool_size=settings.db_pool_size, max_overflow=0)
    event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
    event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself, so writes can say IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "foreign_keys=ON",
        "busy_timeout=30000",
        "cache_size=-65536",
        "temp_store=MEMORY",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get(_WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _install_slow_query_log(engine: AsyncEngine, threshold_ms: float) -> None:
    if threshold_ms <= 0:
        return

    def before(conn: Connection, _c: Any, _s: str, _p: Any, _ctx: Any, _many: bool) -> None:
        conn.info.setdefault("query_start", []).append(time.perf_counter())

    def after(conn: Connection, _c: Any, statement: str, _p: Any, _ctx: Any, _m: bool) -> None:
        elapsed_ms = (time.perf_counter() - conn.info["query_start"].pop()) * 1000
        if elapsed_ms >= threshold_ms:
            log.warning("slow query %.1f ms: %s", elapsed_ms, " ".join(statement.split())[:500])

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    event.listen(engine.sync_engine, "after_cursor_execute", after)
