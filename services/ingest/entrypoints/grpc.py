"""The gRPC door: `michi.v1.Ingest/Upload` (unary) and `/StreamUploads` (bidirectional), plus health.

Served next to the HTTP door by `python -m services.ingest` (see `services/ingest/wiring.py`),
on `MICHI_INGEST_HOST`:`MICHI_INGEST_GRPC_PORT` (50051). Both doors call the same `UploadHandler`,
so authentication, validation, idempotency and limits are the HTTP ones. A refusal becomes a
gRPC status (`STATUS_CODES`) whose trailing metadata carries the machine-readable reason
(`michi-reason`, `michi-field`, `michi-retry-after-s`): grpcio-status is not a dependency.

On a stream, a refused upload is acknowledged `UPLOAD_OUTCOME_REJECTED` with its reason and the
stream goes on; only a token that stops authenticating ends it (UNAUTHENTICATED). Up to
`stream_window` uploads of one stream are in flight at once; beyond that the stream is not read,
so HTTP/2 flow control pushes back on the device. Their `UploadReceived` events are still
published in stream order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from opentelemetry import trace
from opentelemetry.context import Context
from redis.exceptions import RedisError

from michi.bus.headers import extract_context
from michi.bus.producer import Delivery
from michi.contracts.v1 import ingest_pb2, upload_pb2
from michi.readiness import run_checks
from services.ingest.domain.decoding import PROTOBUF
from services.ingest.domain.signing import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureRejected,
    parse_signing_headers,
    verify_request,
)
from services.ingest.domain.validation import imu_sample_count
from services.ingest.entrypoints.http import IngestEndpoints, check_rate, internal_error
from services.ingest.entrypoints.http import authenticate as authenticate_token
from services.ingest.handlers import (
    ACCEPTED,
    OutgoingUpload,
    UploadAccepted,
    UploadHandler,
    UploadPublisher,
    UploadRefused,
    decode_body,
)

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("michi.ingest")

SERVICE_NAME = "michi.v1.Ingest"
UPLOAD_PATH = f"/{SERVICE_NAME}/Upload"
HEALTH_SERVICE_NAME = "grpc.health.v1.Health"
GRPC_CONTENT_TYPE = "application/grpc"

REASON_KEY = "michi-reason"
FIELD_KEY = "michi-field"
RETRY_AFTER_KEY = "michi-retry-after-s"

# The HTTP status of an `UploadRefused` -> its gRPC status code.
STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}

# How often the health service re-runs the readiness checks (Kafka, Redis, database).
HEALTH_INTERVAL_S = 5.0
HEALTH_CHECK_TIMEOUT_S = 5.0
# The server pings an idle connection this often to find links that died silently (cellular).
KEEPALIVE_TIME_MS = 60_000
# Devices may ping this often to keep NAT bindings open.
MIN_CLIENT_PING_INTERVAL_MS = 10_000


def status_code(http_status: int) -> grpc.StatusCode:
    if http_status in STATUS_CODES:
        return STATUS_CODES[http_status]
    return grpc.StatusCode.UNAVAILABLE if http_status >= 500 else grpc.StatusCode.INVALID_ARGUMENT


def _ascii(text: str) -> str:
    # Metadata values must be printable ASCII.
    return text.encode("ascii", "backslashreplace").decode("ascii")


def refusal_metadata(refusal: UploadRefused) -> tuple[tuple[str, str], ...]:
    """The trailing metadata of a refused call: reason, field and retry delay when there are ones."""
    metadata = [(REASON_KEY, _ascii(refusal.reason))]
    if refusal.field:
        metadata.append((FIELD_KEY, _ascii(refusal.field)))
    retry_after = {key.lower(): value for key, value in refusal.headers.items()}.get("retry-after")
    if retry_after is not None:
        metadata.append((RETRY_AFTER_KEY, _ascii(retry_after)))
    return tuple(metadata)


def metadata_value(metadata: Iterable[tuple[str, Any]] | None, key: str) -> str | None:
    for name, value in metadata or ():
        if name.lower() == key:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return None


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str:
    authorization = metadata_value(metadata, "authorization")
    if not authorization:
        raise UploadRefused(401, "missing-token", "metadata authorization: Bearer <device token> is required")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UploadRefused(401, "missing-token", "metadata authorization must use the Bearer scheme")
    return token.strip()


async def check_signature(
    endpoints: IngestEndpoints, metadata: Iterable[tuple[str, Any]] | None, token: str, device_id: str, body: bytes
) -> None:
    """The HTTP door's optional request signing, for `Upload`: the same `x-michi-*` keys, as metadata.

    The signed method and path are the call's HTTP/2 ones, `POST` and `/michi.v1.Ingest/Upload`;
    the body is the serialized `Upload`.
    """
    try:
        signed = parse_signing_headers(
            metadata_value(metadata, TIMESTAMP_HEADER),
            metadata_value(metadata, NONCE_HEADER),
            metadata_value(metadata, SIGNATURE_HEADER),
        )
        if signed is None:
            if endpoints.require_signatures:
                raise SignatureRejected("signature-required", "this ingest requires signed requests")
            return
        verify_request(signed, token, "POST", UPLOAD_PATH, body, time.time(), endpoints.signature_window_s)
        if endpoints.nonces is not None and not await endpoints.nonces.remember(device_id, signed.nonce):
            raise SignatureRejected("replayed-request", "this x-michi-nonce was already used")
    except SignatureRejected as rejection:
        raise UploadRefused(401, rejection.reason, rejection.detail) from rejection
    except RedisError as error:
        raise UploadRefused(
            503, "idempotency-store-unavailable", "Redis does not answer", headers={"Retry-After": "2"}
        ) from error


def decode(body: bytes) -> upload_pb2.Upload:
    return decode_body(body, PROTOBUF)


def rejected_ack(upload_id: str, refusal: UploadRefused) -> ingest_pb2.UploadAck:
    detail = f"{refusal.field}: {refusal.detail}" if refusal.field else refusal.detail
    return ingest_pb2.UploadAck(
        upload_id=upload_id,
        outcome=ingest_pb2.UPLOAD_OUTCOME_REJECTED,
        reason=refusal.reason,
        detail=detail,
    )


def answer_ack(answer: UploadAccepted) -> ingest_pb2.UploadAck:
    outcome = ingest_pb2.UPLOAD_OUTCOME_ACCEPTED if answer.outcome == ACCEPTED else ingest_pb2.UPLOAD_OUTCOME_DUPLICATE
    return ingest_pb2.UploadAck(upload_id=answer.upload_id, outcome=outcome, event_id=answer.event_id)


# The stream ticket of the upload the current task handles (set per upload task, read by OrderedPublisher).
current_ticket: ContextVar[int | None] = ContextVar("michi_ingest_stream_ticket", default=None)


class StreamSequencer:
    """Lets one stream's uploads reach Kafka in stream order while several are in flight.

    Each upload takes a ticket when read; a ticket's publish waits until every earlier ticket
    has published or finished without publishing. It also remembers the highest sequence the
    stream published per trip: Redis learns a sequence only once Kafka acknowledged it, so an
    upload claimed while its predecessor is in flight would otherwise report that one missing.
    """

    def __init__(self) -> None:
        self._issued = 0
        self._next = 0
        self._passed: set[int] = set()
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._published_sequence: dict[str, int] = {}

    def issue(self) -> int:
        ticket = self._issued
        self._issued += 1
        return ticket

    async def wait_turn(self, ticket: int) -> None:
        if ticket <= self._next:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[ticket] = waiter
        await waiter

    def done(self, ticket: int) -> None:
        """The ticket published (or never will): later ones may go. Idempotent."""
        if ticket < self._next or ticket in self._passed:
            return
        self._passed.add(ticket)
        while self._next in self._passed:
            self._passed.remove(self._next)
            self._next += 1
        waiter = self._waiters.pop(self._next, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def correct_gaps(self, outgoing: OutgoingUpload) -> None:
        """Drop from `missing_sequences` what this stream already published for the trip."""
        received = outgoing.received
        trip_id, sequence = outgoing.upload.trip_id, outgoing.upload.sequence
        published = self._published_sequence.get(trip_id)
        if published is not None:
            still_missing = [number for number in received.missing_sequences if number > published]
            if len(still_missing) != len(received.missing_sequences):
                del received.missing_sequences[:]
                received.missing_sequences.extend(still_missing)
        self._published_sequence[trip_id] = sequence if published is None else max(sequence, published)


@dataclasses.dataclass
class OrderedPublisher:
    """The handler's publisher, made to publish a stream's uploads in its order (see StreamSequencer)."""

    inner: UploadPublisher
    sequencer: StreamSequencer

    async def publish(self, outgoing: OutgoingUpload) -> Delivery:
        ticket = current_ticket.get()
        if ticket is None:
            return await self.inner.publish(outgoing)
        await self.sequencer.wait_turn(ticket)
        try:
            self.sequencer.correct_gaps(outgoing)
            # The producer has the event when send() returns, before the next ticket may go.
            delivery = self.inner.send(outgoing)
        finally:
            self.sequencer.done(ticket)
        return await delivery

    def send(self, outgoing: OutgoingUpload) -> Awaitable[Delivery]:
        # Ordered: the event may go only on its ticket's turn, which publish() waits for.
        return self.publish(outgoing)


class StreamAuthenticationLost(Exception):
    """The stream's token stopped authenticating (revoked): the stream ends UNAUTHENTICATED."""

    def __init__(self, refusal: UploadRefused) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


class IngestService:
    """`michi.v1.Ingest` on `grpc.aio`; requests arrive as bytes so undecodable ones get a Michi reason."""

    def __init__(self, endpoints: IngestEndpoints, *, stream_window: int = 8) -> None:
        self.endpoints = endpoints
        self.stream_window = stream_window
        self._readers: set[asyncio.Task[None]] = set()
        self.draining = False

    def rpc_handlers(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Upload": grpc.unary_unary_rpc_method_handler(
                    self.upload, response_serializer=ingest_pb2.UploadAck.SerializeToString
                ),
                "StreamUploads": grpc.stream_stream_rpc_method_handler(
                    self.stream_uploads, response_serializer=ingest_pb2.UploadAck.SerializeToString
                ),
            },
        )

    # --- shared by both methods

    def _refused(self, refusal: UploadRefused, device_id: str, upload_id: str, started: float) -> None:
        metrics = self.endpoints.metrics
        metrics.refused(refusal.reason)
        metrics.refused_latency.observe(time.perf_counter() - started)
        log = logger.warning if refusal.status >= 500 else logger.info
        log(
            "upload refused",
            extra={
                "reason": refusal.reason,
                "status": refusal.status,
                "grpc_status": status_code(refusal.status).name,
                "device_id": device_id,
                "upload_id": upload_id,
                "field": refusal.field,
                "transport": "grpc",
            },
        )

    def _answered(self, answer: UploadAccepted, started: float) -> None:
        metrics = self.endpoints.metrics
        if answer.outcome == ACCEPTED:
            metrics.accepted.inc()
            metrics.accepted_latency.observe(time.perf_counter() - started)
        else:
            metrics.duplicate.inc()
            metrics.duplicate_latency.observe(time.perf_counter() - started)

    async def _receive(
        self,
        upload: upload_pb2.Upload | UploadRefused,
        token: str,
        handler: UploadHandler,
        span_name: str,
        parent: Context,
        *,
        signature_check: Callable[[str], Awaitable[None]] | None = None,
    ) -> ingest_pb2.UploadAck:
        """Authenticate, validate, deduplicate and publish one upload; raises `UploadRefused`."""
        started = time.perf_counter()
        device_id = ""
        upload_id = upload.upload_id if isinstance(upload, upload_pb2.Upload) else ""
        # Attributes given at the start and in one call: each set_attribute() takes the span's lock.
        span = tracer.start_span(
            span_name,
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": SERVICE_NAME, "rpc.method": span_name.rpartition("/")[2]},
        )
        with trace.use_span(span, end_on_exit=True):
            try:
                device_id = await authenticate_token(self.endpoints.registry, token)
                await check_rate(self.endpoints.rate_limiter, device_id)
                if signature_check is not None:
                    await signature_check(device_id)
                if isinstance(upload, UploadRefused):
                    raise upload
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
                # A failure no rule foresaw is this upload's alone: INTERNAL for a call, a REJECTED ack on a
                # stream (which goes on), counted and logged as `internal-error`.
                refusal = error if isinstance(error, UploadRefused) else internal_error(error, device_id, upload_id)
                span.set_attributes(
                    {
                        "michi.ingest.outcome": "refused",
                        "michi.ingest.reason": refusal.reason,
                        "rpc.grpc.status_code": status_code(refusal.status).value[0],
                    }
                )
                self._refused(refusal, device_id, upload_id, started)
                if refusal is error:
                    raise
                raise refusal from error
            span.set_attribute("michi.ingest.outcome", answer.outcome)
            self._answered(answer, started)
            return answer_ack(answer)

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, refusal: UploadRefused) -> None:
        await context.abort(
            status_code(refusal.status),
            f"{refusal.reason}: {refusal.detail}",
            trailing_metadata=refusal_metadata(refusal),
        )

    # --- Upload

    async def upload(self, body: bytes, context: grpc.aio.ServicerContext) -> ingest_pb2.UploadAck:
        metadata = context.invocation_metadata()
        self.endpoints.metrics.received(GRPC_CONTENT_TYPE, len(body))
        try:
            token = bearer_token(metadata)
        except UploadRefused as refusal:
            self._refused(refusal, "", "", time.perf_counter())
            await self._abort(context, refusal)
            raise  # abort() raised already; this line is for the type checker
        upload: upload_pb2.Upload | UploadRefused
        try:
            upload = decode(body)
        except UploadRefused as refusal:
            upload = refusal
        try:

            async def signature_check(device_id: str) -> None:
                await check_signature(self.endpoints, metadata, token, device_id, body)

            return await self._receive(
                upload,
                token,
                self.endpoints.handler,
                f"{SERVICE_NAME}/Upload",
                _parent_context(metadata),
                signature_check=signature_check,
            )
        except UploadRefused as refusal:
            await self._abort(context, refusal)
            raise

    # --- StreamUploads

    async def stream_uploads(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ingest_pb2.UploadAck]:
        metadata = context.invocation_metadata()
        parent = _parent_context(metadata)
        try:
            # Refuse a stream with a bad token before reading anything from it.
            token = bearer_token(metadata)
            await authenticate_token(self.endpoints.registry, token)
            if self.endpoints.require_signatures:
                # Metadata is per stream, signatures are per upload: signed devices use Upload.
                raise UploadRefused(401, "signature-required", "this ingest requires signed requests: use Upload")
        except UploadRefused as refusal:
            self._refused(refusal, "", "", time.perf_counter())
            await self._abort(context, refusal)
            return
        sequencer = StreamSequencer()
        handler = dataclasses.replace(
            self.endpoints.handler, publisher=OrderedPublisher(self.endpoints.handler.publisher, sequencer)
        )
        window = asyncio.Semaphore(self.stream_window)
        pending: asyncio.Queue[asyncio.Task[ingest_pb2.UploadAck] | None] = asyncio.Queue()
        outstanding: set[asyncio.Task[ingest_pb2.UploadAck]] = set()
        latest_by_upload_id: dict[str, asyncio.Task[ingest_pb2.UploadAck]] = {}

        async def item(
            upload: upload_pb2.Upload | UploadRefused, ticket: int, before: asyncio.Task[ingest_pb2.UploadAck] | None
        ) -> ingest_pb2.UploadAck:
            current_ticket.set(ticket)
            upload_id = upload.upload_id if isinstance(upload, upload_pb2.Upload) else ""
            try:
                if before is not None:
                    # A copy of an upload still in flight in this stream waits for the first copy's answer.
                    await asyncio.wait([before])
                return await self._receive(upload, token, handler, f"{SERVICE_NAME}/StreamUploads", parent)
            except UploadRefused as refusal:
                if refusal.status == 401:
                    raise StreamAuthenticationLost(refusal) from refusal
                return rejected_ack(upload_id, refusal)
            finally:
                sequencer.done(ticket)
                if latest_by_upload_id.get(upload_id) is asyncio.current_task():
                    del latest_by_upload_id[upload_id]

        async def read() -> None:
            iterator = aiter(requests)
            try:
                while True:
                    # A full window stops the reading, so HTTP/2 flow control pushes back on the device.
                    await window.acquire()
                    try:
                        body = await anext(iterator)
                    except StopAsyncIteration:
                        return
                    self.endpoints.metrics.received(GRPC_CONTENT_TYPE, len(body))
                    upload: upload_pb2.Upload | UploadRefused
                    try:
                        upload = decode(body)
                    except UploadRefused as refusal:
                        upload = refusal
                    upload_id = upload.upload_id if isinstance(upload, upload_pb2.Upload) else ""
                    task = asyncio.create_task(item(upload, sequencer.issue(), latest_by_upload_id.get(upload_id)))
                    if upload_id:
                        latest_by_upload_id[upload_id] = task
                    outstanding.add(task)
                    pending.put_nowait(task)
            finally:
                pending.put_nowait(None)

        reader = asyncio.create_task(read())
        self._readers.add(reader)
        try:
            while (task := await pending.get()) is not None:
                try:
                    ack = await task
                except StreamAuthenticationLost as lost:
                    await self._abort(context, lost.refusal)
                    return
                finally:
                    outstanding.discard(task)
                    window.release()
                yield ack
            if self.draining:
                await self._abort(
                    context,
                    UploadRefused(
                        503, "server-shutting-down", "ingest is stopping; reconnect", headers={"Retry-After": "1"}
                    ),
                )
            elif not reader.cancelled() and (error := reader.exception()) is not None:
                raise error
        finally:
            self._readers.discard(reader)
            reader.cancel()
            for task in outstanding:
                task.cancel()

    def drain(self) -> None:
        """Stop reading every stream: their in-flight uploads are acknowledged, then they end UNAVAILABLE."""
        self.draining = True
        for reader in list(self._readers):
            reader.cancel()


def _parent_context(metadata: Iterable[tuple[str, Any]] | None) -> Context:
    traceparent = metadata_value(metadata, "traceparent")
    return extract_context({"traceparent": traceparent} if traceparent else {})


ReadinessCheck = Callable[[], Awaitable[None]]


class IngestGrpcServer:
    """The `grpc.aio` server with the ingest service, the health service and (dev only) reflection."""

    def __init__(
        self,
        service: IngestService,
        *,
        host: str,
        port: int,
        max_message_bytes: int,
        reflection: bool = False,
        environment: str = "dev",
        reuse_port: bool = False,
    ) -> None:
        self.service = service
        self.host = host
        self.max_message_bytes = max_message_bytes
        self.server = grpc.aio.server(
            options=[
                # Larger messages are refused RESOURCE_EXHAUSTED by gRPC itself, before any Michi code.
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", 64 * 1024),
                # A second process on the same port must fail, not silently share it, unless it is one
                # of the workers of one ingest (MICHI_INGEST_WORKERS) sharing the port on purpose.
                ("grpc.so_reuseport", 1 if reuse_port else 0),
                ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
                ("grpc.keepalive_timeout_ms", 20_000),
                ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
                ("grpc.keepalive_permit_without_calls", 1),
            ]
        )
        self.server.add_generic_rpc_handlers((service.rpc_handlers(),))
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if reflection:
            self._enable_reflection(environment)
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise RuntimeError(f"gRPC cannot listen on {host}:{port}")
        self._health_task: asyncio.Task[None] | None = None

    def _enable_reflection(self, environment: str) -> None:
        if environment != "dev":
            logger.warning("gRPC reflection requested but stays off outside MICHI_ENV=dev", extra={"env": environment})
            return
        try:
            from grpc_reflection.v1alpha import reflection  # optional: grpcio-reflection
        except ImportError:
            logger.warning("gRPC reflection requested but grpcio-reflection is not installed")
            return
        reflection.enable_server_reflection((SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), self.server)

    async def start(self) -> None:
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        self._health_task = asyncio.create_task(self._watch_readiness())

    async def _watch_readiness(self) -> None:
        """SERVING while Kafka, Redis and the database answer the readiness checks, NOT_SERVING otherwise."""
        checks = self.service.endpoints.readiness_checks
        previous: int | None = None
        while True:
            _ready, outcomes = await run_checks(checks, HEALTH_CHECK_TIMEOUT_S)
            failed = [name for name, outcome in outcomes.items() if outcome != "ok"]
            status = health_pb2.HealthCheckResponse.NOT_SERVING if failed else health_pb2.HealthCheckResponse.SERVING
            if status != previous:
                if failed:
                    logger.warning("gRPC health: NOT_SERVING", extra={"failed_checks": failed})
                for service in ("", SERVICE_NAME):
                    await self.health.set(service, status)
                previous = status
            await asyncio.sleep(HEALTH_INTERVAL_S)

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight uploads finish within `grace` seconds, end streams UNAVAILABLE."""
        if self._health_task is not None:
            self._health_task.cancel()
        await self.health.enter_graceful_shutdown()
        self.service.drain()
        await self.server.stop(grace)

    async def wait(self) -> None:
        await self.server.wait_for_termination()
