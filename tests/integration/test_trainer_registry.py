"""The trainer against the model registry and its own tables on SQLite and on a real PostgreSQL (`postgres_url`).

Model names are unique per test (the session's PostgreSQL database outlives each test); rollout plans
go to a recording publisher here (the Kafka path is in test_trainer_service.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from michi.contracts.v1 import labels_pb2
from michi.registry import Stage
from michi.registry.stages import ChangeKind
from services.trainer.domain.labels import WindowLabel
from services.trainer.domain.triggers import MANUAL, Trigger
from services.trainer.handlers import TrainerWiring, bootstrap_champion, due, run_workflow
from services.trainer.settings import TrainerSettings
from services.trainer.wiring import build_wiring

from ..fakes import RecordingPlanPublisher

SIMULATION = {
    "fleets": [{"seed": 41, "sample_rate_hz": 25}],
    "devices": 5,
    "duration_s": 480.0,
    "event_rate_per_10min": 14.0,
    "confounder_rate_per_10min": 10.0,
}


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
def wiring(database_url: str, tmp_path: Path, publisher: RecordingPlanPublisher) -> Iterator[TrainerWiring]:
    settings = TrainerSettings(
        home=tmp_path,
        database_url=database_url,
        blob_url=f"file://{tmp_path / 'blobs'}",
        trainer_model_name=f"michi-risk-{uuid.uuid4().hex[:8]}",
        trainer_cache_dir=tmp_path / "cache" / "models",
        trainer_simulation=SIMULATION,
        trainer_reference_traffic=SIMULATION,
        trainer_parameters={"epochs": 2, "test_percent": 30},
        trainer_gate={"minimums": {}, "maximums": {}, "not_behind_champion": {}, "not_behind_physics": {}},
        trainer_label_trigger=3,
        trainer_schedule_s=0,
    )
    built = build_wiring(settings, producer=publisher)
    try:
        yield built
    finally:
        built.registry.close()
        built.store.close()


def test_bootstrap_then_runs_move_versions_through_the_registry(
    wiring: TrainerWiring, publisher: RecordingPlanPublisher
) -> None:
    name = wiring.model_name
    first = bootstrap_champion(wiring)
    assert first is not None and first.status == "succeeded", first and first.reason
    assert bootstrap_champion(wiring) is None  # a champion exists now
    second = run_workflow(wiring, Trigger(MANUAL, "second"))
    third = run_workflow(wiring, Trigger(MANUAL, "third"))
    assert [(outcome.version, outcome.stage) for outcome in (first, second, third)] == [
        ("1", "champion"),
        ("2", "shadow"),
        ("3", "shadow"),
    ]
    stages = {version.version: version.stage for version in wiring.registry.list(name)}
    assert stages == {"1": Stage.CHAMPION, "2": Stage.CANDIDATE, "3": Stage.SHADOW}
    history = wiring.registry.history(name)
    assert [(change.version, change.to_stage, change.kind) for change in history] == [
        ("1", Stage.CHAMPION, ChangeKind.PROMOTION),
        ("2", Stage.SHADOW, ChangeKind.TRANSITION),
        ("3", Stage.SHADOW, ChangeKind.TRANSITION),
        ("2", Stage.CANDIDATE, ChangeKind.SIDE_EFFECT),
    ]
    assert all(change.actor == "trainer" for change in history)
    assert publisher.plans[-1] == wiring.registry.current_plan(name)
    assert [(arm.model.version, arm.traffic_share) for arm in publisher.plans[-1].arms] == [("1", 1.0), ("3", 0.0)]
    # Same code, data and parameters: every version is the same file, and the data version is recorded.
    versions = wiring.registry.list(name)
    assert len({version.artifact_sha256 for version in versions}) == 1
    assert {version.data_version for version in versions} == {first.facts.data["data_version"]}  # type: ignore[index]
    assert wiring.registry.get(name, "3").parent_version == "1"
    runs = wiring.store.runs(model_name=name)
    assert [run.run_id for run in runs] == [third.run_id, second.run_id, first.run_id]
    assert [run.trigger for run in runs] == ["manual", "manual", "bootstrap"]


def test_labels_and_alerts_are_stored_once_and_drive_the_triggers(wiring: TrainerWiring) -> None:
    prefix = uuid.uuid4().hex[:8]
    labels = [
        WindowLabel(f"{prefix}-{index}", f"{prefix}-w{index}", "u", "d", "t", "r", 1, source, 100.0 + index, 0.0, 2.0)
        for index, source in enumerate(
            [labels_pb2.LABEL_SOURCE_CONSENSUS] * 3 + [labels_pb2.LABEL_SOURCE_SIMULATOR, labels_pb2.LABEL_SOURCE_GOLD]
        )
    ]
    before = wiring.store.label_watermark()
    assert wiring.store.add_labels(labels) == 5
    assert wiring.store.add_labels(labels[:2]) == 0
    assert wiring.store.human_labels_above(before) == 4  # the simulator label does not count
    fired = due(wiring)
    assert fired is not None and fired.kind == "labels"
    event_id = f"alert-{prefix}"
    assert wiring.store.add_alert(event_id, "retrain", "accuracy dropped")
    assert not wiring.store.add_alert(event_id, "retrain", "accuracy dropped")
    alert = due(wiring)
    assert alert is not None and alert.kind == "alert" and alert.alert_event_id == event_id
    outcome = run_workflow(wiring, alert)
    assert outcome.status == "succeeded", outcome.reason
    assert wiring.store.pending_alert() is None  # claimed by the run
    assert due(wiring) is None  # labels counted from this run on
