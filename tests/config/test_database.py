"""`Database`: read units run whole, read-only, on SQLite and PostgreSQL; SQLite writes queue.

Every test runs once per backend (`[sqlite]`, `[postgres]`) unless it says what is SQLite's own.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, func, insert, select, update
from sqlalchemy import text as sa_text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError

from config.database import Database, UTCDateTime
from config.settings import Settings
from tests.support.databases import postgres_database

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
RUNNERS = ["run_read", "run_scan"]

metadata = MetaData()
notes = Table(
    "notes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("owner", String(40), nullable=False),
    Column("body", String(200), nullable=False),
    Column("at", UTCDateTime(), nullable=True),
    Column("doc", JSON(), nullable=True),
)


@pytest.fixture(scope="module", params=BACKENDS)
async def db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("config") / "db.sqlite"
        async with _database(f"sqlite+aiosqlite:///{path}") as database:
            yield database
        return
    async with postgres_database() as url, _database(url) as database:
        yield database


@asynccontextmanager
async def _database(url: str) -> AsyncIterator[Database]:
    """A `Database` on `url` with the `notes` table, disposed afterwards."""
    database = Database(Settings(_env_file=None, environment="test", database_url=url))  # type: ignore[call-arg]
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        yield database
    finally:
        await database.dispose()


async def add_note(db: Database, owner: str, body: str) -> None:
    async with db.write() as session:
        await session.execute(insert(notes).values(owner=owner, body=body))


def bodies(conn: Connection, owner: str) -> list[str]:
    query = select(notes.c.body).where(notes.c.owner == owner).order_by(notes.c.id)
    return list(conn.execute(query).scalars())


def count(conn: Connection, owner: str) -> int:
    return int(conn.execute(select(func.count()).where(notes.c.owner == owner)).scalar_one())


@pytest.mark.parametrize("runner", RUNNERS)
async def test_a_read_unit_returns_what_writes_committed(db: Database, runner: str) -> None:
    owner = uuid.uuid4().hex
    await add_note(db, owner, "first")
    await add_note(db, owner, "second")
    assert await getattr(db, runner)(bodies, owner) == ["first", "second"]
    await add_note(db, owner, "third")
    assert await getattr(db, runner)(bodies, owner) == ["first", "second", "third"]


@pytest.mark.parametrize("runner", RUNNERS)
async def test_a_read_unit_cannot_write(db: Database, runner: str) -> None:
    owner = uuid.uuid4().hex

    def sneaky_insert(conn: Connection) -> None:
        conn.execute(insert(notes).values(owner=owner, body="should never land"))

    with pytest.raises(DBAPIError):
        await getattr(db, runner)(sneaky_insert)
    async with db.write() as session:
        assert await session.run_sync(lambda s: count(s.connection(), owner)) == 0


@pytest.mark.parametrize("runner", RUNNERS)
async def test_a_failing_unit_leaves_the_next_one_working(db: Database, runner: str) -> None:
    owner = uuid.uuid4().hex
    await add_note(db, owner, "kept")

    def broken_sql(conn: Connection) -> None:
        conn.exec_driver_sql("SELECT no_such_column FROM notes")

    def raises_midway(conn: Connection) -> None:
        bodies(conn, owner)
        raise LookupError("the unit's own error")

    with pytest.raises(DBAPIError):
        await getattr(db, runner)(broken_sql)
    with pytest.raises(LookupError):
        await getattr(db, runner)(raises_midway)
    assert await getattr(db, runner)(bodies, owner) == ["kept"]


async def test_units_run_concurrently_with_writes(db: Database) -> None:
    owner = uuid.uuid4().hex
    await asyncio.gather(
        *(add_note(db, owner, f"note {i}") for i in range(20)),
        *(db.run_read(count, owner) for _ in range(20)),
        *(db.run_scan(count, owner) for _ in range(20)),
    )
    assert await db.run_read(count, owner) == 20


async def test_on_sqlite_a_scan_leaves_the_event_loop_free(db: Database) -> None:
    """While a scan works in its thread, the loop keeps serving (here: it releases the scan)."""
    if not db.is_sqlite:
        pytest.skip("SQLite's own: on PostgreSQL the driver itself is asynchronous")
    released = threading.Event()

    def waits_for_the_loop(conn: Connection) -> bool:
        conn.exec_driver_sql("SELECT 1")
        return released.wait(timeout=5)

    async def release() -> None:
        await asyncio.sleep(0.01)
        released.set()

    was_released, _ = await asyncio.gather(db.run_scan(waits_for_the_loop), release())
    assert was_released


async def test_a_write_session_commits_whole_or_not_at_all(db: Database) -> None:
    owner = uuid.uuid4().hex

    async def fail_half_way() -> None:
        async with db.write() as session:
            await session.execute(insert(notes).values(owner=owner, body="first"))
            raise RuntimeError("half way")

    with pytest.raises(RuntimeError, match="half way"):
        await fail_half_way()
    assert await db.run_read(count, owner) == 0

    async with db.write() as session:
        await session.execute(insert(notes), [{"owner": owner, "body": f"n{i}"} for i in range(3)])
        streamed = await session.stream_scalars(select(notes.c.body).where(notes.c.owner == owner))
        assert [body async for body in streamed] == ["n0", "n1", "n2"]
    assert await db.run_read(count, owner) == 3


async def test_on_sqlite_a_write_session_inside_another_fails_instead_of_hanging(
    db: Database,
) -> None:
    if not db.is_sqlite:
        pytest.skip("SQLite's own: PostgreSQL has no process-wide write lock")
    async with asyncio.timeout(5), db.write():
        with pytest.raises(RuntimeError, match="inside another"):
            async with db.write():
                pass
    async with asyncio.timeout(5), db.write():  # the lock was released
        pass


async def test_on_sqlite_a_write_waiting_for_another_process_leaves_the_event_loop_free(
    db: Database,
) -> None:
    """Write sessions run their SQL on the event loop; the one wait SQLite can impose on them,
    another process's write lock, happens in a thread while the loop keeps serving."""
    if not db.is_sqlite:
        pytest.skip("SQLite's own: on PostgreSQL the driver itself is asynchronous")
    owner = uuid.uuid4().hex
    path = make_url(str(db.engine.url)).database
    assert path is not None
    other_process = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other_process.execute("BEGIN IMMEDIATE")
    ticks = [time.perf_counter()]

    async def tick_then_release() -> None:
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks.append(time.perf_counter())
        other_process.execute("COMMIT")

    try:
        async with asyncio.timeout(10):
            await asyncio.gather(add_note(db, owner, "after the other writer"), tick_then_release())
    finally:
        other_process.close()
    longest_stall = max(later - earlier for earlier, later in itertools.pairwise(ticks))
    assert longest_stall < 0.5
    assert await db.run_read(count, owner) == 1


@pytest.mark.parametrize("runner", RUNNERS)
async def test_utc_datetimes_come_back_aware_and_equal(db: Database, runner: str) -> None:
    owner = uuid.uuid4().hex
    await add_note(db, owner, "timed")
    moments = [
        datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2024, 3, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))),  # stored as UTC
        datetime(2025, 1, 1, tzinfo=UTC),  # no microseconds
    ]

    def read_at(conn: Connection) -> datetime | None:
        value: datetime | None = conn.execute(
            select(notes.c.at).where(notes.c.owner == owner)
        ).scalar_one()
        return value

    for moment in moments:
        async with db.write() as session:
            await session.execute(update(notes).where(notes.c.owner == owner).values(at=moment))
        found = await getattr(db, runner)(read_at)
        assert found == moment
        assert found is not None
        assert found.tzinfo is UTC
    async with db.write() as session:
        await session.execute(update(notes).where(notes.c.owner == owner).values(at=None))
    assert await getattr(db, runner)(read_at) is None


async def test_on_sqlite_times_written_as_other_iso_text_read_as_utc(db: Database) -> None:
    """Rows written by other tools: offsets are honoured, text without one is UTC."""
    if not db.is_sqlite:
        pytest.skip("SQLite's own: PostgreSQL stores timestamptz")
    owner = uuid.uuid4().hex
    await add_note(db, owner, "imported")
    texts = {
        "2024-03-01T01:00:00+02:00": datetime(2024, 2, 29, 23, 0, tzinfo=UTC),
        "2024-03-01T01:00:00Z": datetime(2024, 3, 1, 1, 0, tzinfo=UTC),
        "2024-03-01 01:00:00": datetime(2024, 3, 1, 1, 0, tzinfo=UTC),
        "2024-03-01": datetime(2024, 3, 1, tzinfo=UTC),
    }
    for text, expected in texts.items():
        async with db.write() as session:
            await session.execute(update(notes).where(notes.c.owner == owner).values(at=None))
            await session.execute(
                sa_text("UPDATE notes SET at = :at WHERE owner = :owner"),
                {"at": text, "owner": owner},
            )

        def read_at(conn: Connection) -> object:
            return conn.execute(select(notes.c.at).where(notes.c.owner == owner)).scalar_one()

        found = await db.run_read(read_at)
        assert found == expected, text
        assert isinstance(found, datetime)
        assert found.tzinfo is UTC


async def test_a_naive_datetime_is_refused(db: Database) -> None:
    naive = datetime(2024, 1, 1)  # noqa: DTZ001
    with pytest.raises(Exception, match="naive datetime"):
        async with db.write() as session:
            await session.execute(insert(notes).values(owner="x", body="x", at=naive))


async def test_a_cached_read_never_returns_what_a_commit_changed(db: Database) -> None:
    """On SQLite the result is reused until anything is committed, by this process or another
    (here: a second `Database` on the same file); elsewhere the unit runs every time."""
    owner = uuid.uuid4().hex
    await add_note(db, owner, "first")
    runs = 0

    def counted_bodies(conn: Connection, owner: str) -> tuple[str, ...]:
        nonlocal runs
        runs += 1
        return tuple(bodies(conn, owner))

    assert await db.run_read_cached(counted_bodies, owner) == ("first",)
    assert await db.run_read_cached(counted_bodies, owner) == ("first",)
    assert runs == (1 if db.is_sqlite else 2)

    await add_note(db, owner, "second")
    assert await db.run_read_cached(counted_bodies, owner) == ("first", "second")

    async with _database(str(db.engine.url)) as other_process:
        await add_note(other_process, owner, "third")
    assert await db.run_read_cached(counted_bodies, owner) == ("first", "second", "third")
    before = runs
    assert await db.run_read_cached(counted_bodies, owner) == ("first", "second", "third")
    assert runs == before + (0 if db.is_sqlite else 1)


@pytest.mark.parametrize("runner", RUNNERS)
async def test_json_documents_come_back_as_written(db: Database, runner: str) -> None:
    owner = uuid.uuid4().hex
    doc = {"text": "naïve ✓", "n": [1, 2.5, None, True], "nested": {"deep": {"x": -1}}}
    documents: list[object] = [doc, [], "plain", 3]
    if db.is_sqlite:  # json.dumps writes NaN, which strict JSON parsers refuse
        documents.append({"ratio": math.inf})
    for document in documents:
        async with db.write() as session:
            await session.execute(insert(notes).values(owner=owner, body="doc", doc=document))

        def latest(conn: Connection) -> object:
            query = select(notes.c.doc).where(notes.c.owner == owner).order_by(notes.c.id.desc())
            return conn.execute(query.limit(1)).scalar_one()

        assert await getattr(db, runner)(latest) == document
