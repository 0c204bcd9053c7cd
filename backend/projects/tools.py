"""Agent tools over the caller's projects. The owner is always `ctx.user_id`, never an argument."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from backend.projects import service
from backend.projects.schemas import ProjectCreate, ProjectPublic, ProjectStatus, ProjectUpdate
from config.database import Database
from config.ids import is_id
from tools import ToolContext, ToolError, ToolRegistry

registry = ToolRegistry()
"""The project tools; agents pick from it by name."""


class ProjectHit(BaseModel):
    id: str
    name: str
    description: str | None
    status: ProjectStatus


def _db(ctx: ToolContext) -> Database:
    db: Database = ctx.db
    return db


@registry.tool
async def search_projects(
    ctx: ToolContext,
    query: str,
    status: ProjectStatus | None = None,
    limit: int = 10,
) -> list[ProjectHit]:
    """Full-text search over the names and descriptions of the user's projects, best match first.

    Args:
        query: Words to look for; each matches as a prefix and all must match.
        status: Only projects with this status.
        limit: At most this many results (1-50).
    """
    limit = max(1, min(limit, 50))
    rows = await _db(ctx).run_scan(service.search, ctx.user_id, query, limit, status)
    return [ProjectHit.model_validate(row, from_attributes=True) for row in rows]


@registry.tool
async def get_project(ctx: ToolContext, project_id: str) -> ProjectPublic:
    """Everything about one of the user's projects.

    Args:
        project_id: The project's id (`prj_...`), as returned by search_projects.
    """
    _check_id(project_id)
    project = await _db(ctx).run_read(service.find, ctx.user_id, project_id)
    if project is None:
        raise ToolError(f"No project with id {project_id}")
    return ProjectPublic.model_validate(project)


@registry.tool
async def create_project(
    ctx: ToolContext,
    name: str,
    description: str | None = None,
    status: Literal["active", "draft"] = "active",
) -> ProjectPublic:
    """Create a project for the user.

    Args:
        name: The project's name (1-200 characters).
        description: What the project is about.
        status: `active` or `draft`.
    """
    data = ProjectCreate.model_validate(
        {"name": name, "description": description, "status": status}
    )
    async with _db(ctx).write() as session:
        project = await service.create(session, ctx.user_id, data)
    return ProjectPublic.model_validate(project)


def _archives(arguments: dict[str, Any]) -> bool:
    return arguments.get("status") == "archived"


@registry.tool(needs_approval=_archives)
async def update_project(
    ctx: ToolContext,
    project_id: str,
    name: str | None = None,
    description: str | None = None,
    status: ProjectStatus | None = None,
) -> ProjectPublic:
    """Change a project's name, description or status; omitted fields stay as they are.

    Archiving a project waits for the user's approval.

    Args:
        project_id: The project's id (`prj_...`).
        name: A new name.
        description: A new description.
        status: `active`, `archived` or `draft`.
    """
    _check_id(project_id)
    changes = {"name": name, "description": description, "status": status}
    data = ProjectUpdate.model_validate({k: v for k, v in changes.items() if v is not None})
    async with _db(ctx).write() as session:
        project = await service.get(session, ctx.user_id, project_id)
        if project is None:
            raise ToolError(f"No project with id {project_id}")
        project = await service.update(session, project, data)
    return ProjectPublic.model_validate(project)


@registry.tool(needs_approval=True)
async def delete_project(ctx: ToolContext, project_id: str) -> str:
    """Delete one of the user's projects for good. Runs only after the user approves it.

    Args:
        project_id: The project's id (`prj_...`).
    """
    _check_id(project_id)
    async with _db(ctx).write() as session:
        project = await service.get(session, ctx.user_id, project_id)
        if project is None:
            raise ToolError(f"No project with id {project_id}")
        await service.delete(session, project)
    return f"Deleted project {project_id}"


def _check_id(project_id: str) -> None:
    if not is_id("prj", project_id):
        raise ToolError(f"{project_id!r} is not a project id; ids look like prj_01J...")
