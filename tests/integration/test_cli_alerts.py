"""`michi alerts` on a real broker: every alert with its evidence, a kind filter, JSON, and --follow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from michi.bus.catalog import ALERTS
from michi.bus.producer import EventProducer
from michi.cli import app
from michi.contracts import stable_event_id, timestamp_now
from michi.contracts.v1 import operations_pb2


def alert(kind: str, message: str, **attributes: str) -> operations_pb2.Alert:
    raised = operations_pb2.Alert(
        event_id=stable_event_id("test-alert", kind, message),
        kind=kind,
        severity=operations_pb2.ALERT_SEVERITY_WARNING,
        message=message,
        attributes=attributes,
        figures={"psi": 0.31},
    )
    raised.occurred_at.CopyFrom(timestamp_now())
    raised.lineage.model_version = "7"
    return raised


@pytest.fixture
def environment(kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    variables = {"MICHI_KAFKA_BOOTSTRAP": kafka_bootstrap, "MICHI_TOPIC_PREFIX": topic_prefix}
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


def test_alerts_are_listed_with_their_evidence_and_filtered_by_kind(
    environment: dict[str, str], producer: EventProducer
) -> None:
    producer.publish_and_wait(ALERTS, "drift", alert("drift", "speed drifted", window_id="w-1", features="speed"))
    producer.publish_and_wait(ALERTS, "retrain", alert("retrain", "retrain after \x1b[31mdrift\nforged line"))

    listed = CliRunner().invoke(app, ["alerts"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert len(lines) == 2, lines
    # (The test's topics have two partitions: the two kinds' keys may land on either, in either order.)
    (drift,) = [line for line in lines if "speed drifted" in line]
    assert "  drift  WARNING  7  " in drift and "window_id=w-1" in drift and "psi=0.31" in drift
    # Text from the topic cannot drive the terminal or forge a line.
    (retrain,) = [line for line in lines if "retrain after" in line]
    assert "\x1b" not in listed.output and "\\x1b[31mdrift\\nforged line" in retrain

    drift_only = CliRunner().invoke(app, ["alerts", "--kind", "drift", "--json"])
    (only,) = [json.loads(line) for line in drift_only.output.splitlines()]
    assert (only["kind"], only["attributes"]["features"], only["lineage"]["model_version"]) == ("drift", "speed", "7")

    none = CliRunner().invoke(app, ["alerts", "--kind", "cost"])
    assert none.exit_code == 0 and "no alerts of kind cost" in none.output


def test_follow_prints_alerts_raised_after_it_started(environment: dict[str, str], producer: EventProducer) -> None:
    follower = subprocess.Popen(
        [sys.executable, "-m", "michi.cli", "alerts", "--follow"],
        env={**os.environ, **environment},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Bounded: the follower says on standard error when it has read the topic to its end and follows.
        assert follower.stderr is not None
        started = time.monotonic()
        while "following" not in follower.stderr.readline():
            assert time.monotonic() - started < 60 and follower.poll() is None, "michi alerts --follow never followed"
        producer.publish_and_wait(ALERTS, "drift", alert("drift", "raised while following"))
        deadline = time.monotonic() + 30
        assert follower.stdout is not None
        line = ""
        while time.monotonic() < deadline and "raised while following" not in line:
            line = follower.stdout.readline()
        assert "raised while following" in line
    finally:
        follower.terminate()
        follower.communicate(timeout=10)  # waits, and closes the pipes
