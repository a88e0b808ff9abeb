"""The monitor end to end under `michi up` (issue 17): a drift scenario gives one of everything, kill -9 or not.

`michi up` (embedded Kafka, Redis, every service, no simulated fleet of its own) is started, then a fleet of the
`sample-rate-change` scenario (every device's IMU at 25 Hz, which the served traffic never had) is driven against
its ingest with `michi simulate --scenario`, as an operator would. The monitor's windows are made small so the run
takes minutes (300 rows from at least 3 devices; the statistics are `benchmarks/monitor_scenarios.py`'s). Once
the first drift alert is on `michi.alerts.v1` the monitor process is killed with SIGKILL while the fleet still
sends; `michi up`'s supervisor starts it again and it reads its uncommitted rows again. At the end there is
exactly:

- one drift alert (status firing) for the served champion's cohort `all`, and no resolve (the drift goes on);
- one retrain request (kind `retrain`), and one trainer run it started, whose candidate is in shadow (the gate is
  made permissive: what the gate decides is `docs/training.md`'s, not this test's);
- one drift sample: the `DRIFT_SAMPLE` label requests of one window, each once, each a task in annotation (its
  `drift-sample` queue, or the queue of an earlier request for the same window).

Run: .venv/bin/python -m pytest tests/integration/test_monitor_end_to_end.py -q -s   (about 3 minutes)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import text
from sqlmodel import Session, create_engine

from michi.bus.catalog import ALERTS, LABEL_REQUESTS, PREDICTIONS
from michi.bus.reader import TopicReader
from michi.contracts.v1 import labels_pb2, operations_pb2
from michi.infra.processes import wait_until
from michi.registry.store import ModelRegistry
from michi.settings import MichiSettings, load_settings
from services.trainer.adapters.store import TrainerStore

from .platform_support import michi_up, platform_environment, service_pids

MODEL = "michi-risk"
PERMISSIVE_GATE = {"minimums": {}, "maximums": {}, "not_behind_champion": {}, "not_behind_physics": {}}


def alerts_of(bootstrap: str) -> list[operations_pb2.Alert]:
    with TopicReader(bootstrap, ALERTS) as reader:
        return [record.message for record in reader.read_to_end(timeout=20)]  # type: ignore[misc]


def firing(alerts: list[operations_pb2.Alert]) -> list[operations_pb2.Alert]:
    return [alert for alert in alerts if alert.kind == "drift" and alert.attributes["status"] == "firing"]


def retrains(alerts: list[operations_pb2.Alert]) -> list[operations_pb2.Alert]:
    return [alert for alert in alerts if alert.kind == "retrain"]


def monitor_caught_up(bootstrap: str, prefix: str) -> bool:
    """The monitor's group has committed every prediction on the topic (so it holds no open window)."""
    topic = PREDICTIONS.name(prefix)
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}monitor", "enable.auto.commit": False})
    try:
        partitions = [TopicPartition(topic, number) for number in range(PREDICTIONS.partitions)]
        committed = reader.committed(partitions, timeout=10)
        ends = [reader.get_watermark_offsets(partition, timeout=10)[1] for partition in partitions]
    finally:
        reader.close()
    return sum(ends) > 0 and all(max(item.offset, 0) >= end for item, end in zip(committed, ends, strict=True))


@pytest.mark.timeout(900)
def test_a_drift_scenario_gives_one_alert_one_sample_one_retrain_and_a_shadow_candidate_through_a_kill_9(
    tmp_path: Path,
) -> None:
    home = tmp_path / ".michi"
    environment = platform_environment(home)
    environment.update(
        {
            "MICHI_MONITOR_WINDOW_ROWS": "300",
            "MICHI_MONITOR_MIN_ROWS": "300",
            "MICHI_MONITOR_MIN_DEVICES": "3",
            "MICHI_MONITOR_WINDOW_IDLE_S": "20",
            "MICHI_MONITOR_COHORTS": "",
            "MICHI_TRAINER_GATE": json.dumps(PERMISSIVE_GATE),
            "MICHI_TRAINER_LABEL_TRIGGER": "0",
        }
    )
    bootstrap = f"127.0.0.1:{environment['MICHI_KAFKA_PORT']}"
    ingest = f"http://127.0.0.1:{environment['MICHI_INGEST_HTTP_PORT']}"
    with michi_up(environment, home, tmp_path / "up.log", "--simulate", "0"):
        fleet_log = (tmp_path / "fleet.log").open("wb")
        fleet = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "michi.cli",
                "simulate",
                *("--devices", "6", "--duration", "1200", "--speed", "10"),
                *("--scenario", "sample-rate-change", "--target", ingest),
            ],
            env=environment,
            stdout=fleet_log,
            stderr=subprocess.STDOUT,
        )
        try:
            assert wait_until(lambda: bool(firing(alerts_of(bootstrap))) or fleet.poll() is not None, 300, 2.0)
            assert firing(alerts_of(bootstrap)), (tmp_path / "fleet.log").read_text()[-3000:]
            # The monitor dies with rows of open windows read and not committed, while the fleet still sends.
            assert fleet.poll() is None, "the fleet ended before the monitor could be killed in the middle"
            (killed,) = service_pids(home)["monitor"]
            os.kill(killed, signal.SIGKILL)
            assert wait_until(lambda: service_pids(home)["monitor"] not in ([], [killed]), 60, 0.5)
            assert fleet.wait(timeout=300) == 0, (tmp_path / "fleet.log").read_text()[-3000:]
        finally:
            if fleet.poll() is None:
                fleet.kill()
            fleet_log.close()

        settings = load_settings(MichiSettings, home=home)
        url = settings.resolved_database_url()
        registry = ModelRegistry.from_url(url)
        store = TrainerStore.from_url(url)
        try:

            def shadow_from_the_retrain() -> bool:
                runs = [run for run in store.runs(model_name=MODEL) if run.trigger == "alert"]
                return any(run.status in ("succeeded", "refused", "failed") for run in runs)

            assert wait_until(shadow_from_the_retrain, 420, 2.0), [
                (run.trigger, run.status, run.status_reason) for run in store.runs(model_name=MODEL)
            ]
            # The monitor's last windows close idle (20 s) and are judged; its commits wait for every open window's
            # first row, so once it has committed all the predictions there are, nothing more may come.
            assert wait_until(lambda: monitor_caught_up(bootstrap, environment["MICHI_TOPIC_PREFIX"]), 120, 2.0)
            alerts = alerts_of(bootstrap)
            runs = [run for run in store.runs(model_name=MODEL) if run.trigger == "alert"]
            versions = {version.version: version for version in registry.list(MODEL)}
        finally:
            registry.close()
            store.close()

        (drift,) = firing(alerts)
        assert drift.attributes["cohort"] == "all"
        assert {"rate_unseen", "sample_rate_hz"} <= set(drift.attributes["features"].split(","))
        assert [alert for alert in alerts if alert.kind == "drift" and alert.attributes["status"] == "resolved"] == []
        (retrain,) = retrains(alerts)
        assert retrain.attributes["episode"] == drift.attributes["episode"]
        (run,) = runs
        assert run.status == "succeeded", (run.status, run.status_reason)
        assert run.registered_version is not None
        assert versions[run.registered_version].stage.value == "shadow"

        with TopicReader(bootstrap, LABEL_REQUESTS) as reader:
            requests = [record.message for record in reader.read_to_end(timeout=20)]
        samples = [request for request in requests if request.reason == labels_pb2.LABEL_REASON_DRIFT_SAMPLE]
        assert samples, "the drift alert asked people to label nothing"
        assert len({request.event_id for request in samples}) == len(samples)  # none published twice
        assert len({request.lineage.window_id for request in samples}) == len(samples)
        engine = create_engine(url)
        try:
            with Session(engine) as session:
                tasks = dict(
                    session.exec(text("SELECT task_id, queue FROM annotation_task")).all()  # type: ignore[call-overload]
                )
        finally:
            engine.dispose()
        # Every sampled window is a task for people; one already asked for (uncertain, random QA) keeps its queue,
        # the others make the drift-sample queue.
        sampled = {request.lineage.window_id for request in samples}
        assert sampled <= set(tasks)
        drift_queue = {task for task, queue in tasks.items() if queue == "drift-sample"}
        assert drift_queue and drift_queue <= sampled
