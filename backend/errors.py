"""One error type for everything a client may see, mapped to the contract's shape in one place.

`{"error": {"code", "message", "data"}}` on every route, including the framework's own 404, 405 and
422; a 500 never carries a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger("turbokit.errors")

_CODES_BY_STATUS = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    402: "INSUFFICIENT_CREDITS",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    502: "UPSTREAM_ERROR",
    503: "UNAVAILABLE",
}


class ErrorDetail(BaseModel):
    code: str
    message: str
    data: dict[str, Any]


class ErrorResponse(BaseModel):
    """The body of every error response (documented in the OpenAPI schema)."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing, invalid or expired bearer token",
    402: "Not enough credits",
    403: "Not allowed",
    404: "Not found (or not yours)",
    409: "Conflict",
    413: "Payload too large",
    422: "Invalid input",
    429: "Rate limited",
    502: "Upstream failure",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` documenting the contract's error body for these statuses."""
    return {
        status: {"model": ErrorResponse, "description": _DESCRIPTIONS.get(status, "Error")}
        for status in statuses
    }


class AppError(Exception):
    """An error the client must act on; `code` is the stable, documented identifier."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.data = data or {}
        self.headers = headers


def not_found(what: str) -> AppError:
    return AppError("NOT_FOUND", f"{what} not found", 404)


def unauthenticated(message: str = "Authentication required") -> AppError:
    return AppError("UNAUTHENTICATED", message, 401, headers={"WWW-Authenticate": "Bearer"})


def validation_error(loc: list[str | int], msg: str) -> AppError:
    return AppError("VALIDATION_ERROR", msg, 422, {"errors": [{"loc": loc, "msg": msg}]})


def error_body(code: str, message: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "data": data or {}}}


def error_response(error: AppError) -> JSONResponse:
    return JSONResponse(
        error_body(error.code, error.message, error.data),
        status_code=error.status,
        headers=error.headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _on_app_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _on_unexpected)


async def _on_app_error(_request: Request, exc: AppError) -> JSONResponse:
    return error_response(exc)


async def _on_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "invalid"))}
        for err in exc.errors()
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"])
    message = f"{where}: {first['msg']}" if where else str(first["msg"])
    return error_response(AppError("VALIDATION_ERROR", message, 422, {"errors": errors}))


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = exc.status_code
    if status == 400:  # the framework could not decode the body (e.g. not UTF-8)
        status = 422
    code = _CODES_BY_STATUS.get(status, "ERROR")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ").capitalize()
    headers = dict(exc.headers) if exc.headers else {}
    if status == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    data = {"errors": [{"loc": ["body"], "msg": message}]} if status == 422 else None
    return error_response(AppError(code, message, status, data, headers=headers or None))


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route offers for this path; Starlette names only the first route's."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(AppError("INTERNAL", "Internal server error", 500))
