from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from backend.deps import CurrentUser, SessionDep
from backend.errors import error_responses, not_found
from backend.pagination import Page, PageParams, page_params
from backend.projects import service
from backend.projects.models import Project
from backend.projects.schemas import (
    ProjectCreate,
    ProjectPublic,
    ProjectSearchResults,
    ProjectStatus,
    ProjectUpdate,
)
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


@router.post("", status_code=201)
async def create_project(
    data: ProjectCreate, user: CurrentUser, session: SessionDep
) -> ProjectPublic:
    return ProjectPublic.model_validate(await service.create(session, user.id, data))


@router.get("")
async def list_projects(
    user: CurrentUser,
    session: SessionDep,
    page: Annotated[PageParams, Depends(page_params("prj"))],
    status: ProjectStatus | None = None,
) -> Page[ProjectPublic]:
    rows, cursor = await service.list_page(session, user.id, page, status)
    return Page(items=[ProjectPublic.model_validate(r) for r in rows], next_cursor=cursor)


@router.get("/search")
async def search_projects(
    user: CurrentUser,
    session: SessionDep,
    q: Annotated[str, Query(min_length=1, max_length=500)],
    status: ProjectStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ProjectSearchResults:
    rows = await service.search(session, user.id, q, limit, status)
    return ProjectSearchResults(items=[ProjectPublic.model_validate(r) for r in rows])


@router.get("/{project_id}", responses=NOT_FOUND)
async def get_project(project: OwnedProject) -> ProjectPublic:
    return ProjectPublic.model_validate(project)


@router.patch("/{project_id}", responses=NOT_FOUND)
async def update_project(
    changes: ProjectUpdate, project: OwnedProject, session: SessionDep
) -> ProjectPublic:
    return ProjectPublic.model_validate(await service.update(session, project, changes))


@router.delete("/{project_id}", status_code=204, responses=NOT_FOUND)
async def delete_project(project: OwnedProject, session: SessionDep) -> Response:
    await service.delete(session, project)
    return Response(status_code=204)
