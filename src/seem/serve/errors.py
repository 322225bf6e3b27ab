"""Errors of the HTTP API: every failure is ``{"error": CODE, "detail": MESSAGE}`` with the right status code.

``ApiError`` is raised anywhere in the server; ``install_error_handlers`` turns it (and FastAPI's validation errors,
Starlette's HTTP errors and anything unexpected) into that JSON body.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "error_body", "install_error_handlers"]

log = logging.getLogger("seem.serve")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    503: "busy",
    504: "timeout",
}


class ApiError(Exception):
    """An error answered as ``{"error": code, "detail": message}`` with HTTP ``status``.

    Args:
        status: HTTP status code.
        message: what went wrong, for a human (no paths, no tracebacks).
        code: short machine-readable code (default: derived from ``status``).
        headers: extra response headers (e.g. ``Retry-After``).
    """

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.code = code or _CODES.get(self.status, "error")
        self.headers = headers

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(self.code, self.message), status_code=self.status, headers=self.headers)


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": code, "detail": message, **extra}


def _validation_message(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    parts = []
    details = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        msg = str(e.get("msg", "invalid value"))
        parts.append(f"{loc}: {msg}")
        details.append({"loc": [str(x) for x in e.get("loc", ())], "msg": msg, "type": e.get("type")})
    return "; ".join(parts[:5]) + (f" (and {len(parts) - 5} more)" if len(parts) > 5 else ""), details


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers on ``app``."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = _validation_message(exc)
        return JSONResponse(error_body("invalid_request", message, errors=details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = getattr(exc, "headers", None)
        return JSONResponse(
            error_body(_CODES.get(exc.status_code, "error"), detail), status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error: %s", exc)
        return JSONResponse(
            error_body("internal_error", f"internal error ({type(exc).__name__}); see the server log"),
            status_code=500,
        )
