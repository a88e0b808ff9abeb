"""What ingest does with one authenticated upload: decode, validate, deduplicate, publish.

The HTTP and gRPC entrypoints call `decode_body()` then `UploadHandler.handle()`; every refusal is an
`UploadRefused` carrying the HTTP status and a machine-readable reason. `decode_body()` and
`check_upload()` are pure and raise nothing else whatever the body holds (tests/unit/test_ingest_hostile.py).

The handler archives and publishes through two ports declared here, `UploadArchiver` (raises
`ArchiveUnavailable`) and `UploadPublisher` (raises `PublishFailed`), which `wiring` fills with
`adapters/archive.BlobUploadArchive` and `adapters/publisher.KafkaUploadPublisher`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol

from redis.exceptions import RedisError

from michi.bus.headers import current_trace_id
from michi.bus.producer import Delivery
from michi.contracts import stable_event_id, timestamp_now
from michi.contracts.v1 import common_pb2, upload_pb2
from services.ingest.adapters.claims import UploadClaims
from services.ingest.domain.decoding import UndecodableUpload, decode_upload
from services.ingest.domain.sequences import missing_sequences
from services.ingest.domain.validation import UploadLimits, Violation, validate_upload

logger = logging.getLogger(__name__)

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
# How often a concurrent duplicate looks again at the first copy's claim.
PENDING_POLL_S = 0.02
# The tag of UploadReceived.upload (length-delimited).
_UPLOAD_TAG = bytes([upload_pb2.UploadReceived.UPLOAD_FIELD_NUMBER << 3 | 2])


@dataclass(frozen=True)
class OutgoingUpload:
    """An `UploadReceived` to publish: `received` holds every field but `upload`, which is `canonical`.

    It is serialized as `received`'s bytes followed by the `upload` field holding the canonical bytes:
    once parsed, the same message as with `upload` set, without copying the upload into the event and
    serializing it again (~50 -> ~16 µs for a 10 s upload).
    """

    received: upload_pb2.UploadReceived
    upload: upload_pb2.Upload
    canonical: bytes

    def serialized(self) -> bytes:
        return b"".join((self.received.SerializeToString(), _UPLOAD_TAG, _varint(len(self.canonical)), self.canonical))


def _varint(value: int) -> bytes:
    encoded = bytearray()
    while value > 0x7F:
        encoded.append(value & 0x7F | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)


class PublishFailed(RuntimeError):
    """Kafka did not acknowledge in time (or refused); nothing was accepted."""


class UploadPublisher(Protocol):
    """The port accepted uploads are published through (`adapters/publisher.KafkaUploadPublisher`); both raise
    `PublishFailed` when the broker does not acknowledge."""

    async def publish(self, outgoing: OutgoingUpload) -> Delivery: ...

    def send(self, outgoing: OutgoingUpload) -> Awaitable[Delivery]:
        """Hand the event to the producer as soon as it may go (at once, unless the publisher orders events);
        the acknowledgement is awaited later. `publish(outgoing)` is `await send(outgoing)`."""
        ...


class ArchiveUnavailable(RuntimeError):
    """The blob store did not take the archive copy; the upload must not be published."""


class UploadArchiver(Protocol):
    """The port of the raw archive (`adapters/archive.BlobUploadArchive`); raises `ArchiveUnavailable`."""

    async def store(self, upload: upload_pb2.Upload, canonical: bytes, content_sha256: str) -> str:
        """Archive `canonical` (the upload's deterministic serialization, with its sha256); returns its URI."""
        ...


class UploadRefused(Exception):
    """An upload ingest will not take; `status` is the HTTP status, `reason` kebab-case."""

    def __init__(
        self,
        status: int,
        reason: str,
        detail: str,
        field: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        violations: list[Violation] | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail
        self.field = field
        self.headers = headers or {}
        self.violations = violations or []


def decode_body(body: bytes, media: str, limits: UploadLimits | None = None) -> upload_pb2.Upload:
    """The upload in `body`; raises `UploadRefused`: 400 `undecodable-body`, or 422 for a JSON field given
    twice (`duplicate-field`), an enum name it does not know, or a repeated field over its bound (refused
    before it is converted)."""
    try:
        return decode_upload(body, media, limits)
    except UndecodableUpload as error:
        raise UploadRefused(error.status, error.reason, error.detail, error.field) from error


def check_upload(upload: upload_pb2.Upload, device_id: str, now_s: float, limits: UploadLimits) -> None:
    """Authorization and validation (no I/O): raises `UploadRefused` (403 or 422), nothing else."""
    if upload.device_id != device_id:
        raise UploadRefused(403, "device-mismatch", "the upload's device_id is not the token's device", "device_id")
    violations = validate_upload(upload, now_s, limits)
    if violations:
        first = violations[0]
        raise UploadRefused(422, first.reason, first.detail, first.field, violations=violations)


@dataclass(frozen=True)
class UploadAccepted:
    upload_id: str
    event_id: str
    outcome: str  # ACCEPTED or DUPLICATE


@dataclass
class UploadHandler:
    claims: UploadClaims
    publisher: UploadPublisher
    limits: UploadLimits = field(default_factory=UploadLimits)
    pending_wait_s: float = 5.0
    max_missing_sequences: int = 100
    # How far past its trip's highest accepted sequence a new upload may go (None: no bound).
    max_sequence_gap: int | None = 360
    retry_after_s: int = 2
    # The raw archive (None: off); an upload is archived before it is published.
    archive: UploadArchiver | None = None

    def check(self, upload: upload_pb2.Upload, device_id: str) -> None:
        """Authorization and validation (no I/O)."""
        check_upload(upload, device_id, time.time(), self.limits)

    async def handle(self, upload: upload_pb2.Upload, device_id: str) -> UploadAccepted:
        self.check(upload, device_id)
        canonical = upload.SerializeToString(deterministic=True)
        content_sha256 = hashlib.sha256(canonical).hexdigest()
        deadline = time.monotonic() + self.pending_wait_s
        while True:
            try:
                attempt = await self.claims.claim(
                    upload.upload_id, upload.trip_id, content_sha256, upload.sequence, self.max_sequence_gap
                )
            except RedisError as error:
                raise self._unavailable("idempotency-store-unavailable", f"Redis: {error}") from error
            if attempt.too_far_ahead:
                raise UploadRefused(
                    422,
                    "sequence-gap-too-large",
                    f"sequence {upload.sequence} is {upload.sequence - (attempt.last_sequence or 0)} past the trip's"
                    f" highest accepted sequence {attempt.last_sequence}, at most {self.max_sequence_gap};"
                    " send the uploads between first, or start a new trip_id",
                    "sequence",
                )
            existing = attempt.existing
            if existing is None:
                return await self._publish(upload, canonical, content_sha256, attempt.last_sequence)
            if existing.content_sha256 != content_sha256:
                raise UploadRefused(
                    409, "upload-id-reused", "this upload_id was already used for different content", "upload_id"
                )
            if existing.event_id is not None:
                return UploadAccepted(upload.upload_id, existing.event_id, DUPLICATE)
            # Another request holds the claim: wait for its outcome (released claims are taken over).
            if time.monotonic() >= deadline:
                raise self._unavailable("upload-in-progress", "the same upload is still being published")
            await asyncio.sleep(PENDING_POLL_S)

    async def _publish(
        self, upload: upload_pb2.Upload, canonical: bytes, content_sha256: str, last_sequence: int | None
    ) -> UploadAccepted:
        event_id = stable_event_id("upload", upload.upload_id)
        received = upload_pb2.UploadReceived(
            event_id=event_id,
            lineage=common_pb2.Lineage(
                upload_id=upload.upload_id,
                trip_id=upload.trip_id,
                device_id=upload.device_id,
                driver_id=upload.driver_id,
                trace_id=current_trace_id(),
            ),
            received_at=timestamp_now(),
            content_sha256=content_sha256,
            missing_sequences=missing_sequences(last_sequence, upload.sequence, self.max_missing_sequences),
        )
        # The event is about data recorded on the road: it occurred when the slice started.
        received.occurred_at.CopyFrom(upload.started_at)
        try:
            if self.archive is not None:
                received.archive_uri = await self.archive.store(upload, canonical, content_sha256)
            await self.publisher.publish(OutgoingUpload(received, upload, canonical))
        except BaseException as error:
            # Nothing half-written: without the broker's acknowledgement the claim goes, so a retry can succeed.
            await self._release_quietly(upload.upload_id, content_sha256)
            if isinstance(error, ArchiveUnavailable):
                raise self._unavailable("archive-unavailable", "the raw archive is unavailable") from error
            if isinstance(error, PublishFailed):
                raise self._unavailable("broker-unavailable", str(error)) from error
            raise
        try:
            await self.claims.accept(
                upload.upload_id, upload.trip_id, upload.sequence, content_sha256, event_id, upload.device_id
            )
        except RedisError:
            # Kafka has it, so it is accepted; a retry after the pending claim expires republishes the
            # same event_id, which consumers deduplicate.
            logger.warning(
                "accepted upload not recorded in Redis", extra={"upload_id": upload.upload_id}, exc_info=True
            )
        return UploadAccepted(upload.upload_id, event_id, ACCEPTED)

    async def _release_quietly(self, upload_id: str, content_sha256: str) -> None:
        try:
            await asyncio.shield(self.claims.release(upload_id, content_sha256))
        except (RedisError, asyncio.CancelledError):
            logger.warning("claim not released; it expires on its own", extra={"upload_id": upload_id})

    def _unavailable(self, reason: str, detail: str) -> UploadRefused:
        return UploadRefused(503, reason, detail, headers={"Retry-After": str(self.retry_after_s)})
