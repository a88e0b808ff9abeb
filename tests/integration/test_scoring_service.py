"""The scoring service on a real Kafka, run as `python -m services.scoring` subprocesses.

Covers: scored events, one trip score per trip and a driver score for two trips
of one driver; redelivery changes nothing; kill -9 and restart neither
double-counts nor changes ids; garbage goes to dead letters and processing goes
on; a lost upload closes the trip incomplete after the grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from michi.bus.catalog import (
    DEAD_LETTERS,
    DETECTIONS,
    DRIVER_SCORES,
    SCORED_EVENTS,
    TRIP_SCORES,
    TRIP_SEGMENTS,
    TopicSpec,
)
from michi.bus.producer import EventProducer
from michi.bus.reader import Record, TopicReader, end_offsets
from michi.bus.streams import EXIT_REDELIVER
from michi.contracts import stable_event_id, timestamp_from_seconds
from michi.contracts.v1 import common_pb2, inference_pb2, scoring_pb2
from michi.infra.processes import free_port

pytestmark = pytest.mark.integration

REPOSITORY = Path(__file__).resolve().parents[2]
START = 1_750_000_000.0
TRIPS = 60


@dataclass
class ScoringProcess:
    """One `python -m services.scoring` process and how to reach it."""

    environment: dict[str, str]
    log_path: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        log = self.log_path.with_suffix(f".{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.scoring"],
            cwd=REPOSITORY,
            env=self.environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() == EXIT_REDELIVER:
                # It refused a gap in its input and stopped unacknowledged: restart it, as `michi up` would.
                self.start()
                return
            assert self.process.poll() is None, f"scoring exited early: {self.log()}"
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"scoring did not become ready: {self.log()}")

    def restart_if_stopped_for_redelivery(self) -> None:
        if self.process is not None and self.process.poll() == EXIT_REDELIVER:
            self.start()

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5.0).text

    def log(self) -> str:
        return self.log_path.with_suffix(f".{self.starts}.log").read_text()[-4000:]


def scoring_environment(
    kafka_bootstrap: str, topic_prefix: str, michi_home: Path, port: int, *, trip_end_grace_s: float
) -> dict[str, str]:
    """The environment of a `python -m services.scoring` under test (short trip-end grace and timer)."""
    return {
        **os.environ,
        "MICHI_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "MICHI_TOPIC_PREFIX": topic_prefix,
        "MICHI_HOME": str(michi_home),
        "MICHI_SCORING_PORT": str(port),
        "MICHI_SCORING_TRIP_END_GRACE_S": f"{trip_end_grace_s:g}",
        "MICHI_SCORING_TIMER_INTERVAL_S": "0.5",
    }


@pytest.fixture
def scoring(kafka_bootstrap: str, topic_prefix: str, michi_home: Path, tmp_path: Path) -> Iterator[ScoringProcess]:
    port = free_port()
    environment = scoring_environment(kafka_bootstrap, topic_prefix, michi_home, port, trip_end_grace_s=3.0)
    service = ScoringProcess(environment, tmp_path / "scoring", port)
    try:
        yield service
    finally:
        service.stop()


@dataclass
class TripPlan:
    """A trip's messages: segments 0..n-1 (the last ends the trip) and the detections each lists."""

    trip_id: str
    driver_id: str
    detections: list[inference_pb2.Detection] = field(default_factory=list)
    segments: list[inference_pb2.TripSegment] = field(default_factory=list)


def plan_trip(
    trip_id: str, driver_id: str, detections_per_segment: list[list[int]], *, start: float = START
) -> TripPlan:
    plan = TripPlan(trip_id, driver_id)
    types = [common_pb2.EVENT_TYPE_HARSH_BRAKING, common_pb2.EVENT_TYPE_HARSH_CORNERING, common_pb2.EVENT_TYPE_SPEEDING]
    for sequence, event_types in enumerate(detections_per_segment):
        lineage = common_pb2.Lineage(
            upload_id=f"{trip_id}-upload-{sequence}",
            trip_id=trip_id,
            driver_id=driver_id,
            device_id=f"device-{driver_id}",
        )
        begin = start + 60.0 * sequence
        ids = []
        for index, type_index in enumerate(event_types):
            detection_id = stable_event_id("test-detection", trip_id, sequence, index)
            ids.append(detection_id)
            plan.detections.append(
                inference_pb2.Detection(
                    event_id=detection_id,
                    occurred_at=timestamp_from_seconds(begin + 5 * index),
                    lineage=lineage,
                    event_type=types[type_index],  # type: ignore[arg-type]
                    confidence=0.9,
                    peak_value=4.0 if type_index < 2 else 3.0,
                    speed_mps=15.0,
                    speed_limit_mps=13.9 if type_index == 2 else 0.0,
                    variant=inference_pb2.VARIANT_CHAMPION,
                    detector="onnx:test",
                )
            )
        plan.segments.append(
            inference_pb2.TripSegment(
                event_id=stable_event_id("test-segment", trip_id, sequence),
                occurred_at=timestamp_from_seconds(begin + 60.0),
                lineage=lineage,
                sequence=sequence,
                trip_end=sequence == len(detections_per_segment) - 1,
                distance_m=1000.0,
                duration_s=60.0,
                detection_count=len(ids),
                detection_event_ids=ids,
                span=common_pb2.TimeSpan(
                    started_at=timestamp_from_seconds(begin), ended_at=timestamp_from_seconds(begin + 60.0)
                ),
            )
        )
    return plan


def publish_plan(producer: EventProducer, plan: TripPlan, *, segments_first: bool = False) -> None:
    """Publish a trip's detections and segments, the two topics in the given relative order."""
    detections = [producer.publish(DETECTIONS, plan.trip_id, detection) for detection in plan.detections]
    segments = [producer.publish(TRIP_SEGMENTS, plan.trip_id, segment) for segment in plan.segments]
    if segments_first:
        detections, segments = segments, detections
    for future in segments + detections:
        future.result(30)


def read_records(
    reader: TopicReader,
    collected: list[Record],
    done: Callable[[list[Record]], bool],
    timeout: float = 60.0,
    *,
    required: bool = True,
) -> None:
    """Poll until `done(collected)` or the timeout (which fails the test when `required`)."""
    deadline = time.monotonic() + timeout
    while not done(collected) and time.monotonic() < deadline:
        collected.extend(reader.poll(0.5))
    assert done(collected) or not required, f"timed out with {len(collected)} records on {reader.topic}"


def wait_until_consumed(
    bootstrap: str, prefix: str, timeout: float = 60.0, inputs: tuple[TopicSpec, ...] = (DETECTIONS, TRIP_SEGMENTS)
) -> None:
    """Bounded wait until scoring committed offsets up to the end of `inputs` (it acks after its effects)."""
    topics = [spec.name(prefix) for spec in inputs]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}scoring", "enable.auto.commit": False})
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ends = {
                (topic, partition): end for topic in topics for partition, end in end_offsets(bootstrap, topic).items()
            }
            committed = consumer.committed([TopicPartition(topic, partition) for topic, partition in ends], timeout=10)
            positions = {(tp.topic, tp.partition): tp.offset for tp in committed}
            if all(end == 0 or positions.get(key, -1) >= end for key, end in ends.items()):
                return
            time.sleep(0.2)
        raise AssertionError(f"scoring did not consume its inputs: committed {positions}, ends {ends}")
    finally:
        consumer.close()


def payload(record: Record) -> Any:
    """The decoded protobuf (typed loosely: each topic has its own message type)."""
    return record.message


def by_id(records: list[Record]) -> dict[str, Record]:
    return {payload(record).event_id: record for record in records}


def test_two_trips_of_one_driver_are_scored_once_even_when_redelivered(
    scoring: ScoringProcess, producer: EventProducer, kafka_bootstrap: str, topic_prefix: str
) -> None:
    first = plan_trip("trip-a", "driver-1", [[0], [], [1, 2]])
    second = plan_trip("trip-b", "driver-1", [[], [0]], start=START + 3600)
    scoring.start()
    publish_plan(producer, first)
    publish_plan(producer, second, segments_first=True)

    scored: list[Record] = []
    trips: list[Record] = []
    drivers: list[Record] = []
    with (
        TopicReader(kafka_bootstrap, SCORED_EVENTS, topic_prefix) as scored_reader,
        TopicReader(kafka_bootstrap, TRIP_SCORES, topic_prefix) as trip_reader,
        TopicReader(kafka_bootstrap, DRIVER_SCORES, topic_prefix) as driver_reader,
    ):
        read_records(scored_reader, scored, lambda records: len(records) >= 4)
        read_records(trip_reader, trips, lambda records: len(records) >= 2)
        read_records(driver_reader, drivers, lambda records: any(payload(record).trips == 2 for record in records))

        detection_ids = {detection.event_id for detection in first.detections + second.detections}
        assert {payload(record).detection_event_id for record in scored} == detection_ids
        assert len(by_id(scored)) == 4
        assert all(record.key == "driver-1" for record in scored)
        braking = next(
            payload(record) for record in scored if payload(record).event_type == common_pb2.EVENT_TYPE_HARSH_BRAKING
        )
        assert (braking.severity, braking.weight, braking.points) == (1, 3.0, 3.0)
        assert braking.status == scoring_pb2.SCORED_EVENT_STATUS_ACTIVE

        scores = {record.key: payload(record) for record in trips}
        assert set(scores) == {"trip-a", "trip-b"}
        trip_a = scores["trip-a"]
        assert trip_a.reason == "complete" and trip_a.revision == 1 and trip_a.uploads == 3
        assert trip_a.distance_km == pytest.approx(3.0)
        assert trip_a.points == pytest.approx(3.0 + 3.0 + 2.0)
        assert 0 < trip_a.score < 100
        assert sum(count.count for count in trip_a.event_counts) == 3

        latest = max(drivers, key=lambda record: payload(record).revision)
        assert latest.key == "driver-1"
        assert payload(latest).trips == 2 and payload(latest).revision == 2
        assert payload(latest).points == pytest.approx(8.0 + 3.0)

        # Redelivery of every input: nothing new comes out.
        publish_plan(producer, first)
        publish_plan(producer, second)
        wait_until_consumed(kafka_bootstrap, topic_prefix)
        metrics = scoring.metrics()
        assert 'michi_scoring_duplicates_ignored_total{kind="detection"} 4.0' in metrics
        assert 'michi_scoring_duplicates_ignored_total{kind="segment"} 5.0' in metrics
        assert 'michi_scoring_trips_closed_total{reason="complete"} 2.0' in metrics
        scored.extend(scored_reader.poll(1.0))
        trips.extend(trip_reader.poll(1.0))
        drivers.extend(driver_reader.poll(1.0))
    assert len(scored) == 4
    assert len(trips) == 2
    assert max(payload(record).revision for record in drivers) == 2


def test_kill_9_mid_stream_and_restart_does_not_double_count(
    scoring: ScoringProcess, producer: EventProducer, kafka_bootstrap: str, topic_prefix: str
) -> None:
    plans = [plan_trip(f"trip-{index:02d}", f"driver-{index % 3}", [[0], [1], [], [2, 0]]) for index in range(TRIPS)]
    scoring.start()

    # Kill it mid-stream: as soon as the first trip closes, while the first half is still being worked on;
    # the second half is published while it is dead, so the restart begins with a backlog.
    half = TRIPS // 2
    with TopicReader(kafka_bootstrap, TRIP_SCORES, topic_prefix) as trip_reader:
        trips: list[Record] = []
        for index, plan in enumerate(plans[:half]):
            publish_plan(producer, plan, segments_first=index % 2 == 1)
        read_records(trip_reader, trips, lambda records: len(records) >= 1)
        scoring.kill()
        for index, plan in enumerate(plans[half:], start=half):
            publish_plan(producer, plan, segments_first=index % 2 == 1)
        assert len({record.key for record in trips}) < TRIPS
        scoring.start()
        # faust can hand a restarted worker its backlog with a gap; the bus then stops the worker
        # unacknowledged (exit 75) and a restart redelivers from the committed offset, as under `michi up`.
        deadline = time.monotonic() + 150
        while True:
            try:
                wait_until_consumed(kafka_bootstrap, topic_prefix, timeout=15)
                break
            except AssertionError:
                scoring.restart_if_stopped_for_redelivery()
                if time.monotonic() > deadline:
                    raise
        read_records(
            trip_reader,
            trips,
            lambda records: {record.key for record in records} == {plan.trip_id for plan in plans},
            timeout=30.0,
            required=False,
        )
        trips.extend(trip_reader.poll(1.0))

    # At most one TripScore per trip: one event id per trip (a record replayed after the kill carries the same id).
    ids_per_trip = Counter(record.key for record in by_id(trips).values())
    assert set(ids_per_trip.values()) == {1}
    with TopicReader(kafka_bootstrap, SCORED_EVENTS, topic_prefix) as scored_reader:
        scored: list[Record] = []
        read_records(scored_reader, scored, lambda records: len(records) >= TRIPS * 4, timeout=30.0, required=False)
        scored.extend(scored_reader.poll(1.0))
    # No detection scored under two ids (a record replayed after the kill carries the same id).
    ids_per_detection = Counter(payload(record).detection_event_id for record in by_id(scored).values())
    assert set(ids_per_detection.values()) == {1}
    assert ids_per_trip == {plan.trip_id: 1 for plan in plans}
    assert all(payload(record).reason == "complete" for record in trips)
    # Every detection scored under exactly one id, the same on both sides of the kill.
    detection_per_id = {payload(record).event_id: payload(record).detection_event_id for record in scored}
    assert len(detection_per_id) == TRIPS * 4
    assert set(detection_per_id.values()) == {detection.event_id for plan in plans for detection in plan.detections}
    with TopicReader(kafka_bootstrap, DRIVER_SCORES, topic_prefix) as driver_reader:
        drivers: list[Record] = []
        read_records(
            driver_reader, drivers, lambda records: sum(payload(record).trips == TRIPS // 3 for record in records) >= 3
        )
    final = {record.key: payload(record) for record in drivers if payload(record).trips == TRIPS // 3}
    assert set(final) == {"driver-0", "driver-1", "driver-2"}
    assert all(message.revision == TRIPS // 3 for message in final.values())


def test_garbage_goes_to_dead_letters_and_a_lost_upload_closes_the_trip_incomplete(
    scoring: ScoringProcess, producer: EventProducer, kafka_bootstrap: str, topic_prefix: str
) -> None:
    scoring.start()
    producer.publish_raw(DETECTIONS.name(topic_prefix), b"trip-garbage", b"\xff\x00 not a protobuf", []).result(30)
    lost = plan_trip("trip-lost", "driver-9", [[0], [], [1]])
    del lost.segments[1]  # the upload with sequence 1 never arrives
    publish_plan(producer, lost)
    after = plan_trip("trip-after", "driver-9", [[2]])
    publish_plan(producer, after)

    with TopicReader(kafka_bootstrap, DEAD_LETTERS, topic_prefix) as dead_reader:
        letters: list[Record] = []
        read_records(dead_reader, letters, lambda records: len(records) >= 1)
    assert payload(letters[0]).source_topic == DETECTIONS.name(topic_prefix)
    assert payload(letters[0]).service == "scoring"

    with TopicReader(kafka_bootstrap, TRIP_SCORES, topic_prefix) as trip_reader:
        trips: list[Record] = []
        read_records(
            trip_reader, trips, lambda records: {record.key for record in records} == {"trip-lost", "trip-after"}
        )
    scores = {record.key: payload(record) for record in trips}
    assert scores["trip-after"].reason == "complete"
    assert scores["trip-lost"].reason == "closed-incomplete"
    assert list(scores["trip-lost"].missing_sequences) == [1]
    assert scores["trip-lost"].uploads == 2
    assert 'michi_scoring_trips_closed_total{reason="closed-incomplete"} 1.0' in scoring.metrics()
    assert '"trip closed"' in scoring.log()


def test_healthz_and_metrics_are_served(scoring: ScoringProcess) -> None:
    scoring.start()
    assert httpx.get(f"http://127.0.0.1:{scoring.port}/healthz", timeout=5).json()["status"] == "ok"
    assert httpx.get(f"http://127.0.0.1:{scoring.port}/readyz", timeout=5).json()["status"] == "ready"
    assert "michi_scoring_detections_scored_total" in scoring.metrics()


def test_trip_state_is_recovered_from_the_changelog_after_kill_9(
    scoring: ScoringProcess, producer: EventProducer, kafka_bootstrap: str, topic_prefix: str
) -> None:
    plan = plan_trip("trip-split", "driver-7", [[0], [1], [2], [0, 1]])
    first_half = TripPlan(plan.trip_id, plan.driver_id, plan.detections[:2], plan.segments[:2])
    second_half = TripPlan(plan.trip_id, plan.driver_id, plan.detections[2:], plan.segments[2:])
    scoring.start()
    publish_plan(producer, first_half)
    wait_until_consumed(kafka_bootstrap, topic_prefix)
    scoring.kill()
    scoring.start()
    # Committed offsets skip the first half: only the recovered table knows it.
    publish_plan(producer, second_half)
    publish_plan(producer, first_half)  # and a redelivery of it must still be recognised
    with TopicReader(kafka_bootstrap, TRIP_SCORES, topic_prefix) as trip_reader:
        trips: list[Record] = []
        read_records(trip_reader, trips, lambda records: len(records) >= 1)
        wait_until_consumed(kafka_bootstrap, topic_prefix)
        trips.extend(trip_reader.poll(1.0))
    assert len(trips) == 1
    score = payload(trips[0])
    assert score.reason == "complete" and score.uploads == 4
    assert score.points == pytest.approx(3.0 + 3.0 + 2.0 + 3.0 + 3.0)
    assert 'michi_scoring_duplicates_ignored_total{kind="detection"} 2.0' in scoring.metrics()
