"""Rollouts by hand in the model registry (SQLite, plans recorded by an in-memory publisher).

Each action (start, set-weight, pause, resume, promote, rollback, abort) is checked for the plan revision it
publishes (arms, shares, rollout id, as inference reads them), the stages it leaves, and its one audited
decision with the plan it replaced; manual `promote`/`rollback` during a rollout end it as overrides; one
rollout serves per model, also when starts race; an older registry database upgrades with its rows.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from google.protobuf.json_format import MessageToDict
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from michi.contracts.v1 import inference_pb2, operations_pb2
from michi.migrations import alembic_config, current_revision, head_revision
from michi.registry import ModelRegistry, Stage, StageRuleViolation, UnknownModelVersion
from michi.registry.migrations import MIGRATIONS
from michi.registry.rollout_status import RolloutRefused
from michi.registry.tables import RolloutRow
from michi.rollouts.steps import RolloutSpecError
from services.inference.domain.rollout import arms_of

from ..fakes import RecordingPlanPublisher

MODEL = "risk"
CANARY = inference_pb2.VARIANT_CANARY
CHAMPION = inference_pb2.VARIANT_CHAMPION
SHADOW = inference_pb2.VARIANT_SHADOW
TREATMENT = inference_pb2.VARIANT_TREATMENT
DOCUMENT = {
    "analyses": {"quality": {"success": ["agreement_with_labels >= champion - 0.02"]}},
    "steps": [
        {"set_weight": 10},
        {"pause": {"duration": "10m"}},
        {"analyse": "quality"},
        {"set_weight": 50},
        {"analyse": "quality"},
    ],
}


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'michi.db'}"


@pytest.fixture
def publisher() -> RecordingPlanPublisher:
    return RecordingPlanPublisher()


@pytest.fixture
def registry(database_url: str, publisher: RecordingPlanPublisher) -> Iterator[ModelRegistry]:
    """`risk` with versions 1 (champion), 2 and 3 (candidates)."""
    built = ModelRegistry.from_url(database_url, publisher)
    for number in (1, 2, 3):
        built.register(
            MODEL, f"file:///{number}.onnx", f"{number}" * 64, "code", f"data-{number}", {}, {}, created_by="test"
        )
    built.promote(MODEL, "1", actor="test", reason="bootstrap")
    try:
        yield built
    finally:
        built.close()


def arms(plan: operations_pb2.RolloutPlan) -> list[tuple[str, int, float]]:
    return [(arm.model.version, arm.variant, round(arm.traffic_share, 6)) for arm in plan.arms]


def stages(registry: ModelRegistry) -> dict[str, Stage]:
    return {version.version: version.stage for version in registry.list(MODEL)}


def test_start_publishes_a_canary_plan_inference_serves(
    registry: ModelRegistry, publisher: RecordingPlanPublisher
) -> None:
    registry.transition(MODEL, "3", Stage.SHADOW, actor="test", reason="shadow it")
    before = publisher.plans[-1]

    plan = registry.start_rollout(MODEL, "2", actor="dana", reason="looks better offline", weight=10)

    assert plan == publisher.plans[-1] == registry.current_plan(MODEL)
    assert plan.revision == before.revision + 1
    assert re.fullmatch(r"ro-risk-2-[0-9a-f]{8}", plan.rollout_id)
    assert plan.strategy == operations_pb2.ROLLOUT_STRATEGY_CANARY
    assert arms(plan) == [("2", CANARY, 0.1), ("1", CHAMPION, 0.9), ("3", SHADOW, 0.0)]
    assert plan.champion.version == "1"
    assert "started: looks better offline" in plan.reason
    served = arms_of(plan)
    assert served.problems == [] and served.split is not None
    assert stages(registry) == {"1": Stage.CHAMPION, "2": Stage.CANARY, "3": Stage.SHADOW}

    rollout = registry.active_rollout(MODEL)
    assert rollout is not None
    assert (rollout.rollout_id, rollout.candidate_version, rollout.champion_version) == (plan.rollout_id, "2", "1")
    assert (rollout.strategy, rollout.status, rollout.weight_percent, rollout.started_by) == (
        "canary",
        "running",
        10.0,
        "dana",
    )
    [decision] = registry.rollout_history(MODEL)
    assert (decision.action, decision.actor, decision.reason, decision.revision) == (
        "start",
        "dana",
        "looks better offline",
        plan.revision,
    )
    assert decision.previous_plan == MessageToDict(before, preserving_proto_field_name=True)
    assert decision.evidence["weight_percent"] == 10.0
    # The stage change the start made is audited in the registry's own trail too.
    last_change = registry.history(MODEL)[-1]
    assert (last_change.version, last_change.from_stage, last_change.to_stage, last_change.revision) == (
        "2",
        Stage.CANDIDATE,
        Stage.CANARY,
        plan.revision,
    )


def test_a_registry_given_a_rollout_id_source_starts_rollouts_with_its_ids(
    database_url: str, publisher: RecordingPlanPublisher
) -> None:
    asked: list[tuple[str, str]] = []

    def fixed_ids(name: str, version: str) -> str:
        asked.append((name, version))
        return f"ro-{name}-{version}-5eed0018"

    seeded = ModelRegistry.from_url(database_url, publisher, rollout_ids=fixed_ids)
    try:
        for number in (1, 2):
            seeded.register(
                MODEL, f"file:///{number}.onnx", f"{number}" * 64, "code", "data", {}, {}, created_by="test"
            )
        seeded.promote(MODEL, "1", actor="test", reason="bootstrap")
        plan = seeded.start_rollout(MODEL, "2", actor="dana", reason="seeded", strategy="bandit")
        seeded.set_rollout_weight(MODEL, 30, actor="dana", reason="keeps its id")
        assert plan.rollout_id == "ro-risk-2-5eed0018" == seeded.current_plan(MODEL).rollout_id
        assert asked == [(MODEL, "2")]
    finally:
        seeded.close()


def test_an_ab_test_serves_the_candidate_as_treatment_at_half_by_default(registry: ModelRegistry) -> None:
    plan = registry.start_rollout(MODEL, "2", actor="dana", reason="a/b", strategy="ab")
    assert plan.strategy == operations_pb2.ROLLOUT_STRATEGY_AB
    assert arms(plan) == [("2", TREATMENT, 0.5), ("1", CHAMPION, 0.5)]
    assert arms_of(plan).problems == []


def test_a_bandit_serves_the_candidate_as_treatment_and_its_shares_move_as_weights(registry: ModelRegistry) -> None:
    plan = registry.start_rollout(MODEL, "2", actor="dana", reason="bandit", strategy="bandit")
    assert plan.strategy == operations_pb2.ROLLOUT_STRATEGY_BANDIT
    assert arms(plan) == [("2", TREATMENT, 0.5), ("1", CHAMPION, 0.5)]
    assert arms_of(plan).problems == []
    moved = registry.set_rollout_weight(MODEL, 83.29, actor="policy:bandit", reason="allocation")
    assert arms(moved) == [("2", TREATMENT, 0.8329), ("1", CHAMPION, 0.1671)]
    assert moved.rollout_id == plan.rollout_id and arms_of(moved).problems == []
    registry.abort_rollout(MODEL, actor="dana", reason="done")
    with pytest.raises(RolloutRefused, match="a bandit sets its own shares"):
        registry.start_rollout(MODEL, "2", actor="dana", reason="r", strategy="bandit", document=DOCUMENT)


def test_the_shadow_can_be_the_candidate_and_then_has_no_shadow_arm(registry: ModelRegistry) -> None:
    registry.transition(MODEL, "2", Stage.SHADOW, actor="test", reason="shadow it")
    plan = registry.start_rollout(MODEL, "2", actor="dana", reason="go", weight=5)
    assert arms(plan) == [("2", CANARY, 0.05), ("1", CHAMPION, 0.95)]
    registry.abort_rollout(MODEL, actor="dana", reason="enough")
    assert stages(registry)["2"] == Stage.CANDIDATE


def test_set_weight_keeps_the_rollout_id_and_changes_only_the_shares(registry: ModelRegistry) -> None:
    started = registry.start_rollout(MODEL, "2", actor="dana", reason="go", weight=10)
    changes = len(registry.history(MODEL))

    raised = registry.set_rollout_weight(MODEL, 25, actor="dana", reason="healthy")

    assert raised.rollout_id == started.rollout_id and raised.revision == started.revision + 1
    assert raised.strategy == started.strategy
    assert arms(raised) == [("2", CANARY, 0.25), ("1", CHAMPION, 0.75)]
    assert len(registry.history(MODEL)) == changes  # no stage moved
    # A ramp moves only champion devices onto the canary.
    before, after = arms_of(started).split, arms_of(raised).split
    assert before is not None and after is not None
    devices = [f"device-{number}" for number in range(2000)]
    on_canary = {device for device in devices if before.route(device).arm == "2"}
    assert on_canary and on_canary <= {device for device in devices if after.route(device).arm == "2"}
    assert registry.rollout_history(MODEL)[0].evidence["weight_percent"] == {"from": 10.0, "to": 25.0}


def test_pause_and_resume_keep_every_share(registry: ModelRegistry) -> None:
    started = registry.start_rollout(MODEL, "2", actor="dana", reason="go", weight=20)

    paused = registry.pause_rollout(MODEL, actor="dana", reason="waiting for labels")
    assert arms(paused) == arms(started) and paused.rollout_id == started.rollout_id
    assert paused.revision == started.revision + 1 and "paused: waiting for labels" in paused.reason
    assert registry.active_rollout(MODEL).status == "paused"  # type: ignore[union-attr]
    with pytest.raises(RolloutRefused, match="paused: resume it first"):
        registry.set_rollout_weight(MODEL, 50, actor="dana", reason="too soon")
    with pytest.raises(RolloutRefused, match="paused: resume it first"):
        registry.pause_rollout(MODEL, actor="dana", reason="again")

    resumed = registry.resume_rollout(MODEL, actor="dana", reason="labels are in")
    assert arms(resumed) == arms(started) and resumed.rollout_id == started.rollout_id
    assert resumed.revision == paused.revision + 1 and "resumed" in resumed.reason
    assert registry.active_rollout(MODEL).status == "running"  # type: ignore[union-attr]
    with pytest.raises(RolloutRefused, match="is running: cannot resume"):
        registry.resume_rollout(MODEL, actor="dana", reason="again")


def test_promote_ends_the_rollout_with_the_candidate_as_champion(registry: ModelRegistry) -> None:
    registry.transition(MODEL, "3", Stage.SHADOW, actor="test", reason="shadow it")
    started = registry.start_rollout(MODEL, "2", actor="dana", reason="go", weight=50)

    plan = registry.promote_rollout(MODEL, actor="dana", reason="passed")

    # One decision, one revision: the candidate made champion and the old champion retired share it.
    assert plan.revision == started.revision + 1
    assert registry.rollout_history(MODEL)[0].revision == plan.revision
    assert [(change.version, change.to_stage, change.revision) for change in registry.history(MODEL)[-2:]] == [
        ("2", Stage.CHAMPION, plan.revision),
        ("1", Stage.RETIRED, plan.revision),
    ]
    assert plan.rollout_id == "" and plan.strategy == operations_pb2.ROLLOUT_STRATEGY_SHADOW
    assert arms(plan) == [("2", CHAMPION, 1.0), ("3", SHADOW, 0.0)]
    assert stages(registry) == {"1": Stage.RETIRED, "2": Stage.CHAMPION, "3": Stage.SHADOW}
    assert registry.active_rollout(MODEL) is None
    [ended] = registry.rollouts(MODEL)
    assert ended.status == "promoted" and ended.ended_at is not None
    assert [decision.action for decision in registry.rollout_history(MODEL)] == ["promote", "start"]
    # A rollout's promotion is a promotion: rolling back restores the champion it replaced.
    registry.rollback(MODEL, actor="dana", reason="regret")
    assert stages(registry)["1"] == Stage.CHAMPION


@pytest.mark.parametrize(("action", "status"), [("abort", "aborted"), ("rollback", "rolled-back")])
def test_abort_and_rollback_send_the_candidate_back(registry: ModelRegistry, action: str, status: str) -> None:
    registry.start_rollout(MODEL, "2", actor="dana", reason="go", weight=10)
    plan = getattr(registry, f"{action}_rollout")(MODEL, actor="policy:quality", reason="worse", evidence={"p": 0.01})

    assert plan.rollout_id == "" and plan.strategy == operations_pb2.ROLLOUT_STRATEGY_CHAMPION_ONLY
    assert arms(plan) == [("1", CHAMPION, 1.0)]
    assert stages(registry) == {"1": Stage.CHAMPION, "2": Stage.CANDIDATE, "3": Stage.CANDIDATE}
    assert registry.active_rollout(MODEL) is None and registry.rollouts(MODEL)[0].status == status
    latest = registry.rollout_history(MODEL)[0]
    assert (latest.action, latest.actor, latest.evidence["p"]) == (action, "policy:quality", 0.01)
    with pytest.raises(RolloutRefused, match="no rollout of risk is running"):
        getattr(registry, f"{action}_rollout")(MODEL, actor="dana", reason="again")


def test_models_promote_during_a_rollout_ends_it_as_a_manual_override(registry: ModelRegistry) -> None:
    registry.start_rollout(MODEL, "2", actor="dana", reason="go", weight=10)
    plan = registry.promote(MODEL, "2", actor="erin", reason="ship it")

    assert plan.rollout_id == "" and arms(plan) == [("2", CHAMPION, 1.0)]
    assert registry.rollouts(MODEL)[0].status == "promoted"
    latest = registry.rollout_history(MODEL)[0]
    assert (latest.action, latest.actor, latest.reason) == ("promote", "erin", "manual override: ship it")


def test_promoting_another_version_during_a_rollout_aborts_it(registry: ModelRegistry) -> None:
    registry.start_rollout(MODEL, "2", actor="dana", reason="go", weight=10)
    registry.promote(MODEL, "3", actor="erin", reason="hotfix")

    assert stages(registry) == {"1": Stage.RETIRED, "2": Stage.CANDIDATE, "3": Stage.CHAMPION}
    assert registry.rollouts(MODEL)[0].status == "aborted"
    assert registry.rollout_history(MODEL)[0].reason == "manual override: hotfix"
    assert registry.current_plan(MODEL).rollout_id == ""


def test_models_rollback_during_a_rollout_rolls_the_rollout_back_not_the_champion(registry: ModelRegistry) -> None:
    registry.start_rollout(MODEL, "2", actor="dana", reason="go", weight=10)
    plan = registry.rollback(MODEL, actor="erin", reason="alerts")

    assert arms(plan) == [("1", CHAMPION, 1.0)] and plan.rollout_id == ""
    assert stages(registry) == {"1": Stage.CHAMPION, "2": Stage.CANDIDATE, "3": Stage.CANDIDATE}
    assert registry.rollouts(MODEL)[0].status == "rolled-back"
    latest = registry.rollout_history(MODEL)[0]
    assert (latest.action, latest.actor, latest.reason) == ("rollback", "erin", "manual override: alerts")


def test_another_version_to_shadow_during_a_rollout_keeps_it_serving(registry: ModelRegistry) -> None:
    started = registry.start_rollout(MODEL, "2", actor="dana", reason="go", weight=10)
    plan = registry.transition(MODEL, "3", Stage.SHADOW, actor="test", reason="shadow it")
    assert plan.rollout_id == started.rollout_id and plan.revision == started.revision + 1
    assert arms(plan) == [("2", CANARY, 0.1), ("1", CHAMPION, 0.9), ("3", SHADOW, 0.0)]
    # The rollout row followed the revision (compare-and-set): the next weight change builds on it.
    assert registry.active_rollout(MODEL).revision == plan.revision  # type: ignore[union-attr]
    assert registry.set_rollout_weight(MODEL, 30, actor="dana", reason="on").revision == plan.revision + 1
    with pytest.raises(StageRuleViolation, match="canary of a rollout"):
        registry.transition(MODEL, "2", Stage.RETIRED, actor="test", reason="no")
    with pytest.raises(StageRuleViolation, match="only when a rollout of it starts"):
        registry.transition(MODEL, "3", Stage.CANARY, actor="test", reason="no")


def test_one_rollout_per_model(registry: ModelRegistry, publisher: RecordingPlanPublisher) -> None:
    first = registry.start_rollout(MODEL, "2", actor="dana", reason="go", weight=10)
    published = len(publisher.plans)
    with pytest.raises(RolloutRefused, match=f"rollout {first.rollout_id} of risk is already running"):
        registry.start_rollout(MODEL, "3", actor="erin", reason="me too", weight=10)
    assert len(publisher.plans) == published and stages(registry)["3"] == Stage.CANDIDATE
    registry.abort_rollout(MODEL, actor="dana", reason="make room")
    second = registry.start_rollout(MODEL, "3", actor="erin", reason="now", weight=10)
    assert second.rollout_id != first.rollout_id
    assert [rollout.status for rollout in registry.rollouts(MODEL)] == ["running", "aborted"]


def test_concurrent_starts_let_exactly_one_through(registry: ModelRegistry) -> None:
    for number in range(4, 10):
        registry.register(MODEL, f"file:///{number}", "f" * 64, "code", "data", {}, {}, created_by="test")
    versions = [str(number) for number in range(2, 10)]
    barrier = threading.Barrier(len(versions))
    outcomes: dict[str, Any] = {}

    def start(version: str) -> None:
        barrier.wait()
        try:
            outcomes[version] = registry.start_rollout(MODEL, version, actor="dana", reason="race", weight=10)
        except RolloutRefused as refused:
            outcomes[version] = refused

    threads = [threading.Thread(target=start, args=(version,)) for version in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    started = [version for version, outcome in outcomes.items() if isinstance(outcome, operations_pb2.RolloutPlan)]
    assert len(started) == 1, outcomes
    assert all("is already running" in str(outcome) for version, outcome in outcomes.items() if version != started[0])
    assert [version for version, stage in stages(registry).items() if stage == Stage.CANARY] == started
    assert len(registry.rollouts(MODEL)) == 1 and len(registry.rollout_history(MODEL)) == 1


def test_the_database_itself_refuses_a_second_serving_rollout(registry: ModelRegistry) -> None:
    # What stops two starts that both read "no rollout" on PostgreSQL: the unique active_model.
    registry.start_rollout(MODEL, "2", actor="dana", reason="go", weight=10)
    active = registry.active_rollout(MODEL)
    assert active is not None
    with Session(registry.engine) as session:
        session.add(
            RolloutRow(
                rollout_id="ro-risk-3-00000000",
                model_name=MODEL,
                active_model=MODEL,
                candidate_version="3",
                champion_version="1",
                strategy="canary",
                status="running",
                weight_percent=10.0,
                revision=active.revision,
                started_by="intruder",
                started_at=active.started_at,
            )
        )
        with pytest.raises(IntegrityError):
            session.commit()


def test_every_revision_is_recorded_once_with_the_plan_it_replaced(
    registry: ModelRegistry, publisher: RecordingPlanPublisher
) -> None:
    first = len(publisher.plans)
    registry.start_rollout(MODEL, "2", actor="dana", reason="go", weight=10)
    registry.set_rollout_weight(MODEL, 25, actor="dana", reason="ramp")
    registry.pause_rollout(MODEL, actor="dana", reason="wait")
    registry.resume_rollout(MODEL, actor="dana", reason="go on")
    registry.set_rollout_weight(MODEL, 50, actor="dana", reason="ramp")
    registry.promote_rollout(MODEL, actor="dana", reason="passed")

    plans = publisher.plans[first - 1 :]  # the plan in force before the start, then one per action
    assert len(plans) == 7
    decisions = list(reversed(registry.rollout_history(MODEL)))
    assert [decision.action for decision in decisions] == [
        "start",
        "set-weight",
        "pause",
        "resume",
        "set-weight",
        "promote",
    ]
    assert [decision.revision for decision in decisions] == [plan.revision for plan in plans[1:]]
    assert [plan.revision for plan in plans] == sorted({plan.revision for plan in plans})
    for decision, previous in zip(decisions, plans, strict=False):
        assert decision.previous_plan == MessageToDict(previous, preserving_proto_field_name=True)
    assert {plan.rollout_id for plan in plans[1:-1]} == {plans[1].rollout_id} and plans[-1].rollout_id == ""


@pytest.mark.parametrize("weight", [-1, 100.5, float("nan")])
def test_a_weight_outside_0_to_100_is_refused_before_anything_is_written(
    registry: ModelRegistry, publisher: RecordingPlanPublisher, weight: float
) -> None:
    published = len(publisher.plans)
    with pytest.raises(RolloutRefused, match="outside 0-100"):
        registry.start_rollout(MODEL, "2", actor="dana", reason="go", weight=weight)
    registry.start_rollout(MODEL, "2", actor="dana", reason="go", weight=0)
    with pytest.raises(RolloutRefused, match="outside 0-100"):
        registry.set_rollout_weight(MODEL, weight, actor="dana", reason="ramp")
    assert len(publisher.plans) == published + 1
    assert arms(registry.set_rollout_weight(MODEL, 100, actor="dana", reason="all in")) == [
        ("2", CANARY, 1.0),
        ("1", CHAMPION, 0.0),
    ]


def test_refusals(registry: ModelRegistry, database_url: str) -> None:
    with pytest.raises(StageRuleViolation, match="is the champion"):
        registry.start_rollout(MODEL, "1", actor="dana", reason="go")
    with pytest.raises(UnknownModelVersion):
        registry.start_rollout(MODEL, "9", actor="dana", reason="go")
    with pytest.raises(UnknownModelVersion):
        registry.start_rollout("nothing", "1", actor="dana", reason="go")
    with pytest.raises(RolloutRefused, match="no rollout of risk is running"):
        registry.set_rollout_weight(MODEL, 20, actor="dana", reason="ramp")
    registry.register("fresh", "file:///f", "e" * 64, "code", "data", {}, {}, created_by="test")
    with pytest.raises(StageRuleViolation, match="no champion"):
        registry.start_rollout("fresh", "1", actor="dana", reason="go")
    registry.transition(MODEL, "3", Stage.RETIRED, actor="test", reason="bad")
    with pytest.raises(StageRuleViolation, match="is retired"):
        registry.start_rollout(MODEL, "3", actor="dana", reason="go")
    with pytest.raises(RolloutRefused, match="not both"):
        registry.start_rollout(MODEL, "2", actor="dana", reason="go", weight=10, document=DOCUMENT)
    with pytest.raises(RolloutRefused, match="A/B test takes a weight"):
        registry.start_rollout(MODEL, "2", actor="dana", reason="go", strategy="ab", document=DOCUMENT)
    with pytest.raises(RolloutSpecError):
        registry.start_rollout(MODEL, "2", actor="dana", reason="go", document={"steps": [{"set_weight": 10}]})
    reader = ModelRegistry.from_url(database_url)  # no producer: read-only
    with pytest.raises(Exception, match="no producer"):
        reader.start_rollout(MODEL, "2", actor="dana", reason="go")
    reader.close()
    assert registry.active_rollout(MODEL) is None and registry.rollout_history(MODEL) == []


def test_a_rollout_document_sets_the_first_weight_and_manual_steps_follow_it(registry: ModelRegistry) -> None:
    plan = registry.start_rollout(MODEL, "2", actor="dana", reason="go", document=DOCUMENT)
    assert arms(plan)[0] == ("2", CANARY, 0.1)
    rollout = registry.active_rollout(MODEL)
    assert rollout is not None and (rollout.step_index, rollout.steps, rollout.document) == (0, 5, DOCUMENT)
    registry.set_rollout_weight(MODEL, 30, actor="dana", reason="off the document")
    assert registry.active_rollout(MODEL).step_index == 0  # type: ignore[union-attr]
    registry.set_rollout_weight(MODEL, 50, actor="dana", reason="the next step by hand")
    assert registry.active_rollout(MODEL).step_index == 3  # type: ignore[union-attr]
    assert registry.rollout_history(MODEL)[0].evidence["step_index"] == {"from": 0, "to": 3}


def test_an_older_registry_database_upgrades_with_its_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    publisher = RecordingPlanPublisher()
    # A registry database at revision 0001 (before rollouts), with versions and stage changes.
    with engine.connect() as connection, connection.begin():
        command.upgrade(alembic_config(MIGRATIONS, connection), "0001")
    old = ModelRegistry(engine, publisher)
    for number in (1, 2):
        old.register(MODEL, f"file:///{number}", "a" * 64, "code", "data", {}, {}, created_by="test")
    with engine.begin() as connection:
        connection.execute(text("UPDATE registry_model_version SET stage = 'champion' WHERE version = '1'"))
        connection.execute(
            text(
                "INSERT INTO registry_stage_change (model_name, sequence, version, from_stage, to_stage, kind,"
                " reason, actor, changed_at) VALUES ('risk', 1, '1', 'candidate', 'champion', 'promotion',"
                " 'bootstrap', 'test', '2026-01-01 00:00:00')"
            )
        )
        tables = {row[0] for row in connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))}
    assert "registry_rollout" not in tables
    engine.dispose()

    upgraded = ModelRegistry.from_url(url, publisher)
    try:
        with upgraded.engine.connect() as connection:
            assert current_revision(connection, MIGRATIONS) == head_revision(MIGRATIONS) == "0004"
        assert [(version.version, version.stage) for version in upgraded.list(MODEL)] == [
            ("1", Stage.CHAMPION),
            ("2", Stage.CANDIDATE),
        ]
        assert [change.reason for change in upgraded.history(MODEL)] == ["bootstrap"]
        # A row written before stage changes had a revision of their own: its revision is its sequence.
        assert [change.revision for change in upgraded.history(MODEL)] == [1]
        plan = upgraded.start_rollout(MODEL, "2", actor="dana", reason="first rollout", weight=10)
        assert plan.revision == 2 and arms(plan) == [("2", CANARY, 0.1), ("1", CHAMPION, 0.9)]
        promoted = upgraded.promote_rollout(MODEL, actor="dana", reason="good")
        assert promoted.revision == 3
        assert sorted((change.sequence, change.revision) for change in upgraded.history(MODEL)) == [
            (1, 1),
            (2, 2),
            (3, 3),
            (4, 3),
        ]
    finally:
        upgraded.close()


# --- a bandit over more than two arms (candidates beyond the first: `registry_rollout_candidate`)


def register_more(registry: ModelRegistry, *numbers: int) -> None:
    for number in numbers:
        registry.register(
            MODEL, f"file:///{number}.onnx", f"{number}" * 64, "code", f"data-{number}", {}, {}, created_by="test"
        )


def test_a_bandit_of_three_candidates_serves_four_arms_and_moves_their_shares_in_one_revision(
    registry: ModelRegistry, publisher: RecordingPlanPublisher
) -> None:
    register_more(registry, 4)
    registry.transition(MODEL, "4", Stage.SHADOW, actor="trainer", reason="passed the gate")
    plan = registry.start_rollout(
        MODEL, "2", actor="dana", reason="four arms", strategy="bandit", more_versions=["3", "4"]
    )
    assert arms(plan) == [("2", TREATMENT, 0.25), ("3", TREATMENT, 0.25), ("4", TREATMENT, 0.25), ("1", CHAMPION, 0.25)]
    assert plan.strategy == operations_pb2.ROLLOUT_STRATEGY_BANDIT
    served = arms_of(plan)
    assert [arm.model.version for arm in served.serving] == ["2", "3", "4", "1"] and not served.problems
    assert stages(registry) == {"1": Stage.CHAMPION, "2": Stage.CANARY, "3": Stage.CANARY, "4": Stage.CANARY}
    rollout = registry.active_rollout(MODEL)
    assert rollout is not None
    assert (rollout.candidate_version, rollout.candidates, rollout.arms) == ("2", ("2", "3", "4"), ("2", "3", "4", "1"))
    assert rollout.weights == (("2", 25.0), ("3", 25.0), ("4", 25.0)) and rollout.champion_percent == 25.0
    start = registry.rollout_history(MODEL)[0]
    assert start.evidence["candidates"] == ["2", "3", "4"]
    assert start.evidence["percents"] == {"2": 25.0, "3": 25.0, "4": 25.0, "1": 25.0}

    moved = registry.set_rollout_shares(
        MODEL, {"2": 5.0, "3": 80.5, "4": 5.0}, actor="policy:bandit", reason="labels", evidence={"policy": "bandit"}
    )
    assert arms(moved) == [
        ("2", TREATMENT, 0.05),
        ("3", TREATMENT, 0.805),
        ("4", TREATMENT, 0.05),
        ("1", CHAMPION, 0.095),
    ]
    assert moved.rollout_id == plan.rollout_id and moved.revision == plan.revision + 1
    decision = registry.rollout_history(MODEL)[0]
    assert (decision.action, decision.revision) == ("set-weight", moved.revision)
    assert decision.evidence["percents"] == {"2": 5.0, "3": 80.5, "4": 5.0, "1": 9.5}
    assert registry.current_plan(MODEL) == moved == publisher.plans[-1]
    assert registry.active_rollout(MODEL).weights == (("2", 5.0), ("3", 80.5), ("4", 5.0))  # type: ignore[union-attr]

    # Shares are the bandit's: one candidate's weight alone is refused, so are shares that miss a candidate or
    # leave the champion less than nothing; nothing is written.
    with pytest.raises(RolloutRefused, match="serves 3 candidates"):
        registry.set_rollout_weight(MODEL, 50, actor="dana", reason="by hand")
    with pytest.raises(RolloutRefused, match="give a share for each"):
        registry.set_rollout_shares(MODEL, {"2": 50.0, "3": 10.0}, actor="dana", reason="by hand")
    with pytest.raises(RolloutRefused, match="more than 100%"):
        registry.set_rollout_shares(MODEL, {"2": 50.0, "3": 40.0, "4": 20.0}, actor="dana", reason="by hand")
    with pytest.raises(RolloutRefused, match="say which one to promote"):
        registry.promote_rollout(MODEL, actor="dana", reason="which?")
    with pytest.raises(RolloutRefused, match="not a candidate"):
        registry.promote_rollout(MODEL, actor="dana", reason="the champion?", version="1")
    assert registry.current_plan(MODEL) == moved

    # Paused and resumed: the same four shares.
    assert arms(registry.pause_rollout(MODEL, actor="dana", reason="hold")) == arms(moved)
    assert arms(registry.resume_rollout(MODEL, actor="dana", reason="go on")) == arms(moved)

    # The winner promoted: it is champion, the old champion retired, the other candidates back to candidate, all
    # in one revision; the plan is the champion's alone.
    ended = registry.promote_rollout(MODEL, actor="policy:bandit", reason="3 is the best", version="3")
    assert ended.rollout_id == "" and arms(ended) == [("3", CHAMPION, 1.0)]
    assert stages(registry) == {"1": Stage.RETIRED, "2": Stage.CANDIDATE, "3": Stage.CHAMPION, "4": Stage.CANDIDATE}
    changes = [change for change in registry.history(MODEL) if change.revision == ended.revision]
    assert sorted((change.version, change.to_stage) for change in changes) == [
        ("1", Stage.RETIRED),
        ("2", Stage.CANDIDATE),
        ("3", Stage.CHAMPION),
        ("4", Stage.CANDIDATE),
    ]
    assert registry.rollouts(MODEL)[0].status == "promoted"
    assert registry.rollouts(MODEL)[0].candidates == ("2", "3", "4")


@pytest.mark.parametrize("action", ["rollback", "abort"])
def test_a_bandit_of_several_candidates_ended_without_a_winner_sends_every_candidate_back(
    registry: ModelRegistry, action: str
) -> None:
    registry.start_rollout(MODEL, "2", actor="dana", reason="go", strategy="bandit", more_versions=["3"])
    plan = getattr(registry, f"{action}_rollout")(MODEL, actor="dana", reason="enough")
    assert plan.rollout_id == "" and arms(plan) == [("1", CHAMPION, 1.0)]
    assert stages(registry) == {"1": Stage.CHAMPION, "2": Stage.CANDIDATE, "3": Stage.CANDIDATE}
    assert registry.active_rollout(MODEL) is None


def test_models_promote_of_a_second_candidate_ends_its_bandit_as_a_manual_override(registry: ModelRegistry) -> None:
    registry.start_rollout(MODEL, "2", actor="dana", reason="go", strategy="bandit", more_versions=["3"])
    plan = registry.promote(MODEL, "3", actor="erin", reason="3 it is")
    assert plan.rollout_id == "" and arms(plan) == [("3", CHAMPION, 1.0)]
    assert stages(registry) == {"1": Stage.RETIRED, "2": Stage.CANDIDATE, "3": Stage.CHAMPION}
    decision = registry.rollout_history(MODEL)[0]
    assert (decision.action, decision.actor, decision.reason) == ("promote", "erin", "manual override: 3 it is")
    registry.register(MODEL, "file:///4.onnx", "4" * 64, "code", "data-4", {}, {}, created_by="test")
    registry.start_rollout(MODEL, "2", actor="dana", reason="again", strategy="bandit", more_versions=["4"])
    registry.rollback(MODEL, actor="erin", reason="no")
    assert stages(registry) == {"1": Stage.RETIRED, "2": Stage.CANDIDATE, "3": Stage.CHAMPION, "4": Stage.CANDIDATE}


def test_more_than_one_candidate_is_refused_unless_a_bandit_within_the_arms_inference_serves(
    registry: ModelRegistry, publisher: RecordingPlanPublisher
) -> None:
    register_more(registry, 4, 5, 6)
    published = len(publisher.plans)
    with pytest.raises(RolloutRefused, match="only a bandit serves more than one candidate"):
        registry.start_rollout(MODEL, "2", actor="dana", reason="go", strategy="ab", more_versions=["3"])
    with pytest.raises(RolloutRefused, match="4 candidates: a bandit serves at most 3"):
        registry.start_rollout(MODEL, "2", actor="dana", reason="go", strategy="bandit", more_versions=["3", "4", "5"])
    with pytest.raises(RolloutRefused, match="leave the champion less than nothing"):
        registry.start_rollout(
            MODEL, "2", actor="dana", reason="go", strategy="bandit", weight=40, more_versions=["3", "4"]
        )
    with pytest.raises(StageRuleViolation, match="the champion"):
        registry.start_rollout(MODEL, "2", actor="dana", reason="go", strategy="bandit", more_versions=["1"])
    with pytest.raises(StageRuleViolation, match="once"):
        registry.start_rollout(MODEL, "2", actor="dana", reason="go", strategy="bandit", more_versions=["2"])
    with pytest.raises(UnknownModelVersion):
        registry.start_rollout(MODEL, "2", actor="dana", reason="go", strategy="bandit", more_versions=["9"])
    # Three candidates, the champion and a shadow that is not a candidate: five models, one more than inference
    # serves at once.
    registry.transition(MODEL, "6", Stage.SHADOW, actor="trainer", reason="passed the gate")
    with pytest.raises(RolloutRefused, match="5 arms, at most 4"):
        registry.start_rollout(MODEL, "2", actor="dana", reason="go", strategy="bandit", more_versions=["3", "4"])
    assert len(publisher.plans) == published + 1 and registry.active_rollout(MODEL) is None
    assert stages(registry) == {
        "1": Stage.CHAMPION,
        "2": Stage.CANDIDATE,
        "3": Stage.CANDIDATE,
        "4": Stage.CANDIDATE,
        "5": Stage.CANDIDATE,
        "6": Stage.SHADOW,
    }
    # Two candidates beside the shadow fit.
    plan = registry.start_rollout(MODEL, "2", actor="dana", reason="go", strategy="bandit", more_versions=["3"])
    assert [arm.variant for arm in plan.arms] == [TREATMENT, TREATMENT, CHAMPION, SHADOW]


def test_a_registry_database_at_0003_with_a_rollout_running_upgrades_and_the_rollout_goes_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    publisher = RecordingPlanPublisher()
    with engine.connect() as connection, connection.begin():
        command.upgrade(alembic_config(MIGRATIONS, connection), "0003")
    with engine.begin() as connection:
        tables = {row[0] for row in connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))}
    assert "registry_rollout_candidate" not in tables
    # Written as 0003's code wrote it: a bandit of one candidate, its first allocation.
    with engine.begin() as connection:
        for number, stage in ((1, "champion"), (2, "canary")):
            connection.execute(
                text(
                    "INSERT INTO registry_model_version (name, version, number, stage, artifact_uri, artifact_sha256,"
                    " code_version, data_version, parameters, metrics, created_by, created_at) VALUES ('risk',"
                    f" '{number}', {number}, '{stage}', 'file:///{number}', '{'a' * 64}', 'code', 'data', '{{}}',"
                    " '{}', 'test', '2026-01-01 00:00:00')"
                )
            )
        connection.execute(
            text(
                "INSERT INTO registry_rollout (rollout_id, model_name, active_model, candidate_version,"
                " champion_version, strategy, status, weight_percent, revision, started_by, started_at) VALUES"
                " ('ro-risk-2-00000000', 'risk', 'risk', '2', '1', 'bandit', 'running', 70.0, 2, 'dana',"
                " '2026-01-01 00:00:00')"
            )
        )
    engine.dispose()

    upgraded = ModelRegistry.from_url(url, publisher)
    try:
        with upgraded.engine.connect() as connection:
            assert current_revision(connection, MIGRATIONS) == head_revision(MIGRATIONS) == "0004"
        rollout = upgraded.active_rollout(MODEL)
        assert rollout is not None and rollout.candidates == ("2",) and rollout.weights == (("2", 70.0),)
        assert arms(upgraded.current_plan(MODEL)) == [("2", TREATMENT, 0.7), ("1", CHAMPION, 0.3)]
        moved = upgraded.set_rollout_shares(MODEL, {"2": 95.0}, actor="policy:bandit", reason="labels")
        assert (
            arms(moved) == [("2", TREATMENT, 0.95), ("1", CHAMPION, 0.05)] and moved.rollout_id == "ro-risk-2-00000000"
        )
        assert upgraded.promote_rollout(MODEL, actor="dana", reason="good").revision == moved.revision + 1
        assert stages(upgraded) == {"1": Stage.RETIRED, "2": Stage.CHAMPION}
    finally:
        upgraded.close()
