"""The database engine and sessions, for SQLite (the embedded default) and PostgreSQL.

SQLite allows one writer at a time. A deferred transaction that reads and then writes fails with
"database is locked" whatever the busy timeout, so write sessions start with `BEGIN IMMEDIATE` and,
inside one process, queue on an asyncio lock instead of spinning in SQLite's busy handler. Read
sessions use plain deferred transactions and run concurrently under WAL.

Hot reads skip the session: `run_read` / `run_scan` run a whole read unit (a plain function of a
Core `Connection`) as one transaction. Through aiosqlite every DBAPI call is a hop to its thread and
back, and a short request makes a dozen of them, costing far more than SQLite's own microseconds.
So on a SQLite file a short unit runs on the event loop itself, over a read-only connection kept
for it, and a unit that may scan many rows runs in a worker thread in one hop; on PostgreSQL both
run on the async driver (asyncpg needs no thread).

Write sessions on a SQLite file avoid those hops too: they have their own engine whose driver
(`config.sqlite_inline`) answers the dialect's calls on the event loop. The writes of one process
already run one at a time, a transaction's statements take microseconds, and the one wait SQLite
can impose, another process's write lock, is waited out in a thread.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import orjson
from sqlalchemy import DateTime, MetaData, create_engine, event
from sqlalchemy.engine import Connection, Dialect, Engine, Result, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from config.settings import Settings
from config.sqlite_inline import inline_creator

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
_READER_BUSY_TIMEOUT_MS = 2000
"""How long a read on the event loop may wait for SQLite's WAL index (rare); it blocks the loop."""
_BUSY_TIMEOUT_MS = 30_000
"""How long a write waits for another process's write lock (in a thread: see sqlite_inline)."""
_READER_POOL_SIZE = 8
"""Read connections kept for units in worker threads; more open when asyncio's default executor
(at most 32 threads) runs more units at once, so a unit never waits for a connection."""
_CACHED_RESULTS = 10_000
"""Results `run_read_cached` keeps (one per distinct unit and arguments), oldest dropped first."""

P = ParamSpec("P")
T = TypeVar("T")
ReadUnit = Callable[Concatenate[Connection, P], T]
"""A read unit: a synchronous function of a Core `Connection` (plus arguments) that only reads."""


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

    def result_processor(
        self, dialect: Dialect, coltype: object
    ) -> Callable[[Any], datetime | None] | None:
        if dialect.name == "sqlite":
            return _utc_from_sqlite  # one call a value where the general path makes four
        return super().result_processor(dialect, coltype)


def _utc_from_sqlite(value: str | None) -> datetime | None:
    """SQLite keeps the UTC time as ISO text without an offset. Parsing it with "+00:00" added
    is several times faster than parsing, then `replace(tzinfo=UTC)`."""
    if value is None:
        return None
    try:
        parsed = _fromisoformat(value + "+00:00")
    except ValueError:  # the text names its own offset (written by something else)
        parsed = _fromisoformat(value)
    if parsed.tzinfo is UTC:
        return parsed
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


_fromisoformat = datetime.fromisoformat


def utcnow() -> datetime:
    return datetime.now(UTC)


def after_commit(session: AsyncSession, callback: Callable[[], object]) -> None:
    """Run `callback` once this write session has committed (never if it rolls back): work that
    must see the committed rows, such as starting a run or enqueueing a job."""
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


def row_dicts(result: Result[Any]) -> list[dict[str, Any]]:
    """A result's rows as plain dicts, the input pydantic validates fastest (reading a `Row` by
    attribute, or its `_asdict()`, costs several times more)."""
    keys = tuple(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result.all()]


def dialect_name(session: AsyncSession) -> str:
    """'sqlite' or 'postgresql': where SQL differs (full-text search, upserts)."""
    return session.get_bind().dialect.name


class Database:
    """Owns the engine; hands out read and write sessions that commit or roll back as a unit."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.resolved_database_url
        self.is_sqlite = self.url.startswith("sqlite")
        self.engine = _create_engine(self.url, settings)
        self._write_engine = _create_write_engine(self.url, settings, self.engine)
        self.session_info: dict[str, Any] = {}
        """What every session's `info` starts with: app services that code holding only a
        session needs after its commit (the event broker), set before the first session."""
        self._read_sessions = async_sessionmaker(
            self.engine, expire_on_commit=False, info=self.session_info
        )
        self._write_sessions = async_sessionmaker(
            self._write_engine, expire_on_commit=False, info=self.session_info
        )
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self._writer: asyncio.Task[Any] | None = None
        self._reader = _SQLiteReader(self.url, settings) if _is_sqlite_file(self.url) else None
        self._read_engine = self.engine.execution_options(postgresql_readonly=True)
        for engine in self.engines:
            _install_slow_query_log(engine, settings.slow_query_ms)

    @property
    def engines(self) -> list[AsyncEngine]:
        """The engines sessions use: `engine`, and on a SQLite file the write sessions' own
        (see sqlite_inline); for listeners that must see every statement."""
        if self._write_engine.sync_engine.pool is self.engine.sync_engine.pool:
            return [self.engine]
        return [self.engine, self._write_engine]

    async def run_read(self, unit: ReadUnit[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a short read unit (indexed lookups, a page) as one transaction and return its
        result. On SQLite it runs right here on the event loop, so it must stay short."""
        if self._reader is not None:
            return self._reader.run_inline(unit, *args, **kwargs)
        return await self._run_async(unit, *args, **kwargs)

    async def run_read_cached(self, unit: ReadUnit[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`run_read` for a unit whose (immutable) result is asked for again and again, such as
        who a token's subject is. On a SQLite file the result is reused for as long as nothing
        has been committed to the database since it was read, by any connection of any process
        (SQLite's `PRAGMA data_version`), so it is never stale; any commit makes the next call
        read again. Elsewhere the unit simply runs. Arguments must be hashable."""
        if self._reader is not None:
            return self._reader.run_inline_cached(unit, *args, **kwargs)
        return await self._run_async(unit, *args, **kwargs)

    async def run_scan(self, unit: ReadUnit[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a read unit that may touch many rows (full-text ranking, reports) as one
        transaction, without holding up the event loop: one hop to a worker thread on SQLite."""
        if self._reader is not None:
            run = functools.partial(self._reader.run_pooled, unit, *args, **kwargs)
            return await asyncio.to_thread(run)
        return await self._run_async(unit, *args, **kwargs)

    async def _run_async(self, unit: ReadUnit[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        async with self._read_engine.connect() as conn:
            return await conn.run_sync(unit, *args, **kwargs)

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
        task = asyncio.current_task()
        if task is not None and task is self._writer:
            raise RuntimeError("a write session opened inside another would wait for itself")
        async with self._write_lock:
            self._writer = task
            try:
                yield
            finally:
                self._writer = None

    async def dispose(self) -> None:
        if self._reader is not None:
            self._reader.dispose()
        await self._write_engine.dispose()
        await self.engine.dispose()


class _SQLiteReader:
    """Read-only synchronous connections to the same SQLite file: one kept for units run on the
    event loop (they never interleave: a unit has no await), and a pool for units in threads.
    Slow units are logged whole, by name, rather than timing every statement."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.engine = _create_sqlite_reader_engine(url)
        self.slow_ms = settings.slow_query_ms
        self._inline: Connection | None = None
        self._cache: dict[Hashable, tuple[int, Any]] = {}

    def run_inline(self, unit: ReadUnit[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(self._inline_connection(), unit, *args, **kwargs)

    def run_inline_cached(self, unit: ReadUnit[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        conn = self._inline_connection()
        # Taken before the unit reads: a commit in between only makes the next call read again.
        version = _data_version(conn)
        key = (unit, args, frozenset(kwargs.items()))
        hit = self._cache.get(key)
        if hit is not None and hit[0] == version:
            return cast(T, hit[1])
        result = self._run(conn, unit, *args, **kwargs)
        if len(self._cache) >= _CACHED_RESULTS:
            del self._cache[next(iter(self._cache))]  # the oldest
        self._cache[key] = (version, result)
        return result

    def _inline_connection(self) -> Connection:
        if self._inline is None or self._inline.invalidated:
            self._inline = self.engine.connect()
            self._cache.clear()  # data_version numbers are per connection
        return self._inline

    def run_pooled(self, unit: ReadUnit[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        with self.engine.connect() as conn:
            return self._run(conn, unit, *args, **kwargs)

    def _run(self, conn: Connection, unit: ReadUnit[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        started = time.perf_counter()
        try:
            with conn.begin():
                _sqlite_begin(conn)
                return unit(conn, *args, **kwargs)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            if self.slow_ms > 0 and elapsed_ms >= self.slow_ms:
                name = getattr(unit, "__qualname__", repr(unit))
                log.warning("slow read unit %.1f ms: %s", elapsed_ms, name)

    def dispose(self) -> None:
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        self.engine.dispose()


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


def _create_write_engine(url: str, settings: Settings, engine: AsyncEngine) -> AsyncEngine:
    """Write sessions: on a SQLite file, their own engine whose driver runs on the event loop
    (one process writes one transaction at a time anyway); elsewhere the shared engine."""
    if not _is_sqlite_file(url):
        return engine.execution_options(**{_WRITE_OPTION: True})
    path = make_url(url).database
    assert path is not None
    write_engine = create_async_engine(
        url,
        async_creator=inline_creator(path, _BUSY_TIMEOUT_MS),
        pool_size=2,
        max_overflow=0,
    )
    event.listen(write_engine.sync_engine, "connect", _sqlite_on_connect)
    event.listen(write_engine.sync_engine, "begin", _sqlite_on_begin)
    return write_engine.execution_options(**{_WRITE_OPTION: True})


def _is_sqlite_file(url: str) -> bool:
    database = make_url(url).database
    return url.startswith("sqlite") and bool(database) and database != ":memory:"


def _create_sqlite_reader_engine(url: str) -> Engine:
    engine = create_engine(
        make_url(url).set(drivername="sqlite"),
        pool_size=_READER_POOL_SIZE,
        max_overflow=32,
        connect_args={"check_same_thread": False},  # pooled for worker threads
        json_deserializer=_json_loads,
    )
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "connect", _sqlite_reader_on_connect)
    return engine


def _json_loads(text: str) -> Any:
    """JSON columns of read units: orjson parses a small document several times faster than the
    standard library, which still takes what orjson refuses (NaN, which `json.dumps` writes)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _data_version(conn: Connection) -> int:
    """Changes whenever another connection (of any process) commits to the database."""
    dbapi_connection = conn.connection.dbapi_connection
    assert dbapi_connection is not None
    return int(dbapi_connection.cursor().execute("PRAGMA data_version").fetchone()[0])


def _sqlite_begin(conn: Connection) -> None:
    """BEGIN straight on sqlite3 (in autocommit mode, so SQLAlchemy's COMMIT or ROLLBACK ends
    it). Through the engine's "begin" event it would cost as much as a statement, and an engine
    with any connection event makes every statement dispatch events."""
    dbapi_connection = conn.connection.dbapi_connection
    assert dbapi_connection is not None
    dbapi_connection.cursor().execute("BEGIN")


def _sqlite_reader_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")  # a read unit that tries to write fails loudly
    cursor.execute(f"PRAGMA busy_timeout={_READER_BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself, so writes can say IMMEDIATE.
    if dbapi_connection.isolation_level is not None:
        dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "foreign_keys=ON",
        f"busy_timeout={_BUSY_TIMEOUT_MS}",
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
