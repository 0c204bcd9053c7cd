"""Projects of one owner: every query is scoped by `user_id`; another user's id reads as absent."""

from __future__ import annotations

import re

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from backend.pagination import PageParams, next_cursor
from backend.projects.models import Project
from backend.projects.schemas import ProjectCreate, ProjectStatus, ProjectUpdate
from config.database import dialect_name, utcnow

MAX_QUERY_TERMS = 16


async def create(session: AsyncSession, user_id: str, data: ProjectCreate) -> Project:
    now = utcnow()
    project = Project(
        user_id=user_id,
        name=data.name,
        description=data.description,
        status=data.status,
        settings=data.settings.model_dump(),
        created_at=now,
        updated_at=now,
    )
    session.add(project)
    await session.flush()
    return project


async def get(session: AsyncSession, user_id: str, project_id: str) -> Project | None:
    result = await session.execute(
        select(Project).where(Project.id == project_id, Project.user_id == user_id)
    )
    return result.scalar_one_or_none()


async def list_page(
    session: AsyncSession, user_id: str, page: PageParams, status: ProjectStatus | None = None
) -> tuple[list[Project], str | None]:
    query = select(Project).where(Project.user_id == user_id)
    if status is not None:
        query = query.where(Project.status == status)
    if page.cursor is not None:
        query = query.where(Project.id < page.cursor)
    rows = list(await session.scalars(query.order_by(Project.id.desc()).limit(page.limit + 1)))
    return rows[: page.limit], next_cursor([row.id for row in rows], page.limit)


async def update(session: AsyncSession, project: Project, changes: ProjectUpdate) -> Project:
    data = changes.model_dump(exclude_unset=True)
    for field, value in data.items():
        setattr(project, field, value)
    if data:
        project.updated_at = utcnow()
    await session.flush()
    return project


async def delete(session: AsyncSession, project: Project) -> None:
    await session.delete(project)
    await session.flush()


async def search(
    session: AsyncSession,
    user_id: str,
    query: str,
    limit: int = 20,
    status: ProjectStatus | None = None,
) -> list[Project]:
    """Best match first, over name (weighted higher) and description, using the database's own
    full-text index; each word matches as a prefix, all words must match."""
    terms = re.findall(r"\w+", query.lower())[:MAX_QUERY_TERMS]
    if not terms:
        return []
    if dialect_name(session) == "postgresql":
        ids = await _search_postgres(session, user_id, terms, limit, status)
    else:
        ids = await _search_sqlite(session, user_id, terms, limit, status)
    if not ids:
        return []
    found = {p.id: p for p in await session.scalars(select(Project).where(Project.id.in_(ids)))}
    return [found[i] for i in ids if i in found]


async def _search_sqlite(
    session: AsyncSession, user_id: str, terms: list[str], limit: int, status: str | None
) -> list[str]:
    match = " ".join(f'"{term}"*' for term in terms)
    sql = (
        "SELECT p.id FROM projects_fts JOIN projects AS p ON p.rowid = projects_fts.rowid "
        "WHERE projects_fts MATCH :match AND p.user_id = :user_id"
        + (" AND p.status = :status" if status else "")
        + " ORDER BY bm25(projects_fts, 10.0, 1.0), p.id DESC LIMIT :limit"
    )
    params = {"match": match, "user_id": user_id, "status": status, "limit": limit}
    return list((await session.execute(text(sql), params)).scalars())


async def _search_postgres(
    session: AsyncSession, user_id: str, terms: list[str], limit: int, status: str | None
) -> list[str]:
    tsquery = " & ".join(f"{term}:*" for term in terms)
    sql = (
        "SELECT id FROM projects, to_tsquery('english', :tsquery) AS q "
        "WHERE search_vector @@ q AND user_id = :user_id"
        + (" AND status = :status" if status else "")
        + " ORDER BY ts_rank(search_vector, q) DESC, id DESC LIMIT :limit"
    )
    params = {"tsquery": tsquery, "user_id": user_id, "status": status, "limit": limit}
    return list((await session.execute(text(sql), params)).scalars())
