"""The model registry on each SQL backend (SQLite, and a real PostgreSQL via `postgres_url`), and on real Kafka.

Model names are unique per test: the session's PostgreSQL database outlives each test.
Database-level tests record plans with an in-memory publisher; the Kafka tests use the real producer.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from michi.bus.catalog import MODEL_ROLLOUTS
from michi.bus.producer import EventProducer
from michi.bus.reader import TopicReader
from michi.contracts.v1 import operations_pb2
from michi.registry import (
    ModelRegistry,
    ModelVersion,
    PlanNotPublished,
    Stage,
    StageRuleViolation,
    UnknownModelVersion,
)

from ..fakes import RecordingPlanPublisher


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres])])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'michi.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def publisher() -> RecordingPlanPublisher:
    return RecordingPlanPublisher()


@pytest.fixture
def registry(database_url: str, publisher: RecordingPlanPublisher) -> Iterator[ModelRegistry]:
    built = ModelRegistry.from_url(database_url, publisher)
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def model_name() -> str:
    return f"harsh-events-{uuid.uuid4().hex[:8]}"


def _register(registry: ModelRegistry, name: str, **overrides: Any) -> ModelVersion:
    arguments: dict[str, Any] = {
        "artifact_uri": f"file:///models/{uuid.uuid4().hex}.onnx",
        "sha256": uuid.uuid4().hex * 2,
        "code_version": "0123abcd",
        "data_version": "data-1",
        "parameters": {"epochs": 10, "learning_rate": 0.001},
        "metrics": {"f1": 0.8},
        "created_by": "test",
    }
    arguments.update(overrides)
    return registry.register(name, **arguments)


def test_register_promote_shadow_rollback_and_audit(
    registry: ModelRegistry, publisher: RecordingPlanPublisher, model_name: str
) -> None:
    first = _register(registry, model_name)
    second = _register(registry, model_name, parent_version=first.version, data_version="data-2")
    third = _register(registry, model_name, parent_version=second.version)
    assert [(version.version, version.stage) for version in registry.list(model_name)] == [
        ("1", Stage.CANDIDATE),
        ("2", Stage.CANDIDATE),
        ("3", Stage.CANDIDATE),
    ]
    assert registry.get(model_name, "2") == second and second.parent_version == "1"
    assert registry.champion(model_name) is None
    assert registry.current_plan(model_name).revision == 0

    plan = registry.promote(model_name, "1", actor="alice", reason="bootstrap")
    assert plan.champion.version == "1" and plan.revision == 1
    assert plan.strategy == operations_pb2.ROLLOUT_STRATEGY_CHAMPION_ONLY

    plan = registry.transition(model_name, "2", Stage.SHADOW, reason="compare on live traffic", actor="bob")
    assert plan.strategy == operations_pb2.ROLLOUT_STRATEGY_SHADOW
    assert [arm.model.version for arm in plan.arms] == ["1", "2"]

    plan = registry.promote(model_name, "2", actor="bob", reason="better f1")
    assert plan.champion.version == "2" and plan.strategy == operations_pb2.ROLLOUT_STRATEGY_CHAMPION_ONLY
    assert registry.get(model_name, "1").stage == Stage.RETIRED

    with pytest.raises(StageRuleViolation, match="only a rollback"):
        registry.promote(model_name, "1", actor="bob", reason="retired stays retired")
    with pytest.raises(StageRuleViolation, match="roll back"):
        registry.transition(model_name, "2", Stage.RETIRED, reason="no", actor="bob")

    plan = registry.rollback(model_name, actor="carol", reason="false alerts up")
    assert plan.champion.version == "1"
    assert registry.get(model_name, "2").stage == Stage.RETIRED
    with pytest.raises(StageRuleViolation, match="no previous champion"):
        registry.rollback(model_name, actor="carol", reason="nothing left")
    assert registry.get(model_name, third.version).stage == Stage.CANDIDATE

    history = registry.history(model_name)
    assert [(change.version, change.from_stage, change.to_stage, change.actor) for change in history] == [
        ("1", Stage.CANDIDATE, Stage.CHAMPION, "alice"),
        ("2", Stage.CANDIDATE, Stage.SHADOW, "bob"),
        ("2", Stage.SHADOW, Stage.CHAMPION, "bob"),
        ("1", Stage.CHAMPION, Stage.RETIRED, "bob"),
        ("2", Stage.CHAMPION, Stage.RETIRED, "carol"),
        ("1", Stage.RETIRED, Stage.CHAMPION, "carol"),
    ]
    assert [change.sequence for change in history] == [1, 2, 3, 4, 5, 6]
    # One revision per operation: a promotion's or a rollback's two stage changes share theirs.
    assert [change.revision for change in history] == [1, 2, 3, 3, 4, 4]
    assert history[-1].reason == "false alerts up" and history[-1].changed_at >= history[0].changed_at
    # One plan per stage-changing operation, the last one equal to what the database says now.
    assert [plan.revision for plan in publisher.plans] == [1, 2, 3, 4]
    assert publisher.plans[-1] == registry.current_plan(model_name)


def test_one_shadow_per_name(registry: ModelRegistry, model_name: str) -> None:
    for _ in range(2):
        _register(registry, model_name)
    registry.transition(model_name, "1", Stage.SHADOW, reason="first try", actor="alice")
    plan = registry.transition(model_name, "2", Stage.SHADOW, reason="second try", actor="alice")
    assert registry.get(model_name, "1").stage == Stage.CANDIDATE
    assert [arm.model.version for arm in plan.arms] == ["2"]  # no champion yet, shadow only


def test_concurrent_registrations_get_distinct_versions(registry: ModelRegistry, model_name: str) -> None:
    barrier = threading.Barrier(8)
    versions: list[str] = []
    errors: list[BaseException] = []

    def register_one() -> None:
        try:
            barrier.wait()
            for _ in range(3):
                versions.append(_register(registry, model_name).version)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=register_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(versions, key=int) == [str(number) for number in range(1, 25)]
    assert len(registry.list(model_name)) == 24


def test_diff(registry: ModelRegistry, model_name: str) -> None:
    _register(registry, model_name, parameters={"epochs": 10, "seed": 7}, metrics={"f1": 0.8, "recall": 0.7})
    _register(
        registry,
        model_name,
        parameters={"epochs": 20, "seed": 7},
        metrics={"f1": 0.85},
        data_version="data-2",
    )
    difference = registry.diff(model_name, "1", "2")
    assert [(change.key, change.left, change.right) for change in difference.parameters] == [
        ("epochs", 10, 20),
        ("seed", 7, 7),
    ]
    assert [change.changed for change in difference.parameters] == [True, False]
    assert [(change.key, change.right) for change in difference.metrics] == [("f1", 0.85), ("recall", None)]
    assert difference.metrics[0].delta == pytest.approx(0.05)
    assert difference.data_version_changed and not difference.code_version_changed
    with pytest.raises(UnknownModelVersion):
        registry.diff(model_name, "1", "9")


def test_a_bandit_of_three_candidates_on_each_backend(
    registry: ModelRegistry, publisher: RecordingPlanPublisher, model_name: str
) -> None:
    """Candidates beyond the first (`registry_rollout_candidate`): started, their shares moved in one revision, and
    the winner promoted with the others sent back, on SQLite and PostgreSQL."""
    versions = [_register(registry, model_name).version for _ in range(4)]
    registry.promote(model_name, versions[0], actor="test", reason="bootstrap")
    started = registry.start_rollout(
        model_name, versions[1], actor="dana", reason="go", strategy="bandit", more_versions=versions[2:]
    )
    assert [round(arm.traffic_share, 6) for arm in started.arms] == [0.25, 0.25, 0.25, 0.25]
    moved = registry.set_rollout_shares(
        model_name, {versions[1]: 5.0, versions[2]: 85.0, versions[3]: 5.0}, actor="policy:bandit", reason="labels"
    )
    assert [(arm.model.version, round(arm.traffic_share, 6)) for arm in moved.arms] == [
        (versions[1], 0.05),
        (versions[2], 0.85),
        (versions[3], 0.05),
        (versions[0], 0.05),
    ]
    rollout = registry.active_rollout(model_name)
    assert rollout is not None and rollout.candidates == tuple(versions[1:])
    assert [rollout.rollout_id for rollout in registry.active_rollouts() if rollout.model_name == model_name]
    ended = registry.promote_rollout(model_name, actor="policy:bandit", reason="best", version=versions[2])
    assert [arm.model.version for arm in ended.arms] == [versions[2]] and publisher.plans[-1] == ended
    assert [version.stage for version in registry.list(model_name)] == [
        Stage.RETIRED,
        Stage.CANDIDATE,
        Stage.CHAMPION,
        Stage.CANDIDATE,
    ]


def test_failed_publish_keeps_the_change_and_republish_sends_it(
    registry: ModelRegistry, publisher: RecordingPlanPublisher, model_name: str
) -> None:
    _register(registry, model_name)
    publisher.failing = True
    with pytest.raises(PlanNotPublished, match="republish_plan"):
        registry.promote(model_name, "1", actor="alice", reason="first")
    assert registry.champion(model_name) is not None  # committed all the same
    assert publisher.plans == []
    publisher.failing = False
    plan = registry.republish_plan(model_name)
    assert publisher.plans == [plan] and plan.champion.version == "1" and plan.revision == 1


def test_read_only_registry_refuses_stage_changes(database_url: str, model_name: str) -> None:
    read_only = ModelRegistry.from_url(database_url)
    try:
        _register(read_only, model_name)
        with pytest.raises(PlanNotPublished, match="no producer"):
            read_only.promote(model_name, "1", actor="alice", reason="no broker")
        assert read_only.get(model_name, "1").stage == Stage.CANDIDATE
        assert read_only.history(model_name) == []
    finally:
        read_only.close()


def test_promote_publishes_plans_on_kafka(
    tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, producer: EventProducer
) -> None:
    registry = ModelRegistry.from_url(f"sqlite:///{tmp_path / 'michi.db'}", producer)
    names = [f"harsh-events-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        for name in names:
            for _ in range(2):
                _register(registry, name)
            registry.promote(name, "1", actor="alice", reason="bootstrap")
        registry.transition(names[0], "2", Stage.SHADOW, reason="shadow", actor="alice")
        registry.promote(names[1], "2", actor="alice", reason="better")
        with TopicReader(kafka_bootstrap, MODEL_ROLLOUTS, topic_prefix) as reader:
            records = reader.read_to_end(timeout=30)
        latest: dict[str, operations_pb2.RolloutPlan] = {}
        for record in sorted(records, key=lambda record: (record.partition, record.offset)):
            assert isinstance(record.message, operations_pb2.RolloutPlan)
            assert record.key == record.message.model_name
            latest[record.key] = record.message
        assert len(records) == 4
        assert latest == {name: registry.current_plan(name) for name in names}
        assert latest[names[0]].strategy == operations_pb2.ROLLOUT_STRATEGY_SHADOW
        assert latest[names[1]].champion.version == "2"
    finally:
        registry.close()
