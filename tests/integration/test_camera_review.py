"""A camera detection's review closes the loop on a real Kafka: the camera service's publishers put the detection
and its review request on their topics, the annotation service (in process, consuming label-requests) makes it a
camera-review task whose evidence frames two annotators see, their `normal` answers become a Label, and scoring
(`python -m services.scoring`) overturns the drowsiness: the trip is re-scored without it and an OVERTURNED
ScoredEvent names the detection.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from michi.blobs import BlobStore, media_key
from michi.bus.catalog import SCORED_EVENTS, TRIP_SCORES
from michi.bus.producer import EventProducer
from michi.bus.reader import Record, TopicReader
from michi.contracts import stable_event_id, timestamp_from_seconds
from michi.contracts.v1 import common_pb2, scoring_pb2, upload_pb2
from michi.infra.processes import free_port
from services.annotation.adapters.publisher import KafkaLabelPublisher
from services.annotation.domain.roles import Role
from services.annotation.wiring import build_app
from services.camera.adapters.publisher import KafkaDetections, KafkaReviewRequests
from services.camera.domain.detections import camera_detection
from services.camera.domain.join import upload_facts
from services.camera.domain.review import review_request

from .annotation_support import serving, settings_for, wire
from .test_annotation_frames import clip
from .test_scoring_corrections import revisions
from .test_scoring_service import (
    START,
    ScoringProcess,
    payload,
    plan_trip,
    publish_plan,
    read_records,
    scoring_environment,
)

pytestmark = pytest.mark.integration
PASSWORD = "a long enough password"


@pytest.fixture
def scoring(kafka_bootstrap: str, topic_prefix: str, michi_home: Path, tmp_path: Path) -> Iterator[ScoringProcess]:
    port = free_port()
    environment = scoring_environment(kafka_bootstrap, topic_prefix, michi_home, port, trip_end_grace_s=2.0)
    service = ScoringProcess(environment, tmp_path / "scoring", port)
    try:
        yield service
    finally:
        service.stop()


def test_a_camera_detections_review_overturns_it_in_scoring(
    tmp_path: Path,
    redis_url: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    producer: EventProducer,
    scoring: ScoringProcess,
) -> None:
    plan = plan_trip("trip-camera-review", "driver-c", [[0]])  # one harsh brake, one segment that ends the trip
    upload_id = plan.segments[0].lineage.upload_id
    device_id = plan.segments[0].lineage.device_id
    data = clip([np.full((48, 64, 3), 25 * index, np.uint8) for index in range(10)])
    media = upload_pb2.MediaReceived(
        event_id=stable_event_id("media", device_id, upload_id, "inward_0.mp4"),
        lineage=common_pb2.Lineage(device_id=device_id, upload_id=upload_id),
        upload_id=upload_id,
        name="inward_0.mp4",
        camera=upload_pb2.CAMERA_KIND_INWARD,
        blob_key=media_key(device_id, upload_id, "inward_0.mp4"),
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        content_type="video/mp4",
        frame_offsets_ms=[1000],
    )
    upload = upload_facts(
        upload_pb2.UploadReceived(
            event_id=stable_event_id("upload", upload_id),
            lineage=common_pb2.Lineage(upload_id=upload_id, device_id=device_id),
            upload=upload_pb2.Upload(
                upload_id=upload_id,
                device_id=device_id,
                driver_id=plan.driver_id,
                trip_id=plan.trip_id,
                started_at=timestamp_from_seconds(START),
            ),
        )
    )
    start_ms = int(START * 1000)
    detection = camera_detection(
        kind="drowsiness",
        started_ms=start_ms + 1000,
        ended_ms=start_ms + 2800,
        confidence=0.8,
        peak_value=0.35,
        evidence_ms=tuple(start_ms + 1000 + 200 * index for index in range(10)),
        figures={"perclos": 0.35},
        upload=upload,
        media=media,
        model_name="vision-attention",
        model_version="v1",
        data_version="d1",
    )
    settings = settings_for(
        tmp_path, redis_url, topic_prefix=topic_prefix, kafka_bootstrap=kafka_bootstrap, annotation_consume=True
    )
    asyncio.run(BlobStore(settings.resolved_blob_url()).put_bytes(media.blob_key, data))

    scoring.start()
    # What the camera service does for the detection: the detection, then its review request, each acknowledged.
    KafkaDetections(producer).publish([detection])
    KafkaReviewRequests(producer).publish([review_request(detection, media)])
    publish_plan(producer, plan)

    wiring = wire(settings, publisher=KafkaLabelPublisher(producer))
    for name in ("ann-1", "ann-2"):
        wiring.accounts.add(name, Role.ANNOTATOR, actor="test", password=PASSWORD)
    trips: list[Record] = []
    scored: list[Record] = []
    with (
        TopicReader(kafka_bootstrap, TRIP_SCORES, topic_prefix) as trip_reader,
        TopicReader(kafka_bootstrap, SCORED_EVENTS, topic_prefix) as scored_reader,
    ):
        read_records(trip_reader, trips, lambda records: 1 in revisions(records, plan.trip_id), timeout=90)
        first = revisions(trips, plan.trip_id)[1]
        counts = {count.event_type: count.count for count in first.event_counts}
        assert counts[common_pb2.EVENT_TYPE_DROWSINESS] == 1

        with (
            serving(build_app(settings, producer=producer, wiring=wiring)) as url,
            httpx.Client(base_url=url, timeout=20) as client,
        ):
            for name in ("ann-1", "ann-2"):
                token = client.post("/v1/sessions", json={"name": name, "password": PASSWORD}).json()["token"]
                headers = {"Authorization": f"Bearer {token}"}
                deadline = time.monotonic() + 60
                while (lease := client.post("/v1/queues/camera-review/leases", headers=headers)).status_code != 200:
                    assert time.monotonic() < deadline, "the review request never became a task"
                    time.sleep(0.2)
                task = lease.json()
                assert (task["task_id"], task["kind"]) == (detection.lineage.window_id, "camera")
                assert len(task["frame_offsets_ms"]) == 10
                frame = client.get(f"/v1/tasks/{task['task_id']}/frames/9", headers=headers)
                assert frame.status_code == 200 and frame.content[:2] == b"\xff\xd8"
                vote = client.post(
                    f"/v1/tasks/{task['task_id']}/votes",
                    headers=headers,
                    json={"lease_id": task["lease_id"], "answer": "normal"},
                )
                assert vote.json()["recorded_as"] == "counted", vote.text

            read_records(trip_reader, trips, lambda records: 2 in revisions(records, plan.trip_id), timeout=90)
            read_records(
                scored_reader,
                scored,
                lambda records: any(
                    payload(record).status == scoring_pb2.SCORED_EVENT_STATUS_OVERTURNED for record in records
                ),
            )
    rescored = revisions(trips, plan.trip_id)[2]
    assert rescored.reason.startswith("label-overturned:")
    assert common_pb2.EVENT_TYPE_DROWSINESS not in {count.event_type for count in rescored.event_counts}
    [overturned] = [
        payload(record) for record in scored if payload(record).status == scoring_pb2.SCORED_EVENT_STATUS_OVERTURNED
    ]
    assert overturned.detection_event_id == detection.event_id
    assert overturned.event_type == common_pb2.EVENT_TYPE_DROWSINESS
    assert rescored.points == pytest.approx(first.points - overturned.points)
    assert overturned.points > 0
