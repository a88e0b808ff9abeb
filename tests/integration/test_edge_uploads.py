"""Events-only uploads end to end: a device's runtime → ingest (a real process) → Kafka → inference (a real process).

The device decides with the cloud's own baseline model (`michi.edge.runtime.decide_upload`, what `EdgeRuntime.process`
runs), sends each upload's events-only form through `POST /v1/uploads` with the device client (protobuf, and JSON for
one), and inference turns the one called brake into exactly one Detection and each upload into one TripSegment; the
last upload goes in full with the device's calibration sums (`device_calibration`), and inference scores it as the
device did. Sent
again through ingest the uploads are duplicates (nothing republished); redelivered on Kafka they reproduce the same
records, so nothing new is counted.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import cast

import pytest

from michi.bus.catalog import DETECTIONS, PREDICTIONS, TRIP_SEGMENTS, UPLOADS
from michi.bus.producer import EventProducer
from michi.bus.reader import TopicReader
from michi.contracts.v1 import common_pb2, inference_pb2, upload_pb2
from michi.device_client import JSON, PROTOBUF, UploadClient
from michi.edge.runtime import decide_upload, events_only, with_device_calibration
from michi.windows.calibration import CalibrationSums
from michi.windows.model_spec import CALIBRATION_STATES
from services.inference.adapters.onnx_model import OnnxDetector, install_baseline_model
from services.inference.handlers import InferencePipeline, process_uploads
from services.ingest.wiring import device_registry

from ..scripted_drive import ScriptedDrive, ScriptedEvent
from .ingest_support import ingest_environment, settings_for, start_ingest, uploads_count, wait_for_ingest
from .test_inference_service import running_service

pytestmark = pytest.mark.integration
MODEL = upload_pb2.EdgeModel(name="michi-risk", version="baseline-1", data_version="device-test", precision="fp32")


def test_an_events_only_drive_becomes_one_detection_and_its_segments_exactly_once(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, michi_home: Path, producer: EventProducer
) -> None:
    # Off the road map (no speed limits there): the only risky event is the brake; started 60 s ago, as recorded.
    drive = ScriptedDrive(
        duration_s=40.0,
        origin=(1.0, 1.0),
        start_time_s=float(int(time.time()) - 60),
        events=[ScriptedEvent("stop", 3.0, 3.0, 2.0), ScriptedEvent("harsh_braking", 22.3, 1.5, 5.5)],
    )
    recorded = [received.upload for received in drive.uploads()]
    detector = OnnxDetector(install_baseline_model(michi_home / "device-models"))
    sums: dict[str, CalibrationSums] = {}
    to_send: list[upload_pb2.Upload] = []
    results = []
    for upload in recorded:
        before = (sums.get(upload.device_id) or CalibrationSums()).copy()
        results.append(decide_upload(upload, sums, detector.predict))
        to_send.append(events_only(upload, results[-1], MODEL))
        in_full = with_device_calibration(upload, before)
    assert sum(len(upload.edge.calls) for upload in to_send) >= 1
    full_bytes = sum(len(upload.SerializeToString()) for upload in recorded)
    sent_bytes = sum(len(upload.SerializeToString()) for upload in to_send)
    assert sent_bytes < full_bytes / 3
    # The last upload goes in full instead, with the device's sums from before it (as 1 in 100 does).
    assert results[-1].window_ids and not results[-1].calls
    to_send[-1] = in_full

    settings = settings_for(kafka_bootstrap, redis_url, topic_prefix, michi_home)
    registry = device_registry(settings)
    token = registry.add_device(drive.device_id)
    registry.close()
    environment = ingest_environment(kafka_bootstrap, redis_url, topic_prefix, michi_home)
    ingest = start_ingest(environment, michi_home)
    url = f"http://127.0.0.1:{environment['MICHI_INGEST_HTTP_PORT']}"
    try:
        wait_for_ingest(url, michi_home)
        with running_service(kafka_bootstrap, topic_prefix, michi_home):

            async def send(uploads: list[upload_pb2.Upload]) -> list[tuple[int, str]]:
                answers = []
                for index, upload in enumerate(uploads):
                    # The first upload as JSON, the others as protobuf: both doors of POST /v1/uploads.
                    client = UploadClient(url, media_type=JSON if index == 0 else PROTOBUF)
                    try:
                        result = await client.send(upload, token)
                    finally:
                        await client.close()
                    answers.append((result.status, result.outcome + result.reason + result.detail))
                return answers

            assert asyncio.run(send(to_send)) == [(202, "accepted")] * len(to_send)
            upload_ids = {upload.upload_id for upload in to_send}
            with TopicReader(kafka_bootstrap, TRIP_SEGMENTS, topic_prefix) as reader:
                segments = reader.read_until(lambda records: len(records) >= len(to_send), timeout=90)
            with TopicReader(kafka_bootstrap, DETECTIONS, topic_prefix) as reader:
                detections = reader.read_until(lambda records: len(records) >= 1, timeout=30)
                detections += reader.poll(2.0)
            brake = [cast(inference_pb2.Detection, record.message) for record in detections]
            assert [detection.event_type for detection in brake] == [common_pb2.EVENT_TYPE_HARSH_BRAKING]
            (detection,) = brake
            assert detection.variant == inference_pb2.VARIANT_EDGE and detection.detector == "edge:baseline-1"
            assert detection.lineage.model_version == "baseline-1"
            assert detection.lineage.data_version == "device-test"
            assert 20.0 <= detection.window.started_at.seconds - drive.start_time_s <= 22.3
            first = [cast(inference_pb2.TripSegment, record.message) for record in segments]
            assert {segment.lineage.upload_id for segment in first} == upload_ids and len(first) == len(to_send)
            assert [event for segment in first for event in segment.detection_event_ids] == [detection.event_id]
            assert all(abs(segment.duration_s - 10.0) < 0.05 for segment in first)
            # The exposure of the full uploads, so scoring normalises per km as it would have.
            full = process_uploads(drive.uploads(), {}, InferencePipeline(detector, None)).uploads
            distance = {outcome.upload_id: outcome.segment.distance_m for outcome in full}
            assert all(segment.distance_m == pytest.approx(distance[segment.lineage.upload_id]) for segment in first)
            assert sum(distance.values()) > 300.0
            with TopicReader(kafka_bootstrap, PREDICTIONS, topic_prefix) as reader:
                predictions = reader.read_until(lambda records: len(records) >= 1, timeout=30)
                predictions += reader.poll(1.0)
            # Only the windows the device sent, and those of the upload sent in full: never all 36 of the drive.
            called = sum(len(upload.edge.calls) for upload in to_send)
            assert len(predictions) == called + len(results[-1].window_ids) < 36
            # The full upload scored from the device's calibration: the device's calibration state and probabilities.
            scored = [
                cast(inference_pb2.Prediction, record.message)
                for record in predictions
                if cast(inference_pb2.Prediction, record.message).lineage.upload_id == in_full.upload_id
            ]
            assert [prediction.lineage.window_id for prediction in scored] == results[-1].window_ids
            assert all(prediction.variant == inference_pb2.VARIANT_CHAMPION for prediction in scored)
            assert {prediction.calibration.state for prediction in scored} == {
                CALIBRATION_STATES[results[-1].calibration_state]
            }
            for prediction, probabilities in zip(scored, results[-1].probabilities, strict=True):
                assert [score.probability for score in prediction.scores] == pytest.approx(
                    probabilities.tolist(), abs=1e-6
                )

            # Sent again (a device that lost the answers): duplicates, nothing republished.
            assert asyncio.run(send(to_send)) == [(200, "duplicate")] * len(to_send)
            assert uploads_count(kafka_bootstrap, topic_prefix) == len(to_send)
            # Redelivered by Kafka (a consumer that crashed before committing): the same records again, nothing new.
            with TopicReader(kafka_bootstrap, UPLOADS, topic_prefix) as reader:
                received = reader.read_until(lambda records: len(records) >= len(to_send), timeout=30)
            for record in received:
                producer.publish_and_wait(UPLOADS, drive.device_id, cast(upload_pb2.UploadReceived, record.message))
            with TopicReader(kafka_bootstrap, TRIP_SEGMENTS, topic_prefix) as reader:
                again = reader.read_until(lambda records: len(records) >= 2 * len(to_send), timeout=90)
            with TopicReader(kafka_bootstrap, DETECTIONS, topic_prefix) as reader:
                detections_again = reader.read_until(lambda records: len(records) >= 2, timeout=30)
                detections_again += reader.poll(2.0)
            segments_again = [cast(inference_pb2.TripSegment, record.message) for record in again]
            assert len({segment.event_id for segment in segments_again}) == len(to_send)
            by_id = {segment.event_id: segment.SerializeToString() for segment in first}
            assert all(by_id[segment.event_id] == segment.SerializeToString() for segment in segments_again)
            assert {cast(inference_pb2.Detection, record.message).event_id for record in detections_again} == {
                detection.event_id
            }
    finally:
        ingest.terminate()
        ingest.wait(timeout=20)
