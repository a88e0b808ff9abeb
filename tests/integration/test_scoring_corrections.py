"""Scoring closes the loop with human labels, on a real Kafka (`python -m services.scoring` subprocesses).

Covers: a label overturning a detection re-scores the closed trip and the driver
exactly once, through redelivery, a second label with the same verdict and a
kill -9 restart, and an adjudication reversal applies once; a missed-event label
adds an event; a label that arrives before its trip waits for it; a detection
that arrives after its trip closed re-scores it; bad labels go to dead letters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from michi.bus.catalog import DEAD_LETTERS, DETECTIONS, DRIVER_SCORES, LABELS, SCORED_EVENTS, TRIP_SCORES, TRIP_SEGMENTS
from michi.bus.producer import EventProducer
from michi.bus.reader import Record, TopicReader
from michi.contracts import stable_event_id, timestamp_from_seconds
from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2, scoring_pb2
from michi.infra.processes import free_port
from services.scoring.adapters.topics import LABELS_BY_TRIP, TRIP_SCORES_BY_DRIVER
from services.scoring.domain.trip import CHANGE_OVERTURNED, change_event_id, scored_event_id

from .test_scoring_service import (
    START,
    ScoringProcess,
    TripPlan,
    by_id,
    payload,
    plan_trip,
    publish_plan,
    read_records,
    scoring_environment,
)
from .test_scoring_service import wait_until_consumed as wait_until_consumed_inputs

pytestmark = pytest.mark.integration


@pytest.fixture
def scoring(kafka_bootstrap: str, topic_prefix: str, michi_home: Path, tmp_path: Path) -> Iterator[ScoringProcess]:
    port = free_port()
    environment = scoring_environment(kafka_bootstrap, topic_prefix, michi_home, port, trip_end_grace_s=2.0)
    service = ScoringProcess(environment, tmp_path / "scoring", port)
    try:
        yield service
    finally:
        service.stop()


def make_label(
    name: str,
    plan: TripPlan,
    event_type: int,
    detection: inference_pb2.Detection | None = None,
    *,
    source: int = labels_pb2.LABEL_SOURCE_CONSENSUS,
    at: float = START + 86_400,
) -> labels_pb2.Label:
    window_id = f"{plan.trip_id}-window-{detection.event_id if detection is not None else name}"
    return labels_pb2.Label(
        event_id=stable_event_id("test-label", plan.trip_id, name),
        occurred_at=timestamp_from_seconds(at),
        lineage=common_pb2.Lineage(
            window_id=window_id, trip_id=plan.trip_id, driver_id=plan.driver_id, device_id=f"device-{plan.driver_id}"
        ),
        event_type=event_type,  # type: ignore[arg-type]
        source=source,  # type: ignore[arg-type]
        annotators=["annotator-1", "annotator-2"],
        agreement=1.0,
        detection_event_id=detection.event_id if detection is not None else "",
        window=common_pb2.TimeSpan(
            started_at=timestamp_from_seconds(START + 30), ended_at=timestamp_from_seconds(START + 32)
        ),
    )


def publish_labels(producer: EventProducer, *labels: labels_pb2.Label) -> None:
    for future in [producer.publish(LABELS, label.lineage.window_id, label) for label in labels]:
        future.result(30)


def wait_until_consumed(bootstrap: str, prefix: str, timeout: float = 60.0) -> None:
    """Bounded wait until scoring committed the end of every topic it reads (it acks after its effects)."""
    inputs = (LABELS, LABELS_BY_TRIP, TRIP_SEGMENTS, TRIP_SCORES, TRIP_SCORES_BY_DRIVER)
    wait_until_consumed_inputs(bootstrap, prefix, timeout, inputs)


def wait_until_consumed_restarting(scoring: ScoringProcess, bootstrap: str, prefix: str, timeout: float = 90.0) -> None:
    """As `wait_until_consumed`, restarting the worker if it stopped for redelivery (exit 75), as `michi up` would."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            wait_until_consumed(bootstrap, prefix, timeout=15)
            return
        except AssertionError:
            scoring.restart_if_stopped_for_redelivery()
            if time.monotonic() > deadline:
                raise


def revisions(records: list[Record], trip_id: str) -> dict[int, scoring_pb2.TripScore]:
    """Trip scores of one trip by revision; one event id per revision (a replayed record has the same id)."""
    scores = [payload(record) for record in by_id(records).values() if record.key == trip_id]
    by_revision = {score.revision: score for score in scores}
    assert len(by_revision) == len(scores), f"two trip scores with one revision: {scores}"
    return by_revision


def test_a_label_overturning_a_detection_changes_the_trip_score_exactly_once(
    scoring: ScoringProcess, producer: EventProducer, kafka_bootstrap: str, topic_prefix: str
) -> None:
    # Harsh braking (3 points), harsh cornering (3) and speeding (2): 8 points on 2 km.
    plan = plan_trip("trip-labelled", "driver-l", [[0], [1, 2]])
    braking = plan.detections[0]
    overturn = make_label("consensus", plan, common_pb2.EVENT_TYPE_NORMAL, braking)
    again = make_label("consensus-again", plan, common_pb2.EVENT_TYPE_CONFOUNDER, braking, at=START + 90_000)
    reversal = make_label(
        "adjudication",
        plan,
        common_pb2.EVENT_TYPE_HARSH_BRAKING,
        braking,
        source=labels_pb2.LABEL_SOURCE_ADJUDICATION,
        at=START + 172_800,
    )
    scoring.start()
    publish_plan(producer, plan)
    trips: list[Record] = []
    scored: list[Record] = []
    drivers: list[Record] = []
    with (
        TopicReader(kafka_bootstrap, TRIP_SCORES, topic_prefix) as trip_reader,
        TopicReader(kafka_bootstrap, SCORED_EVENTS, topic_prefix) as scored_reader,
        TopicReader(kafka_bootstrap, DRIVER_SCORES, topic_prefix) as driver_reader,
    ):
        read_records(trip_reader, trips, lambda records: 1 in revisions(records, plan.trip_id))
        assert revisions(trips, plan.trip_id)[1].points == pytest.approx(8.0)

        publish_labels(producer, overturn)
        read_records(trip_reader, trips, lambda records: 2 in revisions(records, plan.trip_id))
        read_records(driver_reader, drivers, lambda records: any(payload(record).revision == 2 for record in records))
        read_records(
            scored_reader,
            scored,
            lambda records: any(payload(r).status == scoring_pb2.SCORED_EVENT_STATUS_OVERTURNED for r in records),
        )
        rescored = revisions(trips, plan.trip_id)[2]
        assert rescored.reason == f"label-overturned:{overturn.event_id}"
        assert rescored.points == pytest.approx(5.0)
        assert {(count.event_type, count.count) for count in rescored.event_counts} == {
            (common_pb2.EVENT_TYPE_HARSH_CORNERING, 1),
            (common_pb2.EVENT_TYPE_SPEEDING, 1),
        }
        (overturned,) = [payload(r) for r in scored if payload(r).status == scoring_pb2.SCORED_EVENT_STATUS_OVERTURNED]
        assert overturned.event_id == change_event_id(
            scored_event_id(braking.event_id, 1), CHANGE_OVERTURNED, overturn.event_id
        )
        assert (overturned.detection_event_id, overturned.lineage.window_id) == (
            braking.event_id,
            overturn.lineage.window_id,
        )
        driver = next(payload(record) for record in drivers if payload(record).revision == 2)
        assert (driver.trips, driver.points) == (1, pytest.approx(5.0))  # replaced, not added

        # The same label redelivered, a second label with the same verdict, then a kill -9 and the label again.
        publish_labels(producer, overturn, again)
        wait_until_consumed(kafka_bootstrap, topic_prefix)
        scoring.kill()
        scoring.start()
        publish_labels(producer, overturn)
        wait_until_consumed_restarting(scoring, kafka_bootstrap, topic_prefix)
        assert 'michi_scoring_duplicates_ignored_total{kind="label"} 1.0' in scoring.metrics()

        # Adjudication reverses the verdict: applied once, even when redelivered, and the older label
        # redelivered after it does not undo it.
        publish_labels(producer, reversal, reversal, overturn)
        read_records(trip_reader, trips, lambda records: 3 in revisions(records, plan.trip_id))
        wait_until_consumed(kafka_bootstrap, topic_prefix)
        read_records(driver_reader, drivers, lambda records: any(payload(record).revision == 3 for record in records))
        trips.extend(trip_reader.poll(1.0))
        scored.extend(scored_reader.poll(1.0))
        drivers.extend(driver_reader.poll(1.0))

    scores = revisions(trips, plan.trip_id)
    assert sorted(scores) == [1, 2, 3]
    assert scores[3].reason == f"label-confirmed:{reversal.event_id}"
    assert scores[3].points == pytest.approx(8.0)
    changes = [payload(r) for r in by_id(scored).values() if payload(r).reason != "detected"]
    assert sorted((change.status, change.reason) for change in changes) == [
        (scoring_pb2.SCORED_EVENT_STATUS_ACTIVE, f"label-confirmed:{reversal.event_id}"),
        (scoring_pb2.SCORED_EVENT_STATUS_OVERTURNED, f"label-overturned:{overturn.event_id}"),
    ]
    final = max((payload(record) for record in drivers), key=lambda score: score.revision)
    assert (final.revision, final.trips, final.points) == (3, 1, pytest.approx(8.0))


def test_missed_events_early_labels_late_detections_and_bad_labels(
    scoring: ScoringProcess, producer: EventProducer, kafka_bootstrap: str, topic_prefix: str
) -> None:
    missed = plan_trip("trip-missed", "driver-m", [[0], []])
    late = plan_trip("trip-late", "driver-m", [[0], [1]], start=START + 3600)
    withheld = late.detections.pop()  # listed by its segment, published only after the trip closed
    early = plan_trip("trip-early", "driver-e", [[0, 1]], start=START + 7200)
    early_label = make_label("before-the-trip", early, common_pb2.EVENT_TYPE_CONFOUNDER, early.detections[0])
    scoring.start()

    # Bad labels: undecodable bytes, and a label that names no trip.
    producer.publish_raw(LABELS.name(topic_prefix), b"window-x", b"\xff\x00 not a label", []).result(30)
    orphan = make_label("orphan", missed, common_pb2.EVENT_TYPE_HARSH_BRAKING)
    orphan.lineage.trip_id = ""
    publish_labels(producer, orphan)
    # A label that arrives before its trip: applied (to the trip state) before the trip is published.
    publish_labels(producer, early_label)
    wait_until_consumed(kafka_bootstrap, topic_prefix)
    publish_plan(producer, missed)
    publish_plan(producer, late)
    publish_plan(producer, early)

    trips: list[Record] = []
    scored: list[Record] = []
    with (
        TopicReader(kafka_bootstrap, TRIP_SCORES, topic_prefix) as trip_reader,
        TopicReader(kafka_bootstrap, SCORED_EVENTS, topic_prefix) as scored_reader,
    ):
        read_records(
            trip_reader,
            trips,
            lambda records: all(1 in revisions(records, plan.trip_id) for plan in (missed, late, early)),
        )
        assert revisions(trips, late.trip_id)[1].reason == "closed-incomplete"

        missed_label = make_label("missed-cornering", missed, common_pb2.EVENT_TYPE_HARSH_CORNERING)
        publish_labels(producer, missed_label)
        # The late detection (redelivered too) and a redelivered segment of the closed trip.
        for message, spec in ((withheld, DETECTIONS), (withheld, DETECTIONS), (late.segments[0], TRIP_SEGMENTS)):
            producer.publish(spec, late.trip_id, message).result(30)
        read_records(
            trip_reader,
            trips,
            lambda records: 2 in revisions(records, missed.trip_id) and 2 in revisions(records, late.trip_id),
        )
        wait_until_consumed(kafka_bootstrap, topic_prefix)
        trips.extend(trip_reader.poll(1.0))
        read_records(scored_reader, scored, lambda records: len(by_id(records)) >= 7)
        scored.extend(scored_reader.poll(1.0))

    added = revisions(trips, missed.trip_id)
    assert sorted(added) == [1, 2]
    assert added[2].reason == f"label-added:{missed_label.event_id}"
    assert (added[1].points, added[2].points) == (pytest.approx(3.0), pytest.approx(6.0))
    rescored = revisions(trips, late.trip_id)
    assert sorted(rescored) == [1, 2]
    assert (rescored[2].reason, rescored[2].points) == ("late-detection", pytest.approx(6.0))
    assert list(rescored[2].missing_sequences) == []
    early_scores = revisions(trips, early.trip_id)
    assert sorted(early_scores) == [1]  # the early label applied before the trip closed: no second revision
    assert early_scores[1].points == pytest.approx(3.0)

    statuses = {
        (payload(r).status, payload(r).reason) for r in by_id(scored).values() if payload(r).reason != "detected"
    }
    assert statuses == {
        (scoring_pb2.SCORED_EVENT_STATUS_ADDED, f"label-added:{missed_label.event_id}"),
        (scoring_pb2.SCORED_EVENT_STATUS_OVERTURNED, f"label-overturned:{early_label.event_id}"),
    }
    with TopicReader(kafka_bootstrap, DEAD_LETTERS, topic_prefix) as dead_reader:
        letters: list[Record] = []
        read_records(dead_reader, letters, lambda records: len(records) >= 2)
    assert {payload(letter).source_topic for letter in letters} == {LABELS.name(topic_prefix)}
    assert {payload(letter).reason for letter in letters} == {"decode-error", "schema-violation"}
    assert scoring.process is not None and scoring.process.poll() is None
