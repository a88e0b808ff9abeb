"""The registry's stage rules and rollout plans as pure functions (no database, no broker)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from michi.contracts.v1 import inference_pb2, operations_pb2
from michi.registry.records import ModelVersion, compare_values
from michi.registry.rollout import build_rollout_plan
from michi.registry.stages import (
    ChangeKind,
    PlannedChange,
    Stage,
    StageRuleViolation,
    champion_lineage,
    plan_rollback,
    plan_rollout_end,
    plan_rollout_start,
    plan_transition,
)


def test_promotion_retires_the_previous_champion() -> None:
    stages = {"1": Stage.CHAMPION, "2": Stage.CANDIDATE}
    assert plan_transition(stages, "2", Stage.CHAMPION) == [
        PlannedChange("2", Stage.CANDIDATE, Stage.CHAMPION, ChangeKind.PROMOTION),
        PlannedChange("1", Stage.CHAMPION, Stage.RETIRED, ChangeKind.SIDE_EFFECT),
    ]


def test_a_new_shadow_sends_the_old_one_back_to_candidate() -> None:
    stages = {"1": Stage.CHAMPION, "2": Stage.SHADOW, "3": Stage.CANDIDATE}
    assert plan_transition(stages, "3", Stage.SHADOW) == [
        PlannedChange("3", Stage.CANDIDATE, Stage.SHADOW, ChangeKind.TRANSITION),
        PlannedChange("2", Stage.SHADOW, Stage.CANDIDATE, ChangeKind.SIDE_EFFECT),
    ]


def test_first_promotion_has_no_side_effect() -> None:
    assert plan_transition({"1": Stage.CANDIDATE}, "1", Stage.CHAMPION) == [
        PlannedChange("1", Stage.CANDIDATE, Stage.CHAMPION, ChangeKind.PROMOTION)
    ]


@pytest.mark.parametrize(
    ("current", "target", "message"),
    [
        (Stage.RETIRED, Stage.CHAMPION, "only a rollback"),
        (Stage.RETIRED, Stage.CANDIDATE, "only a rollback"),
        (Stage.CHAMPION, Stage.RETIRED, "promote another version or roll back"),
        (Stage.CHAMPION, Stage.SHADOW, "promote another version or roll back"),
        (Stage.CANDIDATE, Stage.CANDIDATE, "already candidate"),
    ],
)
def test_refused_transitions(current: Stage, target: Stage, message: str) -> None:
    with pytest.raises(StageRuleViolation, match=message):
        plan_transition({"1": current}, "1", target)


def test_unknown_version_is_refused() -> None:
    with pytest.raises(StageRuleViolation, match="unknown version 9"):
        plan_transition({"1": Stage.CANDIDATE}, "9", Stage.SHADOW)


def test_lineage_pops_on_rollback() -> None:
    promotions = [("1", ChangeKind.PROMOTION), ("2", ChangeKind.PROMOTION), ("3", ChangeKind.PROMOTION)]
    assert champion_lineage(promotions) == ["1", "2", "3"]
    assert champion_lineage([*promotions, ("2", ChangeKind.ROLLBACK)]) == ["1", "2"]
    assert champion_lineage([*promotions, ("2", ChangeKind.ROLLBACK), ("1", ChangeKind.ROLLBACK)]) == ["1"]


def test_rollback_restores_the_previous_champion() -> None:
    stages = {"1": Stage.RETIRED, "2": Stage.CHAMPION}
    assert plan_rollback(stages, ["1", "2"]) == [
        PlannedChange("2", Stage.CHAMPION, Stage.RETIRED, ChangeKind.ROLLBACK),
        PlannedChange("1", Stage.RETIRED, Stage.CHAMPION, ChangeKind.ROLLBACK),
    ]


def test_rollback_needs_a_champion_and_a_predecessor() -> None:
    with pytest.raises(StageRuleViolation, match="no champion"):
        plan_rollback({"1": Stage.CANDIDATE}, [])
    with pytest.raises(StageRuleViolation, match="no previous champion"):
        plan_rollback({"1": Stage.CHAMPION}, ["1"])


def _version(version: str, stage: Stage) -> ModelVersion:
    return ModelVersion(
        name="harsh-events",
        version=version,
        stage=stage,
        artifact_uri=f"file:///models/{version}.onnx",
        artifact_sha256=version * 64,
        code_version="abc123",
        data_version=f"data-{version}",
        parameters={},
        metrics={},
        parent_version=None,
        created_by="test",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_plan_with_champion_and_shadow() -> None:
    versions = [_version("1", Stage.RETIRED), _version("2", Stage.CHAMPION), _version("3", Stage.SHADOW)]
    plan = build_rollout_plan(
        "harsh-events", versions, revision=4, changed_at=datetime(2026, 1, 2, tzinfo=UTC), reason="try 3"
    )
    assert plan.strategy == operations_pb2.ROLLOUT_STRATEGY_SHADOW
    assert plan.champion.version == "2" and plan.champion.data_version == "data-2"
    assert [(arm.model.version, arm.variant, arm.traffic_share) for arm in plan.arms] == [
        ("2", inference_pb2.VARIANT_CHAMPION, 1.0),
        ("3", inference_pb2.VARIANT_SHADOW, 0.0),
    ]
    again = build_rollout_plan("harsh-events", versions, revision=4, changed_at=None, reason="")
    other = build_rollout_plan("harsh-events", versions, revision=5, changed_at=None, reason="")
    assert plan.event_id == again.event_id != other.event_id


def test_plan_with_champion_only() -> None:
    plan = build_rollout_plan(
        "harsh-events", [_version("1", Stage.CHAMPION)], revision=1, changed_at=None, reason="first"
    )
    assert plan.strategy == operations_pb2.ROLLOUT_STRATEGY_CHAMPION_ONLY
    assert [arm.variant for arm in plan.arms] == [inference_pb2.VARIANT_CHAMPION]


def test_compare_values_lists_every_key() -> None:
    changes = compare_values({"f1": 0.8, "seed": 7}, {"f1": 0.85, "epochs": 10})
    assert [(change.key, change.left, change.right, change.changed) for change in changes] == [
        ("epochs", None, 10, True),
        ("f1", 0.8, 0.85, True),
        ("seed", 7, None, True),
    ]
    assert changes[1].delta == pytest.approx(0.05)
    assert changes[0].delta is None


def test_a_rollout_start_puts_a_candidate_or_the_shadow_in_canary() -> None:
    for current in (Stage.CANDIDATE, Stage.SHADOW):
        assert plan_rollout_start({"1": Stage.CHAMPION, "2": current}, "2") == [
            PlannedChange("2", current, Stage.CANARY, ChangeKind.ROLLOUT)
        ]


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ({"1": Stage.CHAMPION, "2": Stage.CANDIDATE}, "is the champion"),
        ({"1": Stage.RETIRED, "2": Stage.CHAMPION}, "is retired"),
        ({"1": Stage.CANDIDATE, "2": Stage.CANDIDATE}, "no champion"),
        ({"1": Stage.CANDIDATE, "2": Stage.CHAMPION, "3": Stage.CANARY}, "3 is already canary"),
    ],
)
def test_refused_rollout_starts(stages: dict[str, Stage], message: str) -> None:
    with pytest.raises(StageRuleViolation, match=message):
        plan_rollout_start(stages, "1")


def test_a_rollout_end_promotes_the_canary_or_sends_it_back_to_candidate() -> None:
    stages = {"1": Stage.CHAMPION, "2": Stage.CANARY, "3": Stage.SHADOW}
    assert plan_rollout_end(stages, "2", promote=True) == [
        PlannedChange("2", Stage.CANARY, Stage.CHAMPION, ChangeKind.PROMOTION),
        PlannedChange("1", Stage.CHAMPION, Stage.RETIRED, ChangeKind.SIDE_EFFECT),
    ]
    assert plan_rollout_end(stages, "2", promote=False) == [
        PlannedChange("2", Stage.CANARY, Stage.CANDIDATE, ChangeKind.ROLLOUT)
    ]
    with pytest.raises(StageRuleViolation, match="not canary"):
        plan_rollout_end(stages, "3", promote=False)


@pytest.mark.parametrize("target", [Stage.CANDIDATE, Stage.SHADOW, Stage.RETIRED])
def test_a_canary_leaves_only_by_promotion_or_its_rollout_ending(target: Stage) -> None:
    with pytest.raises(StageRuleViolation, match="canary of a rollout"):
        plan_transition({"1": Stage.CHAMPION, "2": Stage.CANARY}, "2", target)
    with pytest.raises(StageRuleViolation, match="only when a rollout of it starts"):
        plan_transition({"1": Stage.CHAMPION, "2": Stage.CANDIDATE}, "2", Stage.CANARY)
