"""`michi rollouts status` shows a rollout that waits for a person's promotion (`promotion: manual`): the rollout
controller keeps why it would promote in its own table (`rollouts_progress`), and status prints it with what to run;
`--json` carries it as `awaiting_promotion`. A rollout that is not waiting shows none, and a database the controller
never ran on (no `rollouts_progress` table) is read without error. `michi models history` lists the registry's
stage changes with the plan revision each decision published."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from michi.cli import app
from michi.rollouts.policy import AutoStart, RolloutPolicy

from .test_rollouts_controller import CANDIDATE, CHAMPION, DOCUMENT, MINUTE, MODEL, outcomes
from .test_rollouts_policy import platform_with, shadow, tick


def status(*arguments: str) -> str:
    result = CliRunner().invoke(app, ["rollouts", "status", *arguments])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'michi.db'}"
    monkeypatch.setenv("MICHI_DATABASE_URL", url)
    monkeypatch.setenv("MICHI_HOME", str(tmp_path / ".michi"))
    monkeypatch.setenv("MICHI_BLOB_URL", f"file://{tmp_path / 'blobs'}")
    return url


def test_status_says_a_rollout_waits_for_a_person_s_promotion_and_why(tmp_path: Path, environment: str) -> None:
    policy = RolloutPolicy(auto_start=AutoStart(strategy="canary", document=DOCUMENT), automatic_promotion=False)
    platform = platform_with(tmp_path, policy)
    try:
        shadow(platform)
        tick(platform)
        platform.at(1)
        assert "awaiting" not in status(MODEL), "not at its end yet"
        for minutes in (2, 12):
            platform.feed(outcomes(CANDIDATE, correct=29, wrong=1, at=platform.started + minutes * MINUTE))
            platform.feed(outcomes(CHAMPION, correct=28, wrong=2, at=platform.started + minutes * MINUTE))
            platform.at(minutes + 9)
        platform.at(40)
        shown = status(MODEL)
        assert "awaiting a person's promotion since " in shown and "(policy promotion: manual)" in shown
        assert "promote with `michi rollouts promote risk --reason ...`" in shown
        rollout = platform.registry.active_rollout(MODEL)
        assert rollout is not None
        state = platform.store.load(rollout.rollout_id)
        assert state is not None
        assert state["awaiting_promotion"]["reasons"][0] in shown
        [line] = status(MODEL, "--json").splitlines()
        assert json.loads(line)["awaiting_promotion"]["reasons"] == state["awaiting_promotion"]["reasons"]

        platform.registry.promote_rollout(MODEL, actor="dana", reason="the analyses passed")
        assert "awaiting" not in status(MODEL)
    finally:
        platform.close()


def test_status_reads_a_database_the_controller_never_ran_on(environment: str) -> None:
    from michi.registry import ModelRegistry

    from ..fakes import RecordingPlanPublisher

    registry = ModelRegistry.from_url(environment, RecordingPlanPublisher())
    try:
        for number in (1, 2):
            registry.register(MODEL, f"file:///{number}.onnx", f"{number}" * 64, "c", "d", {}, {}, created_by="test")
        registry.promote(MODEL, CHAMPION, actor="test", reason="bootstrap")
        registry.start_rollout(MODEL, CANDIDATE, actor="dana", reason="by hand", weight=10)
    finally:
        registry.close()
    shown = status(MODEL)
    assert "candidate 2 vs champion 1" in shown and "awaiting" not in shown
    [line] = status(MODEL, "--json").splitlines()
    assert json.loads(line)["awaiting_promotion"] is None


def test_models_history_lists_every_stage_change_newest_first_with_its_plan_revision(
    tmp_path: Path, environment: str
) -> None:
    platform = platform_with(tmp_path, RolloutPolicy(auto_start=AutoStart(strategy="canary", document=DOCUMENT)))
    try:
        shadow(platform)
        tick(platform)
        platform.registry.promote_rollout(MODEL, actor="dana", reason="looks good")
        changes = platform.registry.history(MODEL)
    finally:
        platform.close()
    result = CliRunner().invoke(app, ["models", "history", MODEL, "--json"])
    assert result.exit_code == 0, result.output
    shown = [json.loads(line) for line in result.output.splitlines()]
    assert [(entry["version"], entry["from_stage"], entry["to_stage"], entry["revision"]) for entry in shown] == [
        (change.version, change.from_stage.value, change.to_stage.value, change.revision)
        for change in reversed(changes)
    ]
    assert [(entry["version"], entry["to_stage"]) for entry in shown[:2]] == [("1", "retired"), ("2", "champion")]
    assert shown[0]["revision"] == shown[1]["revision"], "a promotion's two changes share its plan revision"
    text = CliRunner().invoke(app, ["models", "history", MODEL]).output.splitlines()
    assert len(text) == len(changes) and "canary -> champion" in text[1] and "dana" in text[1]
