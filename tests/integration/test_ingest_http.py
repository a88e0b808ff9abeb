"""The ingest HTTP door against the real Kafka broker, redis-server and SQLite.

The app is built with `wiring.build_app` around real adapters and driven in-process
through `httpx.ASGITransport`; one test runs `python -m services.ingest` as a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
import pytest_asyncio
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio import Redis

from michi.bus.catalog import UPLOADS
from michi.bus.producer import EventProducer
from michi.bus.reader import TopicReader
from michi.contracts import stable_event_id
from michi.contracts.v1 import upload_pb2
from michi.infra.processes import free_port
from services.ingest.adapters.devices import DeviceRegistry
from services.ingest.settings import IngestSettings
from services.ingest.wiring import build_app, device_registry

from .ingest_support import (
    ingest_environment,
    make_upload,
    make_upload_without_gyroscope,
    settings_for,
    start_ingest,
    uploads_count,
    wait_for_ingest,
)

pytestmark = pytest.mark.integration

PROTOBUF = {"content-type": "application/x-protobuf"}


@pytest.fixture(scope="module", autouse=True)
def tracer_provider() -> None:
    # Spans need a real provider to have ids, hence a traceparent; exporting is not under test.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())


@dataclass
class Ingest:
    client: httpx.AsyncClient
    registry: DeviceRegistry
    settings: IngestSettings
    redis: Redis
    token_a: str
    token_b: str

    async def post(self, upload: upload_pb2.Upload, token: str | None = None) -> httpx.Response:
        return await self.client.post(
            "/v1/uploads",
            content=upload.SerializeToString(),
            headers={**PROTOBUF, "authorization": f"Bearer {token or self.token_a}"},
        )


@pytest_asyncio.fixture
async def ingest(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, producer: EventProducer, michi_home: Path
) -> AsyncIterator[Ingest]:
    settings = settings_for(kafka_bootstrap, redis_url, topic_prefix, michi_home)
    redis = Redis.from_url(redis_url)
    registry = device_registry(settings)
    app = build_app(settings, producer=producer, redis=redis, registry=registry)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest")
    try:
        yield Ingest(
            client, registry, settings, redis, registry.add_device("device-a"), registry.add_device("device-b")
        )
    finally:
        await client.aclose()
        await redis.aclose()
        registry.close()


@pytest.mark.asyncio
async def test_accepted_upload_is_published_once_with_headers_and_lineage(
    ingest: Ingest, kafka_bootstrap: str, topic_prefix: str
) -> None:
    upload = make_upload()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = await ingest.client.post(
        "/v1/uploads",
        content=upload.SerializeToString(),
        headers={**PROTOBUF, "authorization": f"Bearer {ingest.token_a}", "traceparent": traceparent},
    )
    assert response.status_code == 202, response.text
    event_id = stable_event_id("upload", "upload-1")
    assert response.json() == {"upload_id": "upload-1", "event_id": event_id, "outcome": "accepted"}
    assert uploads_count(kafka_bootstrap, topic_prefix) == 1

    with TopicReader(kafka_bootstrap, UPLOADS, topic_prefix) as reader:
        [record] = reader.read_until(lambda records: len(records) >= 1, timeout=20)
    assert record.key == "device-a"
    assert record.headers["schema"] == "michi.v1.UploadReceived"
    assert record.headers["content-type"] == "application/x-protobuf"
    assert record.headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    received = record.message
    assert isinstance(received, upload_pb2.UploadReceived)
    assert received.event_id == event_id
    assert received.upload == upload
    assert received.lineage.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert (received.lineage.upload_id, received.lineage.device_id, received.lineage.trip_id) == (
        "upload-1",
        "device-a",
        "trip-of-device-a",
    )
    assert received.lineage.driver_id == "driver-1"
    assert len(received.content_sha256) == 64
    assert received.occurred_at == upload.started_at
    assert received.received_at.seconds >= upload.started_at.seconds

    metrics = (await ingest.client.get("/metrics")).text
    assert 'michi_ingest_uploads_total{outcome="accepted",reason=""} 1.0' in metrics


@pytest.mark.asyncio
async def test_json_upload_is_accepted_and_matches_the_protobuf_content(ingest: Ingest) -> None:
    upload = make_upload("upload-json")
    response = await ingest.client.post(
        "/v1/uploads",
        content=json_format.MessageToJson(upload, preserving_proto_field_name=True),
        headers={"content-type": "application/json", "authorization": f"Bearer {ingest.token_a}"},
    )
    assert response.status_code == 202, response.text
    # The same content in the other encoding is the same upload, hence a duplicate.
    again = await ingest.post(upload)
    assert (again.status_code, again.json()["outcome"]) == (200, "duplicate")


@pytest.mark.asyncio
async def test_a_fractional_rate_with_microsecond_times_and_no_gyroscope_is_published_whole(
    ingest: Ingest, kafka_bootstrap: str, topic_prefix: str
) -> None:
    upload = make_upload_without_gyroscope("upload-16-7-hz")
    assert not upload.imu.offset_ms and not upload.imu.gyro_x
    response = await ingest.post(upload)
    assert response.status_code == 202, response.text
    assert response.json()["outcome"] == "accepted"

    with TopicReader(kafka_bootstrap, UPLOADS, topic_prefix) as reader:
        [record] = reader.read_until(lambda records: len(records) >= 1, timeout=20)
    received = record.message
    assert isinstance(received, upload_pb2.UploadReceived)
    assert received.upload == upload
    assert (received.upload.sample_rate_exact_hz, received.upload.gyroscope) == (16.7, upload_pb2.GYROSCOPE_ABSENT)
    assert list(received.upload.imu.offset_us) == list(upload.imu.offset_us)

    # The same upload in the proto3 JSON mapping (offsetUs as strings, enums by name) is the same content.
    document = json_format.MessageToJson(upload)
    assert '"offsetUs"' in document and '"GYROSCOPE_ABSENT"' in document
    again = await ingest.client.post(
        "/v1/uploads",
        content=document,
        headers={"content-type": "application/json", "authorization": f"Bearer {ingest.token_a}"},
    )
    assert (again.status_code, again.json()["outcome"]) == (200, "duplicate"), again.text
    assert uploads_count(kafka_bootstrap, topic_prefix) == 1


@pytest.mark.asyncio
async def test_retry_is_a_duplicate_and_publishes_nothing(
    ingest: Ingest, kafka_bootstrap: str, topic_prefix: str
) -> None:
    upload = make_upload()
    first = await ingest.post(upload)
    second = await ingest.post(upload)
    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json() == {**first.json(), "outcome": "duplicate"}
    assert uploads_count(kafka_bootstrap, topic_prefix) == 1


@pytest.mark.asyncio
async def test_five_concurrent_copies_publish_one_record(
    ingest: Ingest, kafka_bootstrap: str, topic_prefix: str
) -> None:
    upload = make_upload("upload-concurrent")
    responses = await asyncio.gather(*(ingest.post(upload) for _ in range(5)))
    assert sorted(response.status_code for response in responses) == [200, 200, 200, 200, 202]
    assert {response.json()["event_id"] for response in responses} == {stable_event_id("upload", "upload-concurrent")}
    assert uploads_count(kafka_bootstrap, topic_prefix) == 1


@pytest.mark.asyncio
async def test_same_upload_id_with_other_content_is_refused(ingest: Ingest) -> None:
    assert (await ingest.post(make_upload())).status_code == 202
    changed = make_upload()
    changed.firmware_version = "1.0.1"
    response = await ingest.post(changed)
    assert response.status_code == 409
    assert response.json() == {"reason": "upload-id-reused", "detail": response.json()["detail"], "field": "upload_id"}


@pytest.mark.asyncio
async def test_a_device_cannot_write_another_devices_upload(
    ingest: Ingest, kafka_bootstrap: str, topic_prefix: str
) -> None:
    response = await ingest.post(make_upload(device_id="device-b"), token=ingest.token_a)
    assert response.status_code == 403
    assert response.json()["reason"] == "device-mismatch"
    assert (await ingest.post(make_upload(device_id="device-b"), token=ingest.token_b)).status_code == 202
    assert uploads_count(kafka_bootstrap, topic_prefix) == 1


@pytest.mark.asyncio
async def test_missing_invalid_and_revoked_tokens_get_401(ingest: Ingest, caplog: pytest.LogCaptureFixture) -> None:
    upload = make_upload()
    missing = await ingest.client.post("/v1/uploads", content=upload.SerializeToString(), headers=PROTOBUF)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["reason"] == "missing-token"

    forged = ingest.token_a[:-2] + ("AA" if not ingest.token_a.endswith("AA") else "BB")
    invalid = await ingest.post(upload, token=forged)
    assert (invalid.status_code, invalid.json()["reason"]) == (401, "invalid-token")
    assert invalid.headers["www-authenticate"].startswith("Bearer")

    assert ingest.registry.revoke("device-a")
    deadline = time.monotonic() + ingest.settings.ingest_token_cache_ttl_s + 3
    response = await ingest.post(upload)
    while response.status_code != 401 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        response = await ingest.post(make_upload(f"upload-{time.monotonic_ns()}"))
    assert (response.status_code, response.json()["reason"]) == (401, "revoked-token")
    # The token never reaches the logs.
    assert all(
        ingest.token_a not in record.getMessage() and ingest.token_a not in str(record.__dict__)
        for record in caplog.records
    )


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-protobuf", b"\xff\xff\xff\xff\xff"),
        ("application/json", b'{"uploadId": '),
        ("application/json", b"[]"),
    ],
)
async def test_undecodable_bodies_get_400(ingest: Ingest, content_type: str, body: bytes) -> None:
    response = await ingest.client.post(
        "/v1/uploads", content=body, headers={"content-type": content_type, "authorization": f"Bearer {ingest.token_a}"}
    )
    assert response.status_code == 400
    assert response.json()["reason"] == "undecodable-body"


@pytest.mark.asyncio
async def test_nan_is_refused_with_the_field(ingest: Ingest, kafka_bootstrap: str, topic_prefix: str) -> None:
    upload = make_upload()
    upload.imu.gyro_y[17] = math.nan
    response = await ingest.post(upload)
    assert response.status_code == 422
    assert response.json()["reason"] == "non-finite-value"
    assert response.json()["field"] == "imu.gyro_y[17]"
    # The same through JSON, where NaN is spelled "NaN".
    document = json.loads(json_format.MessageToJson(make_upload("upload-2")))
    document["gps"][3]["speedMps"] = "NaN"
    response = await ingest.client.post(
        "/v1/uploads",
        content=json.dumps(document),
        headers={"content-type": "application/json", "authorization": f"Bearer {ingest.token_a}"},
    )
    assert (response.status_code, response.json()["field"]) == (422, "gps[3].speed_mps")
    assert uploads_count(kafka_bootstrap, topic_prefix) == 0


@pytest.mark.asyncio
async def test_oversized_body_is_refused_without_reading_it(ingest: Ingest) -> None:
    chunk = b"\0" * (1024 * 1024)
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(50):
            pulled += 1
            yield chunk

    headers = {**PROTOBUF, "authorization": f"Bearer {ingest.token_a}"}
    response = await ingest.client.post("/v1/uploads", content=endless(), headers=headers)
    assert response.status_code == 413
    assert response.json()["reason"] == "body-too-large"
    assert pulled <= 3  # 2 MiB limit: refused on the third mebibyte, not after fifty

    pulled = 0
    declared = {**headers, "content-length": str(50 * len(chunk))}
    response = await ingest.client.post("/v1/uploads", content=endless(), headers=declared)
    assert (response.status_code, pulled) == (413, 0)


@pytest.mark.asyncio
async def test_unknown_content_type_gets_415(ingest: Ingest) -> None:
    response = await ingest.client.post(
        "/v1/uploads",
        content=make_upload().SerializeToString(),
        headers={"content-type": "text/plain", "authorization": f"Bearer {ingest.token_a}"},
    )
    assert response.status_code == 415
    assert response.json() == {"reason": "unsupported-media-type", "detail": response.json()["detail"], "field": None}


@pytest.mark.asyncio
async def test_sequence_gaps_are_reported(ingest: Ingest, kafka_bootstrap: str, topic_prefix: str) -> None:
    for upload_id, sequence in (("s-0", 0), ("s-1", 1), ("s-4", 4)):
        assert (await ingest.post(make_upload(upload_id, sequence=sequence))).status_code == 202
    with TopicReader(kafka_bootstrap, UPLOADS, topic_prefix) as reader:
        records = reader.read_until(lambda records: len(records) >= 3, timeout=20)
    missing = {record.message.upload.upload_id: list(record.message.missing_sequences) for record in records}  # type: ignore[attr-defined]
    assert missing == {"s-0": [], "s-1": [], "s-4": [2, 3]}


@pytest.mark.asyncio
async def test_unacknowledged_publish_gets_503_and_a_later_retry_succeeds(
    ingest: Ingest, kafka_bootstrap: str, topic_prefix: str, producer: EventProducer
) -> None:
    unreachable = EventProducer(
        f"127.0.0.1:{free_port()}", topic_prefix, client_id="unreachable", extra={"message.timeout.ms": 1500}
    )
    failing_app = build_app(ingest.settings, producer=unreachable, redis=ingest.redis, registry=ingest.registry)
    upload = make_upload("upload-after-outage")
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=failing_app), base_url="http://ingest"
        ) as client:
            response = await client.post(
                "/v1/uploads",
                content=upload.SerializeToString(),
                headers={**PROTOBUF, "authorization": f"Bearer {ingest.token_a}"},
            )
            assert response.status_code == 503, response.text
            assert response.json()["reason"] == "broker-unavailable"
            assert int(response.headers["retry-after"]) > 0
            readiness = await client.get("/readyz")
            assert readiness.status_code == 200  # settings point at the real broker; the producer does not
    finally:
        unreachable.close(timeout=5)
    retry = await ingest.post(upload)
    assert retry.status_code == 202, retry.text
    assert retry.json()["outcome"] == "accepted"
    assert uploads_count(kafka_bootstrap, topic_prefix) == 1


@pytest.mark.asyncio
async def test_health_readiness_metrics_and_openapi(ingest: Ingest) -> None:
    assert (await ingest.client.get("/healthz")).json() == {"status": "ok", "service": "ingest"}
    readiness = await ingest.client.get("/readyz")
    assert readiness.status_code == 200
    assert readiness.json() == {
        "status": "ready",
        "service": "ingest",
        "ready": True,
        "checks": {"kafka": "ok", "redis": "ok", "database": "ok"},
    }
    await ingest.post(make_upload("upload-1"))
    await ingest.post(make_upload("upload-2", device_id="device-b"))
    metrics = (await ingest.client.get("/metrics")).text
    assert 'michi_ingest_uploads_total{outcome="refused",reason="device-mismatch"} 1.0' in metrics
    assert "michi_ingest_request_seconds_bucket" in metrics
    assert "michi_ingest_received_bytes_total" in metrics
    document = (await ingest.client.get("/openapi.json")).json()
    operation = document["paths"]["/v1/uploads"]["post"]
    assert set(operation["requestBody"]["content"]) == {"application/x-protobuf", "application/json"}
    assert {"400", "401", "403", "409", "413", "415", "422", "503"} <= set(operation["responses"])
    assert operation["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    missing = await ingest.client.get("/v1/nothing-here")
    assert (missing.status_code, missing.json()["reason"]) == (404, "not-found")


def _start_ingest(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, michi_home: Path, **environment_extra: str
) -> tuple[subprocess.Popen[bytes], int, str]:
    """`python -m services.ingest` on a free port, with one registered device: (process, port, token)."""
    registry = device_registry(settings_for(kafka_bootstrap, redis_url, topic_prefix, michi_home))
    token = registry.add_device("device-a")
    registry.close()
    environment = ingest_environment(kafka_bootstrap, redis_url, topic_prefix, michi_home, **environment_extra)
    return start_ingest(environment, michi_home), int(environment["MICHI_INGEST_HTTP_PORT"]), token


@pytest.fixture
def ingest_process(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, michi_home: Path
) -> Iterator[tuple[str, str]]:
    """`python -m services.ingest` on a free port, with one registered device; yields (url, token)."""
    process, port, token = _start_ingest(kafka_bootstrap, redis_url, topic_prefix, michi_home)
    try:
        yield f"http://127.0.0.1:{port}", token
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_workers_listen_on_one_port_and_the_kernel_spreads_connections(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, michi_home: Path
) -> None:
    supervisor, port, token = _start_ingest(
        kafka_bootstrap, redis_url, topic_prefix, michi_home, MICHI_INGEST_WORKERS="2"
    )
    url = f"http://127.0.0.1:{port}"
    clients: list[httpx.Client] = []
    sockets: list[socket.socket] = []
    try:
        wait_for_ingest(url, michi_home)
        workers = psutil.Process(supervisor.pid).children()
        assert len(workers) == 2

        def listening(worker: psutil.Process) -> bool:
            return any(
                connection.laddr.port == port and connection.status == psutil.CONN_LISTEN
                for connection in worker.net_connections(kind="tcp")
            )

        # /readyz answered from one worker; the other may still be starting (not listening yet).
        deadline = time.monotonic() + 30
        while not all(listening(worker) for worker in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        # Sixteen connections opened in a burst (as a load balancer or a fleet reconnecting would).
        sockets.extend(socket.create_connection(("127.0.0.1", port)) for _ in range(16))

        def held() -> list[int]:
            return [
                sum(
                    1
                    for connection in worker.net_connections(kind="tcp")
                    if connection.laddr.port == port and connection.status == psutil.CONN_ESTABLISHED
                )
                for worker in workers
            ]

        deadline = time.monotonic() + 10
        while sum(served := held()) < 16 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Each worker took some of the 16 (all on one: probability 2 x 2^-16 with SO_REUSEPORT hashing).
        assert sum(served) == 16 and min(served) >= 1, served
        clients = [httpx.Client(base_url=url, timeout=10) for _ in range(8)]
        for index, client in enumerate(clients):
            response = client.post(
                "/v1/uploads",
                content=make_upload(f"upload-{index}").SerializeToString(),
                headers={**PROTOBUF, "authorization": f"Bearer {token}"},
            )
            assert response.status_code == 202, response.text
        assert uploads_count(kafka_bootstrap, topic_prefix) == 8
    finally:
        for connection in sockets:
            connection.close()
        for client in clients:
            client.close()
        supervisor.terminate()
        assert supervisor.wait(timeout=30) == 0, (michi_home / "ingest.log").read_text()


def test_the_service_runs_as_a_process(
    ingest_process: tuple[str, str], kafka_bootstrap: str, topic_prefix: str, michi_home: Path
) -> None:
    url, token = ingest_process
    wait_for_ingest(url, michi_home)
    with httpx.Client(base_url=url, timeout=5) as client:
        response = client.post(
            "/v1/uploads",
            content=make_upload().SerializeToString(),
            headers={**PROTOBUF, "authorization": f"Bearer {token}"},
        )
        assert response.status_code == 202, response.text
    assert uploads_count(kafka_bootstrap, topic_prefix) == 1
    log = (michi_home / "ingest.log").read_text()
    assert token not in log
