"""The media door: `PUT /v1/uploads/{upload_id}/media/{name}` streams a frame or clip to the blob store.

`wiring.build_app` includes this router in the ingest app (`python -m services.ingest`).

The body is never held whole: it goes chunk by chunk to a temporary blob with a running
sha256 and becomes visible at `media/{device_id}/{upload_id}/{name}` only if it stayed within
`MICHI_INGEST_MAX_MEDIA_BYTES` and matched the checksum the device declared. Media may come
before or after its upload; whichever comes first binds the upload_id to the token's device
in Redis, so no other device can ever write that upload's media.

Once stored, the media is announced as a `MediaReceived` on `michi.media.v1` (keyed by device, event id stable
per device, upload, name and content) with what the PUT's headers say of it: the camera, the frames' capture
offsets and the optics (`domain/media_description.py`; a wrong value is 400 `invalid-media-header` before the
body is read). Without the broker's acknowledgement the answer is 503 `broker-unavailable`; the device's retry
is answered from the stored copy (200 `duplicate`) and announces it again under the same event id, so a stored
media item is announced at least once and its consumers deduplicate.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel
from redis.exceptions import RedisError
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect

from michi.blobs import (
    BlobExists,
    BlobInfo,
    BlobNotFound,
    BlobStore,
    BlobStoreUnavailable,
    BlobTooLarge,
    ChecksumMismatch,
    media_key,
)
from michi.bus.headers import extract_context
from michi.contracts import stable_event_id, timestamp_now
from michi.contracts.v1 import common_pb2, upload_pb2
from services.ingest.adapters.claims import UploadClaims
from services.ingest.adapters.devices import DeviceRegistry
from services.ingest.domain.decoding import media_type
from services.ingest.domain.media_description import MediaDescription, MediaHeaderInvalid, describe_media
from services.ingest.domain.validation import ID_PATTERN, MEDIA_NAME_PATTERN
from services.ingest.entrypoints.http import (
    INTERNAL_ERROR,
    ErrorBody,
    _json,
    authenticate,
    bearer_token,
    declared_length,
)
from services.ingest.handlers import PublishFailed, UploadRefused

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("michi.ingest")

HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
STORED = "stored"
DUPLICATE = "duplicate"
RETRY_AFTER = {"Retry-After": "2"}
# A refusal sent before the body was read closes the connection rather than drain a body nobody wants.
CLOSE_CONNECTION = {"Connection": "close"}


class MediaAnswer(BaseModel):
    upload_id: str
    name: str
    uri: str
    size: int
    sha256: str
    outcome: str  # "stored" or "duplicate"


class MediaPublisher(Protocol):
    """Where stored media is announced (`adapters/publisher.KafkaMediaPublisher`); `PublishFailed` when the broker
    does not acknowledge."""

    async def publish(self, event: upload_pb2.MediaReceived) -> Any: ...


@dataclass
class MediaEndpoints:
    """What the media route needs; `wiring.build_app` fills it."""

    registry: DeviceRegistry
    claims: UploadClaims
    blobs: BlobStore
    max_media_bytes: int
    media_types: frozenset[str]
    metrics_registry: CollectorRegistry
    publisher: MediaPublisher


def media_event(
    device_id: str,
    upload_id: str,
    name: str,
    key: str,
    info: BlobInfo,
    content_type: str,
    description: MediaDescription,
    trace_id: str,
) -> upload_pb2.MediaReceived:
    """The `MediaReceived` announcing stored media (the same event id for the same device, upload, name, content)."""
    event = upload_pb2.MediaReceived(
        event_id=stable_event_id("media", device_id, upload_id, name, info.sha256),
        occurred_at=timestamp_now(),
        lineage=common_pb2.Lineage(device_id=device_id, upload_id=upload_id, trace_id=trace_id),
        upload_id=upload_id,
        name=name,
        camera=description.camera,
        blob_key=key,
        uri=info.uri,
        sha256=info.sha256,
        size_bytes=info.size,
        content_type=content_type,
        frame_offsets_ms=list(description.frame_offsets_ms),
    )
    event.optics.CopyFrom(description.optics)
    return event


def _sha256_from_digest(value: str, header: str) -> str | None:
    """The hex sha-256 in `Digest: sha-256=<base64>` or `Content-Digest: sha-256=:<base64>:` (None if absent)."""
    for entry in value.split(","):
        algorithm, _, encoded = entry.partition("=")
        if algorithm.strip().lower() != "sha-256":
            continue
        try:
            raw = base64.b64decode(encoded.strip().strip(":"), validate=True)
        except (binascii.Error, ValueError) as error:
            raise UploadRefused(400, "invalid-checksum", f"{header}: sha-256 is not base64") from error
        if len(raw) != 32:
            raise UploadRefused(400, "invalid-checksum", f"{header}: sha-256 is not 32 bytes")
        return raw.hex()
    return None


def declared_sha256(headers: Headers) -> str:
    """The body's sha256 (hex) from `X-Content-SHA256`, `Digest` or `Content-Digest`; one is required."""
    found: list[str] = []
    hex_value = headers.get("x-content-sha256")
    if hex_value is not None:
        hex_value = hex_value.strip().lower()
        if HEX_SHA256.fullmatch(hex_value) is None:
            raise UploadRefused(400, "invalid-checksum", "X-Content-SHA256 must be 64 hex digits")
        found.append(hex_value)
    for header in ("digest", "content-digest"):
        value = headers.get(header)
        digest = _sha256_from_digest(value, header) if value is not None else None
        if digest is not None:
            found.append(digest)
    if not found:
        raise UploadRefused(
            400, "missing-checksum", "send the body's sha256 in X-Content-SHA256 (hex) or Digest: sha-256=<base64>"
        )
    if len(set(found)) > 1:
        raise UploadRefused(400, "invalid-checksum", "the checksum headers disagree")
    return found[0]


def _media_answer(upload_id: str, name: str, info: BlobInfo, outcome: str) -> dict[str, Any]:
    return {
        "upload_id": upload_id,
        "name": name,
        "uri": info.uri,
        "size": info.size,
        "sha256": info.sha256,
        "outcome": outcome,
    }


MEDIA_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": MediaAnswer, "description": "The same content was already stored under this name (`duplicate`)"},
    400: {
        "model": ErrorBody,
        "description": "No or malformed checksum header (`missing-checksum`, `invalid-checksum`), "
        "bad Content-Length (`invalid-content-length`), a camera header with a value it may not hold "
        "(`invalid-media-header`, `field` names the header)",
    },
    401: {"model": ErrorBody, "description": "Missing, invalid, unknown or revoked device token"},
    403: {"model": ErrorBody, "description": "The upload_id belongs to another device (`device-mismatch`)"},
    409: {"model": ErrorBody, "description": "Different content already stored under this name (`media-name-reused`)"},
    413: {"model": ErrorBody, "description": "Larger than the media limit (`media-too-large`)"},
    415: {"model": ErrorBody, "description": "Content-Type not an allowed media type (`unsupported-media-type`)"},
    422: {
        "model": ErrorBody,
        "description": "Bad upload_id or name (`invalid-id`, `invalid-media-name`); "
        "body does not match its checksum (`checksum-mismatch`)",
    },
    500: {"model": ErrorBody, "description": "A failure of ingest itself no rule foresaw (`internal-error`)"},
    503: {
        "model": ErrorBody,
        "description": "Redis, the blob store or Kafka unavailable (`idempotency-store-unavailable`, "
        "`blob-store-unavailable`, `broker-unavailable`: stored but not announced, send it again); see Retry-After",
        "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}},
    },
}


def media_refusal(failure: Exception, device_id: str, upload_id: str, name: str) -> UploadRefused:
    """The answer to whatever stopped a media PUT: a refusal as it is, 503 for the stores, else 500.

    A failure no rule foresaw is logged with its traceback (never the headers: they hold the token) and
    answered `internal-error` in the JSON error body, like an upload's; nothing was stored.
    """
    if isinstance(failure, UploadRefused):
        return failure
    if isinstance(failure, (BlobStoreUnavailable, BlobExists)):
        return UploadRefused(503, "blob-store-unavailable", "the blob store is unavailable", headers=RETRY_AFTER)
    if isinstance(failure, RedisError):
        return UploadRefused(503, "idempotency-store-unavailable", "Redis does not answer", headers=RETRY_AFTER)
    logger.error(
        "media failed",
        extra={"device_id": device_id, "upload_id": upload_id, "media_name": name},
        exc_info=failure,
    )
    return UploadRefused(500, INTERNAL_ERROR, "ingest failed on this media; it was not stored")


def create_media_router(endpoints: MediaEndpoints) -> APIRouter:
    router = APIRouter()
    blobs = endpoints.blobs
    outcomes = Counter(
        "michi_ingest_media",
        "Media PUTs by outcome (stored, duplicate, refused) and refusal reason",
        ["outcome", "reason"],
        registry=endpoints.metrics_registry,
    )
    stored_bytes = Counter(
        "michi_ingest_media_stored_bytes",
        "Media bytes committed to the blob store",
        registry=endpoints.metrics_registry,
    )
    allowed_types = ", ".join(sorted(endpoints.media_types))

    async def stored_copy(key: str) -> BlobInfo | None:
        try:
            return await blobs.sha256(key)
        except BlobNotFound:
            return None

    def settle_existing(existing: BlobInfo, expected: str, what: str) -> None:
        if existing.sha256 != expected:
            raise UploadRefused(409, "media-name-reused", f"{what} already holds different content", "name")

    @router.put(
        "/v1/uploads/{upload_id}/media/{name}",
        status_code=201,
        response_model=MediaAnswer,
        responses=MEDIA_RESPONSES,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    media: {"schema": {"type": "string", "format": "binary"}} for media in sorted(endpoints.media_types)
                },
            }
        },
        summary="Send one camera frame or clip of an upload (streamed, checksum verified)",
    )
    async def put_media(
        upload_id: str,
        name: str,
        request: Request,
        x_content_sha256: Annotated[
            str | None, Header(alias="X-Content-SHA256", description="sha256 of the body, 64 hex digits")
        ] = None,
        digest: Annotated[str | None, Header(alias="Digest", description="`sha-256=<base64>` (RFC 3230)")] = None,
    ) -> Response:
        # The checksum headers are read from `request.headers` (they are declared above for the OpenAPI schema).
        del x_content_sha256, digest
        device_id = ""
        body_consumed = False
        with tracer.start_as_current_span(
            "PUT /v1/uploads/{upload_id}/media/{name}",
            context=extract_context(request.headers),
            kind=trace.SpanKind.SERVER,
        ) as span:
            try:
                device_id = await authenticate(endpoints.registry, bearer_token(request))
                span.set_attribute("michi.ingest.device_id", device_id)
                if ID_PATTERN.fullmatch(upload_id) is None:
                    raise UploadRefused(
                        422, "invalid-id", "upload_id must be 1-128 characters of A-Z a-z 0-9 . _ : -", "upload_id"
                    )
                if MEDIA_NAME_PATTERN.fullmatch(name) is None:
                    raise UploadRefused(
                        422, "invalid-media-name", "a media name is 1-64 characters of A-Z a-z 0-9 . _ -", "name"
                    )
                span.set_attribute("michi.ingest.upload_id", upload_id)
                if media_type(request.headers.get("content-type")) not in endpoints.media_types:
                    raise UploadRefused(415, "unsupported-media-type", f"Content-Type must be one of {allowed_types}")
                declared_length(request, endpoints.max_media_bytes, "media-too-large")
                expected = declared_sha256(request.headers)
                try:
                    description = describe_media(name, request.headers)
                except MediaHeaderInvalid as error:
                    raise UploadRefused(400, "invalid-media-header", str(error), error.header) from error
                content_type = media_type(request.headers.get("content-type"))
                trace_id = format(span.get_span_context().trace_id, "032x")

                async def announce(stored: BlobInfo) -> None:
                    try:
                        await endpoints.publisher.publish(
                            media_event(device_id, upload_id, name, key, stored, content_type, description, trace_id)
                        )
                    except PublishFailed as error:
                        raise UploadRefused(
                            503, "broker-unavailable", f"stored, but not announced: {error}", headers=RETRY_AFTER
                        ) from error

                try:
                    owner = await endpoints.claims.bind_media_owner(upload_id, device_id)
                except RedisError as error:
                    raise UploadRefused(
                        503, "idempotency-store-unavailable", "Redis does not answer", headers=RETRY_AFTER
                    ) from error
                if owner != device_id:
                    raise UploadRefused(403, "device-mismatch", "this upload belongs to another device", "upload_id")
                key = media_key(device_id, upload_id, name)
                existing = await stored_copy(key)
                if existing is not None:
                    # A retry: answered from the stored copy, the body is not read; announced again.
                    settle_existing(existing, expected, name)
                    await announce(existing)
                    outcomes.labels(DUPLICATE, "").inc()
                    return _json(200, _media_answer(upload_id, name, existing, DUPLICATE), CLOSE_CONNECTION)
                try:
                    info = await blobs.write_stream(
                        key,
                        request.stream(),
                        max_bytes=endpoints.max_media_bytes,
                        expected_sha256=expected,
                        overwrite=False,
                    )
                except BlobTooLarge as error:
                    raise UploadRefused(
                        413, "media-too-large", f"body exceeds {endpoints.max_media_bytes} bytes"
                    ) from error
                except ChecksumMismatch as error:
                    body_consumed = True
                    raise UploadRefused(422, "checksum-mismatch", str(error)) from error
                except BlobExists:
                    # A concurrent PUT of the same name committed first.
                    body_consumed = True
                    existing = await stored_copy(key)
                    if existing is None:
                        raise
                    settle_existing(existing, expected, name)
                    await announce(existing)
                    outcomes.labels(DUPLICATE, "").inc()
                    return _json(200, _media_answer(upload_id, name, existing, DUPLICATE))
                except ClientDisconnect as error:
                    raise UploadRefused(400, "client-disconnected", "the body ended early") from error
                body_consumed = True
                await announce(info)
            except Exception as failure:
                refusal = media_refusal(failure, device_id, upload_id, name)
                span.set_attribute("michi.ingest.outcome", "refused")
                span.set_attribute("michi.ingest.reason", refusal.reason)
                outcomes.labels("refused", refusal.reason).inc()
                log = logger.warning if refusal.status >= 500 else logger.info
                log(
                    "media refused",
                    extra={
                        "reason": refusal.reason,
                        "status": refusal.status,
                        "device_id": device_id,
                        "upload_id": upload_id,
                        "media_name": name,
                        "error": None if failure is refusal else str(failure),
                    },
                )
                headers = refusal.headers if body_consumed else {**refusal.headers, **CLOSE_CONNECTION}
                return _json(
                    refusal.status,
                    {"reason": refusal.reason, "detail": refusal.detail, "field": refusal.field},
                    headers,
                )
            span.set_attribute("michi.ingest.outcome", STORED)
            outcomes.labels(STORED, "").inc()
            stored_bytes.inc(info.size)
            return _json(201, _media_answer(upload_id, name, info, STORED))

    return router


__all__ = ["MediaAnswer", "MediaEndpoints", "create_media_router", "declared_sha256"]
