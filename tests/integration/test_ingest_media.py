"""`PUT /v1/uploads/{upload_id}/media/{name}` against real Kafka, redis-server, SQLite and a file:// blob store.

Most tests drive the app in-process (`wiring.build_app` + `httpx.ASGITransport`); the
memory and early-413 tests run `python -m services.ingest` as a subprocess and watch it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from michi.blobs import BlobStore, media_key
from michi.bus.catalog import MEDIA
from michi.bus.producer import EventProducer
from michi.bus.reader import TopicReader
from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import upload_pb2
from michi.infra.processes import free_port
from services.ingest.adapters.devices import DeviceRegistry
from services.ingest.settings import IngestSettings
from services.ingest.wiring import build_app, device_registry

from .ingest_support import settings_for

pytestmark = pytest.mark.integration

MEBIBYTE = 1024 * 1024
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40 + b"\xff\xd9"


def make_upload(upload_id: str, device_id: str = "device-a", media_names: tuple[str, ...] = ()) -> upload_pb2.Upload:
    samples = 500
    upload = upload_pb2.Upload(
        upload_id=upload_id,
        device_id=device_id,
        driver_id="driver-1",
        trip_id=f"trip-of-{device_id}",
        sequence=0,
        firmware_version="1.0.0",
        sample_rate_hz=50,
        started_at=timestamp_from_seconds(time.time() - 15),
        media_names=list(media_names),
    )
    upload.imu.offset_ms.extend(index * 20 for index in range(samples))
    for name in ("accel_x", "accel_y", "gyro_x", "gyro_y", "gyro_z"):
        getattr(upload.imu, name).extend([0.1] * samples)
    upload.imu.accel_z.extend([9.8] * samples)
    return upload


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def media_events(ingest: Ingest, count: int) -> list[upload_pb2.MediaReceived]:
    """The `MediaReceived` on the media topic once `count` are there, and anything more within a second."""
    with TopicReader(ingest.settings.resolved_kafka_bootstrap(), MEDIA, ingest.settings.topic_prefix) as reader:
        records = reader.read_until(lambda records: len(records) >= count, timeout=20)
        records.extend(reader.poll(1.0))
    return [record.message for record in records]  # type: ignore[misc]


def blob_files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


@dataclass
class Ingest:
    client: httpx.AsyncClient
    registry: DeviceRegistry
    settings: IngestSettings
    blob_root: Path
    token_a: str
    token_b: str

    async def put(
        self,
        upload_id: str,
        name: str,
        data: bytes,
        *,
        token: str | None = None,
        content_type: str = "image/jpeg",
        checksum: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = {
            "authorization": f"Bearer {token or self.token_a}",
            "content-type": content_type,
            "x-content-sha256": checksum or sha256_hex(data),
            **(headers or {}),
        }
        return await self.client.put(f"/v1/uploads/{upload_id}/media/{name}", content=data, headers=sent)

    async def post(self, upload: upload_pb2.Upload, token: str | None = None) -> httpx.Response:
        return await self.client.post(
            "/v1/uploads",
            content=upload.SerializeToString(),
            headers={"content-type": "application/x-protobuf", "authorization": f"Bearer {token or self.token_a}"},
        )


@pytest_asyncio.fixture
async def ingest(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, producer: EventProducer, michi_home: Path
) -> AsyncIterator[Ingest]:
    settings = settings_for(kafka_bootstrap, redis_url, topic_prefix, michi_home, ingest_max_media_bytes=200_000)
    redis = Redis.from_url(redis_url)
    registry = device_registry(settings)
    app = build_app(settings, producer=producer, redis=redis, registry=registry)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest")
    try:
        yield Ingest(
            client,
            registry,
            settings,
            michi_home / "blobs",
            registry.add_device("device-a"),
            registry.add_device("device-b"),
        )
    finally:
        await client.aclose()
        await redis.aclose()
        registry.close()


@pytest.mark.asyncio
async def test_media_before_and_after_its_upload(ingest: Ingest) -> None:
    store = BlobStore(ingest.settings.resolved_blob_url())
    before = await ingest.put("upload-1", "front.jpg", JPEG)
    assert before.status_code == 201, before.text
    key = media_key("device-a", "upload-1", "front.jpg")
    assert before.json() == {
        "upload_id": "upload-1",
        "name": "front.jpg",
        "uri": store.uri(key),
        "size": len(JPEG),
        "sha256": sha256_hex(JPEG),
        "outcome": "stored",
    }
    accepted = await ingest.post(make_upload("upload-1", media_names=("front.jpg", "clip.mp4")))
    assert accepted.status_code == 202, accepted.text
    clip = os.urandom(150_000)
    after = await ingest.put("upload-1", "clip.mp4", clip, content_type="video/mp4")
    assert after.status_code == 201, after.text
    assert (ingest.blob_root / "media/device-a/upload-1/front.jpg").read_bytes() == JPEG
    assert (ingest.blob_root / "media/device-a/upload-1/clip.mp4").read_bytes() == clip
    metrics = (await ingest.client.get("/metrics")).text
    assert 'michi_ingest_media_total{outcome="stored",reason=""} 2.0' in metrics


@pytest.mark.asyncio
async def test_another_devices_token_is_refused_before_and_after_the_upload(ingest: Ingest) -> None:
    # After: the accepted upload names its device.
    assert (await ingest.post(make_upload("upload-a1"))).status_code == 202
    foreign = await ingest.put("upload-a1", "front.jpg", JPEG, token=ingest.token_b)
    assert (foreign.status_code, foreign.json()["reason"]) == (403, "device-mismatch")
    # Before: the first media PUT binds the upload to its device.
    assert (await ingest.put("upload-a2", "front.jpg", JPEG)).status_code == 201
    foreign = await ingest.put("upload-a2", "rear.jpg", JPEG, token=ingest.token_b)
    assert (foreign.status_code, foreign.json()["field"]) == (403, "upload_id")
    # A device that sent media first for someone else's upload loses it once that upload is accepted.
    assert (await ingest.put("upload-a3", "front.jpg", JPEG, token=ingest.token_b)).status_code == 201
    assert (await ingest.post(make_upload("upload-a3"))).status_code == 202
    assert (await ingest.put("upload-a3", "front.jpg", JPEG)).status_code == 201
    late = await ingest.put("upload-a3", "rear.jpg", JPEG, token=ingest.token_b)
    assert late.status_code == 403
    assert not (ingest.blob_root / "media/device-b/upload-a1").exists()
    assert not (ingest.blob_root / "media/device-b/upload-a2").exists()
    assert (await ingest.client.put("/v1/uploads/upload-a1/media/x.jpg", content=JPEG)).status_code == 401


@pytest.mark.asyncio
async def test_wrong_type_bad_names_and_missing_checksum_are_refused(ingest: Ingest) -> None:
    wrong_type = await ingest.put("upload-1", "notes.txt", b"hello", content_type="text/plain")
    assert (wrong_type.status_code, wrong_type.json()["reason"]) == (415, "unsupported-media-type")
    bad_name = await ingest.put("upload-1", "n" * 65, JPEG)
    assert (bad_name.status_code, bad_name.json()["reason"], bad_name.json()["field"]) == (
        422,
        "invalid-media-name",
        "name",
    )
    bad_id = await ingest.put("upload%201", "front.jpg", JPEG)
    assert (bad_id.status_code, bad_id.json()["field"]) == (422, "upload_id")
    missing = await ingest.client.put(
        "/v1/uploads/upload-1/media/front.jpg",
        content=JPEG,
        headers={"authorization": f"Bearer {ingest.token_a}", "content-type": "image/jpeg"},
    )
    assert (missing.status_code, missing.json()["reason"]) == (400, "missing-checksum")
    malformed = await ingest.put("upload-1", "front.jpg", JPEG, checksum="abc")
    assert (malformed.status_code, malformed.json()["reason"]) == (400, "invalid-checksum")
    assert blob_files(ingest.blob_root) == []


@pytest.mark.asyncio
async def test_checksum_mismatch_is_422_and_leaves_no_blob(ingest: Ingest) -> None:
    response = await ingest.put("upload-1", "front.jpg", JPEG, checksum=sha256_hex(b"something else"))
    assert (response.status_code, response.json()["reason"]) == (422, "checksum-mismatch")
    assert blob_files(ingest.blob_root) == []
    # The Digest header (RFC 3230) works too; a wrong one is just as refused.
    digest = base64.b64encode(hashlib.sha256(JPEG).digest()).decode()
    good = await ingest.client.put(
        "/v1/uploads/upload-1/media/front.jpg",
        content=JPEG,
        headers={
            "authorization": f"Bearer {ingest.token_a}",
            "content-type": "image/jpeg",
            "digest": f"sha-256={digest}",
        },
    )
    assert good.status_code == 201, good.text
    assert blob_files(ingest.blob_root) == ["media/device-a/upload-1/front.jpg"]


@pytest.mark.asyncio
async def test_duplicate_put_is_200_and_different_content_is_409(ingest: Ingest) -> None:
    first = await ingest.put("upload-1", "front.jpg", JPEG)
    again = await ingest.put("upload-1", "front.jpg", JPEG)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == {**first.json(), "outcome": "duplicate"}
    stored = ingest.blob_root / "media/device-a/upload-1/front.jpg"
    inode = stored.stat().st_ino
    other = await ingest.put("upload-1", "front.jpg", JPEG[::-1])
    assert (other.status_code, other.json()["reason"]) == (409, "media-name-reused")
    assert stored.read_bytes() == JPEG
    assert stored.stat().st_ino == inode
    assert blob_files(ingest.blob_root) == ["media/device-a/upload-1/front.jpg"]


@pytest.mark.asyncio
async def test_size_limit_from_content_length_and_while_streaming(ingest: Ingest) -> None:
    declared = await ingest.put("upload-1", "clip.mp4", b"\x00" * 200_001, content_type="video/mp4")
    assert (declared.status_code, declared.json()["reason"]) == (413, "media-too-large")
    assert declared.headers["connection"] == "close"

    async def chunked() -> AsyncIterator[bytes]:
        # No Content-Length: the bound is enforced on the bytes as they arrive.
        for _ in range(40):
            yield b"\x00" * 10_000

    streamed = await ingest.client.put(
        "/v1/uploads/upload-1/media/clip.mp4",
        content=chunked(),
        headers={
            "authorization": f"Bearer {ingest.token_a}",
            "content-type": "video/mp4",
            "x-content-sha256": sha256_hex(b"\x00" * 400_000),
        },
    )
    assert (streamed.status_code, streamed.json()["reason"]) == (413, "media-too-large")
    assert blob_files(ingest.blob_root) == []


@pytest.mark.asyncio
async def test_openapi_documents_the_media_operation(ingest: Ingest) -> None:
    document = (await ingest.client.get("/openapi.json")).json()
    operation = document["paths"]["/v1/uploads/{upload_id}/media/{name}"]["put"]
    assert set(operation["requestBody"]["content"]) == {"image/jpeg", "image/png", "video/mp4", "video/h264"}
    assert {"200", "201", "400", "401", "403", "409", "413", "415", "422", "503"} <= set(operation["responses"])
    assert {parameter["name"] for parameter in operation["parameters"]} >= {"upload_id", "name", "X-Content-SHA256"}


# --- a real process: memory bound and the early 413


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of `pid` so far (kB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


@dataclass
class IngestProcess:
    url: str
    port: int
    pid: int
    token: str
    blob_root: Path


@pytest.fixture
def ingest_process(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, michi_home: Path
) -> Iterator[IngestProcess]:
    port = free_port()
    settings = settings_for(kafka_bootstrap, redis_url, topic_prefix, michi_home)
    registry = device_registry(settings)
    token = registry.add_device("device-a")
    registry.close()
    environment = {
        **os.environ,
        "MICHI_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "MICHI_REDIS_URL": redis_url,
        "MICHI_DATABASE_URL": settings.resolved_database_url(),
        "MICHI_HOME": str(michi_home),
        "MICHI_BLOB_URL": settings.resolved_blob_url(),
        "MICHI_TOPIC_PREFIX": topic_prefix,
        "MICHI_INGEST_HTTP_PORT": str(port),
        # The gRPC door (when present) must not collide with other test processes either.
        "MICHI_INGEST_GRPC_PORT": str(free_port()),
    }
    with (michi_home / "ingest.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "services.ingest"], env=environment, stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=url, timeout=5) as client:
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, (michi_home / "ingest.log").read_text()
                assert time.monotonic() < deadline, (michi_home / "ingest.log").read_text()
                time.sleep(0.1)
        yield IngestProcess(url, port, process.pid, token, michi_home / "blobs")
    finally:
        process.terminate()
        process.wait(timeout=20)


def put_streamed(
    client: httpx.Client, token: str, upload_id: str, name: str, block: bytes, blocks: int
) -> httpx.Response:
    digest = hashlib.sha256()
    for _ in range(blocks):
        digest.update(block)

    def body() -> Iterator[bytes]:
        for _ in range(blocks):
            yield block

    return client.put(
        f"/v1/uploads/{upload_id}/media/{name}",
        content=body(),
        headers={
            "authorization": f"Bearer {token}",
            "content-type": "video/mp4",
            "content-length": str(len(block) * blocks),
            "x-content-sha256": digest.hexdigest(),
        },
    )


def test_a_10_mb_clip_streams_with_bounded_memory(ingest_process: IngestProcess) -> None:
    block = os.urandom(64 * 1024)
    with httpx.Client(base_url=ingest_process.url, timeout=30) as client:
        # Warm-up: imports, thread pool and buffers on the media path exist before the baseline.
        warm = put_streamed(client, ingest_process.token, "upload-warm", "clip.mp4", block, 32)
        assert warm.status_code == 201, warm.text
        baseline_kib = vm_hwm_kib(ingest_process.pid)
        started = time.perf_counter()
        response = put_streamed(client, ingest_process.token, "upload-big", "clip.mp4", block, 160)
        elapsed = time.perf_counter() - started
        assert response.status_code == 201, response.text
    peak_kib = vm_hwm_kib(ingest_process.pid)
    growth_mb = (peak_kib - baseline_kib) / 1024
    size = 160 * len(block)
    print(
        f"\nmedia PUT of {size / MEBIBYTE:.0f} MiB in {elapsed:.2f} s: peak RSS {baseline_kib / 1024:.1f} MiB -> "
        f"{peak_kib / 1024:.1f} MiB (growth {growth_mb:.1f} MiB)"
    )
    assert response.json()["size"] == size
    assert (ingest_process.blob_root / "media/device-a/upload-big/clip.mp4").stat().st_size == size
    assert growth_mb < 50  # the bound
    # Stricter, so the test fails if the body were ever held whole (that measured 7.5 MiB here).
    assert growth_mb < 0.4 * size / MEBIBYTE


def test_a_60_mb_put_is_refused_from_its_content_length_before_the_body_is_sent(
    ingest_process: IngestProcess,
) -> None:
    request = (
        "PUT /v1/uploads/upload-huge/media/clip.mp4 HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{ingest_process.port}\r\n"
        f"Authorization: Bearer {ingest_process.token}\r\n"
        "Content-Type: video/mp4\r\n"
        f"Content-Length: {60 * MEBIBYTE}\r\n"
        f"X-Content-SHA256: {'0' * 64}\r\n"
        "\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", ingest_process.port), timeout=10) as connection:
        connection.sendall(request)
        # Not one byte of the body is sent: the answer must come from the headers alone.
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer
    assert b'"reason":"media-too-large"' in body
    assert b"connection: close" in head.lower()
    assert not (ingest_process.blob_root / "media/device-a/upload-huge").exists()


@pytest.mark.asyncio
async def test_stored_media_is_announced_with_its_camera_frames_and_optics_and_again_on_a_retry(
    ingest: Ingest,
) -> None:
    headers = {
        "x-michi-camera": "inward",
        "x-michi-frame-offsets-ms": "0, 100,200",
        "x-michi-camera-fov-deg": "110",
        "x-michi-camera-intrinsics": "800,800,640,360",
    }
    stored = await ingest.put("upload-m", "cab-0001.jpg", JPEG, headers=headers)
    assert stored.status_code == 201, stored.text
    # Outward from its name, nothing else declared.
    road = await ingest.put("upload-m", "road-0001.jpg", JPEG[::-1])
    assert road.status_code == 201, road.text
    # A retry after a lost answer: answered from the stored copy and announced again, the same event.
    again = await ingest.put("upload-m", "cab-0001.jpg", JPEG, headers=headers)
    assert (again.status_code, again.json()["outcome"]) == (200, "duplicate")

    events = await asyncio.to_thread(media_events, ingest, 3)
    assert len(events) == 3
    first, retry, second = sorted(events, key=lambda event: (event.name, event.occurred_at.ToNanoseconds()))
    assert first.event_id == retry.event_id != second.event_id
    assert (first.lineage.device_id, first.lineage.upload_id, first.upload_id) == ("device-a", "upload-m", "upload-m")
    assert len(first.lineage.trace_id) == 32
    assert (first.name, first.camera, first.content_type) == (
        "cab-0001.jpg",
        upload_pb2.CAMERA_KIND_INWARD,
        "image/jpeg",
    )
    assert (first.sha256, first.size_bytes) == (sha256_hex(JPEG), len(JPEG))
    assert first.blob_key == media_key("device-a", "upload-m", "cab-0001.jpg")
    assert first.uri == stored.json()["uri"]
    assert list(first.frame_offsets_ms) == [0, 100, 200]
    assert (first.optics.horizontal_fov_deg, first.optics.focal_length_x_px, first.optics.principal_point_y_px) == (
        110.0,
        800.0,
        360.0,
    )
    assert (second.name, second.camera, list(second.frame_offsets_ms)) == (
        "road-0001.jpg",
        upload_pb2.CAMERA_KIND_OUTWARD,
        [],
    )
    assert second.optics.horizontal_fov_deg == 0.0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-michi-camera", "sideways"),
        ("x-michi-frame-offsets-ms", "0,200,100"),
        ("x-michi-frame-offsets-ms", "0,-5"),
        ("x-michi-frame-offsets-ms", ",".join(["1"] * 4097)),
        ("x-michi-camera-fov-deg", "nan"),
        ("x-michi-camera-fov-deg", "400"),
        ("x-michi-camera-intrinsics", "800,800,640"),
        ("x-michi-camera-height-m", "12"),
    ],
)
async def test_a_wrong_camera_header_is_refused_before_anything_is_stored_or_announced(
    ingest: Ingest, header: str, value: str
) -> None:
    refused = await ingest.put("upload-h", "inward-1.jpg", JPEG, headers={header: value})
    assert refused.status_code == 400, refused.text
    assert (refused.json()["reason"], refused.json()["field"]) == ("invalid-media-header", header)
    assert blob_files(ingest.blob_root) == []
    with TopicReader(ingest.settings.resolved_kafka_bootstrap(), MEDIA, ingest.settings.topic_prefix) as reader:
        assert reader.poll(1.0) == []


@pytest.mark.asyncio
async def test_media_stored_while_kafka_is_away_is_503_and_announced_by_the_retry(
    ingest: Ingest, redis_url: str
) -> None:
    # The same stores (Redis, database, blobs) behind an ingest whose broker does not answer.
    away = EventProducer(
        f"127.0.0.1:{free_port()}",
        ingest.settings.topic_prefix,
        client_id="test-away",
        extra={"message.timeout.ms": 1500},  # what it cannot deliver is dropped soon: its close waits for no more
    )
    settings = ingest.settings.model_copy(update={"ingest_publish_timeout_s": 1.0})
    redis = Redis.from_url(redis_url)
    app = build_app(settings, producer=away, redis=redis, registry=ingest.registry)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest") as client:
            refused = await client.put(
                "/v1/uploads/upload-k/media/inward-1.jpg",
                content=JPEG,
                headers={
                    "authorization": f"Bearer {ingest.token_a}",
                    "content-type": "image/jpeg",
                    "x-content-sha256": sha256_hex(JPEG),
                },
            )
        assert (refused.status_code, refused.json()["reason"]) == (503, "broker-unavailable")
        assert refused.headers["retry-after"] == "2"
    finally:
        away.close(timeout=1)
        await redis.aclose()
    assert (ingest.blob_root / "media/device-a/upload-k/inward-1.jpg").read_bytes() == JPEG
    # The device sends it again to an ingest that reaches Kafka: the stored copy answers and is announced.
    retried = await ingest.put("upload-k", "inward-1.jpg", JPEG)
    assert (retried.status_code, retried.json()["outcome"]) == (200, "duplicate")
    [event] = await asyncio.to_thread(media_events, ingest, 1)
    assert (event.upload_id, event.name, event.camera) == ("upload-k", "inward-1.jpg", upload_pb2.CAMERA_KIND_INWARD)
