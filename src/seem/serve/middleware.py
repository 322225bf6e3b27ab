"""ASGI middleware that acts before a request body is read: body-size limit and API key.

Both answer with the API's JSON errors (``seem.serve.errors``). They are plain ASGI (no buffering), so a refused
upload is never read into memory: a too-large ``Content-Length`` is answered at once, and a body streamed without
one is cut off as soon as it passes the limit.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from seem.serve.errors import error_body

__all__ = ["ApiKeyMiddleware", "BodyLimitMiddleware", "BodyTooLarge"]

Scope = dict[str, Any]


class BodyTooLarge(HTTPException):
    """Raised while the body streams in, once it passes the limit (answered as 413 by the error handlers)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {limit:,} bytes")


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k.lower() == name:
            return v.decode("latin-1")
    return None


class BodyLimitMiddleware:
    """Refuse request bodies larger than ``limit_for(scope)`` bytes with 413."""

    def __init__(self, app: Any, limit_for: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        cl = _header(scope, b"content-length")
        if cl is not None:
            if not cl.strip().isdigit():
                await JSONResponse(error_body("bad_request", "invalid Content-Length"), 400)(scope, receive, send)
                return
            if int(cl) > limit:
                msg = f"the request body ({int(cl):,} bytes) is larger than the limit of {limit:,} bytes"
                await JSONResponse(error_body("too_large", msg), 413)(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


class ApiKeyMiddleware:
    """Require ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` on paths for which ``protected(path)`` holds."""

    def __init__(self, app: Any, api_key: str, protected: Callable[[str], bool]) -> None:
        self.app = app
        self._key = api_key.encode("utf-8")
        self.protected = protected

    def _ok(self, scope: Scope) -> bool:
        given = _header(scope, b"x-api-key")
        if given is None:
            auth = _header(scope, b"authorization") or ""
            scheme, _, token = auth.partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else None
        return given is not None and hmac.compare_digest(given.encode("utf-8"), self._key)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        protected = (
            scope["type"] == "http" and scope.get("method") != "OPTIONS" and self.protected(scope.get("path", ""))
        )
        if protected and not self._ok(scope):
            body = error_body(
                "unauthorized", "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
            )
            await JSONResponse(body, 401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        await self.app(scope, receive, send)
