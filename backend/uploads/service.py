"""Uploads of one owner: every query is scoped by `user_id`; another user's id reads as absent.

A row is written only once its object is stored, and removed before its object is: a listed
upload always has its bytes, and a failure in between leaves at worst an unlisted object.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Table, bindparam, delete, insert, select
from sqlalchemy.engine import Connection

from backend.pagination import PageParams, next_cursor
from backend.storage import Storage
from backend.uploads.models import Upload
from backend.uploads.receive import Received
from config.database import Database, row_dicts, utcnow
from config.ids import new_id

log = logging.getLogger("turbokit.uploads")

uploads: Table = Upload.__table__  # type: ignore[assignment]
UploadRow = dict[str, Any]
"""A row of `uploads` as a dict of its columns (what `UploadPublic` validates)."""

_INSERT = insert(uploads)
_FIND = select(uploads).where(
    uploads.c.id == bindparam("upload_id"), uploads.c.user_id == bindparam("user_id")
)
_DELETE = (
    delete(uploads)
    .where(uploads.c.id == bindparam("upload_id"), uploads.c.user_id == bindparam("user_id"))
    .returning(uploads.c.id)
)
_FIRST_PAGE = (
    select(uploads)
    .where(uploads.c.user_id == bindparam("user_id"))
    .order_by(uploads.c.id.desc())
    .limit(bindparam("limit"))
)
_NEXT_PAGE = _FIRST_PAGE.where(uploads.c.id < bindparam("cursor"))


async def create(db: Database, storage: Storage, user_id: str, received: Received) -> UploadRow:
    """Store the received file's bytes, then its row."""
    row: UploadRow = {
        "id": new_id("upl"),
        "user_id": user_id,
        "filename": received.filename,
        "content_type": received.content_type,
        "size": received.size,
        "sha256": received.sha256,
        "created_at": utcnow(),
    }
    await storage.put(row["id"], received.path, received.content_type)
    try:
        async with db.write() as session:
            await session.execute(_INSERT, row)
    except BaseException:
        await storage.delete(row["id"])
        raise
    return row


def find(conn: Connection, user_id: str, upload_id: str) -> UploadRow | None:
    rows = row_dicts(conn.execute(_FIND, {"upload_id": upload_id, "user_id": user_id}))
    return rows[0] if rows else None


def list_page(
    conn: Connection, user_id: str, page: PageParams
) -> tuple[list[UploadRow], str | None]:
    query = _FIRST_PAGE if page.cursor is None else _NEXT_PAGE
    params = {"user_id": user_id, "cursor": page.cursor, "limit": page.limit + 1}
    rows = row_dicts(conn.execute(query, params))
    return rows[: page.limit], next_cursor([row["id"] for row in rows], page.limit)


async def delete_upload(db: Database, storage: Storage, user_id: str, upload_id: str) -> bool:
    """Remove the row, then the object; False when the caller has no such upload."""
    async with db.write() as session:
        deleted = await session.scalar(_DELETE, {"upload_id": upload_id, "user_id": user_id})
    if deleted is None:
        return False
    try:
        await storage.delete(upload_id)
    except Exception:
        log.exception("upload %s: its row is gone but removing its object failed", upload_id)
    return True
