"""The HTTP door: `POST /v1/uploads`, `/healthz`, `/readyz`, `/metrics`, OpenAPI at `/openapi.json`.

Run it with `python -m services.ingest` (see `services/ingest/wiring.py`).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from opentelemetry import trace
from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from michi.bus.headers import extract_context
from michi.readiness import add_operations_routes
from services.ingest.adapters.devices import DeviceRegistry
from services.ingest.adapters.rate_limits import NonceRegistry, RateLimiter
from services.ingest.domain.decoding import JSON, PROTOBUF, SUPPORTED_MEDIA_TYPES, media_type
from services.ingest.domain.signing import (
    DEFAULT_WINDOW_S,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureRejected,
    parse_signing_headers,
    verify_request,
)
from services.ingest.domain.tokens import TokenRejected
from services.ingest.domain.validation import imu_sample_count
from services.ingest.entrypoints.metrics import IngestMetrics
from services.ingest.handlers import ACCEPTED, UploadHandler, UploadRefused, decode_body

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("michi.ingest")

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="michi"'}
# Sent with a refusal given before the body was read: the server closes the connection instead of
# draining a body it will never use (a 50 MB upload to a 413 costs the client, not ingest).
CLOSE_CONNECTION = {"Connection": "close"}
# A Content-Length is ASCII digits only (no sign, no list, no Unicode digits such as '²' that isdigit() takes).
CONTENT_LENGTH_PATTERN = re.compile(r"[0-9]+")
# More digits than this exceed every body limit (and int() refuses strings of over 4,300 digits).
MAX_CONTENT_LENGTH_DIGITS = 18
INTERNAL_ERROR = "internal-error"


class ErrorBody(BaseModel):
    """Every refusal: a kebab-case `reason`, a human `detail`, and the proto field path when one is at fault."""

    reason: str
    detail: str
    field: str | None = None


class UploadAnswer(BaseModel):
    upload_id: str
    event_id: str
    outcome: str  # "accepted" or "duplicate"


@dataclass
class IngestEndpoints:
    """What the routes need; `wiring.build_app` fills it."""

    handler: UploadHandler
    registry: DeviceRegistry
    metrics: IngestMetrics
    max_body_bytes: int
    readiness_checks: dict[str, Callable[[], Awaitable[None]]]
    # None: no rate limits (tests of other rules); the wiring always sets one.
    rate_limiter: RateLimiter | None = None
    nonces: NonceRegistry | None = None
    require_signatures: bool = False
    signature_window_s: float = DEFAULT_WINDOW_S


def _json(status: int, content: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json", headers=headers)


def declared_length(request: Request, limit: int, too_large: str) -> int | None:
    """The Content-Length, None when absent; 400 `invalid-content-length` unless it is one run of ASCII digits
    (negative, a list, several headers, anything else), 413 `too_large` when over `limit`.

    uvicorn's parser refuses most of these before the app runs (`http_protocol.json_error_protocol` gives
    them the same JSON body); this holds for any server the app runs in.
    """
    values = request.headers.getlist("content-length")
    if not values:
        return None
    declared = values[0].strip()
    if len(values) > 1 or CONTENT_LENGTH_PATTERN.fullmatch(declared) is None:
        raise UploadRefused(
            400, "invalid-content-length", "Content-Length must be one number of bytes (decimal digits)"
        )
    if len(declared) > MAX_CONTENT_LENGTH_DIGITS or int(declared) > limit:
        raise UploadRefused(413, too_large, f"body of {declared[:40]} bytes exceeds {limit} bytes")
    return int(declared)


async def read_bounded_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` (never read past it)."""
    declared_length(request, limit, "body-too-large")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UploadRefused(413, "body-too-large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def bearer_token(request: Request) -> str:
    authorization = request.headers.get("authorization")
    if not authorization:
        raise UploadRefused(
            401, "missing-token", "Authorization: Bearer <device token> is required", headers=UNAUTHORIZED_HEADERS
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UploadRefused(
            401, "missing-token", "Authorization must use the Bearer scheme", headers=UNAUTHORIZED_HEADERS
        )
    return token.strip()


async def authenticate(registry: DeviceRegistry, token: str) -> str:
    """The token's device id; the SQL lookup (cache miss) runs off the event loop."""
    try:
        device_id = registry.cached_device(token)
        if device_id is None:
            device_id = await run_in_threadpool(registry.verify, token)
    except TokenRejected as error:
        raise UploadRefused(
            401,
            error.reason,
            error.detail,
            headers={"WWW-Authenticate": 'Bearer realm="michi", error="invalid_token"'},
        ) from error
    except SQLAlchemyError as error:
        raise UploadRefused(
            503, "registry-unavailable", "the device registry does not answer", headers={"Retry-After": "2"}
        ) from error
    return device_id


async def check_rate(rate_limiter: RateLimiter | None, device_id: str) -> None:
    """429 with Retry-After (whole seconds, at least 1) when the device or the fleet is over its rate."""
    if rate_limiter is None:
        return
    try:
        wait_s = await rate_limiter.check(device_id)
    except RedisError as error:
        raise UploadRefused(
            503, "rate-limiter-unavailable", "Redis does not answer", headers={"Retry-After": "2"}
        ) from error
    if wait_s is not None:
        retry_after = max(1, math.ceil(wait_s))
        raise UploadRefused(
            429,
            "rate-limited",
            f"too many uploads; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


async def check_signature(
    endpoints: IngestEndpoints, request: Request, token: str, device_id: str, body: bytes
) -> None:
    """Verify the optional request signature (401 `signature-required`/`bad-signature`/`stale-signature`/`replayed-request`)."""
    headers = request.headers
    try:
        signed = parse_signing_headers(
            headers.get(TIMESTAMP_HEADER), headers.get(NONCE_HEADER), headers.get(SIGNATURE_HEADER)
        )
        if signed is None:
            if endpoints.require_signatures:
                raise SignatureRejected("signature-required", "this ingest requires signed requests")
            return
        verify_request(signed, token, request.method, request.url.path, body, time.time(), endpoints.signature_window_s)
        if endpoints.nonces is not None and not await endpoints.nonces.remember(device_id, signed.nonce):
            raise SignatureRejected("replayed-request", "this X-Michi-Nonce was already used")
    except SignatureRejected as rejection:
        raise UploadRefused(401, rejection.reason, rejection.detail, headers=UNAUTHORIZED_HEADERS) from rejection
    except RedisError as error:
        raise UploadRefused(
            503, "idempotency-store-unavailable", "Redis does not answer", headers={"Retry-After": "2"}
        ) from error


class InternalErrorBody:
    """ASGI middleware: whatever escapes a route becomes 500 `internal-error` in the JSON error body.

    The routes answer their own failures; this is the net under all of them (`/readyz`, `/metrics`,
    `/openapi.json`, any route added later), so no request ever gets Starlette's plain-text 500. The failure
    is logged with its traceback, the method and the route's path, never the headers (they hold the token).
    A response already started cannot be replaced: the connection is then cut as before.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception as error:
            logger.error(
                "request failed", extra={"method": scope.get("method"), "path": scope.get("path")}, exc_info=error
            )
            if started:
                raise
            body = {"reason": INTERNAL_ERROR, "detail": "ingest failed on this request", "field": None}
            await _json(500, body, CLOSE_CONNECTION)(scope, receive, send)


def internal_error(error: Exception, device_id: str, upload_id: str) -> UploadRefused:
    """A failure no rule foresaw, logged with its traceback: 500 `internal-error` (counted like a refusal)."""
    logger.error("upload failed", extra={"device_id": device_id, "upload_id": upload_id}, exc_info=error)
    return UploadRefused(500, INTERNAL_ERROR, "ingest failed on this upload; it was not accepted")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "Undecodable body (`undecodable-body`), bad Content-Length (`invalid-content-length`), not"
        " HTTP/1.1 (`malformed-request`)",
    },
    401: {
        "model": ErrorBody,
        "description": "Missing, invalid, unknown or revoked device token, or a bad, stale or replayed signature",
    },
    403: {"model": ErrorBody, "description": "The upload's device_id is not the token's device (`device-mismatch`)"},
    409: {"model": ErrorBody, "description": "upload_id already used for different content (`upload-id-reused`)"},
    413: {"model": ErrorBody, "description": "Body larger than the limit (`body-too-large`)"},
    415: {"model": ErrorBody, "description": "Content-Type is neither application/x-protobuf nor application/json"},
    422: {
        "model": ErrorBody,
        "description": "Invalid upload (a field out of range, given twice, ...); `reason` and `field` name the first"
        " broken rule",
    },
    429: {
        "model": ErrorBody,
        "description": "The device or the fleet is over its rate (`rate-limited`); see Retry-After",
        "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}},
    },
    503: {
        "model": ErrorBody,
        "description": "Kafka, Redis or the registry unavailable, or the same upload in flight; see Retry-After",
        "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}},
    },
}

UPLOAD_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            PROTOBUF: {"schema": {"type": "string", "format": "binary", "description": "a serialized michi.v1.Upload"}},
            JSON: {
                "schema": {
                    "type": "object",
                    "description": "michi.v1.Upload in the proto3 JSON mapping (camelCase or snake_case names)",
                }
            },
        },
    }
}


def create_http_app(endpoints: IngestEndpoints, *, lifespan: Any = None) -> FastAPI:
    app = FastAPI(
        title="Michi ingest",
        version="1",
        description="Device uploads in, `UploadReceived` events out. See docs/devices.md.",
        lifespan=lifespan,
        # Our own request span (michi.ingest.* attributes, parent of the publish) and Prometheus metrics
        # replace FastAPI's native telemetry: two server spans per upload would double the tracing cost.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    metrics = endpoints.metrics
    handler = endpoints.handler

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        reason = {404: "not-found", 405: "method-not-allowed"}.get(error.status_code, "http-error")
        return _json(
            error.status_code, {"reason": reason, "detail": str(error.detail), "field": None}, dict(error.headers or {})
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        # FastAPI's own 422 has another shape ({"detail": [...]}); devices read reason, detail and field.
        problems = error.errors()
        first = problems[0] if problems else {}
        location = [str(part) for part in first.get("loc", ())]
        field = ".".join(location[1:]) or None
        return _json(
            422, {"reason": "invalid-request", "detail": str(first.get("msg", "invalid request")), "field": field}
        )

    app.add_middleware(InternalErrorBody)

    @app.post(
        "/v1/uploads",
        status_code=202,
        response_model=UploadAnswer,
        responses={200: {"model": UploadAnswer, "description": "Duplicate of an accepted upload"}, **ERROR_RESPONSES},
        openapi_extra=UPLOAD_REQUEST_BODY,
        summary="Send one upload (a slice of a trip)",
    )
    async def post_upload(request: Request) -> Response:
        started = time.perf_counter()
        device_id = ""
        upload_id = ""
        body_read = False
        with tracer.start_as_current_span(
            "POST /v1/uploads", context=extract_context(request.headers), kind=trace.SpanKind.SERVER
        ) as span:
            try:
                media = media_type(request.headers.get("content-type"))
                if media not in SUPPORTED_MEDIA_TYPES:
                    raise UploadRefused(
                        415, "unsupported-media-type", f"Content-Type must be one of {', '.join(SUPPORTED_MEDIA_TYPES)}"
                    )
                token = bearer_token(request)
                device_id = await authenticate(endpoints.registry, token)
                await check_rate(endpoints.rate_limiter, device_id)
                body = await read_bounded_body(request, endpoints.max_body_bytes)
                body_read = True
                metrics.received(media, len(body))
                await check_signature(endpoints, request, token, device_id, body)
                upload = decode_body(body, media, handler.limits)
                upload_id = upload.upload_id
                span.set_attributes(
                    {
                        "michi.ingest.upload_id": upload_id,
                        "michi.ingest.device_id": device_id,
                        "michi.ingest.trip_id": upload.trip_id,
                        "michi.ingest.samples": imu_sample_count(upload.imu),
                    }
                )
                answer = await handler.handle(upload, device_id)
            except Exception as error:
                refusal = error if isinstance(error, UploadRefused) else internal_error(error, device_id, upload_id)
                span.set_attributes({"michi.ingest.outcome": "refused", "michi.ingest.reason": refusal.reason})
                metrics.refused(refusal.reason)
                metrics.refused_latency.observe(time.perf_counter() - started)
                log = logger.warning if refusal.status >= 500 else logger.info
                log(
                    "upload refused",
                    extra={
                        "reason": refusal.reason,
                        "status": refusal.status,
                        "device_id": device_id,
                        "upload_id": upload_id,
                        "field": refusal.field,
                    },
                )
                return _json(
                    refusal.status,
                    {"reason": refusal.reason, "detail": refusal.detail, "field": refusal.field},
                    refusal.headers if body_read else {**refusal.headers, **CLOSE_CONNECTION},
                )
            span.set_attribute("michi.ingest.outcome", answer.outcome)
            body_out = {"upload_id": answer.upload_id, "event_id": answer.event_id, "outcome": answer.outcome}
            if answer.outcome == ACCEPTED:
                metrics.accepted.inc()
                metrics.accepted_latency.observe(time.perf_counter() - started)
                return _json(202, body_out)
            metrics.duplicate.inc()
            metrics.duplicate_latency.observe(time.perf_counter() - started)
            return _json(200, body_out)

    # The hot path skips FastAPI's request handling (dependency solving, response validation): a plain
    # Starlette route, matched first, serves POST /v1/uploads; the APIRoute above stays for the OpenAPI
    # document (and answers nothing: the plain route matches every POST first).
    app.router.routes.insert(0, Route("/v1/uploads", post_upload, methods=["POST"], include_in_schema=False))

    add_operations_routes(
        app,
        endpoints.readiness_checks,
        metrics.registry,
        ready_summary="Kafka, Redis and the database answer",
        service="ingest",
    )

    return app
