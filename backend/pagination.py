"""Keyset pages over time-ordered ids: `?limit=&cursor=` in, `{"items", "next_cursor"}` out.

Ids sort by creation (config.ids), so "newest first" is `ORDER BY id DESC` and the cursor is the
last id seen: rows created during a walk land before the cursor and never shift later pages.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from backend.errors import validation_error
from config.ids import is_id

MAX_LIMIT = 100
DEFAULT_LIMIT = 20


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class PageParams:
    limit: int
    cursor: str | None


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor)


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, prefix: str) -> str:
    """The id a cursor stands for; a cursor that is not one of ours is a 422, not an empty page."""
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        value = ""
    if not is_id(prefix, value):
        raise validation_error(["query", "cursor"], "Invalid cursor")
    return value


def next_cursor(ids: list[str], limit: int) -> str | None:
    """Given up to limit+1 ids fetched, the cursor for the next page, or None at the end."""
    return encode_cursor(ids[limit - 1]) if len(ids) > limit else None
