"""`michi rollouts` through typer's CliRunner: SQLite from MICHI_DATABASE_URL, plans kept by a recording producer.

The producer the commands build from the settings is replaced by one that keeps every plan (the Kafka path is
tests/integration/test_rollouts_cli.py); everything else is the real command on a real database.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from michi.cli import app
from michi.contracts.v1 import inference_pb2
from michi.registry import ModelRegistry, Stage

from ..fakes import RecordingPlanPublisher

MODEL = "harsh-events"
STEPS = """\
analyses:
  quality:
    success:
      - agreement_with_labels >= champion - 0.02
steps:
  - set_weight: 10
  - pause: {duration: 10m}
  - analyse: quality
  - set_weight: 40
  - analyse: quality
"""


class RecordingProducer(RecordingPlanPublisher):
    """Stands in for `EventProducer(connection, prefix, client_id=...)`; every instance records into `PLANS`."""

    PLANS: list[Any] = []

    def __init__(self, *_arguments: Any, **_options: Any) -> None:
        super().__init__()
        self.plans = RecordingProducer.PLANS

    def close(self, timeout: float = 10.0) -> None:
        del timeout


@pytest.fixture
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'michi.db'}"
    for variable, value in {
        "MICHI_DATABASE_URL": url,
        "MICHI_HOME": str(tmp_path / ".michi"),
        "USER": "dana",
    }.items():
        monkeypatch.setenv(variable, value)
    RecordingProducer.PLANS = []
    monkeypatch.setattr("michi.bus.producer.EventProducer", RecordingProducer)
    registry = ModelRegistry.from_url(url, RecordingPlanPublisher())
    for number in (1, 2, 3):
        registry.register(MODEL, f"file:///{number}", f"{number}" * 64, "code", "data", {}, {}, created_by="test")
    registry.promote(MODEL, "1", actor="test", reason="bootstrap")
    registry.close()
    return url


def invoke(*arguments: str) -> Any:
    return CliRunner().invoke(app, ["rollouts", *arguments])


def test_a_rollout_by_hand_from_start_to_promotion(database_url: str, tmp_path: Path) -> None:
    steps = tmp_path / "rollout.yaml"
    steps.write_text(STEPS)

    started = invoke("start", MODEL, "2", "--steps", str(steps), "--reason", "better offline")
    assert started.exit_code == 0, started.output
    assert "2 (canary 10%), 1 (champion 90%)" in started.output and "[rollout ro-harsh-events-2-" in started.output

    status = invoke("status", MODEL, "--json")
    assert status.exit_code == 0, status.output
    shown = json.loads(status.output)
    assert (shown["candidate_version"], shown["champion_version"], shown["status"]) == ("2", "1", "running")
    assert (shown["weight_percent"], shown["step_index"], shown["steps"]) == (10.0, 0, 5)
    assert shown["plan"]["rollout_id"] == shown["rollout_id"] and len(shown["plan"]["arms"]) == 2
    text_status = invoke("status")
    assert (
        text_status.exit_code == 0 and "candidate 2 vs champion 1  canary 10%  step 1/5  running" in text_status.output
    )

    for arguments in (
        ("set-weight", MODEL, "40", "--reason", "analysis passed"),
        ("pause", MODEL, "--reason", "weekend"),
        ("resume", MODEL, "--reason", "monday"),
        ("promote", MODEL, "--reason", "passed at 40"),
    ):
        result = invoke(*arguments)
        assert result.exit_code == 0, (arguments, result.output)
    plans = RecordingProducer.PLANS
    assert [round(plans[index].arms[0].traffic_share, 6) for index in range(4)] == [0.1, 0.4, 0.4, 0.4]
    assert len({plan.rollout_id for plan in plans[:4]}) == 1 and plans[-1].rollout_id == ""
    assert [(arm.model.version, arm.variant) for arm in plans[-1].arms] == [("2", inference_pb2.VARIANT_CHAMPION)]

    history = invoke("history", MODEL, "--json")
    assert history.exit_code == 0, history.output
    decisions = [json.loads(line) for line in history.output.splitlines()]
    assert [decision["action"] for decision in decisions] == ["promote", "resume", "pause", "set-weight", "start"]
    assert {decision["actor"] for decision in decisions} == {"dana"}
    assert decisions[0]["reason"] == "passed at 40" and decisions[3]["evidence"]["step_index"] == {"from": 0, "to": 3}
    text_history = invoke("history", MODEL)
    assert text_history.exit_code == 0 and "promote" in text_history.output.splitlines()[0]

    registry = ModelRegistry.from_url(database_url)
    assert {version.version: version.stage for version in registry.list(MODEL)} == {
        "1": Stage.RETIRED,
        "2": Stage.CHAMPION,
        "3": Stage.CANDIDATE,
    }
    registry.close()
    nothing = invoke("status", MODEL)
    assert nothing.exit_code == 0 and "no rollout running or paused for harsh-events" in nothing.output


def test_models_promote_during_a_rollout_is_recorded_as_an_override(database_url: str) -> None:
    assert invoke("start", MODEL, "2", "--strategy", "ab", "--reason", "a/b").exit_code == 0
    overridden = CliRunner().invoke(app, ["models", "promote", MODEL, "3", "--reason", "hotfix"])
    assert overridden.exit_code == 0, overridden.output
    latest = json.loads(invoke("history", MODEL, "--json").output.splitlines()[0])
    assert (latest["action"], latest["actor"], latest["reason"]) == ("abort", "dana", "manual override: hotfix")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("start", MODEL, "2", "--weight", "150", "--reason", "r"), "weight 150.0 is outside 0-100"),
        (("start", MODEL, "1", "--reason", "r"), "version 1 is the champion"),
        (("start", MODEL, "9", "--reason", "r"), "no version 9 of model harsh-events"),
        (("start", MODEL, "2", "--strategy", "thompson", "--reason", "r"), "unknown strategy 'thompson'"),
        (("pause", MODEL, "--reason", "r"), "no rollout of harsh-events is running or paused"),
        (("abort", MODEL, "--reason", "r"), "no rollout of harsh-events is running or paused"),
        (("set-weight", MODEL, "20", "--reason", "r"), "no rollout of harsh-events is running or paused"),
        (("history", "nothing"), "no model named nothing"),
        (("status", "nothing"), "no model named nothing"),
    ],
)
def test_refusals_exit_1_with_one_line(database_url: str, arguments: tuple[str, ...], message: str) -> None:
    result = invoke(*arguments)
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"michi: {message}" or result.output.strip().startswith(f"michi: {message}")
    assert len(result.output.strip().splitlines()) == 1
    assert RecordingProducer.PLANS == []


def test_a_second_start_and_a_bad_document_are_refused(database_url: str, tmp_path: Path) -> None:
    assert invoke("start", MODEL, "2", "--reason", "first").exit_code == 0
    again = invoke("start", MODEL, "3", "--reason", "second")
    assert again.exit_code == 1 and "is already running (candidate 2)" in again.output

    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - set_weight: 120\n  - analyse: {sucess: []}\n")
    refused = invoke("start", MODEL, "3", "--steps", str(bad), "--reason", "typo")
    assert refused.exit_code == 1
    assert f"invalid rollout document {bad}" in refused.output
    assert "steps[0]" in refused.output and "steps[1].analyse.sucess: unknown key" in refused.output
    both = invoke("start", MODEL, "3", "--steps", str(bad), "--weight", "5", "--reason", "r")
    assert both.exit_code == 1 and "give --weight or --steps, not both" in both.output
