"""The inference service as a process against a real Kafka broker.

Publishes scripted uploads with one harsh brake, a garbage message in between, and a
redelivered upload; asserts predictions, one detection, segments whose counts match, the
dead letter, and that redelivery reproduces the same event ids.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import httpx
import pytest

from michi.bus.catalog import DEAD_LETTERS, DETECTIONS, PREDICTIONS, TRIP_SEGMENTS, UPLOADS
from michi.bus.producer import EventProducer
from michi.bus.reader import Record, TopicReader
from michi.contracts.v1 import common_pb2, inference_pb2, operations_pb2
from michi.infra.processes import free_port

from ..scripted_drive import ScriptedDrive, ScriptedEvent

pytestmark = pytest.mark.integration
REPOSITORY = Path(__file__).resolve().parents[2]


@contextmanager
def running_service(
    kafka_bootstrap: str, topic_prefix: str, michi_home: Path, *, log_level: str = "WARNING"
) -> Iterator[str]:
    """`python -m services.inference` until the block ends (SIGTERM); yields its base URL once ready."""
    port = free_port()
    environment = {
        **os.environ,
        "MICHI_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "MICHI_TOPIC_PREFIX": topic_prefix,
        "MICHI_HOME": str(michi_home),
        "MICHI_INFERENCE_PORT": str(port),
        "MICHI_LOG_LEVEL": log_level,
    }
    log_path = michi_home / f"inference-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.inference"],
            cwd=REPOSITORY,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                assert process.poll() is None, log_path.read_text()[-3000:]
                try:
                    if httpx.get(f"{base}/readyz", timeout=1.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            else:
                pytest.fail("inference never became ready: " + log_path.read_text()[-3000:])
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def inference_service(kafka_bootstrap: str, topic_prefix: str, michi_home: Path) -> Iterator[str]:
    with running_service(kafka_bootstrap, topic_prefix, michi_home) as base:
        yield base


def _segments_for(records: list[Record], upload_ids: set[str]) -> list[Record]:
    return [
        record for record in records if cast(inference_pb2.TripSegment, record.message).lineage.upload_id in upload_ids
    ]


def test_brake_detected_once_garbage_dead_lettered_and_redelivery_is_identical(
    inference_service: str, kafka_bootstrap: str, topic_prefix: str, producer: EventProducer
) -> None:
    # Off the road map (no speed limits there): the only risky event is the brake.
    drive = ScriptedDrive(duration_s=40.0, origin=(1.0, 1.0), events=[ScriptedEvent("harsh_braking", 12.3, 1.5, 5.5)])
    uploads = drive.uploads()
    assert len(uploads) == 4
    upload_ids = {received.upload.upload_id for received in uploads}

    for received in uploads[:2]:
        producer.publish_and_wait(UPLOADS, received.upload.device_id, received)
    producer.publish_raw(UPLOADS.name(topic_prefix), b"device-1", b"\x08\xff\xff garbage", []).result(30)
    for received in uploads[2:]:
        producer.publish_and_wait(UPLOADS, received.upload.device_id, received)

    with TopicReader(kafka_bootstrap, TRIP_SEGMENTS, topic_prefix) as segment_reader:
        segments = segment_reader.read_until(lambda records: len(_segments_for(records, upload_ids)) >= 4, timeout=90)
    assert len(segments) == 4
    with TopicReader(kafka_bootstrap, DETECTIONS, topic_prefix) as detection_reader:
        detections = detection_reader.read_until(lambda records: len(records) >= 1, timeout=30)
        detections += detection_reader.poll(2.0)
    with TopicReader(kafka_bootstrap, PREDICTIONS, topic_prefix) as prediction_reader:
        predictions = prediction_reader.read_until(lambda records: len(records) >= 4 * 9, timeout=30)
    with TopicReader(kafka_bootstrap, DEAD_LETTERS, topic_prefix) as dead_reader:
        dead_letters = dead_reader.read_until(lambda records: len(records) >= 1, timeout=30)

    detection_messages = [cast(inference_pb2.Detection, record.message) for record in detections]
    segment_messages = sorted(
        (cast(inference_pb2.TripSegment, record.message) for record in segments), key=lambda m: m.sequence
    )
    assert [message.event_type for message in detection_messages] == [common_pb2.EVENT_TYPE_HARSH_BRAKING]
    detection = detection_messages[0]
    assert detections[0].key == drive.trip_id
    # The first window that saw the brake (12.3 s → 13.8 s) opens the detection, the last one closes it.
    assert 10.0 <= detection.window.started_at.seconds - drive.start_time_s <= 12.3
    assert detection.window.ended_at.seconds - drive.start_time_s >= 13.8
    assert detection.lineage.model_version == "baseline-1"
    assert len(predictions) == 4 * 9
    assert {record.key for record in predictions} == {drive.device_id}
    assert [event_id for message in segment_messages for event_id in message.detection_event_ids] == [
        detection.event_id
    ]
    assert sum(message.detection_count for message in segment_messages) == 1
    assert [message.sequence for message in segment_messages] == [0, 1, 2, 3]
    assert [message.trip_end for message in segment_messages] == [False, False, False, True]
    assert all(abs(message.duration_s - 10.0) < 0.05 for message in segment_messages)
    assert all(100.0 < message.distance_m < 200.0 for message in segment_messages)
    assert len(dead_letters) == 1
    letter = cast(operations_pb2.DeadLetter, dead_letters[0].message)
    assert (letter.service, letter.source_topic, letter.value) == (
        "inference",
        UPLOADS.name(topic_prefix),
        b"\x08\xff\xff garbage",
    )

    # Redeliver the upload holding the brake: the same segment and detection ids come back.
    first_segment = segment_messages[1]
    producer.publish_and_wait(UPLOADS, uploads[1].upload.device_id, uploads[1])
    with TopicReader(kafka_bootstrap, TRIP_SEGMENTS, topic_prefix) as segment_reader:
        again = segment_reader.read_until(lambda records: len(records) >= 5, timeout=60)
    repeated = [
        message
        for message in (cast(inference_pb2.TripSegment, record.message) for record in again)
        if message.lineage.upload_id == uploads[1].upload.upload_id
    ]
    assert len(repeated) == 2
    assert repeated[1].SerializeToString() == first_segment.SerializeToString()

    metrics = httpx.get(f"{inference_service}/metrics", timeout=5.0).text
    assert "michi_inference_windows_total 45.0" in metrics
    assert httpx.get(f"{inference_service}/healthz", timeout=5.0).status_code == 200


def test_device_state_survives_a_restart_through_the_changelog(
    kafka_bootstrap: str, topic_prefix: str, michi_home: Path, producer: EventProducer
) -> None:
    drive = ScriptedDrive(duration_s=30.0, origin=(1.0, 1.0), events=[ScriptedEvent("harsh_braking", 12.3, 1.5, 5.5)])
    uploads = drive.uploads()
    upload_ids = {received.upload.upload_id for received in uploads}
    with running_service(kafka_bootstrap, topic_prefix, michi_home):
        for received in uploads:
            producer.publish_and_wait(UPLOADS, received.upload.device_id, received)
        with TopicReader(kafka_bootstrap, TRIP_SEGMENTS, topic_prefix) as reader:
            first = reader.read_until(lambda records: len(_segments_for(records, upload_ids)) >= 3, timeout=90)
    assert len(first) == 3
    # A new process: its state comes only from the table's changelog. Redeliver the brake's upload.
    with running_service(kafka_bootstrap, topic_prefix, michi_home) as base:
        producer.publish_and_wait(UPLOADS, uploads[1].upload.device_id, uploads[1])
        with TopicReader(kafka_bootstrap, TRIP_SEGMENTS, topic_prefix) as reader:
            after = reader.read_until(lambda records: len(records) >= 4, timeout=90)
        metrics = httpx.get(f"{base}/metrics", timeout=5.0).text
    original = next(record.message for record in first if cast(inference_pb2.TripSegment, record.message).sequence == 1)
    assert after[-1].message.SerializeToString() == original.SerializeToString()
    # Recognised as a redelivery: the replay memory (state before that upload) was recovered.
    assert 'michi_inference_uploads_total{outcome="replayed"} 1.0' in metrics
