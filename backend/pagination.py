"""Keyset pages over time-ordered ids: `?limit=&cursor=` in, `{"items", "next_cursor"}` out.

Ids sort by creation (config.ids), so "newest first" is `ORDER BY id DESC` and the cursor is the
last id seen: rows created during a walk land before the cursor and never shift later pages.
"""

# No `from __future__ import annotations`: FastAPI must see the closure's Query objects.
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from config.ids import id_pattern

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


PageLimit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


def cursor_query(prefix: str) -> Any:
    """`?cursor=`: the last id of the previous page. Its documented pattern is exactly the id
    pattern, so a cursor that fits the schema is always one the server accepts; anything else is
    a 422."""
    return Query(pattern=id_pattern(prefix), description="next_cursor of the last page")


def page_params(prefix: str) -> Callable[..., Awaitable[PageParams]]:
    """A `?limit=&cursor=` dependency. A hot route may declare `PageLimit` and `cursor_query`
    itself instead: FastAPI solving one more dependency costs about what a short read does."""
    cursor_param = cursor_query(prefix)

    async def dependency(
        limit: PageLimit = DEFAULT_LIMIT,
        cursor: Annotated[str | None, cursor_param] = None,
    ) -> PageParams:
        return PageParams(limit=limit, cursor=cursor)

    return dependency


def next_cursor(ids: list[str], limit: int) -> str | None:
    """Given up to limit+1 ids fetched, the cursor for the next page, or None at the end."""
    return ids[limit - 1] if len(ids) > limit else None
