"""Faults beyond kill -9, on one `michi up --simulate 2` as a user runs it.

While the simulated fleet streams: poisoned records (garbage bytes, a valid protobuf of the wrong type, an
empty value under junk headers, a record of the right type with nothing in it) on every topic a service
consumes, then the supervised Kafka broker killed with SIGKILL (`michi up` starts it again), then poison
again, then the supervised redis-server killed the same way. Each consuming service dead-letters each poison with a machine-readable reason and commits past it;
no service is restarted but by its own guard after the broker's restart (below); and every upload ingest
accepted (a 2xx to the device) reaches the downstream topics exactly once after dedupe by event_id.

After a broker restart faust-streaming now and then hands over a record past one it skipped, or hangs in its
table recovery. The stream workers' guards stop such a worker without acknowledging (exit 75: `michi.bus.streams`'
offset-gap guard, `michi.bus.stalls.StreamWatch`) and `michi up` restarts it, which redelivers from the committed
offsets. So a faust worker (inference, scoring) may restart once after the broker was killed, with one of those
reasons in its log; any other restart, or a second one, fails the test, and what was accepted must still arrive
exactly once.

"Accepted" is what the device was told: ingest's request spans (`.michi/traces/ingest.jsonl`, every trace is
recorded on a `michi up` home) with outcome `accepted` (202) or `duplicate` (200). While the broker is down
ingest answers 503 `broker-unavailable` and the device retries; such an attempt may still have reached the
topic (Kafka stored it, the acknowledgement came too late), so `michi.uploads.v1` may hold an upload whose
every attempt was refused (the device gave up): it is processed like any other, never counted as accepted.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from google.protobuf.message import Message
from prometheus_client.parser import text_string_to_metric_families

from michi.bus.catalog import (
    ALERTS,
    DEAD_LETTERS,
    DETECTIONS,
    LABEL_REQUESTS,
    LABELS,
    MEDIA,
    MODEL_ROLLOUTS,
    PREDICTIONS,
    TRIP_SCORES,
    TRIP_SEGMENTS,
    UPLOADS,
    TopicSpec,
)
from michi.bus.codec import UndecodableMessage, decode_message
from michi.bus.headers import CONTENT_TYPE, read_headers
from michi.bus.reader import Record, TopicReader
from michi.bus.redelivery import EXIT_REDELIVER
from michi.contracts import stable_event_id
from michi.contracts.v1 import inference_pb2, operations_pb2
from michi.infra.kafka import broker_answers
from michi.infra.processes import pid_is_alive, wait_until
from michi.infra.redis import redis_answers
from michi.simulator import SimulationConfig
from services.scoring.adapters.topics import LABELS_BY_TRIP, TRIP_SCORES_BY_DRIVER
from services.scoring.domain.trip import REASON_COMPLETE, trip_score_event_id

from .kafka_support import wait_until_committed
from .platform_support import (
    SERVICE_PORT_VARIABLES,
    SIMULATED_DEVICES,
    accepted_since,
    every_device_streams,
    michi_up,
    pid_with,
    platform_environment,
    service_pids,
)

PREFIX = "michi."
# Simulated seconds the fleet drives (`--duration`, at real time, trips not shortened): each dashcam drives one
# trip cut at the end, so it streams from start to end (its trip ends after the broker is back and is scored),
# and the fleet stops on its own, so the uploads can be counted once everything is quiet.
FLEET_SECONDS = 130
KAFKA_BACK_WITHIN_S = 60.0
REDIS_BACK_WITHIN_S = 10.0
# After the broker answers again, each service dead-letters the new poison and commits past it within this
# (a faust worker stopped by its guard: up to 50 s to be judged stalled, then a restart and a table recovery).
RECOVERED_WITHIN_S = 120.0
# The services that run on faust, and what their guards log when they stop one after a broker restart.
FAUST_SERVICES = ("inference", "scoring")
GUARD_REASONS = ("offset gap on ", "table recovery ", "no progress for ")
# Every service consumes its topics in the group `<prefix><service>` (faust app ids and plain consumers alike).
CONSUMED_BY: dict[TopicSpec, tuple[str, ...]] = {
    UPLOADS: ("inference", "camera"),
    MEDIA: ("camera",),
    DETECTIONS: ("scoring", "warehouse", "rollouts"),
    PREDICTIONS: ("warehouse", "monitor"),
    TRIP_SEGMENTS: ("scoring", "rollouts"),
    LABEL_REQUESTS: ("annotation", "monitor", "rollouts"),
    LABELS: ("scoring", "trainer", "monitor", "rollouts"),
    TRIP_SCORES: ("scoring",),
    ALERTS: ("trainer", "rollouts"),
    LABELS_BY_TRIP: ("scoring",),
    TRIP_SCORES_BY_DRIVER: ("scoring",),
    # Not in a group: every inference worker reads the whole compacted topic (`adapters/plans.py`).
    MODEL_ROLLOUTS: ("inference",),
}
# Consumed but not poisoned here: the dead letters the watch below reads (the rollout controller counts each arm's
# inference failures from them; a poison there is dead-lettered like any other, by the same kit loop).
UNPOISONED: dict[TopicSpec, tuple[str, ...]] = {DEAD_LETTERS: ("rollouts",)}
# What each kind of poison is, and the reason the shared decoder (`michi.bus.codec`) gives it.
CODEC_REASONS = {"garbage": "decode-error", "wrong-type": "schema-mismatch", "empty-junk-headers": "empty-value"}
# A record of the right type with nothing but an event_id: decodes, and is refused by the consumer itself where
# its contract says so. (Scoring takes a detection's, segment's or trip score's trip from the record key, so a
# hollow one of those is an input of the trip the key names; an alert of no kind is not a retrain alert. The monitor
# reads only random-QA requests and labels that say why they were asked for: a hollow one says neither, and is
# skipped, counted in michi_monitor_labels_skipped_total.)
HOLLOW_REASONS = {
    (UPLOADS, "inference"): "schema-violation",
    (UPLOADS, "camera"): "schema-violation",
    (MEDIA, "camera"): "schema-violation",
    (PREDICTIONS, "warehouse"): "schema-violation",
    (PREDICTIONS, "monitor"): "schema-violation",
    (DETECTIONS, "warehouse"): "schema-violation",
    (LABELS, "scoring"): "schema-violation",
    (LABELS, "trainer"): "schema-violation",
    (LABELS_BY_TRIP, "scoring"): "schema-violation",
    (LABEL_REQUESTS, "annotation"): "invalid-request",
}
HeaderList = list[tuple[str, bytes | None]] | None


@dataclass(frozen=True)
class Poison:
    spec: TopicSpec
    kind: str
    key: bytes
    partition: int
    offset: int
    # service -> the reason its dead letter must give
    reasons: dict[str, str]


def poison_records(spec: TopicSpec, tag: str) -> list[tuple[str, bytes, HeaderList, dict[str, str]]]:
    """(kind, value, headers, service -> reason) of each poison for one topic."""
    wrong_type = operations_pb2.DeadLetter(event_id=f"poison-{tag}", reason="poison").SerializeToString()
    records: list[tuple[str, bytes, HeaderList]] = [
        ("garbage", b"\xff\xfe\xfd\x7f poison", None),
        ("wrong-type", wrong_type, [("content-type", CONTENT_TYPE.encode()), ("schema", b"michi.v1.DeadLetter")]),
        ("empty-junk-headers", b"", [("schema", b"\xff\xfe"), ("content-type", None), ("\xe9\u2603", b"\x00\xff")]),
    ]
    poisons = []
    for kind, value, headers in records:
        # The poison is what its name says: the shared decoder refuses it for that reason.
        with pytest.raises(UndecodableMessage) as refused:
            decode_message(spec, value, read_headers(headers))
        assert refused.value.reason == CODEC_REASONS[kind]
        poisons.append((kind, value, headers, dict.fromkeys(CONSUMED_BY[spec], CODEC_REASONS[kind])))
    hollow = {service: reason for (target, service), reason in HOLLOW_REASONS.items() if target is spec}
    if hollow:
        message: Message = spec.value_type(event_id=f"poison-{tag}-hollow")  # type: ignore[call-arg]
        headers = [("content-type", CONTENT_TYPE.encode()), ("schema", spec.schema.encode())]
        poisons.append(("hollow", message.SerializeToString(), headers, hollow))
    return poisons


def publish_poison(bootstrap: str, tag: str, timeout: float = 60.0) -> list[Poison]:
    """Every poison on every consumed topic, each acknowledged by the broker (sent again while it is not there)."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    pending = {
        f"poison-{tag}-{spec.base_name}-{kind}".encode(): (spec, kind, value, headers, reasons)
        for spec in CONSUMED_BY
        for kind, value, headers, reasons in poison_records(spec, tag)
    }
    stored: dict[bytes, tuple[int, int]] = {}

    def delivered(error: object, record: object) -> None:
        if error is None:
            stored[record.key()] = (record.partition(), record.offset())  # type: ignore[attr-defined]

    deadline = time.monotonic() + timeout
    while pending.keys() - stored.keys():
        assert time.monotonic() < deadline, f"poison not acknowledged within {timeout:.0f} s"
        for key in pending.keys() - stored.keys():
            spec, _, value, headers, _ = pending[key]
            producer.produce(spec.name(PREFIX), value=value, key=key, headers=headers, on_delivery=delivered)  # type: ignore[arg-type]
        producer.flush(max(1.0, deadline - time.monotonic()))
    return [Poison(spec, kind, key, *stored[key], reasons) for key, (spec, kind, _, _, reasons) in pending.items()]


@dataclass
class DeadLetterWatch:
    """Reads `michi.dead-letters.v1` as it grows: each letter by (service, topic, partition, offset)."""

    reader: TopicReader
    letters: dict[tuple[str, str, int, int], operations_pb2.DeadLetter] = field(default_factory=dict)
    seen_at: dict[tuple[str, str, int, int], float] = field(default_factory=dict)
    event_ids: dict[tuple[str, str, int, int], set[str]] = field(default_factory=lambda: defaultdict(set))

    def poll(self, timeout: float = 0.5) -> bool:
        """Read what arrived (False, so `poll() or condition` reads and then judges)."""
        for record in self.reader.poll(timeout):
            letter: operations_pb2.DeadLetter = record.message  # type: ignore[assignment]
            place = (letter.service, letter.source_topic, letter.partition, letter.offset)
            self.letters.setdefault(place, letter)
            self.seen_at.setdefault(place, time.time())
            self.event_ids[place].add(letter.event_id)
        return False

    def missing(self, poisons: Iterable[Poison], services: Iterable[str] | None = None) -> list[tuple[str, Poison]]:
        wanted = set(services) if services is not None else None
        return [
            (service, poison)
            for poison in poisons
            for service in poison.reasons
            if (wanted is None or service in wanted)
            and (service, poison.spec.name(PREFIX), poison.partition, poison.offset) not in self.letters
        ]


def committed_past(bootstrap: str, poisons: Iterable[Poison], services: Iterable[str] | None = None) -> list[str]:
    """What is not committed past its poison yet, as 'group topic[partition] committed/poison offset'."""
    behind = []
    places: dict[str, set[tuple[str, int, int]]] = defaultdict(set)
    for poison in poisons:
        if poison.spec is MODEL_ROLLOUTS:
            continue  # read without a group
        for service in poison.reasons:
            if services is None or service in services:
                places[f"{PREFIX}{service}"].add((poison.spec.name(PREFIX), poison.partition, poison.offset))
    for group, wanted in places.items():
        asking = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        try:
            offsets = {
                (item.topic, item.partition): item.offset
                for item in asking.committed([TopicPartition(topic, number) for topic, number, _ in wanted], timeout=10)
            }
        finally:
            asking.close()
        behind += [
            f"{group} {topic}[{number}] {offsets.get((topic, number))}/{offset}"
            for topic, number, offset in sorted(wanted)
            if offsets.get((topic, number), -1) <= offset
        ]
    return behind


def consumed_topics(bootstrap: str) -> dict[str, set[str]]:
    """Each service's topics, from its group's live assignment (faust's own internal topics left out)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    groups = sorted({f"{PREFIX}{service}" for services in CONSUMED_BY.values() for service in services})
    topics = {}
    for group, future in admin.describe_consumer_groups(groups).items():
        described = future.result(10)
        topics[group.removeprefix(PREFIX)] = {
            part.topic
            for member in described.members
            for part in member.assignment.topic_partitions
            if not part.topic.endswith("-changelog") and "-__assignor-__" not in part.topic
        }
    return topics


@dataclass(frozen=True)
class Answer:
    """What ingest answered one `POST /v1/uploads` of a simulated device (from its request span)."""

    device_id: str
    upload_id: str
    outcome: str
    reason: str
    started_at: float


def ingest_answers(home: Path) -> list[Answer]:
    answers = []
    for line in (home / "traces" / "ingest.jsonl").read_text().splitlines():
        span = json.loads(line)
        attributes = span["attributes"]
        if span["name"] == "POST /v1/uploads" and attributes.get("michi.ingest.device_id") in SIMULATED_DEVICES:
            answers.append(
                Answer(
                    attributes["michi.ingest.device_id"],
                    attributes["michi.ingest.upload_id"],
                    attributes["michi.ingest.outcome"],
                    attributes.get("michi.ingest.reason", ""),
                    span["start_ns"] / 1e9,
                )
            )
    return answers


def next_upload_at(home: Path) -> float:
    """When a simulated device sends its next upload (each sends one every `upload_seconds`, paced by the clock)."""
    period = SimulationConfig().upload_seconds
    latest: dict[str, float] = {}
    for line in (home / "traces" / "ingest.jsonl").read_text().splitlines():
        span = json.loads(line)
        device = span["attributes"].get("michi.ingest.device_id")
        if span["name"] == "POST /v1/uploads" and device in SIMULATED_DEVICES:
            latest[device] = max(latest.get(device, 0.0), span["start_ns"] / 1e9)
    soon = time.time() + 2.0
    return min(last + period * math.ceil((soon - last) / period) for last in latest.values())


def ingest_counts(url: str) -> dict[str, float]:
    """`michi_ingest_uploads_total` by outcome (refusals summed)."""
    counts: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "michi_ingest_uploads_total":
                counts[sample.labels["outcome"]] += sample.value
    return counts


def read_all(bootstrap: str, spec: TopicSpec) -> list[Record]:
    with TopicReader(bootstrap, spec) as reader:
        return reader.read_to_end(timeout=60)


def distinct_ids(records: Iterable[Record]) -> dict[str, set[str]]:
    """event_ids per upload_id."""
    ids: dict[str, set[str]] = defaultdict(set)
    for record in records:
        ids[record.message.lineage.upload_id].add(record.message.event_id)  # type: ignore[attr-defined]
    return ids


@pytest.mark.timeout(420)
def guard_stops(home: Path, since: float) -> dict[str, str]:
    """The faust workers a guard stopped after `since` (service -> the reason it logged); fails on any other stop
    without acknowledging, on a second stop of one worker, and on a stop by any other service."""
    stops: dict[str, list[str]] = {}
    for log_path in sorted((home / "logs").glob("*.log")):
        for line in log_path.read_text(errors="replace").splitlines():
            if "stopping without acknowledging" not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if datetime.fromisoformat(record["time"]).timestamp() >= since:
                stops.setdefault(str(record.get("service")), []).append(str(record.get("reason")))
    for service, reasons in stops.items():
        assert service in FAUST_SERVICES and len(reasons) == 1, stops
        assert reasons[0].startswith(GUARD_REASONS), stops
    return {service: reasons[0] for service, reasons in stops.items()}


def test_poison_on_every_consumed_topic_and_a_killed_broker_lose_and_double_nothing(tmp_path: Path) -> None:
    home = tmp_path / ".michi"
    environment = platform_environment(home)
    # The monitor commits a window's rows when the window closes (full, or idle): small and quick windows, so
    # it commits everything within the waits below at this fleet's rate of predictions.
    environment["MICHI_MONITOR_WINDOW_ROWS"] = "200"
    environment["MICHI_MONITOR_WINDOW_IDLE_S"] = "5"
    bootstrap = f"127.0.0.1:{environment['MICHI_KAFKA_PORT']}"
    redis_url = f"redis://127.0.0.1:{environment['MICHI_REDIS_PORT']}/0"
    urls = {name: f"http://127.0.0.1:{environment[variable]}" for name, variable in SERVICE_PORT_VARIABLES.items()}
    figures: list[str] = []
    options = ("--duration", str(FLEET_SECONDS), "--no-short-first-trips")
    with michi_up(environment, home, tmp_path / "up.log", *options) as up:
        pids = service_pids(home)
        assert all(len(found) == 1 for found in pids.values()), pids
        every_device_streams(bootstrap, up.launched, timeout=60)
        # The topics each service consumes, from the groups themselves: the poison covers every one of them.
        expected_topics: dict[str, set[str]] = defaultdict(set)
        for spec, services in (*CONSUMED_BY.items(), *UNPOISONED.items()):
            for service in services:
                if spec is not MODEL_ROLLOUTS:
                    expected_topics[service].add(spec.name(PREFIX))
        # A service that is still joining its group (a slow start on a busy machine) holds no partition yet.
        assert wait_until(lambda: consumed_topics(bootstrap) == expected_topics, 90, 1.0), consumed_topics(bootstrap)

        with TopicReader(bootstrap, DEAD_LETTERS) as dead_letter_reader:
            letters = DeadLetterWatch(dead_letter_reader)

            # 1. Poison while the fleet streams: dead-lettered with its reason, committed past.
            poisoned_at = time.time()
            before = publish_poison(bootstrap, "before")
            assert wait_until(lambda: letters.poll() or not letters.missing(before), 90, 0.1), [
                (service, poison.spec.base_name, poison.kind) for service, poison in letters.missing(before)
            ]
            assert wait_until(lambda: not committed_past(bootstrap, before), 60, 0.5), committed_past(bootstrap, before)
            figures.append(f"poison before: every dead letter {time.time() - poisoned_at:.1f} s after publishing")

            # 2. The broker dies mid-stream, just before a device's next upload (so that upload waits for the
            # broker, and is answered 503 if it is not back within ingest's publish timeout); `michi up` starts it.
            kafka_pid = pid_with(str((home / "kafka").resolve()))
            assert kafka_pid is not None
            time.sleep(max(0.0, next_upload_at(home) - 1.0 - time.time()))
            os.kill(kafka_pid, signal.SIGKILL)
            killed_at = time.time()
            assert wait_until(lambda: broker_answers(bootstrap, timeout=1), KAFKA_BACK_WITHIN_S, 0.2), (
                f"Kafka not back within {KAFKA_BACK_WITHIN_S:.0f} s; logs in {home / 'logs'}"
            )
            back_at = time.time()
            assert not pid_is_alive(kafka_pid) and pid_with(str((home / "kafka").resolve())) not in (None, kafka_pid)
            figures.append(f"broker down {back_at - killed_at:.1f} s (SIGKILL to a metadata answer)")

            # Each service makes progress again: it dead-letters new poison and commits past it.
            after = publish_poison(bootstrap, "after")
            recovered: dict[str, float] = {}

            def every_service_recovered() -> bool:
                letters.poll()
                for service in sorted({service for poison in after for service in poison.reasons} - set(recovered)):
                    if not letters.missing(after, [service]) and not committed_past(bootstrap, after, [service]):
                        recovered[service] = time.time()
                return len(recovered) == len(pids) - 1  # ingest consumes nothing

            assert wait_until(every_service_recovered, RECOVERED_WITHIN_S, 0.5), (
                f"recovered: {sorted(recovered)}; missing dead letters "
                f"{[(service, poison.spec.base_name, poison.kind) for service, poison in letters.missing(after)]}; "
                f"not committed past: {committed_past(bootstrap, after)}; logs in {home / 'logs'}"
            )
            figures += [
                f"{service} progressing again {at - back_at:.1f} s after the broker was back"
                for service, at in sorted(recovered.items(), key=lambda item: item[1])
            ]

            # Every letter is the only one of its poison after dedupe (a redelivery repeats its event_id).
            letters.poll()
            for poison in before + after:
                for service, reason in poison.reasons.items():
                    place = (service, poison.spec.name(PREFIX), poison.partition, poison.offset)
                    letter = letters.letters[place]
                    assert (letter.reason, letter.key, letters.event_ids[place]) == (
                        reason,
                        poison.key,
                        {stable_event_id("dead-letter", *place)},
                    ), (poison, letter)

        # 3. redis-server dies too, just before an upload; `michi up` starts it again on its port and data.
        with redis.Redis.from_url(redis_url) as client:
            redis_pid = int(client.info("server")["process_id"])
        time.sleep(max(0.0, next_upload_at(home) - 0.3 - time.time()))
        os.kill(redis_pid, signal.SIGKILL)
        redis_killed_at = time.time()
        assert wait_until(lambda: redis_answers(redis_url), REDIS_BACK_WITHIN_S, 0.1)
        figures.append(f"redis-server down {time.time() - redis_killed_at:.1f} s")

        # 4. The fleet stops on its own; once ingest is quiet, count.
        def quiet() -> bool:
            first = ingest_counts(urls["ingest"])
            time.sleep(8)
            return time.time() > up.ready_at + FLEET_SECONDS and ingest_counts(urls["ingest"]) == first

        assert wait_until(quiet, FLEET_SECONDS + 120, 1), "the simulated fleet did not finish"
        time.sleep(1.5)  # ingest's spans are exported every 0.5 s
        answers = ingest_answers(home)
        counts = ingest_counts(urls["ingest"])
        outcomes: dict[str, list[str]] = defaultdict(list)
        for answer in answers:
            outcomes[answer.upload_id].append(answer.outcome)
        accepted = {upload for upload, seen in outcomes.items() if {"accepted", "duplicate"} & set(seen)}
        refused_only = set(outcomes) - accepted
        # Every answer was recorded: the spans agree with ingest's own counters.
        assert [sum(seen.count(outcome) for seen in outcomes.values()) for outcome in ("accepted", "duplicate")] == [
            counts["accepted"],
            counts["duplicate"],
        ]
        # The fleet kept streaming: every device had uploads accepted that it sent after the broker was back.
        first_after_back: dict[str, float] = {}
        for answer in sorted(answers, key=lambda answer: answer.started_at):
            if answer.outcome in ("accepted", "duplicate") and answer.started_at > back_at:
                first_after_back.setdefault(answer.device_id, answer.started_at)
        assert set(first_after_back) == set(SIMULATED_DEVICES), first_after_back
        figures.append(
            f"ingest accepting again {min(first_after_back.values()) - back_at:.1f} s after the broker was back"
        )

        # Every accepted upload is on the uploads topic, once after dedupe; whatever else is there was refused.
        received = accepted_since(read_all(bootstrap, UPLOADS), up.launched)
        received_ids = distinct_ids(received)
        assert accepted <= set(received_ids), f"accepted, never published: {sorted(accepted - set(received_ids))}"
        assert set(received_ids) - accepted <= refused_only
        for upload, ids in received_ids.items():
            assert ids == {stable_event_id("upload", upload)}, (upload, ids)
        uploads = {record.message.lineage.upload_id: record.message.upload for record in received}  # type: ignore[attr-defined]

        # Inference: one segment per upload, predictions for each, no window predicted twice.
        wait_until_committed(bootstrap, f"{PREFIX}inference", [UPLOADS.name(PREFIX)], timeout=120)
        all_segments = read_all(bootstrap, TRIP_SEGMENTS)
        # The hollow uploads yielded nothing (a segment of no trip would be scoring's dead letter).
        assert all(record.message.lineage.trip_id for record in all_segments)  # type: ignore[attr-defined]
        segments = [
            record
            for record in all_segments
            if record.message.lineage.upload_id in uploads  # type: ignore[attr-defined]
        ]
        assert distinct_ids(segments) == {upload: {stable_event_id("trip-segment", upload)} for upload in uploads}
        predictions = [
            record
            for record in read_all(bootstrap, PREDICTIONS)
            if record.message.lineage.upload_id in uploads  # type: ignore[attr-defined]
        ]
        champion = defaultdict(set)
        by_window: dict[tuple[str, int], set[str]] = defaultdict(set)
        for record in predictions:
            prediction: inference_pb2.Prediction = record.message  # type: ignore[assignment]
            by_window[(prediction.lineage.window_id, prediction.variant)].add(prediction.event_id)
            if prediction.variant == inference_pb2.VARIANT_CHAMPION:
                champion[prediction.lineage.upload_id].add(prediction.event_id)
        assert set(champion) == set(uploads), f"uploads without a prediction: {set(uploads) - set(champion)}"
        assert all(len(ids) == 1 for ids in by_window.values()), {
            key: ids for key, ids in by_window.items() if len(ids) > 1
        }

        # Detections: exactly the ones the segments list.
        listed = {event for record in segments for event in record.message.detection_event_ids}  # type: ignore[attr-defined]
        trips = {upload.trip_id for upload in uploads.values()}
        found = {
            record.message.event_id  # type: ignore[attr-defined]
            for record in read_all(bootstrap, DETECTIONS)
            if record.message.lineage.trip_id in trips  # type: ignore[attr-defined]
        }
        assert found == listed

        # Scoring: every trip whose every slice was accepted is scored once, counting each slice once.
        sequences: dict[str, set[int]] = defaultdict(set)
        ended = set()
        for upload_id in accepted:
            upload = uploads[upload_id]
            sequences[upload.trip_id].add(upload.sequence)
            if upload.trip_end:
                ended.add(upload.trip_id)
        complete = {trip for trip in ended if sequences[trip] == set(range(max(sequences[trip]) + 1))}
        assert complete, f"no trip complete; accepted {len(accepted)} uploads"
        with TopicReader(bootstrap, TRIP_SCORES) as reader:
            scored = reader.read_until(
                lambda got: complete <= {record.message.lineage.trip_id for record in got},  # type: ignore[attr-defined]
                timeout=120,
            )
        trip_scores: dict[str, set[str]] = defaultdict(set)
        for record in scored:
            score = record.message
            if score.lineage.trip_id in trips:  # type: ignore[attr-defined]
                trip_scores[score.lineage.trip_id].add(score.event_id)  # type: ignore[attr-defined]
                if score.lineage.trip_id in complete:  # type: ignore[attr-defined]
                    assert (score.revision, score.reason, score.uploads, score.missing_sequence_count) == (  # type: ignore[attr-defined]
                        1,
                        REASON_COMPLETE,
                        len(sequences[score.lineage.trip_id]),  # type: ignore[attr-defined]
                        0,
                    ), score
        assert {trip: trip_scores.get(trip) for trip in complete} == {
            trip: {trip_score_event_id(trip, 1)} for trip in complete
        }

        # No consumer is stuck: each committed everything, answers ready, and none was restarted but by its guard.
        for service, topics in expected_topics.items():
            wait_until_committed(bootstrap, f"{PREFIX}{service}", sorted(topics), timeout=60)
        for name, url in urls.items():
            assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200, name
        guarded = guard_stops(home, since=killed_at)
        now_running = service_pids(home)
        assert {name: found for name, found in now_running.items() if name not in guarded} == {
            name: found for name, found in pids.items() if name not in guarded
        }
        figures.append(f"stopped by their guards after the broker's restart: {guarded or 'none'}")
        figures.append(
            f"uploads: {len(accepted)} accepted ({int(counts['accepted'])} first answers, "
            f"{int(counts['duplicate'])} duplicates), {len(received_ids)} on the topic in {len(received)} records, "
            f"{len(refused_only)} refused only; refusals {dict(Counter(a.reason for a in answers if a.reason))}; "
            f"{len(predictions)} prediction records of {len(by_window)} windows, {len(found)} detections, {len(complete)} complete trips scored "
            f"of {len(trips)}; {len(letters.letters)} dead letters"
        )
    output = (tmp_path / "up.log").read_text()
    # Once ready, `michi up` restarted the two servers that were killed and, at most once each, a faust worker its
    # guard stopped after the broker's restart; nothing else.
    exits = [json.loads(line) for line in output.splitlines() if "service exited; restarting" in line]
    restarted = [
        (exit["service"], exit["exit_code"])
        for exit in exits
        if datetime.fromisoformat(exit["time"]).timestamp() >= up.ready_at
    ]
    servers = [service for service, _ in restarted if service in ("kafka", "redis")]
    workers = sorted(service for service, _ in restarted if service not in ("kafka", "redis"))
    assert servers == ["kafka", "redis"], output[-4000:]
    assert workers == sorted(guarded), (guarded, output[-4000:])
    assert all(code == EXIT_REDELIVER for service, code in restarted if service in workers), restarted
    print("\n".join(figures))
