"""Responses already serialised by the route.

A route that builds its response model itself returns it through `json_response`, with the model
named in `response_model=` for the OpenAPI document: FastAPI then passes the bytes through instead
of validating the model a second time and serialising it again.
"""

from __future__ import annotations

import functools
from typing import Any

from fastapi import Response
from pydantic import BaseModel, TypeAdapter


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    """`model` as JSON, exactly as FastAPI would have written it; straight to bytes (the model's
    own `model_dump_json` makes a `str` that would be encoded again)."""
    body = _adapter(type(model)).dump_json(model)
    return Response(body, status_code, media_type="application/json")


@functools.cache
def _adapter(model_type: type[BaseModel]) -> TypeAdapter[Any]:
    return TypeAdapter(model_type)
