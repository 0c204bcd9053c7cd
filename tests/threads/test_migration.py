"""Migration 0002 builds exactly what the models describe, on both databases, and undoes it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import Connection

from config.database import NAMING_CONVENTION, Database
from threads.models import TABLES

MIGRATION = Path(__file__).parents[2] / "backend/migrations/versions/0002_threads.py"


def _load_migration() -> ModuleType:
    """By path: the revision is not importable as a package, and 0001 must not be needed."""
    spec = importlib.util.spec_from_file_location("migration_0002_threads", MIGRATION)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LATER_INDEXES = {"ix_runs_status_created_at"}
"""Indexes of these tables that later revisions add (0009_crons), so 0002 does not build them."""


def _models_only() -> MetaData:
    """This package's tables alone, so other domains' tables are neither expected nor compared,
    as 0002 built them."""
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    for table in TABLES:
        copy = table.to_metadata(metadata)
        copy.indexes = {index for index in copy.indexes if index.name not in LATER_INDEXES}
    return metadata


def _run(connection: Connection, step: str) -> None:
    context = MigrationContext.configure(connection)
    with Operations.context(context):
        getattr(_load_migration(), step)()


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, _models_only()))


def _indexes(connection: Connection) -> dict[str, list[tuple[str, tuple[str, ...], bool]]]:
    inspector = inspect(connection)
    return {
        table.name: sorted(
            (str(index["name"]), tuple(str(c) for c in index["column_names"]), index["unique"])
            for index in inspector.get_indexes(table.name)
        )
        for table in TABLES
    }


async def test_upgrade_matches_the_models_and_downgrade_removes_them(empty_db: Database) -> None:
    async with empty_db.engine.begin() as conn:
        await conn.run_sync(_run, "upgrade")
        assert await conn.run_sync(_differences) == []
        indexes = await conn.run_sync(_indexes)

    assert indexes == {
        "threads": [("ix_threads_user_id_updated_at", ("user_id", "updated_at", "id"), False)],
        "messages": [("ix_messages_thread_id_seq", ("thread_id", "seq"), True)],
        "runs": [
            ("ix_runs_thread_id_created_at", ("thread_id", "created_at"), False),
            ("ix_runs_thread_id_status", ("thread_id", "status"), False),
        ],
        "run_events": [],
        "llm_calls": [("ix_llm_calls_run_id", ("run_id",), False)],
    }

    async with empty_db.engine.begin() as conn:
        await conn.run_sync(_run, "downgrade")
        remaining = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    assert remaining == []
