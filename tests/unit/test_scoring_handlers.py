"""Scoring handlers with in-memory adapters: outputs before state, dedup, dead letters, deadlines."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator

from google.protobuf.message import Message
from opentelemetry import context as otel_context

from michi.bus.catalog import DETECTIONS, DRIVER_SCORES, SCORED_EVENTS, TRIP_SCORES, TRIP_SEGMENTS, TopicSpec
from michi.bus.producer import Delivery
from michi.bus.streams import Inbound
from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import common_pb2, inference_pb2, scoring_pb2
from services.scoring.adapters.topics import TRIP_SCORES_BY_DRIVER
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

    def put(self, state: TripState) -> None:
        self.data[state.trip_id] = state.to_dict()
        self.journal.entries.append(("put", "trips", state.trip_id))

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

    def put(self, state: DriverState, partition: int) -> None:
        self.data[state.driver_id] = state.to_dict()
        self.journal.entries.append(("put", "drivers", state.driver_id))

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
