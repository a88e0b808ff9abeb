"""Scoring handlers with in-memory adapters: outputs before state, dedup, dead letters, deadlines, labels."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator

import orjson
import pytest
from google.protobuf.message import Message
from opentelemetry import context as otel_context

from michi.bus.catalog import DETECTIONS, DRIVER_SCORES, LABELS, SCORED_EVENTS, TRIP_SCORES, TRIP_SEGMENTS, TopicSpec
from michi.bus.producer import Delivery
from michi.bus.streams import Inbound
from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2, scoring_pb2
from services.scoring.adapters.topics import LABELS_BY_TRIP, TRIP_SCORES_BY_DRIVER
from services.scoring.domain.driver import DriverState
from services.scoring.domain.trip import TripState
from services.scoring.handlers import ScoringConfig, ScoringHandlers
from services.scoring.metrics import ScoringMetrics


class Journal:
    """What happened, in order: publishes and state writes."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, object]] = []

    def of(self, kind: str, topic: str | None = None) -> list[object]:
        return [
            item for entry_kind, name, item in self.entries if entry_kind == kind and (topic is None or name == topic)
        ]


class MemoryTrips:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.data: dict[str, dict[str, object]] = {}

    def get(self, trip_id: str) -> TripState | None:
        return TripState.from_dict(self.data[trip_id]) if trip_id in self.data else None  # type: ignore[arg-type]

    def put(self, state: TripState) -> int:
        self.data[state.trip_id] = state.to_dict()
        self.journal.entries.append(("put", "trips", state.trip_id))
        return len(orjson.dumps(self.data[state.trip_id]))

    def delete(self, key: str, partition: int) -> None:
        self.data.pop(key, None)

    def states(self) -> Iterator[TripState]:
        for value in list(self.data.values()):
            yield TripState.from_dict(value)  # type: ignore[arg-type]

    async def sync(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self.data)


class MemoryDrivers:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.data: dict[str, dict[str, object]] = {}

    def get(self, driver_id: str) -> DriverState | None:
        return DriverState.from_dict(self.data[driver_id]) if driver_id in self.data else None  # type: ignore[arg-type]

    def put(self, state: DriverState, partition: int) -> int:
        self.data[state.driver_id] = state.to_dict()
        self.journal.entries.append(("put", "drivers", state.driver_id))
        return len(orjson.dumps(self.data[state.driver_id]))

    async def sync(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self.data)


class RecordingPublisher:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def publish(self, spec: TopicSpec, key: str, message: Message) -> concurrent.futures.Future[Delivery]:
        future: concurrent.futures.Future[Delivery] = concurrent.futures.Future()
        self.journal.entries.append(("publish", spec.base_name, message))
        future.set_result(Delivery(spec.base_name, 0, len(self.journal.entries)))
        return future

    def dead_letter(self, inbound: Inbound, reason: str, detail: str) -> concurrent.futures.Future[Delivery]:
        future: concurrent.futures.Future[Delivery] = concurrent.futures.Future()
        self.journal.entries.append(("dead-letter", inbound.topic, reason))
        future.set_result(Delivery("dead-letters", 0, 0))
        return future


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def inbound(message: Message, key: str, topic: str, partition: int = 0) -> Inbound:
    return Inbound(message, key, {}, topic, partition, 0, otel_context.Context())


def detection(event_id: str, trip_id: str = "trip-1") -> Inbound:
    lineage = common_pb2.Lineage(trip_id=trip_id, driver_id="driver-1", device_id="device-1")
    message = inference_pb2.Detection(
        event_id=event_id,
        occurred_at=timestamp_from_seconds(1_700_000_000),
        lineage=lineage,
        event_type=common_pb2.EVENT_TYPE_HARSH_BRAKING,
        peak_value=6.2,
    )
    return inbound(message, trip_id, DETECTIONS.base_name)


def segment(sequence: int, detection_ids: list[str], *, trip_end: bool, trip_id: str = "trip-1") -> Inbound:
    lineage = common_pb2.Lineage(trip_id=trip_id, driver_id="driver-1", device_id="device-1")
    message = inference_pb2.TripSegment(
        event_id=f"{trip_id}-segment-{sequence}",
        lineage=lineage,
        sequence=sequence,
        trip_end=trip_end,
        distance_m=4000.0,
        duration_s=300.0,
        detection_event_ids=detection_ids,
        span=common_pb2.TimeSpan(
            started_at=timestamp_from_seconds(1_700_000_000 + 300 * sequence),
            ended_at=timestamp_from_seconds(1_700_000_300 + 300 * sequence),
        ),
    )
    return inbound(message, trip_id, TRIP_SEGMENTS.base_name)


def build() -> tuple[ScoringHandlers, Journal, Clock]:
    journal = Journal()
    clock = Clock()
    handlers = ScoringHandlers(
        trips=MemoryTrips(journal),
        drivers=MemoryDrivers(journal),
        publisher=RecordingPublisher(journal),
        metrics=ScoringMetrics(),
        config=ScoringConfig(trip_end_grace_s=120.0, trip_idle_timeout_s=3600.0),
        clock=clock,
    )
    return handlers, journal, clock


def test_outputs_are_published_before_the_state_that_records_them() -> None:
    handlers, journal, _ = build()
    asyncio.run(handlers.on_detections([detection("d-1"), detection("d-1")]))
    asyncio.run(handlers.on_segments([segment(0, ["d-1"], trip_end=True)]))
    kinds = [(kind, name) for kind, name, _ in journal.entries]
    assert kinds == [
        ("publish", SCORED_EVENTS.base_name),
        ("put", "trips"),
        ("publish", TRIP_SCORES.base_name),
        ("put", "trips"),
    ]
    scored = journal.of("publish", SCORED_EVENTS.base_name)[0]
    assert isinstance(scored, scoring_pb2.ScoredEvent)
    assert (scored.severity, scored.points, scored.lineage.trip_id) == (3, 6.0, "trip-1")


def test_redelivered_inputs_publish_and_write_nothing() -> None:
    handlers, journal, _ = build()
    batch = [detection("d-1"), segment(0, ["d-1"], trip_end=True)]
    asyncio.run(handlers.on_detections(batch[:1]))
    asyncio.run(handlers.on_segments(batch[1:]))
    before = len(journal.entries)
    asyncio.run(handlers.on_detections(batch[:1]))
    asyncio.run(handlers.on_segments(batch[1:]))
    assert len(journal.entries) == before


def test_a_detection_without_a_trip_goes_to_dead_letters_and_the_batch_goes_on() -> None:
    handlers, journal, _ = build()
    orphan = inbound(inference_pb2.Detection(event_id="d-0"), "", DETECTIONS.base_name)
    asyncio.run(handlers.on_detections([orphan, detection("d-1")]))
    assert journal.of("dead-letter") == ["schema-violation"]
    assert len(journal.of("publish", SCORED_EVENTS.base_name)) == 1


def test_the_deadline_closes_an_incomplete_trip_once_and_trip_scores_roll_up_per_driver() -> None:
    handlers, journal, clock = build()
    asyncio.run(handlers.on_segments([segment(0, [], trip_end=False), segment(2, [], trip_end=True)]))
    assert asyncio.run(handlers.close_overdue_trips()) == 0
    clock.now += 121.0
    assert asyncio.run(handlers.close_overdue_trips()) == 1
    assert asyncio.run(handlers.close_overdue_trips()) == 0
    (trip_score,) = journal.of("publish", TRIP_SCORES.base_name)
    assert isinstance(trip_score, scoring_pb2.TripScore)
    assert (trip_score.reason, list(trip_score.missing_sequences)) == ("closed-incomplete", [1])

    asyncio.run(handlers.forward_trip_scores([inbound(trip_score, "trip-1", TRIP_SCORES.base_name)]))
    (forwarded,) = journal.of("publish", TRIP_SCORES_BY_DRIVER.base_name)
    repartitioned = inbound(forwarded, "driver-1", TRIP_SCORES_BY_DRIVER.base_name)  # type: ignore[arg-type]
    asyncio.run(handlers.on_driver_trip_scores([repartitioned, repartitioned]))
    asyncio.run(handlers.on_driver_trip_scores([repartitioned]))
    (driver_score,) = journal.of("publish", DRIVER_SCORES.base_name)
    assert isinstance(driver_score, scoring_pb2.DriverScore)
    assert (driver_score.trips, driver_score.revision, driver_score.score) == (1, 1, 100.0)


def test_the_deadline_waits_while_the_trip_partition_still_has_unread_input() -> None:
    handlers, journal, clock = build()
    behind: set[int] = {0}

    async def caught_up(partitions: set[int]) -> set[int]:
        return partitions - behind

    handlers.caught_up = caught_up
    asyncio.run(handlers.on_segments([segment(0, ["d-1"], trip_end=True)]))
    clock.now += 1000.0
    assert asyncio.run(handlers.close_overdue_trips()) == 0  # our own backlog may still hold d-1
    asyncio.run(handlers.on_detections([detection("d-1")]))
    (trip_score,) = journal.of("publish", TRIP_SCORES.base_name)
    assert trip_score.reason == "complete"  # type: ignore[attr-defined]


# --- labels and late inputs


def label_message(
    event_id: str,
    event_type: int,
    detection_event_id: str = "",
    *,
    window_id: str = "window-1",
    trip_id: str = "trip-1",
    occurred_at: float = 1_700_001_000,
) -> labels_pb2.Label:
    return labels_pb2.Label(
        event_id=event_id,
        occurred_at=timestamp_from_seconds(occurred_at),
        lineage=common_pb2.Lineage(window_id=window_id, trip_id=trip_id, driver_id="driver-1", device_id="device-1"),
        event_type=event_type,  # type: ignore[arg-type]
        source=labels_pb2.LABEL_SOURCE_CONSENSUS,
        agreement=0.8,
        detection_event_id=detection_event_id,
    )


def routed(message: labels_pb2.Label) -> Inbound:
    return inbound(message, message.lineage.trip_id, LABELS_BY_TRIP.base_name)


def closed_trip(handlers: ScoringHandlers) -> None:
    asyncio.run(handlers.on_detections([detection("d-1"), detection("d-2")]))
    asyncio.run(handlers.on_segments([segment(0, ["d-1", "d-2"], trip_end=True)]))


def roll_up(handlers: ScoringHandlers, journal: Journal) -> list[scoring_pb2.DriverScore]:
    """Forward every trip score published so far to the driver roll-up, in order; return the driver scores."""
    scores = [inbound(score, "trip-1", TRIP_SCORES.base_name) for score in journal.of("publish", TRIP_SCORES.base_name)]  # type: ignore[arg-type]
    start = len(journal.of("publish", TRIP_SCORES_BY_DRIVER.base_name))
    asyncio.run(handlers.forward_trip_scores(scores))
    forwarded = journal.of("publish", TRIP_SCORES_BY_DRIVER.base_name)[start:]
    asyncio.run(
        handlers.on_driver_trip_scores(
            [inbound(score, "driver-1", TRIP_SCORES_BY_DRIVER.base_name) for score in forwarded]  # type: ignore[arg-type]
        )
    )
    return journal.of("publish", DRIVER_SCORES.base_name)  # type: ignore[return-value]


def test_labels_are_rekeyed_by_trip_and_bad_ones_go_to_dead_letters() -> None:
    handlers, journal, _ = build()
    unkeyed = label_message("label-1", common_pb2.EVENT_TYPE_NORMAL, "d-1", window_id="")
    batch = [
        inbound(unkeyed, "window-7", LABELS.base_name),
        inbound(label_message("", common_pb2.EVENT_TYPE_NORMAL), "window-1", LABELS.base_name),
        inbound(label_message("label-2", common_pb2.EVENT_TYPE_NORMAL, trip_id=""), "window-1", LABELS.base_name),
        inbound(label_message("label-3", common_pb2.EVENT_TYPE_UNSPECIFIED), "window-1", LABELS.base_name),
        inbound(label_message("label-4", 42), "window-1", LABELS.base_name),
        inbound(label_message("label-5", common_pb2.EVENT_TYPE_NORMAL, window_id=""), "", LABELS.base_name),
    ]
    asyncio.run(handlers.forward_labels(batch))
    assert journal.of("dead-letter") == ["schema-violation"] * 5
    (forwarded,) = journal.of("publish", LABELS_BY_TRIP.base_name)
    assert isinstance(forwarded, labels_pb2.Label)
    assert (forwarded.event_id, forwarded.lineage.window_id, forwarded.lineage.trip_id) == (
        "label-1",
        "window-7",
        "trip-1",
    )
    assert unkeyed.lineage.window_id == ""  # the input is not modified
    # A label written to the internal topic without a window goes to dead letters there too.
    asyncio.run(handlers.on_labels([routed(label_message("label-6", common_pb2.EVENT_TYPE_NORMAL, window_id=""))]))
    assert journal.of("dead-letter") == ["schema-violation"] * 6


def test_a_label_overturning_a_detection_rescores_the_closed_trip_and_the_driver_exactly_once() -> None:
    handlers, journal, _ = build()
    closed_trip(handlers)
    (first,) = roll_up(handlers, journal)
    assert (first.points, first.revision) == (12.0, 1)
    before = len(journal.entries)

    overturn = label_message("label-1", common_pb2.EVENT_TYPE_CONFOUNDER, "d-1")
    asyncio.run(handlers.on_labels([routed(overturn)]))
    kinds = [(kind, name) for kind, name, _ in journal.entries[before:]]
    assert kinds == [("publish", SCORED_EVENTS.base_name), ("publish", TRIP_SCORES.base_name), ("put", "trips")]
    scored = journal.of("publish", SCORED_EVENTS.base_name)[-1]
    assert isinstance(scored, scoring_pb2.ScoredEvent)
    assert scored.status == scoring_pb2.SCORED_EVENT_STATUS_OVERTURNED
    assert (scored.detection_event_id, scored.reason, scored.points) == ("d-1", "label-overturned:label-1", 6.0)
    assert (scored.lineage.window_id, scored.lineage.trip_id, scored.confidence) == (
        "window-1",
        "trip-1",
        pytest.approx(0.8),
    )
    rescored = journal.of("publish", TRIP_SCORES.base_name)[-1]
    assert isinstance(rescored, scoring_pb2.TripScore)
    assert (rescored.revision, rescored.reason, rescored.points) == (2, "label-overturned:label-1", 6.0)

    # Redelivered, repeated with the same verdict, and both at once: no new record, no new revision.
    published = len(journal.of("publish"))
    asyncio.run(handlers.on_labels([routed(overturn)]))
    same_verdict = label_message("label-2", common_pb2.EVENT_TYPE_NORMAL, "d-1", occurred_at=1_700_002_000)
    asyncio.run(handlers.on_labels([routed(same_verdict), routed(overturn), routed(same_verdict)]))
    assert len(journal.of("publish")) == published
    metrics = handlers.metrics.registry
    assert metrics.get_sample_value("michi_scoring_duplicates_ignored_total", {"kind": "label"}) == 3.0
    assert metrics.get_sample_value("michi_scoring_labels_applied_total", {"effect": "no-change"}) == 1.0
    assert metrics.get_sample_value("michi_scoring_trips_rescored_total", {"cause": "label"}) == 1.0

    # The driver counts the corrected trip instead of the original, once (also when the trip scores repeat).
    drivers = roll_up(handlers, journal)
    assert (drivers[-1].points, drivers[-1].trips, drivers[-1].revision) == (6.0, 1, 2)
    assert len(roll_up(handlers, journal)) == len(drivers)


def test_a_late_detection_rescores_the_closed_trip_once() -> None:
    handlers, journal, _ = build()
    closed_trip(handlers)
    asyncio.run(handlers.on_detections([detection("d-late"), detection("d-late")]))
    asyncio.run(handlers.on_detections([detection("d-late")]))
    scores = journal.of("publish", TRIP_SCORES.base_name)
    assert [(score.revision, score.reason, score.points) for score in scores] == [  # type: ignore[attr-defined]
        (1, "complete", 12.0),
        (2, "late-detection", 18.0),
    ]
    assert (
        handlers.metrics.registry.get_sample_value("michi_scoring_trips_rescored_total", {"cause": "late-detection"})
        == 1.0
    )


def test_a_label_before_its_trip_is_kept_and_applied_when_the_trip_arrives() -> None:
    handlers, journal, clock = build()
    asyncio.run(handlers.on_labels([routed(label_message("label-1", common_pb2.EVENT_TYPE_NORMAL, "d-1"))]))
    assert journal.of("publish") == []
    assert asyncio.run(handlers.close_overdue_trips()) == 0
    clock.now += 7200.0  # past the idle timeout: labels alone never close a trip
    assert asyncio.run(handlers.close_overdue_trips()) == 0
    closed_trip(handlers)
    statuses = [(event.status, event.reason) for event in journal.of("publish", SCORED_EVENTS.base_name)]  # type: ignore[attr-defined]
    assert statuses == [
        (scoring_pb2.SCORED_EVENT_STATUS_ACTIVE, "detected"),
        (scoring_pb2.SCORED_EVENT_STATUS_OVERTURNED, "label-overturned:label-1"),
        (scoring_pb2.SCORED_EVENT_STATUS_ACTIVE, "detected"),
    ]
    (score,) = journal.of("publish", TRIP_SCORES.base_name)
    assert (score.revision, score.points) == (1, 6.0)  # type: ignore[attr-defined]


def test_labels_without_their_trip_are_forgotten_after_the_retention() -> None:
    handlers, journal, clock = build()
    asyncio.run(
        handlers.on_labels([routed(label_message("label-1", common_pb2.EVENT_TYPE_HARSH_BRAKING, trip_id="trip-9"))])
    )
    assert len(handlers.trips) == 1
    clock.now += handlers.config.closed_trip_retention_s
    asyncio.run(handlers.close_overdue_trips())
    assert len(handlers.trips) == 0
    assert journal.of("publish") == []
    assert handlers.metrics.registry.get_sample_value("michi_scoring_labels_expired_total") == 1.0
