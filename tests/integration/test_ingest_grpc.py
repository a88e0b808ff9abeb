"""The ingest gRPC door against the real Kafka broker, redis-server and SQLite.

The server is built in-process with `wiring.build_grpc_server` around the same endpoints as
the HTTP app (`build_app(...).state.endpoints`) on a free port, and driven by a real gRPC
channel; one test runs `python -m services.ingest` and stops it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio import Redis

from michi.bus.catalog import UPLOADS
from michi.bus.producer import EventProducer
from michi.bus.reader import Record, TopicReader
from michi.contracts import stable_event_id
from michi.contracts.v1 import ingest_pb2, ingest_pb2_grpc, upload_pb2
from michi.infra.processes import free_port
from services.ingest.adapters.devices import DeviceRegistry
from services.ingest.domain.tokens import issue_token
from services.ingest.entrypoints.grpc import IngestGrpcServer
from services.ingest.settings import IngestSettings
from services.ingest.wiring import build_app, build_grpc_server, device_registry

from .ingest_support import make_upload, uploads_count
from .ingest_support import settings_for as base_settings

pytestmark = pytest.mark.integration

ACCEPTED = ingest_pb2.UPLOAD_OUTCOME_ACCEPTED
DUPLICATE = ingest_pb2.UPLOAD_OUTCOME_DUPLICATE
REJECTED = ingest_pb2.UPLOAD_OUTCOME_REJECTED
DEVICES_DOC = Path(__file__).resolve().parents[2] / "docs" / "devices.md"


@pytest.fixture(scope="module", autouse=True)
def tracer_provider() -> None:
    # Spans need a real provider to have ids, hence a traceparent; exporting is not under test.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())


def settings_for(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, home: Path, **extra: object
) -> IngestSettings:
    values: dict[str, Any] = {
        "ingest_grpc_port": 0,
        # Rate limits have their own test; elsewhere they would only make streams of 20 flaky.
        "ingest_device_rate_per_s": 10_000.0,
        "ingest_device_burst": 10_000,
    }
    values.update(extra)
    return base_settings(kafka_bootstrap, redis_url, topic_prefix, home, **values)


def read_uploads(kafka_bootstrap: str, topic_prefix: str, count: int) -> list[Record]:
    with TopicReader(kafka_bootstrap, UPLOADS, topic_prefix) as reader:
        return reader.read_until(lambda records: len(records) >= count, timeout=20)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class GrpcIngest:
    server: IngestGrpcServer
    channel: grpc.aio.Channel
    stub: ingest_pb2_grpc.IngestStub
    registry: DeviceRegistry
    settings: IngestSettings
    redis: Redis
    producer: EventProducer
    token_a: str
    token_b: str

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def raw_stream(self, token: str, bodies: Iterable[bytes]) -> Any:
        """StreamUploads with bytes the stub could not send (undecodable messages)."""
        method = self.channel.stream_stream(
            "/michi.v1.Ingest/StreamUploads",
            request_serializer=lambda body: body,
            response_deserializer=ingest_pb2.UploadAck.FromString,
        )
        return method(iter(bodies), metadata=bearer(token), timeout=30)


async def refusal(call: Any) -> tuple[grpc.StatusCode, dict[str, str], str]:
    """(code, trailing metadata, details) of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    return error.code(), dict(error.trailing_metadata() or ()), error.details() or ""


@pytest_asyncio.fixture
async def ingest(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, producer: EventProducer, michi_home: Path
) -> AsyncIterator[GrpcIngest]:
    settings = settings_for(kafka_bootstrap, redis_url, topic_prefix, michi_home)
    redis = Redis.from_url(redis_url)
    registry = device_registry(settings)
    app = build_app(settings, producer=producer, redis=redis, registry=registry)
    server = build_grpc_server(settings, app.state.endpoints)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield GrpcIngest(
            server,
            channel,
            ingest_pb2_grpc.IngestStub(channel),
            registry,
            settings,
            redis,
            producer,
            registry.add_device("device-a"),
            registry.add_device("device-b"),
        )
    finally:
        await channel.close()
        await server.stop(1)
        await redis.aclose()
        registry.close()


@pytest.mark.asyncio
async def test_unary_upload_is_published_once_and_a_retry_is_a_duplicate(
    ingest: GrpcIngest, kafka_bootstrap: str, topic_prefix: str
) -> None:
    upload = make_upload()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    metadata = (*bearer(ingest.token_a), ("traceparent", traceparent))
    ack = await ingest.stub.Upload(upload, metadata=metadata, timeout=15)
    event_id = stable_event_id("upload", "upload-1")
    assert (ack.upload_id, ack.outcome, ack.event_id) == ("upload-1", ACCEPTED, event_id)

    again = await ingest.stub.Upload(upload, metadata=bearer(ingest.token_a), timeout=15)
    assert (again.outcome, again.event_id) == (DUPLICATE, event_id)
    assert uploads_count(kafka_bootstrap, topic_prefix) == 1

    [record] = read_uploads(kafka_bootstrap, topic_prefix, 1)
    received = record.message
    assert isinstance(received, upload_pb2.UploadReceived)
    assert received.event_id == event_id
    assert received.upload == upload
    assert record.key == "device-a"
    # The server span continued the caller's trace, so the event carries it.
    assert received.lineage.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert record.headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")

    metrics = ingest.server.service.endpoints.metrics
    assert metrics.accepted._value.get() == 1
    assert metrics.duplicate._value.get() == 1


@pytest.mark.asyncio
async def test_a_device_cannot_write_another_devices_upload(
    ingest: GrpcIngest, kafka_bootstrap: str, topic_prefix: str
) -> None:
    code, metadata, details = await refusal(
        ingest.stub.Upload(make_upload(device_id="device-b"), metadata=bearer(ingest.token_a), timeout=15)
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert metadata["michi-reason"] == "device-mismatch"
    assert metadata["michi-field"] == "device_id"
    assert details.startswith("device-mismatch: ")
    ack = await ingest.stub.Upload(make_upload(device_id="device-b"), metadata=bearer(ingest.token_b), timeout=15)
    assert ack.outcome == ACCEPTED
    assert uploads_count(kafka_bootstrap, topic_prefix) == 1


@pytest.mark.asyncio
async def test_missing_invalid_and_unknown_tokens_are_unauthenticated(ingest: GrpcIngest) -> None:
    upload = make_upload()
    code, metadata, _ = await refusal(ingest.stub.Upload(upload, timeout=15))
    assert (code, metadata["michi-reason"]) == (grpc.StatusCode.UNAUTHENTICATED, "missing-token")

    code, metadata, _ = await refusal(ingest.stub.Upload(upload, metadata=(("authorization", "Basic xyz"),)))
    assert (code, metadata["michi-reason"]) == (grpc.StatusCode.UNAUTHENTICATED, "missing-token")

    forged = ingest.token_a[:-2] + ("AA" if not ingest.token_a.endswith("AA") else "BB")
    code, metadata, _ = await refusal(ingest.stub.Upload(upload, metadata=bearer(forged), timeout=15))
    assert (code, metadata["michi-reason"]) == (grpc.StatusCode.UNAUTHENTICATED, "invalid-token")

    # Well signed, never registered.
    unknown = issue_token(ingest.settings.token_secret.get_secret_value().encode(), "device-a")
    code, metadata, _ = await refusal(ingest.stub.Upload(upload, metadata=bearer(unknown), timeout=15))
    assert (code, metadata["michi-reason"]) == (grpc.StatusCode.UNAUTHENTICATED, "unknown-token")

    # A stream with a bad token is refused as a whole.
    stream = ingest.stub.StreamUploads(iter([upload]), metadata=bearer(forged), timeout=15)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stream:
            pass
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert dict(caught.value.trailing_metadata() or ())["michi-reason"] == "invalid-token"


@pytest.mark.asyncio
async def test_nan_is_invalid_argument_with_the_field(
    ingest: GrpcIngest, kafka_bootstrap: str, topic_prefix: str
) -> None:
    upload = make_upload()
    upload.imu.gyro_y[17] = math.nan
    code, metadata, _ = await refusal(ingest.stub.Upload(upload, metadata=bearer(ingest.token_a), timeout=15))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert (metadata["michi-reason"], metadata["michi-field"]) == ("non-finite-value", "imu.gyro_y[17]")

    changed = make_upload("upload-2")
    assert (await ingest.stub.Upload(changed, metadata=bearer(ingest.token_a))).outcome == ACCEPTED
    changed.firmware_version = "1.0.1"
    code, metadata, _ = await refusal(ingest.stub.Upload(changed, metadata=bearer(ingest.token_a), timeout=15))
    assert (code, metadata["michi-reason"]) == (grpc.StatusCode.ALREADY_EXISTS, "upload-id-reused")
    assert uploads_count(kafka_bootstrap, topic_prefix) == 1


@pytest.mark.asyncio
async def test_a_stream_of_twenty_uploads_gets_twenty_acks_in_order_and_twenty_events_in_order(
    ingest: GrpcIngest, kafka_bootstrap: str, topic_prefix: str
) -> None:
    uploads = [make_upload(f"stream-{index:02d}", sequence=index) for index in range(20)]
    stream = ingest.stub.StreamUploads(iter(uploads), metadata=bearer(ingest.token_a), timeout=60)
    acks = [ack async for ack in stream]
    assert [ack.upload_id for ack in acks] == [upload.upload_id for upload in uploads]
    assert {ack.outcome for ack in acks} == {ACCEPTED}
    assert [ack.event_id for ack in acks] == [stable_event_id("upload", upload.upload_id) for upload in uploads]
    assert await stream.code() == grpc.StatusCode.OK

    records = read_uploads(kafka_bootstrap, topic_prefix, 20)
    assert uploads_count(kafka_bootstrap, topic_prefix) == 20
    # One key, one partition: Kafka holds them in stream order, and no in-flight predecessor reads as a gap.
    assert [record.message.upload.sequence for record in records] == list(range(20))  # type: ignore[attr-defined]
    assert all(list(record.message.missing_sequences) == [] for record in records)  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_a_refused_upload_in_a_stream_is_rejected_and_the_stream_goes_on(
    ingest: GrpcIngest, kafka_bootstrap: str, topic_prefix: str
) -> None:
    uploads = [make_upload(f"mixed-{index}", sequence=index) for index in range(8)]
    uploads[2].imu.gyro_y[17] = math.nan
    uploads[4].device_id = "device-b"
    bodies = [upload.SerializeToString() for upload in uploads]
    bodies[6] = b"\xff\xff\xff\xff\xff"
    # The same upload twice in one stream: the second copy is a duplicate of the first.
    bodies.append(bodies[0])
    acks = [ack async for ack in ingest.raw_stream(ingest.token_a, bodies)]

    assert [ack.outcome for ack in acks] == [
        ACCEPTED,
        ACCEPTED,
        REJECTED,
        ACCEPTED,
        REJECTED,
        ACCEPTED,
        REJECTED,
        ACCEPTED,
        DUPLICATE,
    ]
    assert (acks[2].upload_id, acks[2].reason) == ("mixed-2", "non-finite-value")
    assert acks[2].detail.startswith("imu.gyro_y[17]: ")
    assert (acks[4].reason, acks[6].reason) == ("device-mismatch", "undecodable-body")
    assert acks[8].event_id == acks[0].event_id
    assert uploads_count(kafka_bootstrap, topic_prefix) == 5
    records = read_uploads(kafka_bootstrap, topic_prefix, 5)
    assert [record.message.upload.upload_id for record in records] == [  # type: ignore[attr-defined]
        "mixed-0",
        "mixed-1",
        "mixed-3",
        "mixed-5",
        "mixed-7",
    ]


@pytest.mark.asyncio
async def test_a_message_over_the_size_limit_is_resource_exhausted(
    ingest: GrpcIngest, kafka_bootstrap: str, topic_prefix: str
) -> None:
    huge = make_upload("upload-huge")
    huge.imu.offset_ms.extend(range(20_000, 1_020_000))  # 3-byte varints: ~3 MB, over the 2 MiB limit
    assert huge.ByteSize() > ingest.settings.ingest_max_body_bytes
    code, _, _ = await refusal(ingest.stub.Upload(huge, metadata=bearer(ingest.token_a), timeout=15))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED

    stream = ingest.stub.StreamUploads(iter([make_upload("upload-small"), huge]), metadata=bearer(ingest.token_a))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stream:
            pass
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert uploads_count(kafka_bootstrap, topic_prefix) <= 1  # the small one, if it was processed first


@pytest.mark.asyncio
async def test_rate_limited_uploads_are_resource_exhausted_with_a_retry_delay(
    ingest: GrpcIngest, kafka_bootstrap: str, redis_url: str, topic_prefix: str, michi_home: Path
) -> None:
    settings = settings_for(
        kafka_bootstrap, redis_url, topic_prefix, michi_home, ingest_device_rate_per_s=0.2, ingest_device_burst=1
    )
    app = build_app(settings, producer=ingest.producer, redis=ingest.redis, registry=ingest.registry)
    server = build_grpc_server(settings, app.state.endpoints)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = ingest_pb2_grpc.IngestStub(channel)
            first = await stub.Upload(make_upload("upload-1"), metadata=bearer(ingest.token_a), timeout=15)
            assert first.outcome == ACCEPTED
            code, metadata, _ = await refusal(
                stub.Upload(make_upload("upload-2"), metadata=bearer(ingest.token_a), timeout=15)
            )
            assert (code, metadata["michi-reason"]) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate-limited")
            assert int(metadata["michi-retry-after-s"]) >= 1
            stream = stub.StreamUploads(iter([make_upload("upload-3")]), metadata=bearer(ingest.token_a))
            [ack] = [ack async for ack in stream]
            assert (ack.outcome, ack.reason) == (REJECTED, "rate-limited")
    finally:
        await server.stop(1)
    assert uploads_count(kafka_bootstrap, topic_prefix) == 1


@pytest.mark.asyncio
async def test_a_revoked_token_ends_its_stream(ingest: GrpcIngest) -> None:
    queue: asyncio.Queue[upload_pb2.Upload | None] = asyncio.Queue()

    async def uploads() -> AsyncIterator[upload_pb2.Upload]:
        while (upload := await queue.get()) is not None:
            yield upload

    stream = ingest.stub.StreamUploads(uploads(), metadata=bearer(ingest.token_a), timeout=30)
    await queue.put(make_upload("before-revocation"))
    assert (await stream.read()).outcome == ACCEPTED
    assert ingest.registry.revoke("device-a")
    revoked_at = time.monotonic()
    deadline = revoked_at + ingest.settings.ingest_token_cache_ttl_s + 5
    code = None
    index = 0
    last_accepted = 0.0  # when the last upload accepted after the revocation was sent
    while code is None and time.monotonic() < deadline:
        index += 1
        sent = time.monotonic() - revoked_at
        await queue.put(make_upload(f"after-revocation-{index}", sequence=index))
        try:
            ack = await stream.read()
            assert ack.outcome == ACCEPTED  # still cached
            last_accepted = sent
            await asyncio.sleep(0.05)
        except grpc.aio.AioRpcError as error:
            code = (error.code(), dict(error.trailing_metadata() or ())["michi-reason"])
    assert code == (grpc.StatusCode.UNAUTHENTICATED, "revoked-token")
    # docs/devices.md: a revoked token ends its stream within 2 s (the token cache's lifetime, at most 2 s).
    assert ingest.settings.ingest_token_cache_ttl_s <= 2.0
    assert last_accepted <= ingest.settings.ingest_token_cache_ttl_s + 0.05
    assert time.monotonic() - revoked_at <= ingest.settings.ingest_token_cache_ttl_s + 1.0
    await queue.put(None)


@pytest.mark.asyncio
async def test_health_service_reports_serving(ingest: GrpcIngest) -> None:
    health = health_pb2_grpc.HealthStub(ingest.channel)
    deadline = time.monotonic() + 20
    statuses: list[int] = []
    while time.monotonic() < deadline:
        statuses = [
            (await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)).status
            for service in ("", "michi.v1.Ingest")
        ]
        if statuses == [health_pb2.HealthCheckResponse.SERVING] * 2:
            break
        await asyncio.sleep(0.1)
    assert statuses == [health_pb2.HealthCheckResponse.SERVING] * 2


@pytest.mark.asyncio
async def test_the_documented_python_client_works(ingest: GrpcIngest, kafka_bootstrap: str, topic_prefix: str) -> None:
    documentation = DEVICES_DOC.read_text()
    section = documentation[documentation.index("## Sending uploads over gRPC") :]
    example = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert example is not None
    namespace: dict[str, Any] = {}
    exec(compile(example.group(1), str(DEVICES_DOC), "exec"), namespace)
    uploads = [make_upload(f"doc-{index}", sequence=index) for index in range(4)]
    # The example is a blocking client: off the event loop that serves it.
    acks = await asyncio.to_thread(namespace["send_uploads"], ingest.target, ingest.token_a, uploads)
    assert [(ack.upload_id, ack.outcome) for ack in acks] == [(f"doc-{index}", ACCEPTED) for index in range(4)]
    assert uploads_count(kafka_bootstrap, topic_prefix) == 4


@pytest.fixture
def ingest_process(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, michi_home: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int, int, str]]:
    """`python -m services.ingest` on free ports with one device; yields (process, http port, grpc port, token)."""
    http_port, grpc_port = free_port(), free_port()
    settings = settings_for(kafka_bootstrap, redis_url, topic_prefix, michi_home)
    registry = device_registry(settings)
    token = registry.add_device("device-a")
    registry.close()
    environment = {
        **os.environ,
        "MICHI_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "MICHI_REDIS_URL": redis_url,
        "MICHI_TOPIC_PREFIX": topic_prefix,
        "MICHI_HOME": str(michi_home),
        "MICHI_DATABASE_URL": settings.resolved_database_url(),
        "MICHI_INGEST_HTTP_PORT": str(http_port),
        "MICHI_INGEST_GRPC_PORT": str(grpc_port),
    }
    with (michi_home / "ingest.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "services.ingest"], env=environment, stdout=log, stderr=log)
    try:
        yield process, http_port, grpc_port, token
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=20)


def test_the_service_serves_grpc_next_to_http_and_stops_on_sigterm(
    ingest_process: tuple[subprocess.Popen[bytes], int, int, str],
    kafka_bootstrap: str,
    topic_prefix: str,
    michi_home: Path,
) -> None:
    import httpx

    process, http_port, grpc_port, token = ingest_process
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
            except grpc.RpcError:
                status = None
            if status == health_pb2.HealthCheckResponse.SERVING:
                break
            time.sleep(0.1)
        assert status == health_pb2.HealthCheckResponse.SERVING, (michi_home / "ingest.log").read_text()
        ack = ingest_pb2_grpc.IngestStub(channel).Upload(make_upload(), metadata=bearer(token), timeout=15)
        assert ack.outcome == ACCEPTED
    assert httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=5).status_code == 200
    assert uploads_count(kafka_bootstrap, topic_prefix) == 1

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, (michi_home / "ingest.log").read_text()


@pytest.mark.asyncio
async def test_stopping_the_server_ends_open_streams_unavailable_after_their_acks(ingest: GrpcIngest) -> None:
    queue: asyncio.Queue[upload_pb2.Upload | None] = asyncio.Queue()

    async def uploads() -> AsyncIterator[upload_pb2.Upload]:
        while (upload := await queue.get()) is not None:
            yield upload

    stream = ingest.stub.StreamUploads(uploads(), metadata=bearer(ingest.token_a), timeout=30)
    await queue.put(make_upload("before-stop"))
    assert (await stream.read()).outcome == ACCEPTED
    stopping = asyncio.create_task(ingest.server.stop(10))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert dict(caught.value.trailing_metadata() or ())["michi-reason"] == "server-shutting-down"
    await asyncio.wait_for(stopping, 5)  # the stream ended itself: no need to wait out the grace period
    await queue.put(None)


@pytest.mark.asyncio
async def test_reflection_without_grpcio_reflection_only_warns(
    ingest: GrpcIngest, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ingest.settings.model_copy(update={"ingest_grpc_reflection": True})
    server = build_grpc_server(settings, ingest.server.service.endpoints)
    try:
        assert "grpcio-reflection is not installed" in caplog.text
    finally:
        await server.stop(0)
