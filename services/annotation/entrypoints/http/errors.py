"""How the annotation API refuses: exception handlers answering `ErrorBody`s, and the request body limit.

Every refusal is counted in `michi_annotation_refusals{reason}`; an outage (Redis or the database)
answers 503 with Retry-After.
"""

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.annotation.entrypoints.http.bodies import json_response
from services.annotation.handlers import Refused
from services.annotation.metrics import AnnotationMetrics

logger = logging.getLogger(__name__)

Handler = Callable[[Request, Any], Coroutine[Any, Any, Response]]


class Refusals:
    """The exception handlers: each answers an `ErrorBody` and counts the refusal by reason."""

    def __init__(self, metrics: AnnotationMetrics) -> None:
        self.metrics = metrics

    def handlers(self) -> dict[int | type[Exception], Handler]:
        """For `FastAPI(exception_handlers=...)`."""
        return {
            Refused: self.refused,
            RedisError: self.redis_down,
            SQLAlchemyError: self.database_down,
            RequestValidationError: self.invalid,
            StarletteHTTPException: self.http_error,
        }

    def count(self, reason: str) -> None:
        self.metrics.refusals.labels(reason).inc()

    def refusal(self, error: Refused) -> Response:
        self.count(error.reason)
        if error.status >= 500:
            logger.warning("request refused", extra={"reason": error.reason, "status": error.status})
        return json_response(
            error.status, {"reason": error.reason, "detail": error.detail, "field": None}, error.headers
        )

    async def refused(self, request: Request, error: Refused) -> Response:
        return self.refusal(error)

    async def redis_down(self, request: Request, error: RedisError) -> Response:
        logger.warning("redis error", exc_info=error)
        return self.refusal(Refused(503, "redis-unavailable", "Redis does not answer", {"Retry-After": "2"}))

    async def database_down(self, request: Request, error: SQLAlchemyError) -> Response:
        logger.warning("database error", exc_info=error)
        return self.refusal(Refused(503, "database-unavailable", "the database does not answer", {"Retry-After": "2"}))

    async def invalid(self, request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {}
        location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
        self.count("invalid-request")
        return json_response(
            422,
            {
                "reason": "invalid-request",
                "detail": str(first.get("msg", "invalid request")),
                "field": ".".join(location) or None,
            },
        )

    async def http_error(self, request: Request, error: StarletteHTTPException) -> Response:
        reason = {404: "not-found", 405: "method-not-allowed"}.get(error.status_code, "http-error")
        return json_response(
            error.status_code, {"reason": reason, "detail": str(error.detail), "field": None}, dict(error.headers or {})
        )


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, declared or streamed (never read past it)."""

    def __init__(self, app: ASGIApp, limit: int, refused: Callable[[str], None]) -> None:
        self.app = app
        self.limit = limit
        self.refused = refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(send)
            return
        received = 0
        too_large = False

        async def bounded() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    too_large = True
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, bounded, send)
        except _BodyTooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        self.refused("body-too-large")
        body = orjson.dumps(
            {"reason": "body-too-large", "detail": f"request bodies are at most {self.limit} bytes", "field": None}
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass
