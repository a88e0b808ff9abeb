"""The rollout policy (`michi/rollouts/policy.py`, `MICHI_ROLLOUTS_POLICY`): a candidate the trainer put in shadow
(it passed the gate) starts its rollout by itself, audited as `policy:auto-start` with the gate's evidence, once;
the canary it starts is promoted with no human step; under `promotion: manual` a rollout that would promote holds
at its end until a person promotes it. The document is strictly validated, and a bad file stops the controller at
start with a line naming the variable.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from michi.registry import Stage
from michi.rollouts.policy import (
    AutoStart,
    RolloutPolicy,
    RolloutPolicyError,
    ShadowPlacement,
    auto_start_due,
    parse_rollout_policy,
    rollout_policy_from_mapping,
)
from michi.settings import load_settings
from services.rollouts.adapters.policy_file import read_rollout_policy
from services.rollouts.handlers import AB_ACTOR, AUTO_START_ACTOR, STEPS_ACTOR
from services.rollouts.settings import RolloutsSettings

from .test_rollouts_controller import CANDIDATE, CHAMPION, DOCUMENT, MINUTE, MODEL, Platform, outcomes

TRAINER_SHADOW_REASON = "labels: 500 new labels (run-7)"


class PolicyPlatform(Platform):
    def __init__(self, url: str, policy: RolloutPolicy) -> None:
        self.policy = policy
        super().__init__(url)

    def new_controller(self) -> Any:
        controller = super().new_controller()
        controller.policy = self.policy
        return controller


def platform_with(tmp_path: Path, policy: RolloutPolicy) -> PolicyPlatform:
    return PolicyPlatform(f"sqlite:///{tmp_path / 'michi.db'}", policy)


@pytest.fixture
def canary_policy() -> RolloutPolicy:
    return RolloutPolicy(auto_start=AutoStart(strategy="canary", document=DOCUMENT))


@pytest.fixture
def platform(tmp_path: Path, canary_policy: RolloutPolicy) -> Iterator[PolicyPlatform]:
    built = platform_with(tmp_path, canary_policy)
    try:
        yield built
    finally:
        built.close()


def shadow(platform: Platform, actor: str = "trainer") -> None:
    platform.registry.transition(MODEL, CANDIDATE, Stage.SHADOW, actor=actor, reason=TRAINER_SHADOW_REASON)


def tick(platform: Platform) -> None:
    platform.controller.tick()
    rollouts = platform.registry.rollouts(MODEL)
    if rollouts:
        platform.started = rollouts[0].started_at.timestamp()


def test_a_candidate_the_trainer_shadowed_starts_by_policy_and_is_promoted_with_no_human_step(
    platform: PolicyPlatform,
) -> None:
    shadow(platform)
    tick(platform)
    [start] = platform.registry.rollout_history(MODEL)
    assert (start.action, start.actor) == ("start", AUTO_START_ACTOR)
    assert "passed the trainer's gate" in start.reason
    gate = start.evidence["gate"]
    assert (gate["passed"], gate["shadowed_by"], gate["shadow_reason"]) == (True, "trainer", TRAINER_SHADOW_REASON)
    assert gate["champion"]["version"] == CHAMPION and start.evidence["strategy"] == "canary"
    assert platform.registry.get(MODEL, CANDIDATE).stage == Stage.CANARY
    # Nobody else acts: the controller steps the canary and promotes it on its labels.
    platform.feed(outcomes(CANDIDATE, correct=29, wrong=1, at=platform.started + 2 * MINUTE))
    platform.feed(outcomes(CHAMPION, correct=28, wrong=2, at=platform.started + 2 * MINUTE))
    platform.at(11)
    platform.feed(outcomes(CANDIDATE, correct=29, wrong=1, at=platform.started + 12 * MINUTE))
    platform.feed(outcomes(CHAMPION, correct=28, wrong=2, at=platform.started + 12 * MINUTE))
    platform.at(22)
    assert platform.decisions() == [
        ("start", AUTO_START_ACTOR),
        ("set-weight", STEPS_ACTOR),
        ("promote", STEPS_ACTOR),
    ]
    assert platform.registry.get(MODEL, CANDIDATE).stage == Stage.CHAMPION
    # Every decision is in the registry's stage changes too, each under one plan revision.
    actors = [(change.version, change.to_stage, change.actor) for change in platform.registry.history(MODEL)[-3:]]
    assert actors == [
        (CANDIDATE, Stage.CANARY, AUTO_START_ACTOR),
        (CANDIDATE, Stage.CHAMPION, STEPS_ACTOR),
        (CHAMPION, Stage.RETIRED, STEPS_ACTOR),
    ]


def test_a_version_starts_once_and_never_from_a_person_s_shadow(platform: PolicyPlatform) -> None:
    shadow(platform, actor="dana")
    tick(platform)
    assert platform.registry.rollout_history(MODEL) == [], "a person's shadow is a person's to roll out"

    platform.registry.transition(MODEL, CANDIDATE, Stage.CANDIDATE, actor="dana", reason="back")
    shadow(platform)
    tick(platform)
    tick(platform)
    assert [decision.action for decision in platform.registry.rollout_history(MODEL)] == ["start"]
    platform.registry.abort_rollout(MODEL, actor="dana", reason="not now")
    shadow(platform)  # the trainer shadows it again: it already had its rollout
    tick(platform)
    assert [decision.action for decision in platform.registry.rollout_history(MODEL)] == ["abort", "start"]


def test_under_manual_promotion_a_canary_holds_at_its_end_until_a_person_promotes(tmp_path: Path) -> None:
    policy = RolloutPolicy(auto_start=AutoStart(strategy="canary", document=DOCUMENT), automatic_promotion=False)
    platform = platform_with(tmp_path, policy)
    try:
        shadow(platform)
        tick(platform)
        for minutes in (2, 12):
            platform.feed(outcomes(CANDIDATE, correct=29, wrong=1, at=platform.started + minutes * MINUTE))
            platform.feed(outcomes(CHAMPION, correct=28, wrong=2, at=platform.started + minutes * MINUTE))
            platform.at(minutes + 9)
        platform.at(40)
        platform.at(90)
        assert platform.decisions() == [("start", AUTO_START_ACTOR), ("set-weight", STEPS_ACTOR)]
        rollout = platform.registry.active_rollout(MODEL)
        assert rollout is not None and rollout.status == "running"
        state = platform.store.load(rollout.rollout_id)
        assert state is not None and state["awaiting_promotion"]["reasons"]
        assert platform.metrics.awaiting.labels(MODEL)._value.get() == 1
        platform.registry.promote_rollout(MODEL, actor="dana", reason="the analyses passed")
        platform.at(100)
        assert platform.decisions()[-1] == ("promote", "dana")
        assert platform.metrics.awaiting.labels(MODEL)._value.get() == 0
    finally:
        platform.close()


def test_under_manual_promotion_an_ab_test_that_decides_for_the_candidate_holds(tmp_path: Path) -> None:
    platform = platform_with(tmp_path, RolloutPolicy(automatic_promotion=False))
    try:
        platform.registry.start_rollout(MODEL, CANDIDATE, actor="dana", reason="a/b", strategy="ab")
        platform.started = platform.registry.rollouts(MODEL)[0].started_at.timestamp()
        platform.feed(outcomes(CANDIDATE, correct=294, wrong=6, at=platform.started + MINUTE))
        platform.feed(outcomes(CHAMPION, correct=255, wrong=45, at=platform.started + MINUTE))
        platform.at(5)
        platform.at(10)
        assert platform.decisions() == [("start", "dana")]
        rollout = platform.registry.active_rollout(MODEL)
        assert rollout is not None
        state = platform.store.load(rollout.rollout_id)
        assert state is not None and "candidate-better" in state["awaiting_promotion"]["reasons"][0]
        assert AB_ACTOR not in {actor for _, actor in platform.decisions()}
    finally:
        platform.close()


# --- the document


def test_a_policy_document_reads_and_a_steps_path_is_resolved_from_its_folder(tmp_path: Path) -> None:
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "canary.yaml").write_text(
        "steps: [{set_weight: 10}, {analyse: {success: ['agreement_with_labels >= champion - 0.02']}}]\n"
    )
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        "auto_start:\n  strategy: canary\n  steps: steps/canary.yaml\n  models: [risk]\npromotion: manual\n"
    )
    policy = read_rollout_policy(policy_file)
    assert policy.automatic_promotion is False and policy.auto_start is not None
    assert policy.auto_start.document is not None and policy.auto_start.document["steps"][0] == {"set_weight": 10}
    assert policy.auto_start.covers("risk") and not policy.auto_start.covers("other")
    assert policy.auto_start.actors == ("trainer",)
    assert parse_rollout_policy("{}") == RolloutPolicy()
    bandit = rollout_policy_from_mapping({"auto_start": {"strategy": "bandit"}})
    assert bandit.auto_start == AutoStart(strategy="bandit")


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"promotion": "sometimes"}, "promotion: must be one of automatic, manual"),
        ({"auto_start": {"strategy": "canary", "steps": DOCUMENT}, "extra": 1}, "extra: unknown key"),
        ({"auto_start": {"strategy": "shadow"}}, "auto_start.strategy: must be one of canary, ab, bandit"),
        ({"auto_start": {"strategy": "ab", "steps": DOCUMENT}}, "a rollout document describes a canary"),
        ({"auto_start": {"strategy": "ab", "weight": 0}}, "auto_start.weight: must be a number in (0, 100]"),
        ({"auto_start": {"strategy": "bandit", "weight": 20}}, "a bandit sets its own shares"),
        ({"auto_start": {"strategy": "canary"}}, "a canary started by policy needs its steps"),
        ({"auto_start": {"strategy": "canary", "steps": "canary.yaml"}}, "needs a policy read from a file"),
        ({"auto_start": {"strategy": "canary", "steps": {"steps": []}}}, "auto_start.steps: "),
        ({"auto_start": {"strategy": "ab", "actors": "trainer"}}, "auto_start.actors: must be a list of names"),
    ],
)
def test_a_policy_that_cannot_be_followed_is_refused_with_its_problems(document: Any, problem: str) -> None:
    with pytest.raises(RolloutPolicyError) as raised:
        rollout_policy_from_mapping(document)
    assert any(problem in line for line in raised.value.problems), raised.value.problems


def test_a_bad_policy_file_stops_the_controller_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("auto_start: {strategy: canary, steps: missing.yaml}\n")
    monkeypatch.setenv("MICHI_ROLLOUTS_POLICY", str(policy_file))
    with pytest.raises(SystemExit):
        load_settings(RolloutsSettings)
    message = capsys.readouterr().err
    assert "MICHI_ROLLOUTS_POLICY" in message and "missing.yaml" in message
    monkeypatch.setenv("MICHI_ROLLOUTS_POLICY", str(tmp_path / "absent.yaml"))
    with pytest.raises(SystemExit):
        load_settings(RolloutsSettings)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        ({"model_name": "other"}, "not in the policy's models"),
        ({"placed_by": "dana"}, "put in shadow by dana"),
        ({"placed_by": None}, "put in shadow by nobody"),
        ({"ever_in_rollout": True}, "already rolled out once"),
        ({"model_has_rollout": True}, "another rollout of the model"),
        ({"model_has_champion": False}, "no champion"),
    ],
)
def test_when_a_shadow_is_due_to_start(changes: dict[str, Any], reason: str | None) -> None:
    values: dict[str, Any] = {
        "model_name": MODEL,
        "version": CANDIDATE,
        "placed_by": "trainer",
        "reason": "",
        "ever_in_rollout": False,
        "model_has_rollout": False,
        "model_has_champion": True,
    }
    found = auto_start_due(AutoStart(strategy="ab", models=(MODEL,)), ShadowPlacement(**{**values, **changes}))
    assert (found is None) if reason is None else (found is not None and reason in found)
