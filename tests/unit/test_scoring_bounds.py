"""What one key of scoring's state can hold: every bound, what happens at it, and states earlier versions wrote.

A hostile device once stopped scoring for the whole fleet with one upload (sequence 100000 and
`trip_end`): the trip's state listed 100,000 missing sequences, its changelog record was refused by
the broker, and the worker crash-looped on it. These tests hold the class of that failure shut: no
input, in any order, makes a state record larger than `MAX_STATE_BYTES`, and nothing costs in
proportion to a sequence number.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
import tracemalloc
from typing import Any

import orjson
from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st
from opentelemetry import context as otel_context

from michi.bus.catalog import DETECTIONS, LABELS, SCORED_EVENTS, TRIP_SCORES, TRIP_SEGMENTS
from michi.bus.producer import MAX_DEAD_LETTER_VALUE_BYTES, dead_letter_message
from michi.bus.streams import Inbound
from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2, scoring_pb2
from services.scoring import messages
from services.scoring.adapters.topics import LABELS_BY_TRIP, TRIP_SCORES_BY_DRIVER
from services.scoring.domain import sequences
from services.scoring.domain.driver import DriverState, RollingWindow, TripContribution, apply_trip
from services.scoring.domain.limits import (
    MAX_DETECTIONS_PER_TRIP,
    MAX_ID_LENGTH,
    MAX_LABELLED_WINDOWS_PER_TRIP,
    MAX_SEQUENCE_RANGES_PER_TRIP,
    MAX_STATE_BYTES,
    encoded_size,
)
from services.scoring.domain.trip import (
    REASON_CLOSED_INCOMPLETE,
    SegmentFacts,
    SegmentOutcome,
    TripState,
    apply_segment,
    close_trip,
    completion,
    summarize_trip,
)
from services.scoring.handlers import ScoringHandlers

from .test_scoring_handlers import Journal, build

START = 1_700_000_000.0
TRIP = "trip-1"
BOUNDS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _inbound(message: Any, key: str, topic: str, offset: int = 0) -> Inbound:
    return Inbound(message, key, {}, topic, 0, offset, otel_context.Context())


def _lineage(trip_id: str = TRIP, **extra: str) -> common_pb2.Lineage:
    return common_pb2.Lineage(trip_id=trip_id, driver_id="driver-1", device_id="device-1", **extra)


def detection(event_id: str, trip_id: str = TRIP) -> Inbound:
    message = inference_pb2.Detection(
        event_id=event_id,
        occurred_at=timestamp_from_seconds(START + 5),
        lineage=_lineage(trip_id),
        event_type=common_pb2.EVENT_TYPE_HARSH_BRAKING,
        peak_value=3.2,
    )
    return _inbound(message, trip_id, DETECTIONS.base_name)


def segment(sequence: int, detection_ids: list[str] | None = None, *, trip_end: bool = False) -> Inbound:
    """A 10 s upload of 100 m; its times do not depend on the sequence (which may be any uint64)."""
    message = inference_pb2.TripSegment(
        event_id=f"segment-{sequence}",
        lineage=_lineage(),
        sequence=sequence,
        trip_end=trip_end,
        distance_m=100.0,
        duration_s=10.0,
        detection_event_ids=detection_ids or [],
        span=common_pb2.TimeSpan(started_at=timestamp_from_seconds(START), ended_at=timestamp_from_seconds(START + 10)),
    )
    return _inbound(message, TRIP, TRIP_SEGMENTS.base_name)


def label(event_id: str, window_id: str, detection_event_id: str = "", **lineage: str) -> Inbound:
    message = labels_pb2.Label(
        event_id=event_id,
        occurred_at=timestamp_from_seconds(START + 100),
        lineage=_lineage(window_id=window_id, **lineage),
        event_type=common_pb2.EVENT_TYPE_NORMAL,
        detection_event_id=detection_event_id,
    )
    return _inbound(message, TRIP, LABELS_BY_TRIP.base_name)


def feed(handlers: ScoringHandlers, inputs: list[Inbound], batch_size: int = 64) -> None:
    for start in range(0, len(inputs), batch_size):
        asyncio.run(handlers.on_detections(inputs[start : start + batch_size]))


def dead_letters(journal: Journal) -> list[object]:
    return journal.of("dead-letter")


def trip_scores(journal: Journal) -> list[scoring_pb2.TripScore]:
    return journal.of("publish", TRIP_SCORES.base_name)  # type: ignore[return-value]


def stored_sizes(handlers: ScoringHandlers) -> list[int]:
    return [len(orjson.dumps(record)) for record in handlers.trips.data.values()]  # type: ignore[attr-defined]


def limit_count(handlers: ScoringHandlers, bound: str) -> float | None:
    return handlers.metrics.registry.get_sample_value("michi_scoring_state_limits_total", {"bound": bound})


# --- sequences as ranges


@given(numbers=st.lists(st.integers(0, 60), max_size=80), through=st.integers(-1, 70))
def test_ranges_hold_exactly_the_numbers_added(numbers: list[int], through: int) -> None:
    ranges: sequences.Ranges = []
    held: set[int] = set()
    for number in numbers:
        assert sequences.opens_range(ranges, number) == (
            number not in held and number - 1 not in held and number + 1 not in held
        )
        assert sequences.add(ranges, number) == (number not in held)
        held.add(number)
    assert all(sequences.contains(ranges, number) == (number in held) for number in range(-2, 64))
    assert all(first <= last and last + 1 < following for (first, last), (following, _) in itertools.pairwise(ranges))
    assert ranges == sequences.from_numbers(held)
    missing = [number for number in range(through + 1) if number not in held]
    gaps = sequences.gaps(ranges, through)
    assert sequences.count(gaps) == len(missing)
    assert sequences.first_numbers(gaps, 5) == missing[:5]
    assert sequences.without(missing, through) == sequences.from_numbers(held & set(range(through + 1)))


def test_ranges_cost_the_same_whatever_the_numbers() -> None:
    ranges: sequences.Ranges = []
    for number in (0, 2**64 - 1, 3, 2):
        sequences.add(ranges, number)
    assert ranges == [[0, 0], [2, 3], [2**64 - 1, 2**64 - 1]]
    gaps = sequences.gaps(ranges, 2**64 - 1)
    assert gaps == [(1, 1), (4, 2**64 - 2)]
    assert sequences.count(gaps) == 2**64 - 4
    assert sequences.first_numbers(gaps, 4) == [1, 4, 5, 6]


# --- the hostile upload: one far sequence


def test_a_trip_ending_at_sequence_ten_million_closes_in_milliseconds_and_little_memory() -> None:
    handlers, journal, clock = build()
    feed(handlers, [segment(0)])
    tracemalloc.start()
    started = time.perf_counter()
    feed(handlers, [segment(10**7, trip_end=True)])
    clock.now += 121.0
    closed = asyncio.run(handlers.close_overdue_trips())
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert closed == 1
    assert elapsed < 0.25, f"{elapsed:.3f} s"
    assert peak < 1024 * 1024, f"{peak} bytes"
    (score,) = trip_scores(journal)
    assert (score.reason, score.uploads) == ("closed-incomplete", 2)
    assert list(score.missing_sequences) == list(range(1, 1001))
    assert score.missing_sequence_count == 10**7 - 1  # all of them counted, the lowest 1000 listed
    assert len(score.SerializeToString()) < 4096
    assert handlers.trips.data[TRIP]["totals"]["received"] == [[0, 0], [10**7, 10**7]]  # type: ignore[attr-defined]
    assert stored_sizes(handlers) == [encoded_size(handlers.trips.get(TRIP))]  # type: ignore[arg-type]
    assert stored_sizes(handlers)[0] < 1024


@settings(BOUNDS)
@given(
    received=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=40),
    trip_end=st.integers(0, 2**64 - 1),
)
def test_completion_counts_missing_sequences_by_ranges_whatever_they_are(received: list[int], trip_end: int) -> None:
    state = TripState(TRIP)
    for number in [*received, trip_end]:
        apply_segment(state, SegmentFacts(f"s-{number}", number, number == trip_end, 1.0, 1.0, (), START, START), 0.0)
    result = completion(state)
    distinct = {number for number in [*received, trip_end] if number <= trip_end}
    assert result.missing_count == trip_end + 1 - len(distinct)
    assert result.complete == (result.missing_count == 0)
    assert len(result.missing_sequences) == min(result.missing_count, 1000)
    summary = close_trip(state, REASON_CLOSED_INCOMPLETE, 1.0)
    assert summary.missing_count == result.missing_count
    assert encoded_size(state) < 4096


# --- the byte bound, whatever the input

# Short ids, and ids at the longest (one character repeated, any of them, so JSON may escape each) with a
# distinct tail: states grow fast enough to meet the byte bound often.
ids = st.one_of(
    st.text(min_size=1, max_size=8),
    st.builds(
        lambda char, tail: char * (MAX_ID_LENGTH - len(tail)) + tail, st.characters(codec="utf-8"), st.text(max_size=8)
    ),
)
detection_inputs = st.builds(detection, ids)
segment_inputs = st.builds(
    lambda sequence, listed, trip_end: segment(sequence, listed, trip_end=trip_end),
    st.integers(0, 2**64 - 1),
    st.lists(ids, max_size=40),
    st.booleans(),
)
label_inputs = st.builds(
    lambda event_id, window_id, detection_id, texts: label(
        event_id,
        window_id,
        detection_id,
        **dict(zip(("upload_id", "model_name", "model_version", "trace_id"), texts, strict=True)),
    ),
    ids,
    ids,
    st.one_of(st.just(""), ids),
    st.lists(ids, min_size=4, max_size=4),
)


@settings(BOUNDS, max_examples=6)
@given(inputs=st.lists(st.one_of(detection_inputs, segment_inputs, label_inputs), min_size=100, max_size=300))
def test_a_state_record_stays_under_its_bound_whatever_the_input(inputs: list[Inbound]) -> None:
    handlers, journal, clock = build()
    largest = 0
    # Then redelivered, with other batch boundaries.
    for batch_size, replayed in ((16, inputs), (7, inputs[: len(inputs) // 2])):
        for start in range(0, len(replayed), batch_size):
            feed(handlers, replayed[start : start + batch_size])
            largest = max(largest, *stored_sizes(handlers), 0)
    clock.now += 10_000.0
    asyncio.run(handlers.close_overdue_trips())
    largest = max(largest, *stored_sizes(handlers), 0)
    target(float(largest))  # steer towards the largest states
    event("a bound was met" if "state-limit" in dead_letters(journal) else "no bound met")
    assert largest <= MAX_STATE_BYTES
    assert {reason for reason in dead_letters(journal)} <= {"schema-violation", "state-limit"}
    assert all(len(score.SerializeToString()) < 16 * 1024 for score in trip_scores(journal))


def test_a_flood_of_detections_with_the_longest_ids_meets_the_byte_bound_first() -> None:
    handlers, journal, _ = build()
    # Control characters: JSON escapes each as \\u00XX, the most an id can cost.
    flood = [detection(f"{index:04d}" + "\x01" * (MAX_ID_LENGTH - 4)) for index in range(MAX_DETECTIONS_PER_TRIP)]
    feed(handlers, [segment(0), *flood])
    held = len(handlers.trips.get(TRIP).detections)  # type: ignore[union-attr]
    assert 100 < held < MAX_DETECTIONS_PER_TRIP
    assert dead_letters(journal) == ["state-limit"] * (MAX_DETECTIONS_PER_TRIP - held)
    assert limit_count(handlers, "state-bytes") == MAX_DETECTIONS_PER_TRIP - held
    (score,) = trip_scores(journal)
    assert (score.reason, sum(count.count for count in score.event_counts)) == ("closed-at-limit", held)
    (size,) = stored_sizes(handlers)
    assert MAX_STATE_BYTES - 8 * 1024 < size <= MAX_STATE_BYTES


# --- each count bound, and what happens at it


def test_a_trip_holds_400_detections_then_closes_at_the_limit_and_refuses_more() -> None:
    handlers, journal, _ = build()
    feed(handlers, [segment(0), *(detection(f"d-{index:03d}") for index in range(MAX_DETECTIONS_PER_TRIP))])
    assert trip_scores(journal) == [] and dead_letters(journal) == []
    feed(handlers, [detection("d-400"), detection("d-401"), detection("d-000")])
    assert dead_letters(journal) == ["state-limit", "state-limit"]
    assert limit_count(handlers, "detections") == 2.0
    assert handlers.metrics.registry.get_sample_value("michi_scoring_duplicates_ignored_total", {"kind": "detection"})
    (score,) = trip_scores(journal)
    assert (score.reason, score.revision, score.uploads) == ("closed-at-limit", 1, 1)
    assert sum(count.count for count in score.event_counts) == MAX_DETECTIONS_PER_TRIP
    assert len(journal.of("publish", SCORED_EVENTS.base_name)) == MAX_DETECTIONS_PER_TRIP
    assert (
        handlers.metrics.registry.get_sample_value("michi_scoring_trips_closed_total", {"reason": "closed-at-limit"})
        == 1.0
    )
    assert max(stored_sizes(handlers)) <= MAX_STATE_BYTES


def test_a_segment_listing_more_detections_than_a_trip_holds_is_refused() -> None:
    handlers, journal, _ = build()
    listed = [f"d-{index:03d}" for index in range(MAX_DETECTIONS_PER_TRIP + 1)]
    feed(handlers, [segment(0, listed, trip_end=True)])
    assert dead_letters(journal) == ["state-limit"]
    assert limit_count(handlers, "detections") == 1.0
    assert journal.of("put") == [] and trip_scores(journal) == []  # the trip held nothing: nothing to close
    feed(handlers, [segment(0, listed[:-1], trip_end=True)])
    assert dead_letters(journal) == ["state-limit"]
    assert handlers.trips.get(TRIP).awaited_detections == listed[:-1]  # type: ignore[union-attr]


def test_a_trip_holds_256_runs_of_sequences_then_closes_at_the_limit() -> None:
    handlers, journal, _ = build()
    feed(handlers, [segment(2 * index) for index in range(MAX_SEQUENCE_RANGES_PER_TRIP)])
    assert len(handlers.trips.get(TRIP).totals.received) == MAX_SEQUENCE_RANGES_PER_TRIP  # type: ignore[union-attr]
    feed(handlers, [segment(2 * MAX_SEQUENCE_RANGES_PER_TRIP, trip_end=True)])
    assert dead_letters(journal) == ["state-limit"]
    assert limit_count(handlers, "sequence-ranges") == 1.0
    (score,) = trip_scores(journal)
    assert (score.reason, score.uploads) == ("closed-at-limit", MAX_SEQUENCE_RANGES_PER_TRIP)
    assert list(score.missing_sequences) == list(range(1, 2 * MAX_SEQUENCE_RANGES_PER_TRIP - 2, 2))
    # Next to a run it opens none: a late segment filling a gap is taken, and re-scores the trip.
    feed(handlers, [segment(1), segment(2 * MAX_SEQUENCE_RANGES_PER_TRIP - 1)])
    assert dead_letters(journal) == ["state-limit"]
    assert [(score.revision, score.reason, score.uploads) for score in trip_scores(journal)[1:]] == [
        (2, "late-segment", MAX_SEQUENCE_RANGES_PER_TRIP + 1),
        (3, "late-segment", MAX_SEQUENCE_RANGES_PER_TRIP + 2),
    ]
    assert trip_scores(journal)[-1].missing_sequences[:2] == [3, 5]


def test_a_trip_holds_verdicts_on_128_windows() -> None:
    handlers, journal, _ = build()
    feed(handlers, [segment(0, ["d-1"], trip_end=True), detection("d-1")])
    assert [score.reason for score in trip_scores(journal)] == ["complete"]
    windows = [label(f"label-{index:03d}", f"window-{index:03d}") for index in range(MAX_LABELLED_WINDOWS_PER_TRIP)]
    feed(handlers, windows)
    feed(handlers, [label("label-128", "window-128"), label("label-again", "window-000")])
    assert dead_letters(journal) == ["state-limit"]
    assert limit_count(handlers, "labelled-windows") == 1.0
    state = handlers.trips.get(TRIP)
    assert state is not None and len(state.verdicts) == MAX_LABELLED_WINDOWS_PER_TRIP
    assert state.verdicts["window-000"].label_event_id == "label-again"
    assert [score.reason for score in trip_scores(journal)] == ["complete"]  # a closed trip is not closed again


def test_ids_longer_than_scoring_keeps_and_times_a_timestamp_cannot_hold_are_schema_violations() -> None:
    handlers, journal, _ = build()
    long_id = "x" * (MAX_ID_LENGTH + 1)
    far = segment(1)
    far.message.span.ended_at.seconds = 10**12  # year 33658
    feed(
        handlers,
        [
            detection(long_id),
            detection("d-1", trip_id=long_id),
            segment(0, [long_id]),
            label("label-1", "window-1", model_version=long_id),
            far,
            detection("x" * MAX_ID_LENGTH),
        ],
    )
    assert dead_letters(journal) == ["schema-violation"] * 5
    assert (
        handlers.metrics.registry.get_sample_value(
            "michi_scoring_invalid_messages_total", {"topic": DETECTIONS.base_name}
        )
        == 2.0
    )
    assert messages.trip_input_problem(far.message, TRIP) == (
        "span.ended_at (1000000000000 s, 0 ns) is outside the years 1 to 9999"
    )
    assert messages.trip_input_problem(detection(long_id).message, TRIP) == (
        f"event_id has {MAX_ID_LENGTH + 1} characters; scoring keeps ids of at most {MAX_ID_LENGTH}"
    )
    assert len(journal.of("publish", SCORED_EVENTS.base_name)) == 1


def test_hollow_messages_under_a_trip_key_are_schema_violations_not_inputs_of_that_trip() -> None:
    # The right types with (almost) nothing in them, keyed by a real trip: nothing may be counted for it.
    handlers, journal, _ = build()
    hollow = [
        _inbound(inference_pb2.Detection(event_id="hollow-detection"), TRIP, DETECTIONS.base_name),
        _inbound(inference_pb2.TripSegment(event_id="hollow-segment"), TRIP, DETECTIONS.base_name),
        _inbound(inference_pb2.Detection(), TRIP, DETECTIONS.base_name),
    ]
    untyped = detection("d-untyped")
    untyped.message.event_type = common_pb2.EVENT_TYPE_UNSPECIFIED
    feed(handlers, [*hollow, untyped])
    assert dead_letters(journal) == ["schema-violation"] * 4
    assert handlers.trips.get(TRIP) is None
    assert messages.trip_input_problem(hollow[0].message, TRIP) == (
        "detection without lineage.device_id: scoring cannot tell whose trip it is"
    )
    assert messages.trip_input_problem(hollow[2].message, TRIP) == "detection without event_id"
    scores = [scoring_pb2.TripScore(event_id="s-1"), scoring_pb2.TripScore(event_id="s-2", lineage=_lineage())]
    asyncio.run(
        handlers.on_driver_trip_scores(
            [_inbound(scores[0], "driver-1", TRIP_SCORES_BY_DRIVER.base_name), _inbound(scores[1], "", "x")]
        )
    )
    assert dead_letters(journal)[4:] == ["schema-violation"]
    assert messages.trip_score_problem(scores[0], "driver-1") == "trip score without lineage.trip_id"
    assert messages.trip_score_problem(scores[1], "") == (
        "trip score without a driver (lineage.driver_id or the message key)"
    )


def test_labels_with_long_ids_are_refused_before_they_are_rekeyed() -> None:
    handlers, journal, _ = build()
    message = label("label-1", "window-1", trace_id="t" * (MAX_ID_LENGTH + 1)).message
    asyncio.run(handlers.forward_labels([_inbound(message, "window-1", LABELS.base_name)]))
    assert dead_letters(journal) == ["schema-violation"]
    assert journal.of("publish", LABELS_BY_TRIP.base_name) == []


# --- drivers


def test_a_driver_keeps_its_newest_trips_that_fit_the_byte_bound() -> None:
    state = DriverState("driver-1")
    window = RollingWindow(days=30.0, max_trips=500)
    for index in range(500):
        # Non-ASCII trip ids at the longest: up to 2 bytes a character in JSON.
        trip_id = f"{index:03d}" + "é" * (MAX_ID_LENGTH - 3)
        counts = {event_type: 2**32 - 1 for event_type in range(1, 7)}
        apply_trip(state, TripContribution(trip_id, 2**32 - 1, START + index, 1e300, 1e300, 1e300, counts), window)
    size = len(orjson.dumps(state.to_dict()))
    assert size <= MAX_STATE_BYTES
    kept = sorted(state.trips)
    assert 100 < len(kept) < 500
    assert kept[-1].startswith("499") and kept[0].startswith(f"{500 - len(kept):03d}")  # the newest, in order
    assert DriverState.from_dict(orjson.loads(orjson.dumps(state.to_dict()))) == state


def test_trip_scores_a_driver_cannot_count_go_to_dead_letters() -> None:
    handlers, journal, _ = build()
    unknown_type = scoring_pb2.TripScore(
        event_id="s-1",
        lineage=common_pb2.Lineage(trip_id="trip-9", driver_id="driver-1"),
        revision=1,
        event_counts=[scoring_pb2.EventCount(event_type=99, count=1)],  # type: ignore[arg-type]
    )
    long_trip = scoring_pb2.TripScore(
        event_id="s-2", lineage=common_pb2.Lineage(trip_id="t" * (MAX_ID_LENGTH + 1), driver_id="driver-1")
    )
    batch = [_inbound(score, "driver-1", TRIP_SCORES_BY_DRIVER.base_name) for score in (unknown_type, long_trip)]
    asyncio.run(handlers.on_driver_trip_scores(batch))
    assert dead_letters(journal) == ["schema-violation", "schema-violation"]
    assert handlers.drivers.data == {}  # type: ignore[attr-defined]


# --- states written by earlier versions (read from the changelogs as they are)


def _legacy_segment(sequence: int, listed: list[str], *, trip_end: bool = False) -> dict[str, Any]:
    return {
        "event_id": f"segment-{sequence}",
        "sequence": sequence,
        "trip_end": trip_end,
        "distance_m": 100.0,
        "duration_s": 10.0,
        "detection_event_ids": listed,
        "started_at": START + 10 * sequence,
        "ended_at": START + 10 * sequence + 10,
    }


def test_a_closed_state_of_an_earlier_version_keeps_its_missing_sequences() -> None:
    legacy = {
        "trip_id": TRIP,
        "driver_id": "driver-1",
        "partition": 1,
        "segments": {},
        "detections": {},
        "trip_end_sequence": 5,
        "closure": {
            "revision": 1,
            "reason": "closed-incomplete",
            "closed_at": 10.0,
            "event_id": "e",
            "missing_sequences": [1, 3],
        },
        "totals": {
            "uploads": 4,
            "distance_m": 400.0,
            "duration_s": 40.0,
            "started_at": START,
            "ended_at": START + 60,
            "highest_sequence": 5,
            "absent_sequences": [1, 3],
        },
        "verdicts": {},
        "labels_applied": 0,
    }
    state = TripState.from_dict(orjson.loads(orjson.dumps(legacy)))
    assert state.totals is not None and state.totals.received == [[0, 0], [2, 2], [4, 5]]
    assert summarize_trip(state).missing_sequences == (1, 3)
    late = SegmentFacts("segment-3", 3, False, 100.0, 10.0, (), START, START + 10)
    assert apply_segment(state, late, 20.0) is SegmentOutcome.ADDED
    assert (summarize_trip(state).missing_sequences, summarize_trip(state).uploads) == ((1,), 5)
    assert apply_segment(state, late, 21.0) is SegmentOutcome.DUPLICATE
    assert TripState.from_dict(orjson.loads(orjson.dumps(state.to_dict()))) == state
    assert state.to_dict() == dataclasses.asdict(state)


def test_an_open_state_of_an_earlier_version_with_a_far_sequence_closes_small() -> None:
    """The poisoned record a changelog may still hold: every segment kept, one of them at sequence 100000."""
    legacy = {
        "trip_id": TRIP,
        "driver_id": "driver-1",
        "device_id": "device-1",
        "partition": 0,
        "segments": {
            "0": _legacy_segment(0, ["d-1"]),
            "100000": _legacy_segment(100_000, [], trip_end=True),
        },
        "detections": {},
        "trip_end_sequence": 100_000,
        "trip_end_seen_at": 990.0,
        "last_activity_at": 990.0,
        "closure": None,
        "totals": None,
        "verdicts": {},
        "labels_applied": 0,
    }
    handlers, journal, clock = build()
    handlers.trips.data[TRIP] = orjson.loads(orjson.dumps(legacy))  # type: ignore[attr-defined]
    state = handlers.trips.get(TRIP)
    assert state is not None and state.awaited_detections == ["d-1"]
    assert completion(state).missing_count == 99_999
    clock.now += 121.0
    assert asyncio.run(handlers.close_overdue_trips()) == 1
    (score,) = trip_scores(journal)
    assert (score.reason, score.uploads, round(score.distance_km, 6)) == ("closed-incomplete", 2, 0.2)
    assert list(score.missing_sequences) == list(range(1, 1001))
    assert stored_sizes(handlers)[0] < 1024


# --- dead letters stay publishable


def test_a_dead_letter_of_a_message_at_the_broker_limit_stays_under_it() -> None:
    letter = dead_letter_message(
        service="scoring",
        source_topic="michi.trip-segments.v1",
        partition=3,
        offset=42,
        key=b"k" * 100_000,
        value=b"v" * 1_048_576,
        headers={f"header-{index}": "h" * 1000 for index in range(100)},
        reason="state-limit",
        error="sequence-ranges: too many",
    )
    assert len(letter.SerializeToString()) < 1_000_000  # librdkafka's default message.max.bytes
    assert letter.value == b"v" * MAX_DEAD_LETTER_VALUE_BYTES
    assert letter.error == (
        "sequence-ranges: too many (value cut to 524288 of 1048576 bytes; key cut to 16384 of 100000 bytes; "
        "84 of 100 headers left out; the original is at michi.trip-segments.v1[3]@42)"
    )
    small = dead_letter_message(
        service="scoring",
        source_topic="t",
        partition=0,
        offset=1,
        key=b"k",
        value=b"v",
        headers={"schema": "x"},
        reason="decode-error",
        error="bad",
    )
    assert (small.key, small.value, dict(small.headers), small.error) == (b"k", b"v", {"schema": "x"}, "bad")
