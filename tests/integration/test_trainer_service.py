"""`python -m services.trainer` on the real broker: bootstrap, a label-count trigger and a retrain alert, end to end.

The service runs as a process, as `michi up` starts it. It bootstraps a champion from a small simulated
fleet and registers the physics baseline physics-3 as a candidate; then N consensus `Label`s for windows of archived simulated uploads arrive on `michi.labels.v1`
and the label-count trigger trains, gates, registers the next version and puts it in shadow, publishing
the `RolloutPlan` on `michi.model-rollouts.v1`; a retrain `Alert` does it once more. A label without a
window id is dead-lettered. The gate is permissive here (its decisions are tested in the unit tests):
this test is about the wiring from Kafka to the registry.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from michi.archive import archive_uploads
from michi.blobs import BlobStore
from michi.bus.catalog import ALERTS, DEAD_LETTERS, LABELS, MODEL_ROLLOUTS
from michi.bus.producer import EventProducer
from michi.bus.reader import TopicReader
from michi.contracts import stable_event_id, timestamp_from_seconds, timestamp_now
from michi.contracts.v1 import common_pb2, labels_pb2, operations_pb2, upload_pb2
from michi.infra.processes import free_port, wait_until
from michi.registry import ModelRegistry
from michi.roads import RoadMap
from michi.simulator import FleetSimulator, SimulationConfig
from michi.windows.features import window_id

pytestmark = pytest.mark.integration

LABEL_TRIGGER = 8
SIMULATION = {
    "fleets": [{"seed": 51, "sample_rate_hz": 50}],
    "devices": 5,
    "duration_s": 480.0,
    "event_rate_per_10min": 14.0,
    "confounder_rate_per_10min": 10.0,
}


def archived_uploads(blob_url: str) -> list[upload_pb2.Upload]:
    simulator = FleetSimulator(
        SimulationConfig(devices=2, duration_s=180.0, seed=61, start_time=time.time() - 3600),
        road_map=RoadMap.default(),
    )
    uploads = list(simulator.uploads())
    store = BlobStore(blob_url)

    asyncio.run(archive_uploads(store, uploads))
    return uploads


def consensus_label(upload: upload_pb2.Upload, offset_s: float) -> labels_pb2.Label:
    started = upload.started_at.seconds + upload.started_at.nanos / 1e9 + offset_s
    identifier = window_id(upload.upload_id, offset_s)
    return labels_pb2.Label(
        event_id=stable_event_id("service-test-label", identifier),
        occurred_at=timestamp_now(),
        lineage=common_pb2.Lineage(
            upload_id=upload.upload_id,
            window_id=identifier,
            trip_id=upload.trip_id,
            device_id=upload.device_id,
            driver_id=upload.driver_id,
        ),
        event_type=common_pb2.EVENT_TYPE_NORMAL,
        source=labels_pb2.LABEL_SOURCE_CONSENSUS,
        annotators=["ann-1", "ann-2", "ann-3"],
        agreement=1.0,
        window=common_pb2.TimeSpan(
            started_at=timestamp_from_seconds(started), ended_at=timestamp_from_seconds(started + 2)
        ),
    )


class Trainer:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path, database_url: str, model: str) -> None:
        self.process = process
        self.url = url
        self.log = log
        self.database_url = database_url
        self.model = model

    def tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""

    def stages(self) -> dict[str, str]:
        registry = ModelRegistry.from_url(self.database_url)
        try:
            return {version.version: version.stage.value for version in registry.list(self.model)}
        finally:
            registry.close()


@pytest.fixture
def trainer(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[Trainer]:
    home = tmp_path / ".michi"
    port = free_port()
    database_url = f"sqlite:///{home / 'michi.db'}"
    environment = {
        **os.environ,
        "MICHI_HOME": str(home),
        "MICHI_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "MICHI_TOPIC_PREFIX": topic_prefix,
        "MICHI_DATABASE_URL": database_url,
        "MICHI_BLOB_URL": f"file://{home / 'blobs'}",
        "MICHI_TRAINER_PORT": str(port),
        "MICHI_TRAINER_CACHE_DIR": str(tmp_path / "cache" / "models"),
        "MICHI_TRAINER_SIMULATION": json.dumps(SIMULATION),
        "MICHI_TRAINER_REFERENCE_TRAFFIC": json.dumps(SIMULATION),
        "MICHI_TRAINER_PARAMETERS": json.dumps({"epochs": 2, "test_percent": 30}),
        "MICHI_TRAINER_GATE": json.dumps(
            {"minimums": {}, "maximums": {}, "not_behind_champion": {}, "not_behind_physics": {}}
        ),
        "MICHI_TRAINER_LABEL_TRIGGER": str(LABEL_TRIGGER),
        "MICHI_TRAINER_SCHEDULE_S": "0",
        "MICHI_TRAINER_CHECK_INTERVAL_S": "1",
    }
    home.mkdir(parents=True)
    log = tmp_path / "trainer.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.trainer"], env=environment, stdout=output, stderr=subprocess.STDOUT
        )
    running = Trainer(process, f"http://127.0.0.1:{port}", log, database_url, "michi-risk")
    try:
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_labels_and_a_retrain_alert_train_register_and_shadow_new_versions(
    trainer: Trainer, producer: EventProducer, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    assert wait_until(lambda: trainer.process.poll() is not None or _ready(trainer.url), 180, 0.5), trainer.tail()
    assert trainer.process.poll() is None, trainer.tail()
    # Ready means the bootstrap was attempted: the registry has a learned champion, and physics-3 beside it.
    assert trainer.stages() == {"1": "champion", "physics-3": "candidate"}, trainer.tail()
    assert httpx.get(f"{trainer.url}/healthz").json()["status"] == "ok"
    assert "/v1/runs" in httpx.get(f"{trainer.url}/openapi.json").json()["paths"]

    uploads = archived_uploads(f"file://{tmp_path / '.michi' / 'blobs'}")
    labels = [consensus_label(upload, 1.0) for upload in uploads[: LABEL_TRIGGER + 2]]
    broken = consensus_label(uploads[0], 4.0)
    broken.lineage.window_id = ""
    for label in labels[:LABEL_TRIGGER]:
        producer.publish(LABELS, label.lineage.window_id, label)
    producer.publish(LABELS, "broken", broken)
    producer.publish(LABELS, labels[0].lineage.window_id, labels[0])  # a redelivery: stored once
    producer.flush(10)
    assert wait_until(lambda: trainer.stages().get("3") == "shadow", 120, 0.5), trainer.tail()

    with TopicReader(kafka_bootstrap, MODEL_ROLLOUTS, topic_prefix) as reader:
        plans = [record.message for record in reader.read_until(lambda records: len(records) >= 2, 30)]
    latest = plans[-1]
    assert isinstance(latest, operations_pb2.RolloutPlan)
    assert latest.strategy == operations_pb2.ROLLOUT_STRATEGY_SHADOW and latest.champion.version == "1"
    assert [(arm.model.version, arm.traffic_share) for arm in latest.arms] == [("1", 1.0), ("3", 0.0)]
    assert latest.arms[1].model.artifact_uri.endswith("/models/michi-risk/3/model.onnx")

    runs = httpx.get(f"{trainer.url}/v1/runs").json()["runs"]
    label_run = runs[0]
    assert (label_run["trigger"], label_run["status"], label_run["registered_version"]) == ("labels", "succeeded", "3")
    assert label_run["trigger_reason"].startswith(f"{LABEL_TRIGGER} new labels")
    detail = httpx.get(f"{trainer.url}/v1/runs/{label_run['run_id']}").json()
    assert [step["name"] for step in detail["steps"]] == [
        "fetch",
        "preprocess",
        "train",
        "evaluate",
        "register",
        "shadow",
    ]
    assert detail["steps"][0]["details"]["label_windows"] == LABEL_TRIGGER
    record = httpx.get(f"{trainer.url}/v1/runs/{label_run['run_id']}/experiment")
    assert record.status_code == 200 and "## Purpose" in record.text
    assert httpx.get(f"{trainer.url}/v1/runs/run-nope").status_code == 404

    with TopicReader(kafka_bootstrap, DEAD_LETTERS, topic_prefix) as reader:
        letters = reader.read_until(lambda records: len(records) >= 1, 30)
    assert [(letter.message.reason, letter.message.service) for letter in letters] == [("schema-violation", "trainer")]  # type: ignore[attr-defined]

    alert = operations_pb2.Alert(
        event_id="alert-accuracy-1",
        occurred_at=timestamp_now(),
        kind="retrain",
        severity=operations_pb2.ALERT_SEVERITY_WARNING,
        message="rolling accuracy fell below 0.9",
    )
    producer.publish(ALERTS, alert.kind, alert)
    producer.publish(ALERTS, alert.kind, alert)  # the same alert twice retrains once
    producer.flush(10)
    assert wait_until(lambda: trainer.stages().get("4") == "shadow", 120, 0.5), trainer.tail()
    assert trainer.stages() == {"1": "champion", "physics-3": "candidate", "3": "candidate", "4": "shadow"}

    queued = httpx.post(f"{trainer.url}/v1/runs", json={"reason": "from the test"})
    assert queued.status_code == 202 and queued.json()["queued"]
    run_id = queued.json()["run_id"]
    assert wait_until(lambda: trainer.stages().get("5") == "shadow", 120, 0.5), trainer.tail()
    manual = httpx.get(f"{trainer.url}/v1/runs/{run_id}").json()
    assert (manual["status"], manual["trigger_reason"], manual["registered_version"]) == (
        "succeeded",
        "from the test",
        "5",
    )
    triggers = [run["trigger"] for run in httpx.get(f"{trainer.url}/v1/runs").json()["runs"]]
    assert triggers == ["manual", "alert", "labels", "bootstrap"]
    metrics = httpx.get(f"{trainer.url}/metrics").text
    assert 'michi_trainer_runs_total{status="succeeded",trigger="labels"} 1.0' in metrics
    assert 'michi_trainer_labels_total{outcome="dead-letter"} 1.0' in metrics
