"""The camera joins a device's media and uploads in one consumer only when both topics have the same partition
count (docs/camera.md, *Scaling*): against a real broker it refuses to start when they differ, naming both counts,
and finds nothing to refuse in topics not created yet or of equal counts.

Run: .venv/bin/python -m pytest tests/integration/test_camera_partitions.py -q
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from michi.bus.admin import ensure_topics
from michi.bus.catalog import MEDIA, UPLOADS
from michi.bus.producer import EventProducer
from services.camera.settings import CameraSettings
from services.camera.wiring import PartitionsDiffer, build_consumer, partition_mismatch

pytestmark = pytest.mark.integration


def settings_for(kafka_bootstrap: str, prefix: str, home: Path) -> CameraSettings:
    return CameraSettings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=prefix,
        home=home,
        database_url=f"sqlite:///{home / 'camera.db'}",
        blob_url=f"file://{home / 'blobs'}",
    )


def test_the_camera_refuses_media_and_uploads_topics_of_different_partition_counts(
    kafka_bootstrap: str, michi_home: Path
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:10]}."
    settings = settings_for(kafka_bootstrap, prefix, michi_home)
    producer = EventProducer(kafka_bootstrap, prefix, client_id="test")
    try:
        ensure_topics(kafka_bootstrap, prefix, [MEDIA], partitions=2)
        ensure_topics(kafka_bootstrap, prefix, [UPLOADS], partitions=3)
        expected = f"({MEDIA.name(prefix)} has 2, {UPLOADS.name(prefix)} has 3)"
        with pytest.raises(PartitionsDiffer, match=re.escape(f"same partition count {expected}")):
            build_consumer(settings, producer=producer)
    finally:
        producer.close()


def test_topics_not_created_yet_or_of_equal_counts_are_not_refused(kafka_bootstrap: str) -> None:
    prefix = f"test-{uuid.uuid4().hex[:10]}."
    client = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"{prefix}camera"})
    try:
        topics = [MEDIA.name(prefix), UPLOADS.name(prefix)]
        assert partition_mismatch(client, topics) is None
        ensure_topics(kafka_bootstrap, prefix, [MEDIA, UPLOADS], partitions=2)
        assert partition_mismatch(client, topics) is None
    finally:
        client.close()
