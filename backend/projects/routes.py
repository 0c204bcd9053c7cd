from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from backend.deps import CallerDep, CurrentUser, DatabaseDep, SessionDep
from backend.errors import error_responses, not_found
from backend.pagination import DEFAULT_LIMIT, Page, PageLimit, PageParams, cursor_query
from backend.projects import service
from backend.projects.models import Project
from backend.projects.schemas import (
    ProjectCreate,
    ProjectPublic,
    ProjectSearchResults,
    ProjectStatus,
    ProjectUpdate,
)
from backend.responses import json_response
from backend.routing import TurboKitRoute
from config.ids import id_pattern

router = APIRouter(
    route_class=TurboKitRoute,
    prefix="/v1/projects",
    tags=["projects"],
    responses=error_responses(401, 422),
)
NOT_FOUND = error_responses(404)

ProjectId = Annotated[
    str, Path(pattern=id_pattern("prj"), examples=["prj_01JD0000000000000000000000"])
]


async def _owned(session: SessionDep, user: CurrentUser, project_id: ProjectId) -> Project:
    project = await service.get(session, user.id, project_id)
    if project is None:
        raise not_found("Project")
    return project


OwnedProject = Annotated[Project, Depends(_owned)]
ProjectPage = Page[ProjectPublic]


@router.post("", status_code=201, response_model=ProjectPublic)
async def create_project(data: ProjectCreate, caller: CallerDep, session: SessionDep) -> Response:
    project = await service.create(session, caller.id, data)
    return json_response(ProjectPublic.model_validate(project), 201)


@router.get("", response_model=ProjectPage)
async def list_projects(
    caller: CallerDep,
    db: DatabaseDep,
    limit: PageLimit = DEFAULT_LIMIT,
    cursor: Annotated[str | None, cursor_query("prj")] = None,
    status: ProjectStatus | None = None,
) -> Response:
    page = PageParams(limit, cursor)
    rows, next_cursor = await db.run_read(service.list_page, caller.id, page, status)
    return json_response(ProjectPage.model_validate({"items": rows, "next_cursor": next_cursor}))


@router.get("/search", response_model=ProjectSearchResults)
async def search_projects(
    caller: CallerDep,
    db: DatabaseDep,
    q: Annotated[str, Query(min_length=1, max_length=500)],
    status: ProjectStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    rows = await db.run_scan(service.search, caller.id, q, limit, status)
    return json_response(ProjectSearchResults.model_validate({"items": rows}))


@router.get("/{project_id}", response_model=ProjectPublic, responses=NOT_FOUND)
async def get_project(caller: CallerDep, db: DatabaseDep, project_id: ProjectId) -> Response:
    row = await db.run_read(service.find, caller.id, project_id)
    if row is None:
        raise not_found("Project")
    return json_response(ProjectPublic.model_validate(row))


@router.patch("/{project_id}", responses=NOT_FOUND)
async def update_project(
    changes: ProjectUpdate, project: OwnedProject, session: SessionDep
) -> ProjectPublic:
    return ProjectPublic.model_validate(await service.update(session, project, changes))


@router.delete("/{project_id}", status_code=204, responses=NOT_FOUND)
async def delete_project(project: OwnedProject, session: SessionDep) -> Response:
    await service.delete(session, project)
    return Response(status_code=204)
