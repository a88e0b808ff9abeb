"""Labels and late inputs on the trip state: what counts, which changes are published, when a trip is re-scored."""

from __future__ import annotations

import json
import math

import pytest
from faust.serializers import codecs

from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2
from services.scoring import messages
from services.scoring.domain import formula
from services.scoring.domain.trip import (
    CHANGE_ACTIVE,
    CHANGE_ADDED,
    CHANGE_OVERTURNED,
    REASON_CLOSED_INCOMPLETE,
    REASON_COMPLETE,
    LabelFacts,
    LabelOutcome,
    SegmentFacts,
    SegmentOutcome,
    TripState,
    added_event_key,
    apply_detection,
    apply_label,
    apply_segment,
    change_event_id,
    close_trip,
    completion,
    counted_events,
    detected_event,
    event_changes,
    has_trip_data,
    is_expired,
    is_overdue,
    label_is_pending,
    rescore_trip,
    scored_event_id,
    summarize_trip,
    trip_fingerprint,
)

from .test_scoring_trip import detection

NORMAL = common_pb2.EVENT_TYPE_NORMAL
CONFOUNDER = common_pb2.EVENT_TYPE_CONFOUNDER


def segment(sequence: int, detections: tuple[str, ...] = (), *, trip_end: bool = False) -> SegmentFacts:
    return SegmentFacts(
        event_id=f"segment-{sequence}",
        sequence=sequence,
        trip_end=trip_end,
        distance_m=10_000.0,
        duration_s=600.0,
        detection_event_ids=detections,
        started_at=1000.0 + 600 * sequence,
        ended_at=1600.0 + 600 * sequence,
    )


def label(
    event_id: str, event_type: int, detection_event_id: str = "", *, window: str = "window-1", at: float = 5000.0
) -> LabelFacts:
    return LabelFacts(
        event_id=event_id,
        window_id=window,
        event_type=event_type,
        detection_event_id=detection_event_id,
        labelled_at=at,
        agreement=1.0,
        lineage=(("window_id", window), ("trip_id", "trip-1")),
        window_started_at=1100.0,
        window_ended_at=1102.0,
    )


def closed_trip() -> TripState:
    """Two segments (20 km, 20 min); d-1 mild harsh braking (3 points), d-2 moderate cornering (4.5 points)."""
    state = TripState("trip-1", driver_id="driver-1")
    apply_segment(state, segment(0, ("d-1",)), 10.0)
    apply_segment(state, segment(1, ("d-2",), trip_end=True), 10.0)
    apply_detection(state, detection("d-1"), 10.0)
    apply_detection(state, detection("d-2", formula.HARSH_CORNERING, 4.6), 10.0)
    assert completion(state).complete
    summary = close_trip(state, REASON_COMPLETE, 20.0)
    assert (summary.points, summary.revision) == (7.5, 1)
    return state


def apply_and_diff(state: TripState, facts: LabelFacts, now: float = 30.0) -> tuple[LabelOutcome, list]:  # type: ignore[type-arg]
    before = counted_events(state)
    outcome = apply_label(state, facts, now)
    return outcome, event_changes(state, before, counted_events(state))


@pytest.mark.parametrize("verdict", [NORMAL, CONFOUNDER])
def test_a_false_positive_label_overturns_the_detection_and_the_trip_is_rescored_once(verdict: int) -> None:
    state = closed_trip()
    fingerprint = trip_fingerprint(state)
    outcome, changes = apply_and_diff(state, label("label-1", verdict, "d-1"))
    assert outcome is LabelOutcome.APPLIED
    (change,) = changes
    assert change.status == CHANGE_OVERTURNED
    assert change.event.detection_event_id == "d-1" and change.event.points == 3.0
    assert change.event_id == change_event_id(scored_event_id("d-1", 1), CHANGE_OVERTURNED, "label-1")
    assert change.reason == "label-overturned:label-1"
    assert trip_fingerprint(state) != fingerprint
    summary = rescore_trip(state, change.reason)
    assert (summary.revision, summary.reason, summary.points, summary.events) == (2, "label-overturned:label-1", 4.5, 1)
    assert summary.event_counts == {formula.HARSH_CORNERING: 1}

    # The same label again, and a second label with the same verdict: nothing changes.
    assert apply_and_diff(state, label("label-1", verdict, "d-1")) == (LabelOutcome.DUPLICATE, [])
    fingerprint = trip_fingerprint(state)
    assert apply_and_diff(state, label("label-2", verdict, "d-1", at=6000.0)) == (LabelOutcome.APPLIED, [])
    assert trip_fingerprint(state) == fingerprint


def test_a_confirming_label_changes_nothing() -> None:
    state = closed_trip()
    fingerprint = trip_fingerprint(state)
    assert apply_and_diff(state, label("label-1", formula.HARSH_BRAKING, "d-1")) == (LabelOutcome.APPLIED, [])
    assert trip_fingerprint(state) == fingerprint
    assert not label_is_pending(state, state.verdicts["window-1"])


def test_an_adjudication_reversal_applies_the_new_verdict_once() -> None:
    state = closed_trip()
    apply_and_diff(state, label("consensus", NORMAL, "d-1", at=5000.0))
    outcome, changes = apply_and_diff(state, label("adjudication", formula.HARSH_BRAKING, "d-1", at=7000.0))
    (change,) = changes
    assert (outcome, change.status, change.reason) == (
        LabelOutcome.APPLIED,
        CHANGE_ACTIVE,
        "label-confirmed:adjudication",
    )
    assert change.event.key == scored_event_id("d-1", 1)
    assert rescore_trip(state, change.reason).points == 7.5
    # The consensus label redelivered after the reversal is recognised; an older new one is stale.
    assert apply_and_diff(state, label("consensus", NORMAL, "d-1", at=5000.0)) == (LabelOutcome.DUPLICATE, [])
    assert apply_and_diff(state, label("late-vote", NORMAL, "d-1", at=6000.0)) == (LabelOutcome.STALE, [])
    assert summarize_trip(state).points == 7.5


def test_a_different_risky_type_corrects_the_detection_and_rereads_its_peak() -> None:
    state = closed_trip()
    # d-2 was detected as cornering at 4.6 m/s^2 (moderate); as acceleration that is severe (from 4.5).
    outcome, changes = apply_and_diff(state, label("label-1", formula.HARSH_ACCELERATION, "d-2"))
    assert outcome is LabelOutcome.APPLIED
    by_status = {change.status: change for change in changes}
    assert set(by_status) == {CHANGE_OVERTURNED, CHANGE_ADDED}
    assert by_status[CHANGE_OVERTURNED].event.event_type == formula.HARSH_CORNERING
    added = by_status[CHANGE_ADDED].event
    assert (added.event_type, added.severity, added.points, added.detection_event_id) == (
        formula.HARSH_ACCELERATION,
        3,
        4.0,
        "d-2",
    )
    assert added.key == added_event_key("window-1", "d-2", formula.HARSH_ACCELERATION)
    assert {change.reason for change in changes} == {"label-corrected:label-1"}
    summary = rescore_trip(state, changes[0].reason)
    assert summary.event_counts == {formula.HARSH_BRAKING: 1, formula.HARSH_ACCELERATION: 1}
    assert summary.points == 3.0 + 4.0


def test_a_missed_event_label_adds_a_mild_event_once() -> None:
    state = closed_trip()
    outcome, changes = apply_and_diff(state, label("label-1", formula.HARSH_BRAKING, window="window-9"))
    (change,) = changes
    assert (outcome, change.status, change.reason) == (LabelOutcome.APPLIED, CHANGE_ADDED, "label-added:label-1")
    assert (change.event.severity, change.event.points, change.event.occurred_at) == (1, 3.0, 1100.0)
    assert change.event_id == change_event_id(
        added_event_key("window-9", "", formula.HARSH_BRAKING), CHANGE_ADDED, "label-1"
    )
    assert rescore_trip(state, change.reason).events == 3
    assert apply_and_diff(state, label("label-2", formula.HARSH_BRAKING, window="window-9", at=6000.0))[1] == []
    # The window turns out normal after all: the added event is withdrawn.
    (withdrawn,) = apply_and_diff(state, label("label-3", NORMAL, window="window-9", at=7000.0))[1]
    assert (withdrawn.status, withdrawn.reason) == (CHANGE_OVERTURNED, "label-overturned:label-3")
    assert summarize_trip(state).events == 2


def test_a_risky_label_on_a_detection_that_does_not_count_adds_the_event() -> None:
    state = TripState("trip-1")
    apply_segment(state, segment(0, ("c-1", "s-1"), trip_end=True), 0.0)
    apply_detection(state, detection("c-1", CONFOUNDER, 5.0), 0.0)
    apply_detection(state, detection("s-1", counts_against_driver=False), 0.0)
    close_trip(state, REASON_COMPLETE, 1.0)
    assert summarize_trip(state).points == 0.0
    (change,) = apply_and_diff(state, label("label-1", formula.HARSH_BRAKING, "c-1"))[1]
    assert (change.status, change.event.severity, change.event.points) == (CHANGE_ADDED, 2, 4.5)
    assert apply_and_diff(state, label("label-2", NORMAL, "s-1", window="window-2"))[1] == []


def test_a_label_before_its_trip_waits_and_applies_when_the_detection_arrives() -> None:
    state = TripState("trip-1")
    assert apply_label(state, label("label-1", NORMAL, "d-1"), 0.0) is LabelOutcome.APPLIED
    assert apply_label(state, label("label-2", formula.HARSH_CORNERING, window="window-2"), 0.0) is LabelOutcome.APPLIED
    assert not has_trip_data(state)
    assert counted_events(state) == {}
    assert label_is_pending(state, state.verdicts["window-1"])
    assert not is_overdue(state, 1e9, trip_end_grace_s=1.0, idle_timeout_s=1.0)

    # The first trip input makes the missed event count; the detection arrives and is overturned at once.
    before = counted_events(state)
    apply_segment(state, segment(0, ("d-1",), trip_end=True), 10.0)
    (added,) = event_changes(state, before, counted_events(state))
    assert (added.status, added.reason) == (CHANGE_ADDED, "label-added:label-2")
    before = counted_events(state)
    _, record = apply_detection(state, detection("d-1"), 11.0)
    assert record is not None
    baseline = {**before, record.scored_event_id: detected_event(record)}
    (overturned,) = event_changes(state, baseline, counted_events(state))
    assert (overturned.status, overturned.reason) == (CHANGE_OVERTURNED, "label-overturned:label-1")
    summary = close_trip(state, REASON_COMPLETE, 12.0)
    assert summary.event_counts == {formula.HARSH_CORNERING: 1}
    assert summary.revision == 1


def test_labels_that_never_meet_their_trip_expire_after_the_retention() -> None:
    state = TripState("trip-1")
    apply_label(state, label("label-1", NORMAL, "d-1"), 100.0)
    assert not is_expired(state, 100.0 + 99.0, retention_s=100.0)
    assert is_expired(state, 100.0 + 100.0, retention_s=100.0)
    open_trip = TripState("trip-2")
    apply_segment(open_trip, segment(0), 0.0)
    assert not is_expired(open_trip, 1e9, retention_s=100.0)
    closed = closed_trip()
    assert not is_expired(closed, 20.0 + 99.0, retention_s=100.0)
    assert is_expired(closed, 20.0 + 100.0, retention_s=100.0)


def test_a_late_detection_changes_the_fingerprint_and_a_late_confounder_does_not() -> None:
    state = closed_trip()
    fingerprint = trip_fingerprint(state)
    apply_detection(state, detection("c-9", CONFOUNDER), 30.0)
    assert trip_fingerprint(state) == fingerprint
    apply_detection(state, detection("d-9", formula.HARSH_BRAKING, 6.5), 30.0)
    assert trip_fingerprint(state) != fingerprint
    summary = rescore_trip(state, "late-detection")
    assert (summary.revision, summary.reason, summary.points) == (2, "late-detection", 7.5 + 6.0)


def test_a_closed_trip_keeps_segment_totals_and_a_late_segment_fills_its_gap_once() -> None:
    state = TripState("trip-1")
    apply_segment(state, segment(0), 0.0)
    apply_segment(state, segment(2, trip_end=True), 0.0)
    summary = close_trip(state, REASON_CLOSED_INCOMPLETE, 200.0)
    assert (summary.uploads, summary.missing_sequences, summary.distance_km) == (2, (1,), 20.0)
    assert state.totals is not None and state.totals.received == [[0, 0], [2, 2]]
    assert apply_segment(state, segment(0), 300.0) is SegmentOutcome.DUPLICATE
    fingerprint = trip_fingerprint(state)
    assert apply_segment(state, segment(1), 300.0) is SegmentOutcome.ADDED
    assert trip_fingerprint(state) != fingerprint
    summary = rescore_trip(state, "late-segment")
    assert (summary.uploads, summary.missing_sequences, summary.distance_km, summary.revision) == (3, (), 30.0, 2)
    assert (summary.started_at, summary.ended_at) == (1000.0, 1000.0 + 600 * 3)
    assert apply_segment(state, segment(1), 400.0) is SegmentOutcome.DUPLICATE


def test_a_closed_state_written_before_compaction_is_read_with_its_segments_as_totals() -> None:
    state = closed_trip()
    legacy = state.to_dict()
    legacy.pop("totals")
    legacy.pop("verdicts")
    legacy.pop("awaited_detections")
    legacy["closure"] = {**legacy["closure"], "missing_sequences": []}
    legacy["closure"].pop("missing_through")
    legacy["segments"] = {
        "0": {**vars(segment(0, ("d-1",))), "detection_event_ids": ["d-1"]},
        "1": {**vars(segment(1, ("d-2",), trip_end=True)), "detection_event_ids": ["d-2"]},
    }
    restored = TripState.from_dict(json.loads(json.dumps(legacy)))
    assert restored.totals == state.totals
    assert summarize_trip(restored) == summarize_trip(state)
    assert apply_segment(restored, segment(1), 0.0) is SegmentOutcome.DUPLICATE
    assert "segments" not in restored.to_dict()


def test_a_state_with_verdicts_and_totals_round_trips_through_json() -> None:
    state = closed_trip()
    apply_label(state, label("label-1", NORMAL, "d-1"), 30.0)
    apply_label(state, label("label-2", formula.SPEEDING, window="window-2"), 31.0)
    restored = TripState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored == state
    assert counted_events(restored) == counted_events(state)


@pytest.mark.parametrize(
    ("detected", "labelled", "peak", "speed", "limit", "severity"),
    [
        (formula.HARSH_BRAKING, formula.HARSH_CORNERING, 6.1, 10.0, 0.0, 3),
        (formula.HARSH_CORNERING, formula.HARSH_ACCELERATION, 3.6, 10.0, 0.0, 2),
        (CONFOUNDER, formula.HARSH_BRAKING, 3.1, 10.0, 0.0, 1),
        (formula.HARSH_BRAKING, formula.SPEEDING, 6.1, 25.0, 25.0 - 21 / 3.6, 2),
        (formula.HARSH_BRAKING, formula.SPEEDING, 6.1, 25.0, 0.0, 1),
        (formula.SPEEDING, formula.HARSH_BRAKING, 9.0, 25.0, 15.0, 1),
    ],
)
def test_a_corrected_type_reads_the_measurement_only_in_its_own_unit(
    detected: int, labelled: int, peak: float, speed: float, limit: float, severity: int
) -> None:
    assert formula.relabelled_severity(detected, labelled, peak, speed, limit) == severity


def test_non_finite_measurements_survive_the_changelog_codec() -> None:
    """faust's JSON codec writes NaN and infinities as null; what the state keeps must stay numbers."""
    message = inference_pb2.Detection(
        event_id="d-1",
        event_type=common_pb2.EVENT_TYPE_SPEEDING,
        peak_value=math.nan,
        speed_mps=math.inf,
        speed_limit_mps=13.9,
    )
    labelled = labels_pb2.Label(
        event_id="label-1",
        lineage=common_pb2.Lineage(window_id="window-1", trip_id="trip-1"),
        event_type=common_pb2.EVENT_TYPE_HARSH_BRAKING,
        agreement=math.nan,
        location=common_pb2.GeoPoint(latitude=math.inf, longitude=-math.inf),
    )
    state = TripState("trip-1")
    apply_segment(state, segment(0, ("d-1",), trip_end=True), 0.0)
    apply_detection(state, messages.detection_facts(message), 0.0)
    apply_label(state, messages.label_facts(labelled), 0.0)
    close_trip(state, REASON_COMPLETE, 1.0)
    codec = codecs.get_codec("json")
    restored = TripState.from_dict(codec.loads(codec.dumps(state.to_dict())))
    assert restored == state
    assert summarize_trip(restored).points == summarize_trip(state).points
