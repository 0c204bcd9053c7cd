"""The migrations build exactly the schema the models declare, on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi import FastAPI
from sqlalchemy.engine import Connection

import backend.models  # noqa: F401
from config.database import Base, Database

# Full-text machinery the models do not declare: FTS5 tables on SQLite, a generated column on PG.
FULL_TEXT_OBJECTS = ("projects_fts", "search_vector", "ix_projects_search_vector")


def _include(obj: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
    return not (name or "").startswith(FULL_TEXT_OBJECTS) and name != "alembic_version"


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"include_object": _include, "compare_type": True}
    )
    return list(compare_metadata(context, Base.metadata))


async def test_models_and_migrations_agree(app: FastAPI) -> None:
    db: Database = app.state.db
    async with db.engine.connect() as connection:
        differences = await connection.run_sync(_differences)
    assert differences == []
