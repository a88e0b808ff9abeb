"""Hindsight detections from the inference service as a process against a real Kafka broker.

The backwards-mounted phone (`auckland-backwards`) without GPS, cut into its 37 uploads as
`michi evaluate` cuts it, is published as `UploadReceived`s; the served built-in baseline finds its
forward axis only at 340 s, and then decides the held uploads again (docs/inference.md, "Hindsight
detections"). Checks:

* the `Detection`s with `hindsight` set on `michi.detections.v1` are exactly those `process_uploads`
  gives in process for the same uploads with the same model (same event ids, type, held upload and
  trip key), and no trip segment lists or counts them;
* each carries the trace of the upload it was found in (its record's traceparent), not of the upload
  whose calibration prompted it;
* the service killed with SIGKILL as soon as the first hindsight detection is out, started again,
  and every upload published again (redelivered duplicates): no hindsight event id appears that
  was not expected (the same id twice is a duplicate consumers drop; a new id would be a second
  detection of one event).

Run: .venv/bin/python -m pytest tests/integration/test_inference_hindsight_service.py -q
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import cast

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from michi.bus.catalog import DETECTIONS, TRIP_SEGMENTS, UPLOADS
from michi.bus.headers import trace_id_of
from michi.bus.producer import EventProducer
from michi.bus.reader import Record, TopicReader
from michi.contracts.v1 import inference_pb2, upload_pb2
from michi.infra.processes import wait_until
from michi.recordings import received, recording_uploads, shared_recording
from services.inference.adapters.onnx_model import OnnxDetector, install_baseline_model
from services.inference.handlers import InferencePipeline, process_uploads

from ..tracing_support import recorded_spans
from .kafka_support import wait_until_committed
from .test_inference_service import running_service

pytestmark = pytest.mark.integration

DEVICE_ID = "backwards-phone"
TRIP_ID = "backwards-trip"


def recording_without_gps() -> list[upload_pb2.UploadReceived]:
    """The backwards phone's uploads without GPS, as ingest would publish them (a whole-second start)."""
    recording = shared_recording("auckland-backwards").without_gps()
    uploads = recording_uploads(recording, device_id=DEVICE_ID, trip_id=TRIP_ID, started_at_s=float(int(time.time())))
    return [received(upload) for upload in uploads]


def expected_hindsight(
    uploads: list[upload_pb2.UploadReceived], models: Path
) -> tuple[list[inference_pb2.Detection], int]:
    """What serving the built-in baseline decides in hindsight, and the index of the upload that decides it."""
    pipeline = InferencePipeline(OnnxDetector(install_baseline_model(models)), None)
    outcome = process_uploads(uploads, {}, pipeline)
    deciding = [index for index, result in enumerate(outcome.uploads) if result.hindsight_detections]
    assert len(deciding) == 1, f"hindsight decided with uploads {deciding}, expected with exactly one"
    return outcome.uploads[deciding[0]].hindsight_detections, deciding[0]


def summary(detection: inference_pb2.Detection, key: str) -> tuple[str, int, str, str, str, str]:
    return (
        detection.event_id,
        detection.event_type,
        detection.lineage.upload_id,
        detection.lineage.trip_id,
        detection.lineage.model_version,
        key,
    )


def hindsight_records(records: list[Record]) -> list[Record]:
    return [record for record in records if cast(inference_pb2.Detection, record.message).hindsight]


def publish_all(producer: EventProducer, uploads: list[upload_pb2.UploadReceived]) -> None:
    for item in uploads:
        producer.publish_and_wait(UPLOADS, item.upload.device_id, item)


def uploads_handled(base: str) -> dict[str, float]:
    """`michi_inference_uploads_total` of the service at `base`, by outcome (processed, replayed...)."""
    text = httpx.get(f"{base}/metrics", timeout=5.0).text
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "michi_inference_uploads_total"
    }


def service_process(base: str) -> psutil.Process:
    """The `services.inference` child of this test process that `running_service` started on `base`'s port."""
    port = base.rsplit(":", 1)[1]
    matches = [
        child
        for child in psutil.Process().children()
        if "services.inference" in child.cmdline() and child.environ().get("MICHI_INFERENCE_PORT") == port
    ]
    assert len(matches) == 1, f"inference processes on port {port}: {matches}"
    return matches[0]


def test_hindsight_detections_match_serving_in_process_and_stay_out_of_segments(
    kafka_bootstrap: str, topic_prefix: str, michi_home: Path, producer: EventProducer, tmp_path: Path
) -> None:
    uploads = recording_without_gps()
    expected, _ = expected_hindsight(uploads, tmp_path / "models")
    assert len(expected) >= 5  # the baseline finds several of the drive's moments once forward is known
    upload_ids = {item.upload.upload_id for item in uploads}

    with running_service(kafka_bootstrap, topic_prefix, michi_home):
        with recorded_spans():  # a recording tracer: each upload's record carries a traceparent, as ingest's do
            publish_all(producer, uploads)
        with TopicReader(kafka_bootstrap, TRIP_SEGMENTS, topic_prefix) as segment_reader:
            segment_records = segment_reader.read_until(
                lambda records: (
                    {cast(inference_pb2.TripSegment, record.message).lineage.upload_id for record in records}
                    >= upload_ids
                ),
                timeout=90,
            )
        wait_until_committed(kafka_bootstrap, f"{topic_prefix}inference", [UPLOADS.name(topic_prefix)], timeout=60)
    with TopicReader(kafka_bootstrap, DETECTIONS, topic_prefix) as detection_reader:
        detections = detection_reader.read_to_end(30)

    segments = [cast(inference_pb2.TripSegment, record.message) for record in segment_records]
    assert {segment.lineage.upload_id for segment in segments} == upload_ids
    published = hindsight_records(detections)
    # Deduplicated by event id (and what else identifies the detection): one entry per hindsight detection.
    distinct = {summary(cast(inference_pb2.Detection, record.message), record.key): record for record in published}
    assert sorted(distinct) == sorted(summary(detection, detection.lineage.trip_id) for detection in expected)
    assert all(key[-1] == TRIP_ID for key in distinct)
    # Decided with the calibration found at 340 s, not the one each held upload saw.
    assert all(
        cast(inference_pb2.Detection, record.message).calibration.state == expected[0].calibration.state
        for record in published
    )
    # Not any upload's own: no segment lists them, and the counts are the live detections' alone.
    hindsight_ids = {detection.event_id for detection in expected}
    listed = [event_id for segment in segments for event_id in segment.detection_event_ids]
    assert hindsight_ids.isdisjoint(listed)
    live_ids = {
        cast(inference_pb2.Detection, record.message).event_id
        for record in detections
        if not cast(inference_pb2.Detection, record.message).hindsight
    }
    assert set(listed) == live_ids
    assert sum(segment.detection_count for segment in segments) == len(listed)
    # Each hindsight detection continues the trace of the upload it was found in, not of the one that prompted it.
    with TopicReader(kafka_bootstrap, UPLOADS, topic_prefix) as upload_reader:
        upload_records = upload_reader.read_to_end(30)
    trace_of_upload = {
        cast(upload_pb2.UploadReceived, record.message).upload.upload_id: trace_id_of(record.headers)
        for record in upload_records
    }
    assert all(trace_of_upload.values()) and len(set(trace_of_upload.values())) == len(uploads)
    for record in published:
        detection = cast(inference_pb2.Detection, record.message)
        assert trace_id_of(record.headers) == trace_of_upload[detection.lineage.upload_id], detection.event_id


def test_a_kill_after_the_hindsight_detections_and_redelivery_make_no_new_ones(
    kafka_bootstrap: str, topic_prefix: str, michi_home: Path, producer: EventProducer, tmp_path: Path
) -> None:
    uploads = recording_without_gps()
    expected, deciding = expected_hindsight(uploads, tmp_path / "models")
    expected_ids = {detection.event_id for detection in expected}
    group = f"{topic_prefix}inference"

    with running_service(kafka_bootstrap, topic_prefix, michi_home) as base:
        service = service_process(base)
        # Up to the upload that calibrates the mount; the rest of the drive comes after the restart.
        publish_all(producer, uploads[: deciding + 1])
        with TopicReader(kafka_bootstrap, DETECTIONS, topic_prefix) as detection_reader:
            first = detection_reader.read_until(lambda records: bool(hindsight_records(records)), timeout=90)
        assert hindsight_records(first), "no hindsight detection before the kill"
        # At once: the batch's segments, its state in the changelog and its committed offset may not be out yet.
        os.kill(service.pid, signal.SIGKILL)
        assert wait_until(lambda: not service.is_running() or service.status() == psutil.STATUS_ZOMBIE, 30, 0.1)

    with running_service(kafka_bootstrap, topic_prefix, michi_home) as base:
        publish_all(producer, uploads[deciding + 1 :])
        publish_all(producer, uploads)
        wait_until_committed(kafka_bootstrap, group, [UPLOADS.name(topic_prefix)], timeout=90)
        restarted = uploads_handled(base)
    with TopicReader(kafka_bootstrap, DETECTIONS, topic_prefix) as detection_reader:
        detections = detection_reader.read_to_end(30)

    published = [cast(inference_pb2.Detection, record.message) for record in hindsight_records(detections)]
    copies = Counter(detection.event_id for detection in published)
    # None lost to the kill (its uploads come again unless committed), none new from deciding again.
    assert set(copies) == expected_ids, f"new {set(copies) - expected_ids}, missing {expected_ids - set(copies)}"
    # A duplicate is the same detection again, never a different decision under the same id.
    by_id = {detection.event_id: detection for detection in expected}
    assert all(
        (detection.event_type, detection.lineage.upload_id)
        == (by_id[detection.event_id].event_type, by_id[detection.event_id].lineage.upload_id)
        for detection in published
    )
    # When more uploads were handled after the restart than published then, some the killed process handled came again.
    print(
        f"hindsight ids {len(expected_ids)}, copies published {sorted(copies.values())}; after the restart "
        f"{restarted} for {len(uploads) - deciding - 1 + len(uploads)} uploads published then"
    )
