"""Alembic environment: always handed a live connection by `backend.migrations.upgrade`."""

from __future__ import annotations

from alembic import context

import backend.models  # noqa: F401  (registers every table on Base.metadata)
from config.database import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `turbokit migrate`, which supplies the connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
