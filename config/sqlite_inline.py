"""An asyncio SQLite driver that runs each call on the event loop instead of in a thread.

SQLAlchemy's aiosqlite dialect sends every DBAPI call (cursor, execute, fetch, close, commit) to
aiosqlite's own thread and back. A short write transaction makes a few dozen of those hops, and
each costs far more than SQLite's own microseconds. This driver offers the same coroutine
interface over a plain `sqlite3` connection, so the dialect (and every session built on it) works
unchanged while the calls complete at once.

It is for write sessions, which one process already runs one at a time: the only wait SQLite can
impose on them is another process's write lock at `BEGIN IMMEDIATE`. That statement is tried
without waiting first; if the database is busy, the wait (up to the connection's busy timeout)
happens in a worker thread, so the event loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

_BEGIN_IMMEDIATE = "BEGIN IMMEDIATE"


class InlineCursor:
    """The coroutine cursor interface aiosqlite offers, answered synchronously."""

    __slots__ = ("_connection", "_cursor")

    def __init__(self, connection: InlineConnection, cursor: sqlite3.Cursor) -> None:
        self._connection = connection
        self._cursor = cursor

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        if sql == _BEGIN_IMMEDIATE:
            await self._connection.begin_immediate(self._cursor)
        elif parameters is None:
            self._cursor.execute(sql)
        else:
            self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    async def __aiter__(self) -> AsyncIterator[Any]:
        """Rows one by one, for the dialect's server-side (streamed) results."""
        while (row := self._cursor.fetchone()) is not None:
            yield row

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class InlineConnection:
    """The coroutine connection interface aiosqlite offers, answered synchronously."""

    def __init__(self, conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._busy_timeout_ms = busy_timeout_ms

    @property
    def _connection(self) -> sqlite3.Connection | None:
        """What the dialect checks before it commits or rolls back (None once closed)."""
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        return self._open().isolation_level

    def cursor(self) -> InlineCursor:
        """A cursor, which the dialect enters with `async with` as it does aiosqlite's."""
        return InlineCursor(self, self._open().cursor())

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        return await self.cursor().execute(sql, parameters)

    async def commit(self) -> None:
        self._open().commit()

    async def rollback(self) -> None:
        self._open().rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._open().create_function(*args, **kwargs)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def stop(self) -> None:
        """Force-close, as the dialect asks when it terminates a connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def begin_immediate(self, cursor: sqlite3.Cursor) -> None:
        conn = self._open()
        conn.execute("PRAGMA busy_timeout=0")
        try:
            cursor.execute(_BEGIN_IMMEDIATE)
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            # Another process writes: wait for it in a thread, never on the event loop.
            conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            await asyncio.to_thread(cursor.execute, _BEGIN_IMMEDIATE)
            return
        finally:
            conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError("no active connection")
        return self._conn


def inline_creator(path: str, busy_timeout_ms: int) -> Callable[[], Any]:
    """An `async_creator` for `create_async_engine("sqlite+aiosqlite://…")`."""

    async def connect() -> InlineConnection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        return InlineConnection(conn, busy_timeout_ms)

    return connect
