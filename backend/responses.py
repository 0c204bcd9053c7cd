"""Responses already serialised by the route.

A route that builds its response model itself returns it through `json_response`, with the model
named in `response_model=` for the OpenAPI document: FastAPI then passes the bytes through instead
of validating the model a second time and serialising it again.
"""

from __future__ import annotations

from fastapi import Response
from pydantic import BaseModel


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    """`model` as JSON bytes, exactly as FastAPI would have written it."""
    return Response(model.model_dump_json(), status_code, media_type="application/json")
