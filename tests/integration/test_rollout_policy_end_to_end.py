"""Issue 18 end to end under `michi up`: the trainer's candidate goes shadow -> canary -> champion by policy, with no
human step, on the embedded Apache Kafka, and every decision is in `michi rollouts history` and in the registry's
stage changes (`michi models history`), each decision one plan revision.

`michi up --simulate 20` (embedded Kafka and Redis, every service, 20 simulated dashcams at real time) runs with a
rollout policy (`MICHI_ROLLOUTS_POLICY`): `auto_start` a canary of every version the trainer puts in shadow, with
short steps (30 % -> pause 15 s -> analyse -> 60 % -> analyse -> promote), `promotion: automatic`. The analyses read
only what the fleet's uploads measure, no human label: errors per 1,000 uploads, p99 latency against the champion's,
detections per 1,000 km against the champion's and drift alerts, each with its minimum data (10 uploads, 0.5 km per
arm). On a fresh home the trainer bootstraps: its learned model is behind `physics-3` on the real recordings, so
`physics-3` becomes the champion and the learned model (version 1) its shadow (docs/training.md, *Bootstrap*; from
the training cache in `~/.cache/michi` this takes seconds, cold about 25 s plus about two minutes to simulate the
reference traffic once). The rollout controller (looking every 2 s) starts the canary, inference serves it, the
controller measures both arms from `michi.trip-segments.v1`, `michi.detections.v1`, `michi.dead-letters.v1` and
`michi.alerts.v1`, steps the canary and promotes it.

Run: .venv/bin/python -m pytest tests/integration/test_rollout_policy_end_to_end.py -q -s   (1.5-2.5 minutes)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from michi.bus.catalog import MODEL_ROLLOUTS
from michi.bus.reader import TopicReader
from michi.infra.processes import wait_until
from michi.registry import ModelRegistry, Stage
from michi.settings import MichiSettings, load_settings
from michi.windows.physics import PHYSICS_MODEL_VERSION
from services.rollouts.handlers import AUTO_START_ACTOR, STEPS_ACTOR

from .platform_support import michi_up, platform_environment

MODEL = "michi-risk"
DEVICES = 20
POLICY = """\
auto_start:
  strategy: canary
  steps: canary.yaml
  models: [michi-risk]
promotion: automatic
"""
CANARY = """\
analyses:
  health:
    interval: 5s
    deadline: 4m
    on_deadline: rollback
    minimum_uploads: 10
    minimum_km: 0.5
    success:
      - errors_per_1000_uploads <= 20
      - latency_p99_ms <= champion * 3
      - detections_per_1000_km <= champion + 3000
      - drift_alerts == 0
    failure:
      - errors_per_1000_uploads > 100
      - drift_alerts > 0
steps:
  - set_weight: 30
  - pause: {duration: 15s}
  - analyse: health
  - set_weight: 60
  - analyse: health
"""


def michi(environment: dict[str, str], *arguments: str) -> str:
    """A `michi` command as the user runs it; its standard output."""
    result = subprocess.run(
        [sys.executable, "-m", "michi.cli", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (arguments, result.stdout, result.stderr)
    return result.stdout


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.timeout(900)
def test_the_trainer_s_candidate_goes_shadow_canary_champion_by_policy_with_no_human_step(tmp_path: Path) -> None:
    began = time.monotonic()
    home = tmp_path / ".michi"
    (tmp_path / "rollouts-policy.yaml").write_text(POLICY)
    (tmp_path / "canary.yaml").write_text(CANARY)
    environment = platform_environment(home)
    environment.update(
        {
            "MICHI_ROLLOUTS_POLICY": str(tmp_path / "rollouts-policy.yaml"),
            "MICHI_ROLLOUTS_INTERVAL_S": "2",
            "MICHI_TRAINER_LABEL_TRIGGER": "0",  # no retraining on the fleet's gold labels: one candidate
        }
    )
    # Every dashcam drives a 5-15 min first trip: no parked gap while the canary is analysed.
    with michi_up(environment, home, tmp_path / "up.log", "--simulate", str(DEVICES), "--no-short-first-trips"):
        ready_s = time.monotonic() - began
        url = load_settings(MichiSettings, home=home).resolved_database_url()
        registry = ModelRegistry.from_url(url)
        try:
            # The bootstrap: physics-3 serves, the learned model shadows it (put there by the trainer).
            versions = {version.version: version for version in registry.list(MODEL)}
            assert versions[PHYSICS_MODEL_VERSION].stage == Stage.CHAMPION, versions
            learned = next(version for version in versions if version != PHYSICS_MODEL_VERSION)

            def ended() -> bool:
                return any(rollout.ended_at is not None for rollout in registry.rollouts(MODEL))

            assert wait_until(ended, 420, 2.0), (
                [(decision.action, decision.actor, decision.reason) for decision in registry.rollout_history(MODEL)],
                (home / "logs" / "rollouts.log").read_text()[-4000:]
                if (home / "logs" / "rollouts.log").exists()
                else "",
            )
            promoted_s = time.monotonic() - began
            [rollout] = registry.rollouts(MODEL)
            decisions = list(reversed(registry.rollout_history(MODEL)))
            changes = registry.history(MODEL)
            plan = registry.current_plan(MODEL)
            champion = registry.champion(MODEL)
        finally:
            registry.close()
        # As the user reads it, while the platform runs.
        history_text = michi(environment, "rollouts", "history", MODEL)
        history = list(reversed(json_lines(michi(environment, "rollouts", "history", MODEL, "--json"))))
        stage_changes = list(reversed(json_lines(michi(environment, "models", "history", MODEL, "--json"))))
        maturity = {line["id"]: line for line in json_lines(michi(environment, "maturity", "--json"))}
        with TopicReader(f"127.0.0.1:{environment['MICHI_KAFKA_PORT']}", MODEL_ROLLOUTS) as reader:
            published = [record.message for record in reader.read_to_end(timeout=30)]

    analyses = [decision.evidence["analysis"] for decision in decisions if decision.actor == STEPS_ACTOR]
    print(
        f"\nrollout {rollout.rollout_id}: platform ready after {ready_s:.0f} s, {rollout.status} after "
        f"{promoted_s:.0f} s; decisions "
        f"{[(decision.revision, decision.action, decision.actor) for decision in decisions]}\n"
        + "\n".join(
            f"  step {analysis['step_index'] + 1} {analysis['outcome']}: candidate {analysis['candidate']}; "
            f"champion {analysis['champion']}"
            for analysis in analyses
        )
        + f"\n{history_text}"
    )
    # Promoted by the policy, no human step: start by policy:auto-start, the second weight and the promotion by
    # the steps the policy named.
    assert rollout.status == "promoted", [(decision.action, decision.reason) for decision in decisions]
    assert (rollout.candidate_version, rollout.champion_version) == (learned, PHYSICS_MODEL_VERSION)
    assert [(decision.action, decision.actor) for decision in decisions] == [
        ("start", AUTO_START_ACTOR),
        ("set-weight", STEPS_ACTOR),
        ("promote", STEPS_ACTOR),
    ]
    start, weight, promotion = decisions
    assert "passed the trainer's gate" in start.reason and start.evidence["gate"]["shadowed_by"] == "trainer"
    assert (rollout.document or {})["steps"][0] == {"set_weight": 30}
    assert weight.evidence["analysis"]["outcome"] == "pass" and "60% of devices" in weight.reason
    assert promotion.evidence["analysis"]["outcome"] == "pass"
    for analysis in analyses:  # measured from the fleet's uploads on both arms, no label
        for arm in ("candidate", "champion"):
            assert analysis[arm]["uploads"] >= 10 and analysis[arm]["km"] >= 0.5, analysis
            assert analysis[arm]["latency_p99_ms"] is not None and analysis[arm]["labelled"] == 0, analysis
    assert champion is not None and champion.version == learned
    assert plan.rollout_id == "" and [arm.model.version for arm in plan.arms] == [learned]

    # `michi rollouts history` (the CLI) lists every decision, oldest last, with actor and reason.
    assert [(shown["action"], shown["actor"], shown["revision"]) for shown in history] == [
        (decision.action, decision.actor, decision.revision) for decision in decisions
    ]
    lines = history_text.splitlines()
    assert len(lines) == 3 and all(rollout.rollout_id in line for line in lines)
    assert "promote" in lines[0] and STEPS_ACTOR in lines[0] and "start" in lines[2] and AUTO_START_ACTOR in lines[2]

    # The registry's stage changes: candidate -> shadow by the trainer, shadow -> canary at the start, canary ->
    # champion and physics-3 retired at the promotion; each decision is one plan revision.
    learned_changes = [
        (change.from_stage, change.to_stage, change.actor) for change in changes if change.version == learned
    ]
    assert learned_changes == [
        (Stage.CANDIDATE, Stage.SHADOW, "trainer"),
        (Stage.SHADOW, Stage.CANARY, AUTO_START_ACTOR),
        (Stage.CANARY, Stage.CHAMPION, STEPS_ACTOR),
    ]
    by_revision: dict[int, list[tuple[str, str, str]]] = {}
    for change in changes:
        by_revision.setdefault(change.revision, []).append((change.version, change.from_stage, change.to_stage))
    assert by_revision[start.revision] == [(learned, Stage.SHADOW, Stage.CANARY)]
    assert weight.revision not in by_revision, "a weight change moves no stage"
    assert sorted(by_revision[promotion.revision]) == sorted(
        [(learned, Stage.CANARY, Stage.CHAMPION), (PHYSICS_MODEL_VERSION, Stage.CHAMPION, Stage.RETIRED)]
    )
    revisions = [decision.revision for decision in decisions]
    assert revisions == sorted(set(revisions)) and revisions[0] > max(
        change.revision for change in changes if change.to_stage == Stage.SHADOW
    )
    # `michi models history` (the CLI) shows the same changes.
    assert [(shown["version"], shown["to_stage"], shown["actor"], shown["revision"]) for shown in stage_changes] == [
        (change.version, change.to_stage.value, change.actor, change.revision) for change in changes
    ]
    # `michi maturity` reads the same records: a model serves, a new model reached live traffic without a person,
    # and the last policy-driven promotion is this one, at its plan revision.
    assert maturity["google-0-model-served"]["verdict"] == "met", maturity["google-0-model-served"]
    assert maturity["google-1-continuous-delivery"]["verdict"] == "met", maturity["google-1-continuous-delivery"]
    automated = maturity["google-2-automated-deployment"]
    assert automated["verdict"] == "met", automated
    assert (automated["ids"]["revision"], automated["ids"]["version"], automated["ids"]["actor"]) == (
        promotion.revision,
        learned,
        STEPS_ACTOR,
    )
    assert all(line["verdict"] != "unknown" for line in maturity.values()), maturity
    # Every decision's plan revision went out on michi.model-rollouts.v1; the last is the champion's alone.
    published_revisions = {message.revision for message in published if message.model_name == MODEL}  # type: ignore[attr-defined]
    assert set(revisions) <= published_revisions
    assert max(published_revisions) == promotion.revision == plan.revision
