"""Every error leaves as ``{"error": code, "message": text}``; never a stack trace."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from executor.errors import (
    ConfigError,
    DatabaseError,
    ExecutorError,
    InputError,
    NotFound,
    RunLockBusy,
    StateConflict,
)
from executor.logs import get_logger

log = get_logger("api.errors")


class ApiError(Exception):
    """An error with its HTTP status, raised by routes and dependencies."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message


def error_response(status_code: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status_code, content={"error": code, "message": message})


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
}


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """A readable summary of pydantic errors that never repeats the input values."""
    parts: list[str] = []
    for error in errors:
        loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {error.get('msg', 'invalid')}")
        if len(parts) >= 10:
            parts.append("…")
            break
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status_code, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_input", describe_validation_errors(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, message)

    @app.exception_handler(ExecutorError)
    async def _executor(_: Request, exc: ExecutorError) -> JSONResponse:
        if isinstance(exc, RunLockBusy | StateConflict):
            status = 409
        elif isinstance(exc, NotFound):
            status = 404
        elif isinstance(exc, InputError):
            status = 422
        elif isinstance(exc, ConfigError | DatabaseError):
            status = 503
        else:
            status = 500
        log.warning("request.failed", error=exc.code, message=exc.message)
        return error_response(status, exc.code, exc.message)

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    async def _database(_: Request, exc: Exception) -> JSONResponse:
        log.warning("request.database_unavailable", error_type=type(exc).__name__)
        return error_response(503, "database_unavailable", "the database is not reachable")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("request.unexpected_error", error_type=type(exc).__name__)
        return error_response(500, "internal_error", "internal error; see the service logs")
