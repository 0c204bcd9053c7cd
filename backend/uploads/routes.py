from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from backend.deps import CallerDep, DatabaseDep, SettingsDep
from backend.errors import error_responses, not_found
from backend.pagination import DEFAULT_LIMIT, Page, PageLimit, PageParams, cursor_query
from backend.responses import json_response
from backend.routing import TurboKitRoute
from backend.storage import Storage, content_disposition, discard
from backend.uploads import service
from backend.uploads.receive import FIELD, receive_file
from backend.uploads.schemas import UploadPublic
from config.ids import id_pattern

router = APIRouter(
    route_class=TurboKitRoute,
    prefix="/v1/uploads",
    tags=["uploads"],
    responses=error_responses(401, 422),
)
NOT_FOUND = error_responses(404)

UploadId = Annotated[
    str, Path(pattern=id_pattern("upl"), examples=["upl_01JD0000000000000000000000"])
]
UploadPage = Page[UploadPublic]

_MULTIPART_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {FIELD: {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}
_CONTENT_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file's bytes (local storage)",
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
    },
    307: {"description": "A short-lived signed URL on R2/S3, in `Location`"},
    **NOT_FOUND,
}
_SAFE_CONTENT_HEADERS = {
    # An uploaded page must not run as this origin's script when opened.
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
    "Cache-Control": "private, no-store",
}


def _storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


@router.post(
    "",
    status_code=201,
    response_model=UploadPublic,
    responses=error_responses(413),
    openapi_extra=_MULTIPART_BODY,
)
async def create_upload(
    request: Request, caller: CallerDep, db: DatabaseDep, settings: SettingsDep
) -> Response:
    """Multipart `file`; refused with 413 as soon as it passes MAX_UPLOAD_BYTES."""
    storage = _storage(request)
    received = await receive_file(request, storage.staging_dir(), settings.max_upload_bytes)
    try:
        row = await service.create(db, storage, caller.id, received)
    finally:
        discard(received.path)
    return json_response(UploadPublic.model_validate(row), 201)


@router.get("", response_model=UploadPage)
async def list_uploads(
    caller: CallerDep,
    db: DatabaseDep,
    limit: PageLimit = DEFAULT_LIMIT,
    cursor: Annotated[str | None, cursor_query("upl")] = None,
) -> Response:
    rows, next_cursor = await db.run_read(service.list_page, caller.id, PageParams(limit, cursor))
    return json_response(UploadPage.model_validate({"items": rows, "next_cursor": next_cursor}))


@router.get("/{upload_id}", response_model=UploadPublic, responses=NOT_FOUND)
async def get_upload(caller: CallerDep, db: DatabaseDep, upload_id: UploadId) -> Response:
    row = await db.run_read(service.find, caller.id, upload_id)
    if row is None:
        raise not_found("Upload")
    return json_response(UploadPublic.model_validate(row))


@router.get("/{upload_id}/content", response_class=Response, responses=_CONTENT_DOC)
async def get_upload_content(
    request: Request, caller: CallerDep, db: DatabaseDep, upload_id: UploadId
) -> Response:
    row = await db.run_read(service.find, caller.id, upload_id)
    if row is None:
        raise not_found("Upload")
    download = await _storage(request).download(upload_id, row["filename"], row["content_type"])
    if download.url is not None:
        return RedirectResponse(download.url, 307, headers={"Cache-Control": "no-store"})
    if download.path is None or not download.path.is_file():
        raise not_found("Upload content")
    headers = {"Content-Disposition": content_disposition(row["filename"]), **_SAFE_CONTENT_HEADERS}
    return FileResponse(download.path, media_type=row["content_type"], headers=headers)


@router.delete("/{upload_id}", status_code=204, responses=NOT_FOUND)
async def delete_upload(
    request: Request, caller: CallerDep, db: DatabaseDep, upload_id: UploadId
) -> Response:
    if not await service.delete_upload(db, _storage(request), caller.id, upload_id):
        raise not_found("Upload")
    return Response(status_code=204)
