"""The scoring service on a real Kafka against hostile input: one device cannot stop scoring for the fleet.

A device with a far sequence (100000 with `trip_end`, and 2**64 - 1), a trip flooded with more
detections than a trip holds, and a state record an earlier version left in the changelog (every
segment kept, one at sequence 100000): each trip closes with a small state, the flood goes to dead
letters, the worker never restarts, `/readyz` stays 200, and the trips after them are scored.
"""

from __future__ import annotations

import time

import httpx
import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from michi.bus.catalog import DEAD_LETTERS, DETECTIONS, TRIP_SCORES, TRIP_SEGMENTS
from michi.bus.producer import EventProducer
from michi.bus.reader import Record, TopicReader
from michi.contracts import stable_event_id, timestamp_from_seconds
from michi.contracts.v1 import common_pb2, inference_pb2
from services.scoring.domain.limits import MAX_DETECTIONS_PER_TRIP

from .test_scoring_service import (
    START,
    ScoringProcess,
    payload,
    plan_trip,
    publish_plan,
    read_records,
    scoring,
    wait_until_consumed,
)

__all__ = ["scoring"]  # the service fixture of test_scoring_service, used here too

pytestmark = pytest.mark.integration

FLOOD = MAX_DETECTIONS_PER_TRIP + 50


def hostile_segment(trip_id: str, sequence: int, *, trip_end: bool = False) -> inference_pb2.TripSegment:
    return inference_pb2.TripSegment(
        event_id=stable_event_id("hostile-segment", trip_id, sequence),
        occurred_at=timestamp_from_seconds(START + 10),
        lineage=common_pb2.Lineage(trip_id=trip_id, driver_id="driver-hostile", device_id="device-hostile"),
        sequence=sequence,
        trip_end=trip_end,
        distance_m=100.0,
        duration_s=10.0,
        span=common_pb2.TimeSpan(started_at=timestamp_from_seconds(START), ended_at=timestamp_from_seconds(START + 10)),
    )


def flood_detection(trip_id: str, index: int) -> inference_pb2.Detection:
    return inference_pb2.Detection(
        event_id=stable_event_id("flood", trip_id, index),
        occurred_at=timestamp_from_seconds(START + index),
        lineage=common_pb2.Lineage(trip_id=trip_id, driver_id="driver-hostile", device_id="device-hostile"),
        event_type=common_pb2.EVENT_TYPE_HARSH_BRAKING,
        peak_value=3.2,
        variant=inference_pb2.VARIANT_CHAMPION,
    )


def sample(metrics: str, name: str) -> float:
    """The value of one sample in a Prometheus text page."""
    (line,) = [line for line in metrics.splitlines() if line.startswith(name + " ")]
    return float(line.rsplit(" ", 1)[1])


def trip_scores_for(bootstrap: str, prefix: str, trip_ids: set[str], timeout: float = 90.0) -> dict[str, object]:
    with TopicReader(bootstrap, TRIP_SCORES, prefix) as reader:
        records: list[Record] = []
        read_records(reader, records, lambda got: {record.key for record in got} >= trip_ids, timeout=timeout)
    return {record.key: payload(record) for record in records}


def test_a_far_sequence_and_a_flood_close_their_trips_small_and_the_fleet_is_still_scored(
    scoring: ScoringProcess, producer: EventProducer, kafka_bootstrap: str, topic_prefix: str
) -> None:
    scoring.start()
    for sequence, trip_end in ((0, False), (100_000, True), (2**64 - 1, False)):
        producer.publish(TRIP_SEGMENTS, "trip-hostile", hostile_segment("trip-hostile", sequence, trip_end=trip_end))
    producer.publish(TRIP_SEGMENTS, "trip-flood", hostile_segment("trip-flood", 0))
    for index in range(FLOOD):
        producer.publish(DETECTIONS, "trip-flood", flood_detection("trip-flood", index))
    producer.flush()
    publish_plan(producer, plan_trip("trip-after", "driver-1", [[0], [1]]))

    scores = trip_scores_for(kafka_bootstrap, topic_prefix, {"trip-hostile", "trip-flood", "trip-after"})
    hostile, flood, after = scores["trip-hostile"], scores["trip-flood"], scores["trip-after"]
    assert (hostile.reason, hostile.uploads, hostile.revision) == ("closed-incomplete", 3, 1)  # type: ignore[attr-defined]
    assert list(hostile.missing_sequences) == list(range(1, 1001))  # type: ignore[attr-defined]
    assert (flood.reason, flood.uploads) == ("closed-at-limit", 1)  # type: ignore[attr-defined]
    assert sum(count.count for count in flood.event_counts) == MAX_DETECTIONS_PER_TRIP  # type: ignore[attr-defined]
    assert after.reason == "complete"  # type: ignore[attr-defined]

    with TopicReader(kafka_bootstrap, DEAD_LETTERS, topic_prefix) as dead_reader:
        letters: list[Record] = []
        read_records(dead_reader, letters, lambda got: len(got) >= FLOOD - MAX_DETECTIONS_PER_TRIP)
        letters.extend(dead_reader.poll(1.0))
    assert len(letters) == FLOOD - MAX_DETECTIONS_PER_TRIP
    assert {payload(letter).reason for letter in letters} == {"state-limit"}
    assert {payload(letter).source_topic for letter in letters} == {DETECTIONS.name(topic_prefix)}
    assert all(payload(letter).error.startswith("detections: trip holds 400 detections") for letter in letters)

    wait_until_consumed(kafka_bootstrap, topic_prefix)
    metrics = scoring.metrics()
    assert f'michi_scoring_state_limits_total{{bound="detections"}} {FLOOD - MAX_DETECTIONS_PER_TRIP}.0' in metrics
    assert 'michi_scoring_trips_closed_total{reason="closed-at-limit"} 1.0' in metrics
    # Every trip state written stayed within the bound (the flooded trip's grew to about 130 KB).
    written = sample(metrics, 'michi_scoring_state_bytes_count{table="trips"}')
    assert written > 0
    assert sample(metrics, 'michi_scoring_state_bytes_bucket{le="262144.0",table="trips"}') == written
    assert sample(metrics, 'michi_scoring_state_bytes_bucket{le="65536.0",table="trips"}') < written
    assert scoring.starts == 1 and scoring.process is not None and scoring.process.poll() is None
    assert httpx.get(f"http://127.0.0.1:{scoring.port}/readyz", timeout=5).json() == {
        "status": "ready",
        "service": "scoring",
        "ready": True,
        "checks": {"stream": "ok"},
    }

    # After a kill -9 the states come back from the changelog, and scoring goes on.
    scoring.kill()
    scoring.start()
    producer.publish_and_wait(TRIP_SEGMENTS, "trip-hostile", hostile_segment("trip-hostile", 100_000, trip_end=True))
    publish_plan(producer, plan_trip("trip-later", "driver-1", [[2]]))
    assert trip_scores_for(kafka_bootstrap, topic_prefix, {"trip-later"})["trip-later"].reason == "complete"  # type: ignore[attr-defined]
    wait_until_consumed(kafka_bootstrap, topic_prefix)
    assert 'michi_scoring_duplicates_ignored_total{kind="segment"} 1.0' in scoring.metrics()


def test_a_poisoned_state_an_earlier_version_left_in_the_changelog_closes_small_on_recovery(
    scoring: ScoringProcess, kafka_bootstrap: str, topic_prefix: str
) -> None:
    changelog = f"{topic_prefix}scoring-trips-changelog"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    futures = admin.create_topics([NewTopic(changelog, 2, 1, config={"cleanup.policy": "compact"})])
    futures[changelog].result(30)

    def segment(sequence: int, listed: list[str], trip_end: bool) -> dict[str, object]:
        return {
            "event_id": f"segment-{sequence}",
            "sequence": sequence,
            "trip_end": trip_end,
            "distance_m": 100.0,
            "duration_s": 10.0,
            "detection_event_ids": listed,
            "started_at": START,
            "ended_at": START + 10,
        }

    legacy = {
        "trip_id": "trip-legacy",
        "driver_id": "driver-legacy",
        "device_id": "device-legacy",
        "partition": 0,
        "segments": {"0": segment(0, ["d-lost"], False), "100000": segment(100_000, [], True)},
        "detections": {},
        "trip_end_sequence": 100_000,
        "trip_end_seen_at": time.time() - 1000.0,
        "last_activity_at": time.time() - 1000.0,
        "closure": None,
        "totals": None,
        "verdicts": {},
        "labels_applied": 0,
    }
    writer = Producer({"bootstrap.servers": kafka_bootstrap})
    writer.produce(changelog, key=orjson.dumps("trip-legacy"), value=orjson.dumps(legacy), partition=0)
    assert writer.flush(30) == 0

    scoring.start()
    score = trip_scores_for(kafka_bootstrap, topic_prefix, {"trip-legacy"})["trip-legacy"]
    assert (score.reason, score.uploads) == ("closed-incomplete", 2)  # type: ignore[attr-defined]
    assert list(score.missing_sequences) == list(range(1, 1001))  # type: ignore[attr-defined]
    metrics = scoring.metrics()
    assert 'michi_scoring_state_bytes_bucket{le="1024.0",table="trips"} 1.0' in metrics
    assert scoring.starts == 1 and scoring.process is not None and scoring.process.poll() is None
