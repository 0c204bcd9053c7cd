from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from backend.deps import CallerDep, DatabaseDep, SessionDep, SettingsDep
from backend.errors import error_responses
from backend.presence import service
from backend.presence.schemas import ROOM_PATTERN, Heartbeat, Leave, Online
from backend.responses import json_response
from backend.routing import TurboKitRoute

router = APIRouter(
    route_class=TurboKitRoute,
    prefix="/v1/presence",
    tags=["presence"],
    responses=error_responses(401, 422),
)

Room = Annotated[str, Path(pattern=ROOM_PATTERN, examples=["project:prj_01JD0000000000000000"])]


def _online(entries: list[service.Entry]) -> Response:
    return json_response(Online.model_validate({"online": entries}))


@router.post("/{room}/heartbeat", response_model=Online)
async def heartbeat(
    room: Room, body: Heartbeat, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> Response:
    """Keep the caller's session online in the room (send one well within the TTL, e.g. every
    10 s of a 30 s TTL); answers who is online now."""
    ttl = settings.presence_ttl_seconds
    return _online(
        await service.heartbeat(session, room, caller.id, body.session_id, body.data, ttl)
    )


@router.get("/{room}", response_model=Online)
async def get_online(
    room: Room, _caller: CallerDep, db: DatabaseDep, settings: SettingsDep
) -> Response:
    return _online(await db.run_read(service.online, room, settings.presence_ttl_seconds))


@router.post("/{room}/leave", response_model=Online)
async def leave(
    room: Room, body: Leave, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> Response:
    """End the caller's session in the room at once (rather than after the TTL); answers who is
    still online. Leaving a session that is not there changes nothing."""
    ttl = settings.presence_ttl_seconds
    return _online(await service.leave(session, room, caller.id, body.session_id, ttl))
