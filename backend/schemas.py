"""Pieces shared by the domains' request schemas."""

from __future__ import annotations

from collections.abc import Callable


def reject_nulls(*fields: str) -> Callable[[object], object]:
    """Before-validator: these fields may be omitted, but an explicit null is a 422 naming them."""

    def check(data: object) -> object:
        if isinstance(data, dict):
            nulls = [name for name in fields if name in data and data[name] is None]
            if nulls:
                raise ValueError(f"may be omitted but not null: {', '.join(nulls)}")
        return data

    return check
