"""Kafka stopped mid-test: ingest answers 503 with Retry-After within the publish timeout, and once the
broker is back (same ports, same data) the device's retries succeed with every accepted upload on the
topic exactly once.

The test runs its OWN broker: stopping the session's broker would break every other test.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from michi.bus.admin import ensure_topics
from michi.bus.catalog import UPLOADS
from michi.bus.reader import TopicReader
from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import upload_pb2
from michi.infra.kafka import KafkaBroker
from michi.infra.processes import free_port
from services.ingest.settings import IngestSettings
from services.ingest.wiring import build_app, device_registry, upload_producer

PUBLISH_TIMEOUT_S = 3.0


def make_upload(upload_id: str, sequence: int) -> upload_pb2.Upload:
    upload = upload_pb2.Upload(
        upload_id=upload_id,
        device_id="device-a",
        driver_id="driver-1",
        trip_id="trip-outage",
        sequence=sequence,
        sample_rate_hz=50,
        started_at=timestamp_from_seconds(time.time() - 5),
    )
    upload.imu.offset_ms.extend(index * 20 for index in range(50))
    for name in ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z"):
        getattr(upload.imu, name).extend([0.1] * 50)
    return upload


@pytest.mark.asyncio
async def test_kafka_outage_gives_503_and_no_loss_or_duplicate_once_it_is_back(
    tmp_path: Path, redis_url: str, michi_home: Path
) -> None:
    broker = KafkaBroker(tmp_path / "kafka", port=free_port(), controller_port=free_port())
    await asyncio.to_thread(broker.start)
    prefix = f"outage-{uuid.uuid4().hex[:8]}."
    redis = Redis.from_url(redis_url)
    settings = IngestSettings(
        kafka_bootstrap=broker.bootstrap,
        redis_url=redis_url,
        topic_prefix=prefix,
        home=michi_home,
        database_url=f"sqlite:///{michi_home / 'michi.db'}",
        ingest_publish_timeout_s=PUBLISH_TIMEOUT_S,
        ingest_device_rate_per_s=1000,
        ingest_device_burst=1000,
    )
    registry = device_registry(settings)
    token = registry.add_device("device-a")
    producer = None
    try:
        await asyncio.to_thread(lambda: ensure_topics(broker.bootstrap, prefix, partitions=2))
        producer = upload_producer(settings)
        app = build_app(settings, producer=producer, redis=redis, registry=registry)
        headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {token}"}
        accepted: list[str] = []
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ingest", timeout=30
        ) as client:

            async def send(upload: upload_pb2.Upload) -> httpx.Response:
                response = await client.post("/v1/uploads", content=upload.SerializeToString(), headers=headers)
                if response.status_code == 202:
                    accepted.append(upload.upload_id)
                return response

            uploads = [make_upload(f"outage-{index}", index) for index in range(8)]
            for upload in uploads[:3]:
                assert (await send(upload)).status_code == 202

            await asyncio.to_thread(broker.stop)
            # Three uploads at once: each waits at most the publish timeout, none the sum.
            started = time.monotonic()
            during_outage = await asyncio.gather(*(send(upload) for upload in uploads[3:6]))
            elapsed = time.monotonic() - started
            assert elapsed < PUBLISH_TIMEOUT_S + 1.5, elapsed
            for response in during_outage:
                assert response.status_code == 503, response.text
                assert response.json()["reason"] == "broker-unavailable"
                assert int(response.headers["retry-after"]) >= 1

            await asyncio.to_thread(broker.start)  # same ports, same data directory
            # The device retries what got 503, honouring Retry-After, then goes on.
            for upload in [*uploads[3:6], *uploads[6:]]:
                deadline = time.monotonic() + 60
                while (response := await send(upload)).status_code == 503:
                    assert time.monotonic() < deadline, response.text
                    await asyncio.sleep(min(float(response.headers["retry-after"]), 1.0))
                assert response.status_code == 202, response.text
            # A retry of something already accepted publishes nothing.
            duplicate = await send(uploads[0])
            assert (duplicate.status_code, duplicate.json()["outcome"]) == (200, "duplicate")

        assert sorted(accepted) == sorted(upload.upload_id for upload in uploads)

        def read_topic() -> list[str]:
            with TopicReader(broker.bootstrap, UPLOADS, prefix) as reader:
                records = reader.read_until(lambda records: len(records) >= len(uploads), timeout=20)
                # Anything beyond would be a duplicate: give it a moment to show up.
                records.extend(reader.poll(1.0))
            return [record.message.upload.upload_id for record in records]  # type: ignore[attr-defined]

        on_topic = Counter(await asyncio.to_thread(read_topic))
        assert on_topic == Counter({upload.upload_id: 1 for upload in uploads})
    finally:
        if producer is not None:
            producer.close(timeout=5)
        await redis.aclose()
        registry.close()
        await asyncio.to_thread(broker.stop)
