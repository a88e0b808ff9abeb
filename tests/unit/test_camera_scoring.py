"""Camera detections in scoring: weights and severity of the new event types, and counted exactly once whether
they arrive before their trip closes or after (no TripSegment lists them)."""

from __future__ import annotations

import asyncio

import pytest

from michi.bus.catalog import DETECTIONS, SCORED_EVENTS, TRIP_SCORES
from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import common_pb2, inference_pb2, scoring_pb2, upload_pb2
from michi.warehouse.rows import detection_row
from services.scoring.domain import formula
from services.scoring.messages import trip_input_problem
from tests.unit.test_scoring_handlers import build, detection, inbound, segment

DISTRACTION = common_pb2.EVENT_TYPE_DISTRACTION
DROWSINESS = common_pb2.EVENT_TYPE_DROWSINESS
TAILGATING = common_pb2.EVENT_TYPE_TAILGATING


def camera_detection(event_id: str, event_type: int = DROWSINESS, peak_value: float = 0.35, trip_id: str = "trip-1"):
    message = inference_pb2.Detection(
        event_id=event_id,
        occurred_at=timestamp_from_seconds(1_700_000_010),
        lineage=common_pb2.Lineage(
            trip_id=trip_id,
            driver_id="driver-1",
            device_id="device-1",
            upload_id="upload-1",
            model_name="vision-attention",
            model_version="eeef2e0ffb5c",
            data_version="a31ccb33720a",
        ),
        event_type=event_type,  # type: ignore[arg-type]
        confidence=0.8,
        peak_value=peak_value,
        variant=inference_pb2.VARIANT_CHAMPION,
        detector="camera:vision-attention",
        camera=inference_pb2.CameraReference(
            media_name="inward_0001.jpg", camera=upload_pb2.CAMERA_KIND_INWARD, frame_offsets_ms=[1000, 1400]
        ),
    )
    return inbound(message, trip_id, DETECTIONS.base_name)


@pytest.mark.parametrize(
    ("event_type", "measure", "severity"),
    [
        (DISTRACTION, 2.4, 1),
        (DISTRACTION, 3.0, 2),
        (DISTRACTION, 6.0, 3),
        (DROWSINESS, 0.2, 1),
        (DROWSINESS, 0.35, 2),
        (DROWSINESS, 0.5, 3),
        (TAILGATING, 0.9, 1),
        (TAILGATING, 0.8, 2),
        (TAILGATING, 0.4, 3),
        # A headway of 0 is "not measured": mild, never severe.
        (TAILGATING, 0.0, 1),
    ],
)
def test_camera_events_are_scored_types_with_their_own_severity_bands(
    event_type: int, measure: float, severity: int
) -> None:
    assert formula.is_scored_type(event_type)
    assert formula.severity_for(event_type, formula.event_magnitude(event_type, measure, 0.0, 0.0)) == severity


def test_inattention_weighs_more_than_a_harsh_brake_and_close_following_as_much() -> None:
    assert formula.weight_for(DISTRACTION) > formula.weight_for(common_pb2.EVENT_TYPE_HARSH_BRAKING)
    assert formula.weight_for(DROWSINESS) > formula.weight_for(common_pb2.EVENT_TYPE_HARSH_BRAKING)
    assert formula.weight_for(TAILGATING) == formula.weight_for(common_pb2.EVENT_TYPE_HARSH_BRAKING)


def test_a_label_moving_an_event_between_imu_and_camera_types_counts_it_mild() -> None:
    # m/s^2 read against seconds or PERCLOS would be meaningless.
    assert formula.relabelled_severity(common_pb2.EVENT_TYPE_HARSH_BRAKING, DISTRACTION, 6.5, 0.0, 0.0) == 1
    assert formula.relabelled_severity(DROWSINESS, common_pb2.EVENT_TYPE_HARSH_BRAKING, 0.6, 0.0, 0.0) == 1
    assert (
        formula.relabelled_severity(
            common_pb2.EVENT_TYPE_HARSH_BRAKING, common_pb2.EVENT_TYPE_HARSH_CORNERING, 6.5, 0, 0
        )
        == 3
    )


def test_camera_detections_are_valid_scoring_inputs_and_warehouse_rows() -> None:
    message = camera_detection("c-1").message
    assert trip_input_problem(message, "trip-1") is None
    row = detection_row(message)  # type: ignore[arg-type]
    assert (row["event_type"], row["model_name"]) == ("drowsiness", "vision-attention")


def test_a_camera_detection_before_the_trip_closes_counts_in_its_first_score() -> None:
    handlers, journal, _ = build()
    asyncio.run(handlers.on_detections([detection("d-1"), camera_detection("c-1")]))
    # The segment lists only inference's detection: the camera one never holds the trip open.
    asyncio.run(handlers.on_segments([segment(0, ["d-1"], trip_end=True)]))
    asyncio.run(handlers.on_detections([camera_detection("c-1")]))
    scores = journal.of("publish", TRIP_SCORES.base_name)
    assert [(score.revision, score.reason) for score in scores] == [(1, "complete")]  # type: ignore[attr-defined]
    counts = {count.event_type: count.count for count in scores[0].event_counts}  # type: ignore[attr-defined]
    assert counts[DROWSINESS] == 1
    # 6 (severe harsh brake) + 4 x 1.5 (moderate drowsiness).
    assert scores[0].points == pytest.approx(12.0)  # type: ignore[attr-defined]
    scored = [
        event
        for event in journal.of("publish", SCORED_EVENTS.base_name)
        if event.event_type == DROWSINESS  # type: ignore[attr-defined]
    ]
    assert len(scored) == 1
    assert isinstance(scored[0], scoring_pb2.ScoredEvent)
    assert (scored[0].severity, scored[0].weight, scored[0].points) == (2, 4.0, 6.0)


def test_a_camera_detection_after_the_trip_closed_rescores_it_once() -> None:
    handlers, journal, _ = build()
    asyncio.run(handlers.on_detections([detection("d-1")]))
    asyncio.run(handlers.on_segments([segment(0, ["d-1"], trip_end=True)]))
    asyncio.run(handlers.on_detections([camera_detection("c-1"), camera_detection("c-1")]))
    asyncio.run(handlers.on_detections([camera_detection("c-1")]))
    scores = journal.of("publish", TRIP_SCORES.base_name)
    assert [(score.revision, score.reason, score.points) for score in scores] == [  # type: ignore[attr-defined]
        (1, "complete", 6.0),
        (2, "late-detection", 12.0),
    ]
    scored = [
        event
        for event in journal.of("publish", SCORED_EVENTS.base_name)
        if event.event_type == DROWSINESS  # type: ignore[attr-defined]
    ]
    assert len(scored) == 1
