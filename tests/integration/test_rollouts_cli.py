"""`michi rollouts` end to end: SQLite from MICHI_DATABASE_URL, every plan revision on the session's Kafka broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from michi.bus.catalog import MODEL_ROLLOUTS
from michi.bus.reader import TopicReader
from michi.cli import app
from michi.contracts.v1 import operations_pb2
from michi.registry import ModelRegistry, Stage

from ..fakes import RecordingPlanPublisher


def test_rollout_revisions_reach_the_topic(
    tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    database_url = f"sqlite:///{tmp_path / 'michi.db'}"
    for variable, value in {
        "MICHI_DATABASE_URL": database_url,
        "MICHI_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "MICHI_TOPIC_PREFIX": topic_prefix,
        "MICHI_HOME": str(tmp_path / ".michi"),
        "USER": "dana",
    }.items():
        monkeypatch.setenv(variable, value)
    # The bootstrap champion is set without Kafka, so the topic holds only what `michi rollouts` published.
    registry = ModelRegistry.from_url(database_url, RecordingPlanPublisher())
    for number in (1, 2):
        registry.register(
            "harsh-events", f"file:///{number}.onnx", "ab" * 32, "code", f"data-{number}", {}, {}, created_by="test"
        )
    registry.promote("harsh-events", "1", actor="test", reason="bootstrap")
    runner = CliRunner()

    for arguments in (
        ["start", "harsh-events", "2", "--weight", "10", "--reason", "better offline"],
        ["set-weight", "harsh-events", "30", "--reason", "healthy"],
        ["pause", "harsh-events", "--reason", "weekend"],
        ["abort", "harsh-events", "--reason", "not now"],
    ):
        result = runner.invoke(app, ["rollouts", *arguments])
        assert result.exit_code == 0, (arguments, result.output)

    with TopicReader(kafka_bootstrap, MODEL_ROLLOUTS, topic_prefix) as reader:
        plans = [record.message for record in reader.read_to_end(timeout=30)]
    assert all(isinstance(plan, operations_pb2.RolloutPlan) for plan in plans) and len(plans) == 4
    assert [plan.revision for plan in plans] == [2, 3, 4, 5]
    assert [round(plan.arms[0].traffic_share, 6) for plan in plans[:3]] == [0.1, 0.3, 0.3]
    assert len({plan.rollout_id for plan in plans[:3]}) == 1 and plans[0].rollout_id.startswith("ro-harsh-events-2-")
    assert "paused: weekend" in plans[2].reason
    assert plans[-1] == registry.current_plan("harsh-events") and plans[-1].rollout_id == ""
    assert registry.get("harsh-events", "2").stage == Stage.CANDIDATE
    assert [decision.revision for decision in registry.rollout_history("harsh-events")] == [5, 4, 3, 2]
    registry.close()
