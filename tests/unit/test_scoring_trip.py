"""The trip state machine: every interleaving of segments and detections closes the trip exactly once."""

from __future__ import annotations

import itertools
import json

import pytest

from services.scoring.domain import formula
from services.scoring.domain.trip import (
    REASON_CLOSED_INCOMPLETE,
    REASON_COMPLETE,
    DetectionFacts,
    DetectionOutcome,
    SegmentFacts,
    SegmentOutcome,
    TripState,
    apply_detection,
    apply_segment,
    close_trip,
    completion,
    is_overdue,
    scored_event_id,
)

Input = DetectionFacts | SegmentFacts


def detection(
    event_id: str, event_type: int = formula.HARSH_BRAKING, peak: float = 3.5, **overrides: object
) -> DetectionFacts:
    values: dict[str, object] = {
        "event_id": event_id,
        "event_type": event_type,
        "peak_value": peak,
        "speed_mps": 12.0,
        "speed_limit_mps": 0.0,
        "occurred_at": 1000.0,
    }
    values.update(overrides)
    return DetectionFacts(**values)  # type: ignore[arg-type]


def segment(sequence: int, detections: tuple[str, ...] = (), *, trip_end: bool = False) -> SegmentFacts:
    return SegmentFacts(
        event_id=f"segment-{sequence}",
        sequence=sequence,
        trip_end=trip_end,
        distance_m=5000.0,
        duration_s=300.0,
        detection_event_ids=detections,
        started_at=1000.0 + 300 * sequence,
        ended_at=1300.0 + 300 * sequence,
    )


def apply(state: TripState, item: Input, now: float = 0.0) -> None:
    if isinstance(item, DetectionFacts):
        apply_detection(state, item, now)
    else:
        apply_segment(state, item, now)


TRIP: list[Input] = [
    segment(0, ("d-1",)),
    segment(1, ()),
    segment(2, ("d-2", "d-3"), trip_end=True),
    detection("d-1", formula.HARSH_BRAKING, 6.5),
    detection("d-2", formula.SPEEDING, 3.0),
    detection("d-3", formula.HARSH_CORNERING, 4.6),
]


def _play(order: tuple[int, ...]) -> TripState:
    state = TripState("trip-1")
    for position, index in enumerate(order):
        apply(state, TRIP[index])
        # Redeliver what came just before: duplicates must change nothing.
        if position > 0:
            apply(state, TRIP[order[position - 1]])
        assert completion(state).complete == (position == len(order) - 1), f"order {order}, after {position + 1} inputs"
    return state


def test_every_interleaving_completes_exactly_when_the_last_input_arrives() -> None:
    orders = list(itertools.permutations(range(len(TRIP))))
    assert len(orders) == 720
    for order in orders:
        state = _play(order)
        summary = close_trip(state, REASON_COMPLETE, now=5.0)
        assert summary.points == 6.0 + 2.0 + 4.5, order  # severe braking, mild speeding, moderate cornering
        assert summary.events == 3
        assert summary.uploads == 3


def test_a_complete_trip_summary_carries_exposure_rates_and_counts() -> None:
    summary = close_trip(_play(tuple(range(len(TRIP)))), REASON_COMPLETE, now=5.0)
    assert summary.event_counts == {formula.HARSH_BRAKING: 1, formula.HARSH_CORNERING: 1, formula.SPEEDING: 1}
    assert summary.distance_km == 15.0
    assert summary.duration_s == 900.0
    assert summary.events_per_100km == pytest.approx(20.0)
    assert summary.events_per_hour == pytest.approx(12.0)
    assert summary.missing_sequences == ()
    assert summary.revision == 1
    assert (summary.started_at, summary.ended_at) == (1000.0, 1900.0)
    assert summary.score == pytest.approx(formula.score_from_points(12.5, 20.0))


def test_a_redelivered_detection_is_a_duplicate_and_keeps_its_scored_event_id() -> None:
    state = TripState("trip-1")
    outcome, record = apply_detection(state, detection("d-1"), 0.0)
    assert outcome is DetectionOutcome.SCORED
    assert record is not None and record.scored_event_id == scored_event_id("d-1", 1)
    assert apply_detection(state, detection("d-1", peak=9.0), 1.0) == (DetectionOutcome.DUPLICATE, None)
    assert state.detections["d-1"].severity == 1


def test_a_redelivered_segment_is_a_duplicate() -> None:
    state = TripState("trip-1")
    assert apply_segment(state, segment(0), 0.0) is SegmentOutcome.ADDED
    assert apply_segment(state, segment(0), 1.0) is SegmentOutcome.DUPLICATE
    assert state.totals is not None
    assert (state.totals.uploads, state.totals.received, state.totals.distance_m) == (1, [[0, 0]], 5000.0)


def test_confounders_and_shadow_detections_count_for_completion_but_not_against_the_driver() -> None:
    state = TripState("trip-1")
    assert (
        apply_detection(state, detection("c-1", formula.common_pb2.EVENT_TYPE_CONFOUNDER), 0.0)[0]
        is DetectionOutcome.NOT_SCORED
    )
    shadow = detection("s-1", counts_against_driver=False)
    assert apply_detection(state, shadow, 0.0)[0] is DetectionOutcome.NOT_SCORED
    apply_segment(state, segment(0, ("c-1", "s-1"), trip_end=True), 0.0)
    assert completion(state).complete
    summary = close_trip(state, REASON_COMPLETE, 1.0)
    assert summary.points == 0.0
    assert summary.score == 100.0


def test_a_missing_sequence_keeps_the_trip_open_and_is_reported_when_closed_incomplete() -> None:
    state = TripState("trip-1")
    apply_segment(state, segment(0), 10.0)
    apply_segment(state, segment(2), 10.0)
    apply_segment(state, segment(3, trip_end=True), 20.0)
    result = completion(state)
    assert not result.complete
    assert result.missing_sequences == (1,)
    assert not is_overdue(state, 139.0, trip_end_grace_s=120.0, idle_timeout_s=3600.0)
    assert is_overdue(state, 140.0, trip_end_grace_s=120.0, idle_timeout_s=3600.0)
    summary = close_trip(state, REASON_CLOSED_INCOMPLETE, 140.0)
    assert summary.reason == REASON_CLOSED_INCOMPLETE
    assert summary.missing_sequences == (1,)
    assert summary.uploads == 3
    assert not is_overdue(state, 10_000.0, trip_end_grace_s=120.0, idle_timeout_s=3600.0)


def test_a_missing_detection_keeps_the_trip_open() -> None:
    state = TripState("trip-1")
    apply_segment(state, segment(0, ("d-1", "d-2"), trip_end=True), 0.0)
    apply_detection(state, detection("d-1"), 0.0)
    assert completion(state).missing_detections == ("d-2",)
    assert not completion(state).complete


def test_without_a_trip_end_the_trip_closes_only_after_the_idle_timeout() -> None:
    state = TripState("trip-1")
    apply_segment(state, segment(0), 100.0)
    assert not completion(state).complete
    assert not is_overdue(state, 100.0 + 3599.0, trip_end_grace_s=120.0, idle_timeout_s=3600.0)
    assert is_overdue(state, 100.0 + 3600.0, trip_end_grace_s=120.0, idle_timeout_s=3600.0)
    assert close_trip(state, REASON_CLOSED_INCOMPLETE, 3700.0).missing_sequences == ()


def test_trip_state_round_trips_through_json() -> None:
    state = TripState("trip-1", driver_id="driver-1", partition=1)
    for item in TRIP:
        apply(state, item, 3.0)
    close_trip(state, REASON_COMPLETE, 4.0)
    restored = TripState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored == state
