from __future__ import annotations

from fastapi import APIRouter, Response

from backend.deps import CurrentUser, SessionDep
from backend.errors import error_responses
from backend.routing import TurboKitRoute
from backend.users import service
from backend.users.schemas import UserPublic, UserUpdate

router = APIRouter(
    route_class=TurboKitRoute, prefix="/v1/me", tags=["users"], responses=error_responses(401, 422)
)


@router.get("")
async def get_me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)


@router.patch("")
async def update_me(changes: UserUpdate, user: CurrentUser, session: SessionDep) -> UserPublic:
    return UserPublic.model_validate(await service.update(session, user, changes))


@router.delete("", status_code=204)
async def delete_me(user: CurrentUser, session: SessionDep) -> Response:
    await service.soft_delete(session, user)
    return Response(status_code=204)
