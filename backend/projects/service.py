"""Projects of one owner: every query is scoped by `user_id`; another user's id reads as absent.

Reads are read units (plain functions of a Core `Connection`, run by `Database.run_read` or
`run_scan`) returning plain dicts, which pydantic validates fastest; statements are built once.
Changes to an existing project go through the ORM in a write session.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from sqlalchemy import Select, Table, bindparam, insert, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from backend.events import service as events
from backend.pagination import PageParams, next_cursor
from backend.projects.models import Project
from backend.projects.schemas import ProjectCreate, ProjectPublic, ProjectStatus, ProjectUpdate
from config.database import row_dicts, utcnow
from config.ids import new_id

MAX_QUERY_TERMS = 16

projects: Table = Project.__table__  # type: ignore[assignment]
ProjectRow = dict[str, Any]
"""A row of `projects` as a dict of its columns (what `ProjectPublic` validates)."""

_INSERT = insert(projects)
_FIND = select(projects).where(
    projects.c.id == bindparam("project_id"), projects.c.user_id == bindparam("user_id")
)
_BY_IDS = select(projects).where(projects.c.id.in_(bindparam("ids", expanding=True)))


async def create(session: AsyncSession, user_id: str, data: ProjectCreate) -> ProjectRow:
    now = utcnow()
    row: ProjectRow = {
        "id": new_id("prj"),
        "user_id": user_id,
        "name": data.name,
        "description": data.description,
        "status": data.status,
        "settings": data.settings.model_dump(),
        "created_at": now,
        "updated_at": now,
    }
    await session.execute(_INSERT, row)
    events.project_changed(session, "created", ProjectPublic.model_validate(row))
    return row


async def get(session: AsyncSession, user_id: str, project_id: str) -> Project | None:
    """The project as an ORM object, to change it in a write session."""
    result = await session.execute(
        select(Project).where(Project.id == project_id, Project.user_id == user_id)
    )
    return result.scalar_one_or_none()


def find(conn: Connection, user_id: str, project_id: str) -> ProjectRow | None:
    rows = row_dicts(conn.execute(_FIND, {"project_id": project_id, "user_id": user_id}))
    return rows[0] if rows else None


def list_page(
    conn: Connection, user_id: str, page: PageParams, status: ProjectStatus | None = None
) -> tuple[list[ProjectRow], str | None]:
    query = _page_query(status is not None, page.cursor is not None)
    params = {"user_id": user_id, "status": status, "cursor": page.cursor, "limit": page.limit + 1}
    rows = row_dicts(conn.execute(query, params))
    return rows[: page.limit], next_cursor([row["id"] for row in rows], page.limit)


@functools.cache
def _page_query(by_status: bool, after_cursor: bool) -> Select[Any]:
    """Built once per shape: building a statement costs more than SQLite takes to answer it."""
    query = select(projects).where(projects.c.user_id == bindparam("user_id"))
    if by_status:
        query = query.where(projects.c.status == bindparam("status"))
    if after_cursor:
        query = query.where(projects.c.id < bindparam("cursor"))
    return query.order_by(projects.c.id.desc()).limit(bindparam("limit"))


async def update(session: AsyncSession, project: Project, changes: ProjectUpdate) -> Project:
    data = changes.model_dump(exclude_unset=True)
    for field, value in data.items():
        setattr(project, field, value)
    if data:
        project.updated_at = utcnow()
    await session.flush()
    if data:
        events.project_changed(session, "updated", ProjectPublic.model_validate(project))
    return project


async def delete(session: AsyncSession, project: Project) -> None:
    await session.delete(project)
    await session.flush()
    events.project_deleted(session, project.user_id, project.id)


def search(
    conn: Connection,
    user_id: str,
    query: str,
    limit: int = 20,
    status: ProjectStatus | None = None,
) -> list[ProjectRow]:
    """Best match first, over name (weighted higher) and description, using the database's own
    full-text index; each word matches as a prefix, all words must match. Ranking scores every
    match, so run it with `Database.run_scan`."""
    terms = re.findall(r"\w+", query.lower())[:MAX_QUERY_TERMS]
    if not terms:
        return []
    if conn.dialect.name == "postgresql":
        ids = _search_postgres(conn, user_id, terms, limit, status)
    else:
        ids = _search_sqlite(conn, user_id, terms, limit, status)
    if not ids:
        return []
    found = {row["id"]: row for row in row_dicts(conn.execute(_BY_IDS, {"ids": ids}))}
    return [found[i] for i in ids if i in found]


def _search_sqlite(
    conn: Connection, user_id: str, terms: list[str], limit: int, status: str | None
) -> list[str]:
    match = " ".join(f'"{term}"*' for term in terms)
    sql = (
        "SELECT p.id FROM projects_fts JOIN projects AS p ON p.rowid = projects_fts.rowid "
        "WHERE projects_fts MATCH :match AND p.user_id = :user_id"
        + (" AND p.status = :status" if status else "")
        + " ORDER BY bm25(projects_fts, 10.0, 1.0), p.id DESC LIMIT :limit"
    )
    params = {"match": match, "user_id": user_id, "status": status, "limit": limit}
    return list(conn.execute(text(sql), params).scalars())


def _search_postgres(
    conn: Connection, user_id: str, terms: list[str], limit: int, status: str | None
) -> list[str]:
    tsquery = " & ".join(f"{term}:*" for term in terms)
    sql = (
        "SELECT id FROM projects, to_tsquery('english', :tsquery) AS q "
        "WHERE search_vector @@ q AND user_id = :user_id"
        + (" AND status = :status" if status else "")
        + " ORDER BY ts_rank(search_vector, q) DESC, id DESC LIMIT :limit"
    )
    params = {"tsquery": tsquery, "user_id": user_id, "status": status, "limit": limit}
    return list(conn.execute(text(sql), params).scalars())
