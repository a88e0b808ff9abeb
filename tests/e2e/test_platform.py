"""simulator → ingest → inference → scoring on the real broker, judged against the simulator's ground truth."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
from collections import Counter

import httpx
from prometheus_client.parser import text_string_to_metric_families

from michi.bus.catalog import DETECTIONS, LABELS, SCORED_EVENTS, TRIP_SCORES, TopicSpec
from michi.bus.producer import EventProducer
from michi.bus.reader import Record, TopicReader, end_offsets
from michi.cli.platform import register_simulated_devices
from michi.cli.status import collect_status
from michi.cli.tracing import find_trace
from michi.contracts import timestamp_to_seconds
from michi.contracts.v1 import common_pb2, inference_pb2, scoring_pb2, upload_pb2
from michi.device_client import UploadClient, send_fleet
from michi.infra.processes import wait_until
from michi.roads import RoadMap
from michi.settings import MichiSettings
from michi.simulator import FleetSimulator, GroundTruthEvent, SimulationConfig
from michi.warehouse import query as warehouse_query
from michi.windows.physics import PHYSICS_DATA_VERSION, PHYSICS_MODEL_VERSION

from .conftest import RunningPlatform

DEVICES = 10
DURATION_S = 900.0
HARSH_KINDS = {"harsh_braking", "harsh_acceleration", "harsh_cornering"}


def _simulate(platform: RunningPlatform) -> tuple[FleetSimulator, list[upload_pb2.Upload]]:
    config = SimulationConfig(
        devices=DEVICES,
        duration_s=DURATION_S,
        seed=11,
        trip_seconds=(180, 420),
        start_time=time.time() - DURATION_S - 120,
    )
    simulator = FleetSimulator(config, road_map=RoadMap.default())
    return simulator, list(simulator.uploads())


def _matches(detection: inference_pb2.Detection, event: GroundTruthEvent, slack: float = 2.0) -> bool:
    started = timestamp_to_seconds(detection.window.started_at)
    ended = timestamp_to_seconds(detection.window.ended_at)
    return (
        detection.lineage.device_id == event.device_id
        and started <= event.ended_at + slack
        and ended >= event.started_at - slack
    )


def _served_champion(platform: RunningPlatform) -> str | None:
    """The version inference serves as champion once the trainer's bootstrap chose one (None before)."""
    url = f"http://127.0.0.1:{platform.environment['MICHI_INFERENCE_PORT']}/metrics"
    try:
        text = httpx.get(url, timeout=5).text
    except httpx.HTTPError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "michi_inference_model_served"
                and sample.value == 1.0
                and labels.get("variant") == "champion"
                and labels.get("version") in ("1", PHYSICS_MODEL_VERSION)
            ):
                return labels["version"]
    return None


def test_fleet_to_scores(platform: RunningPlatform) -> None:
    # A fresh home: the trainer bootstrapped and inference swapped to its champion — the learned model,
    # or the physics baseline with the learned model in shadow when that is behind it on real drives.
    trainer = f"http://127.0.0.1:{platform.environment['MICHI_TRAINER_PORT']}"
    runs = httpx.get(f"{trainer}/v1/runs", timeout=10).json()["runs"]
    assert any(run["status"] == "succeeded" for run in runs), runs
    assert wait_until(lambda: _served_champion(platform) is not None, 60, 0.5), platform.log("inference")
    champion = _served_champion(platform)
    simulator, uploads = _simulate(platform)
    settings = MichiSettings(home=platform.home, database_url=platform.environment["MICHI_DATABASE_URL"])
    tokens = register_simulated_devices(settings, [profile.device_id for profile in simulator.devices])

    # A malformed upload in the middle of the fleet's traffic: refused at the door, the good ones go through.
    poisoned = upload_pb2.Upload()
    poisoned.CopyFrom(uploads[len(uploads) // 2])
    poisoned.upload_id = "poisoned-upload"
    poisoned.imu.accel_x[3] = math.nan

    async def drive() -> tuple[list[str], int]:
        client = UploadClient(platform.ingest_url)
        try:
            report = await send_fleet(uploads[: len(uploads) // 2], client, tokens, speed=None, concurrency=12)
            refused = await client.send(poisoned, tokens[poisoned.device_id])
            report_rest = await send_fleet(uploads[len(uploads) // 2 :], client, tokens, speed=None, concurrency=12)
            # Devices retry: the same uploads again are acknowledged as duplicates, not republished.
            retries = await send_fleet(uploads[:10], client, tokens, speed=None, concurrency=4)
            outcomes = [result.outcome for result in report.results + report_rest.results]
            assert {result.outcome for result in retries.results} == {"duplicate"}
            return outcomes, refused.status
        finally:
            await client.close()

    outcomes, refused_status = asyncio.run(drive())
    assert Counter(outcomes) == {"accepted": len(uploads)}
    assert refused_status == 422

    finished_trips = {trip.trip_id: trip for trip in simulator.trips}
    with TopicReader(platform.bootstrap, TRIP_SCORES, platform.prefix) as reader:
        trip_scores = reader.read_until(
            lambda got: {r.message.lineage.trip_id for r in got} >= set(finished_trips), timeout=240
        )
    scored_trips = {record.message.lineage.trip_id for record in trip_scores}
    assert scored_trips == set(finished_trips), (
        f"trips without a score: {set(finished_trips) - scored_trips}\n{platform.log('scoring')}"
    )
    assert len(trip_scores) == len(finished_trips), "one TripScore per trip"
    for record in trip_scores:
        score: scoring_pb2.TripScore = record.message  # type: ignore[assignment]
        truth = finished_trips[score.lineage.trip_id]
        assert 0.0 <= score.score <= 100.0
        assert abs(score.distance_km - truth.distance_km) <= max(0.1, 0.1 * truth.distance_km)

    detections = _read_all(platform, DETECTIONS)
    by_model = [record.message for record in detections if record.message.lineage.model_name == "michi-risk"]
    assert by_model and {detection.lineage.model_version for detection in by_model} == {champion}
    if champion == PHYSICS_MODEL_VERSION:
        assert {detection.lineage.data_version for detection in by_model} == {PHYSICS_DATA_VERSION}
    else:
        assert all(detection.lineage.data_version.startswith("ds-") for detection in by_model)
    harsh_truth = [event for event in simulator.ground_truth if event.kind in HARSH_KINDS]
    risky_truth = [event for event in simulator.ground_truth if event.risky]
    found = [event for event in harsh_truth if any(_matches(record.message, event) for record in detections)]  # type: ignore[arg-type]
    recall = len(found) / len(harsh_truth)
    false_detections = [
        record for record in detections if not any(_matches(record.message, event) for event in risky_truth)
    ]  # type: ignore[arg-type]
    simulated_minutes = DEVICES * DURATION_S / 60
    print(
        f"e2e: {len(uploads)} uploads, {len(finished_trips)} trips, {len(detections)} detections, "
        f"harsh recall {recall:.2f} ({len(found)}/{len(harsh_truth)}), {len(false_detections)} false detections "
        f"in {simulated_minutes:.0f} device-minutes"
    )
    assert len(harsh_truth) >= 10, "the scenario must inject enough events to judge"
    assert recall >= 0.9, f"recall {recall:.2f} ({len(found)}/{len(harsh_truth)})"
    assert len(false_detections) <= simulated_minutes / 10, (
        f"{len(false_detections)} false detections in {simulated_minutes:.0f} device-minutes"
    )

    # One scored event per detection, each event id once.
    scored = _read_all(platform, SCORED_EVENTS, expected=len(detections))
    assert sorted(record.message.detection_event_id for record in scored) == sorted(
        record.message.event_id for record in detections
    )
    assert len({record.message.event_id for record in scored}) == len(scored)

    # Redelivery: inference's detections arrive again; no score may change and no scored event is added.
    producer = EventProducer(platform.bootstrap, platform.prefix, client_id="e2e-redelivery")
    try:
        for record in detections[:20]:
            producer.publish(DETECTIONS, record.key, record.message)
        producer.flush()
    finally:
        producer.close()
    assert wait_until(lambda: collect_status(platform.bootstrap, platform.prefix).lag.get("scoring") == 0, 60, 1.0)
    assert len(_read_all(platform, SCORED_EVENTS)) == len(scored)
    assert len(_read_all(platform, TRIP_SCORES)) == len(trip_scores)

    # SREs follow one upload through every service: its trace spans ingest, inference and scoring.
    traced_upload = detections[0].message.lineage.upload_id

    def services_in_trace() -> set[str]:
        return {span["service"] for span in find_trace(platform.home / "traces", traced_upload)}

    wait_until(lambda: services_in_trace() >= {"michi-ingest", "michi-inference", "michi-scoring"}, 30, 0.5)
    assert services_in_trace() >= {"michi-ingest", "michi-inference", "michi-scoring"}

    # The warehouse answers a 4w2v question about a simulated trip: when, who, where, what, model and data version.
    trip = detections[0].message.lineage.trip_id
    question = (
        "SELECT window_started_at, driver_id, latitude, longitude, event_type, model_version, data_version "
        f"FROM detections WHERE trip_id = '{trip}' ORDER BY window_started_at"
    )
    expected_rows = sum(1 for record in detections if record.message.lineage.trip_id == trip)
    blob_url = platform.environment["MICHI_BLOB_URL"]
    wait_until(lambda: len(warehouse_query(question, blob_url)) >= expected_rows, 60, 1.0)
    rows = warehouse_query(question, blob_url)
    assert len(rows) == expected_rows
    assert all(row["model_version"] and row["driver_id"] for row in rows)

    detected_types = Counter(common_pb2.EventType.Name(record.message.event_type) for record in detections)
    assert detected_types["EVENT_TYPE_HARSH_BRAKING"] > 0
    # Ingest's own count of what it accepted agrees with what the devices were told.
    exposition = httpx.get(f"{platform.ingest_url}/metrics", timeout=5).text
    uploads_by_outcome: Counter[str] = Counter()
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "michi_ingest_uploads_total":
                uploads_by_outcome[sample.labels["outcome"]] += int(sample.value)
    assert uploads_by_outcome["accepted"] == len(uploads)
    assert uploads_by_outcome["duplicate"] == 10
    assert uploads_by_outcome["refused"] >= 1


def _read_all(platform: RunningPlatform, spec: TopicSpec, expected: int = 0) -> list[Record]:
    """Everything on the topic, after waiting (bounded) until at least `expected` records are there."""
    wait_until(lambda: sum(end_offsets(platform.bootstrap, spec.name(platform.prefix)).values()) >= expected, 60, 0.5)
    with TopicReader(platform.bootstrap, spec, platform.prefix) as reader:
        return reader.read_to_end(timeout=60)


def _add_annotator(platform: RunningPlatform, name: str) -> str:
    """`michi annotators add NAME` as an operator runs it; returns the one-time password it prints."""
    result = subprocess.run(
        [sys.executable, "-m", "michi.cli", "annotators", "add", name],
        env=platform.environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1].strip()


def labels_published(platform: RunningPlatform) -> bool:
    return sum(end_offsets(platform.bootstrap, LABELS.name(platform.prefix)).values()) > 0


def test_people_label_what_the_model_was_unsure_of(platform: RunningPlatform) -> None:
    """Label requests from inference become tasks; two annotators agree; one Label reaches the topic."""
    url = f"http://127.0.0.1:{platform.environment['MICHI_ANNOTATION_PORT']}"
    sessions = {}
    for name in ("e2e-ann-1", "e2e-ann-2"):
        password = _add_annotator(platform, name)
        answer = httpx.post(f"{url}/v1/sessions", json={"name": name, "password": password}, timeout=10)
        assert answer.status_code == 201, answer.text
        sessions[name] = {"Authorization": f"Bearer {answer.json()['token']}"}
    first = sessions["e2e-ann-1"]

    def waiting_queue() -> str | None:
        queues = httpx.get(f"{url}/v1/queues", headers=first, timeout=10).json()
        busy = [queue["queue"] for queue in queues if queue["waiting"] > 0]
        return busy[0] if busy else None

    assert wait_until(lambda: waiting_queue() is not None, 120, 1.0), "no label request became a task"
    queue = waiting_queue()
    leased = httpx.post(f"{url}/v1/queues/{queue}/leases", headers=first, timeout=10)
    assert leased.status_code == 200, leased.text
    task = leased.json()
    window = httpx.get(f"{url}/v1/tasks/{task['task_id']}/window", headers=first, timeout=10)
    assert window.status_code == 200, window.text
    vote = httpx.post(
        f"{url}/v1/tasks/{task['task_id']}/votes",
        headers=first,
        json={"lease_id": task["lease_id"], "answer": "normal"},
        timeout=10,
    )
    assert vote.status_code == 200, vote.text

    # Both answer "normal" to whatever they are handed, in turn, until a window has its two votes
    # (the second annotator is usually handed the first one's window: it is the one that needs a vote).
    second = sessions["e2e-ann-2"]
    for _ in range(10):
        for headers in (second, first):
            leased = httpx.post(f"{url}/v1/queues/{queue}/leases", headers=headers, timeout=10)
            assert leased.status_code in (200, 204), leased.text
            if leased.status_code == 204:
                continue
            other = leased.json()
            vote = httpx.post(
                f"{url}/v1/tasks/{other['task_id']}/votes",
                headers=headers,
                json={"lease_id": other["lease_id"], "answer": "normal"},
                timeout=10,
            )
            assert vote.status_code == 200, vote.text
        if labels_published(platform):
            break

    def labels() -> list[Record]:
        return [
            record
            for record in _read_all(platform, LABELS)
            if set(record.message.annotators) == {"e2e-ann-1", "e2e-ann-2"}
        ]

    assert wait_until(lambda: len(labels()) >= 1, 60, 1.0), "no consensus label was published"
    label = labels()[0].message
    assert label.event_type == common_pb2.EVENT_TYPE_NORMAL
    assert label.lineage.window_id and label.lineage.trip_id and label.lineage.upload_id
    assert len({record.message.lineage.window_id for record in labels()}) == len(labels())
