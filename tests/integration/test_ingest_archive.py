"""The raw archive: every accepted upload is in the blob store before it is on the topic, and rebuilds exactly.

Real Kafka, redis-server, SQLite and a file:// blob store; the app runs in-process.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from michi.archive import ArchiveCorrupt, ArchiveReader, find_upload, read_segment_index, rebuild_upload
from michi.blobs import BlobStore
from michi.bus.catalog import UPLOADS
from michi.bus.producer import EventProducer
from michi.bus.reader import TopicReader
from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import upload_pb2
from services.ingest.settings import IngestSettings
from services.ingest.wiring import build_app, device_registry

from .ingest_support import uploads_count

pytestmark = pytest.mark.integration


def make_upload(upload_id: str = "upload-1", device_id: str = "device-a") -> upload_pb2.Upload:
    samples = 500
    upload = upload_pb2.Upload(
        upload_id=upload_id,
        device_id=device_id,
        driver_id="driver-1",
        trip_id=f"trip-of-{device_id}",
        sequence=3,
        firmware_version="1.0.0",
        sample_rate_hz=50,
        started_at=timestamp_from_seconds(time.time() - 15),
        media_names=["front.jpg"],
    )
    upload.imu.offset_ms.extend(index * 20 for index in range(samples))
    for name in ("accel_x", "accel_y", "gyro_x", "gyro_y", "gyro_z"):
        getattr(upload.imu, name).extend([0.1 * (index % 7) for index in range(samples)])
    upload.imu.accel_z.extend([9.8] * samples)
    upload.gps.add(offset_ms=0, latitude=52.52, longitude=13.40, speed_mps=14.0, heading_deg=80, hdop=0.9)
    return upload


class Ingest:
    def __init__(self, client: httpx.AsyncClient, settings: IngestSettings, token: str) -> None:
        self.client = client
        self.settings = settings
        self.token = token

    async def post(self, upload: upload_pb2.Upload) -> httpx.Response:
        return await self.client.post(
            "/v1/uploads",
            content=upload.SerializeToString(),
            headers={"content-type": "application/x-protobuf", "authorization": f"Bearer {self.token}"},
        )


@pytest_asyncio.fixture
async def make_ingest(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, producer: EventProducer, michi_home: Path
) -> AsyncIterator:
    """A factory: `await make_ingest(blob_url=..., ingest_archive=...)` builds one app on the shared servers."""
    opened: list[tuple[httpx.AsyncClient, Redis]] = []
    registries = []
    tokens: list[str] = []

    async def make(**extra: object) -> Ingest:
        settings = IngestSettings(
            kafka_bootstrap=kafka_bootstrap,
            redis_url=redis_url,
            topic_prefix=topic_prefix,
            home=michi_home,
            database_url=f"sqlite:///{michi_home / 'michi.db'}",
            **{"blob_url": f"file://{michi_home / 'blobs'}", **extra},  # type: ignore[arg-type]
        )
        redis = Redis.from_url(redis_url)
        registry = device_registry(settings)
        registries.append(registry)
        app = build_app(settings, producer=producer, redis=redis, registry=registry)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest")
        opened.append((client, redis))
        # One device across the apps: they share the database.
        if not tokens:
            tokens.append(registry.add_device("device-a"))
        return Ingest(client, settings, tokens[0])

    try:
        yield make
    finally:
        for client, redis in opened:
            await client.aclose()
            await redis.aclose()
        for registry in registries:
            registry.close()


def read_received(kafka_bootstrap: str, topic_prefix: str, count: int = 1) -> list[upload_pb2.UploadReceived]:
    with TopicReader(kafka_bootstrap, UPLOADS, topic_prefix) as reader:
        records = reader.read_until(lambda records: len(records) >= count, timeout=20)
    messages = [record.message for record in records]
    assert all(isinstance(message, upload_pb2.UploadReceived) for message in messages)
    return messages  # type: ignore[return-value]


def segment_files(michi_home: Path) -> list[Path]:
    return sorted((michi_home / "blobs" / "archive").rglob("*.seg"))


@pytest.mark.asyncio
async def test_accepted_upload_is_archived_and_rebuilds_exactly(
    make_ingest, kafka_bootstrap: str, topic_prefix: str, michi_home: Path
) -> None:
    ingest = await make_ingest()
    upload = make_upload()
    response = await ingest.post(upload)
    assert response.status_code == 202, response.text
    [received] = read_received(kafka_bootstrap, topic_prefix)

    day = datetime.fromtimestamp(upload.started_at.seconds, UTC)
    [path] = segment_files(michi_home)
    assert path.parent == michi_home / "blobs" / f"archive/segments/{day:%Y/%m/%d}"
    assert received.archive_uri == f"file://{path}#upload-1"
    canonical = upload.SerializeToString(deterministic=True)
    with path.open("rb") as handle:
        index, payload_start = read_segment_index(handle, str(path))
    [entry] = index.uploads
    assert (entry.upload_id, entry.device_id, entry.trip_id, entry.sequence) == (
        "upload-1",
        "device-a",
        "trip-of-device-a",
        3,
    )
    assert entry.content_sha256 == received.content_sha256 == hashlib.sha256(canonical).hexdigest()
    segment = path.read_bytes()
    assert segment[payload_start + entry.offset : payload_start + entry.offset + entry.length] == canonical

    store = BlobStore(ingest.settings.resolved_blob_url())
    rebuilt = await rebuild_upload(store, received.archive_uri, received.content_sha256)
    assert rebuilt == upload == received.upload
    assert rebuilt.SerializeToString(deterministic=True) == canonical
    assert await find_upload(store, "device-a", "upload-1", datetime.now(UTC)) == upload

    # A changed byte is caught by the hash, a truncation by the length and the hash.
    path.write_bytes(segment[:-1] + bytes([segment[-1] ^ 1]))
    with pytest.raises(ArchiveCorrupt):
        await rebuild_upload(store, received.archive_uri, received.content_sha256)
    path.write_bytes(segment[: len(segment) - len(canonical) // 2])
    with pytest.raises(ArchiveCorrupt):
        await rebuild_upload(store, received.archive_uri)


@pytest.mark.asyncio
async def test_concurrent_uploads_share_segments_and_each_rebuilds(
    make_ingest, kafka_bootstrap: str, topic_prefix: str, michi_home: Path
) -> None:
    ingest = await make_ingest(ingest_device_burst=100)
    uploads = [make_upload(f"upload-{index}") for index in range(24)]
    responses = await asyncio.gather(*(ingest.post(upload) for upload in uploads))
    assert [response.status_code for response in responses] == [202] * 24
    received = {message.upload.upload_id: message for message in read_received(kafka_bootstrap, topic_prefix, 24)}
    assert len(received) == 24
    segments = segment_files(michi_home)
    assert 1 <= len(segments) < 24, "one blob per batch, not per upload"
    store = BlobStore(ingest.settings.resolved_blob_url())
    for upload in uploads:
        message = received[upload.upload_id]
        assert message.archive_uri.endswith(f".seg#{upload.upload_id}")
        assert await rebuild_upload(store, message.archive_uri, message.content_sha256) == upload
    reader = ArchiveReader.for_store(store)
    found = reader.device_uploads("device-a", datetime.fromtimestamp(uploads[0].started_at.seconds, UTC))
    assert sorted(upload.upload_id for upload in found) == sorted(upload.upload_id for upload in uploads)


@pytest.mark.asyncio
async def test_duplicates_do_not_rewrite_the_archive(
    make_ingest, kafka_bootstrap: str, topic_prefix: str, michi_home: Path
) -> None:
    ingest = await make_ingest()
    upload = make_upload()
    assert (await ingest.post(upload)).status_code == 202
    [archived] = segment_files(michi_home)
    before = archived.stat()
    for _ in range(3):
        again = await ingest.post(upload)
        assert (again.status_code, again.json()["outcome"]) == (200, "duplicate")
    after = archived.stat()
    # A rewrite is a new temporary file moved into place: a new inode.
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert segment_files(michi_home) == [archived]
    assert uploads_count(kafka_bootstrap, topic_prefix) == 1


@pytest.mark.asyncio
async def test_archive_failure_is_503_and_publishes_nothing(
    make_ingest, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    # A regular file where the blob folder should be: unwritable even for root.
    (tmp_path / "not-a-folder").write_text("")
    ingest = await make_ingest(blob_url=f"file://{tmp_path / 'not-a-folder' / 'blobs'}")
    upload = make_upload()
    for _ in range(2):
        # The second try also reaches the archive: the first one released its claim.
        response = await ingest.post(upload)
        assert response.status_code == 503, response.text
        assert response.json()["reason"] == "archive-unavailable"
        assert int(response.headers["retry-after"]) >= 1
    assert uploads_count(kafka_bootstrap, topic_prefix) == 0
    # Once the archive works again the device's retry is accepted.
    working = await make_ingest()
    assert (await working.post(upload)).status_code == 202
    [received] = read_received(kafka_bootstrap, topic_prefix)
    assert "/archive/segments/" in received.archive_uri
    assert received.archive_uri.endswith(".seg#upload-1")


@pytest.mark.asyncio
async def test_archive_can_be_turned_off(
    make_ingest, kafka_bootstrap: str, topic_prefix: str, michi_home: Path
) -> None:
    ingest = await make_ingest(ingest_archive=False)
    assert (await ingest.post(make_upload())).status_code == 202
    [received] = read_received(kafka_bootstrap, topic_prefix)
    assert received.archive_uri == ""
    assert not (michi_home / "blobs" / "archive").exists()
