"""`michi models` end to end: SQLite from MICHI_DATABASE_URL, the session's Kafka broker for promote and rollback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from michi.bus.catalog import MODEL_ROLLOUTS
from michi.bus.reader import TopicReader
from michi.cli import app
from michi.contracts.v1 import operations_pb2
from michi.registry import ModelRegistry, Stage


def test_models_commands(
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
    registry = ModelRegistry.from_url(database_url)
    for epochs, f1 in ((10, 0.8), (20, 0.85)):
        registry.register(
            "harsh-events",
            artifact_uri=f"file:///models/{epochs}.onnx",
            sha256="ab" * 32,
            code_version="0123abcd",
            data_version=f"data-{epochs}",
            parameters={"epochs": epochs},
            metrics={"f1": f1},
            created_by="test",
        )
    runner = CliRunner()

    listed = runner.invoke(app, ["models", "list", "--name", "harsh-events"])
    assert listed.exit_code == 0, listed.output
    assert len(listed.output.strip().splitlines()) == 2 and "candidate" in listed.output

    shown = runner.invoke(app, ["models", "show", "harsh-events", "2"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["data_version"] == "data-20"

    diffed = runner.invoke(app, ["models", "diff", "harsh-events", "1", "2"])
    assert diffed.exit_code == 0, diffed.output
    assert "* metric f1" in diffed.output and "+0.05" in diffed.output and "* data version" in diffed.output

    for arguments in (
        ["promote", "harsh-events", "1", "--reason", "bootstrap"],
        ["promote", "harsh-events", "2", "--reason", "better f1"],
        ["rollback", "harsh-events", "--reason", "false alerts"],
    ):
        result = runner.invoke(app, ["models", *arguments])
        assert result.exit_code == 0, result.output
    refused = runner.invoke(app, ["models", "promote", "harsh-events", "2", "--reason", "again"])
    assert refused.exit_code == 1 and "only a rollback" in refused.output

    assert registry.get("harsh-events", "1").stage == Stage.CHAMPION
    assert {change.actor for change in registry.history("harsh-events")} == {"dana"}
    with TopicReader(kafka_bootstrap, MODEL_ROLLOUTS, topic_prefix) as reader:
        plans = [record.message for record in reader.read_to_end(timeout=30)]
    assert all(isinstance(plan, operations_pb2.RolloutPlan) for plan in plans)
    assert plans[-1] == registry.current_plan("harsh-events") and len(plans) == 3
    registry.close()
