"""`michi maturity` through typer's CliRunner on real SQLite stores and a real blob folder, filled by the
project's own writers (registry registrations, stage changes and a policy's rollout; the trainer's runs, steps,
labels and alerts; the monitor's drift episode; annotation's requests and votes; the warehouse's Parquet writer)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from michi.blobs import BlobStore
from michi.cli import app
from michi.contracts.v1 import common_pb2, labels_pb2
from michi.maturity.criteria import CRITERIA
from michi.maturity.report import suite_path
from michi.registry import ModelRegistry, Stage
from michi.warehouse import PREDICTION, part_key, prediction_row
from services.annotation.adapters.store import AnnotationStore
from services.annotation.domain.consensus import ConsensusPolicy
from services.annotation.domain.quality import QualityPolicy
from services.annotation.domain.roles import Role
from services.monitor.adapters.store import MonitorStore
from services.monitor.handlers import ClosedWindow, DriftEpisode
from services.trainer.adapters.store import TrainerStore
from services.trainer.adapters.tables import TrainerRunRow
from services.trainer.domain.labels import WindowLabel
from services.warehouse.adapters.parquet import BlobParquetWriter

from ..fakes import RecordingPlanPublisher
from .test_warehouse import MOMENT, make_prediction

MODEL = "michi-risk"
RUN = "run-7"
RETRAIN = "retrain-41"
DRIFT_ALERT = "drift-40"
# physics-3, registered first, takes number 1: the learned model is "2".
VERSION = "2"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]
SUITE = [criterion for criterion in CRITERIA if criterion.tests]
RECORDS = [criterion for criterion in CRITERIA if criterion.decide is not None]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for variable, value in {
        "MICHI_ENV": "dev",
        "MICHI_HOME": str(tmp_path / ".michi"),
        "MICHI_DATABASE_URL": f"sqlite:///{tmp_path / 'michi.db'}",
        "MICHI_BLOB_URL": f"file://{tmp_path / 'blobs'}",
    }.items():
        monkeypatch.setenv(variable, value)
    return tmp_path


def invoke(*arguments: str) -> Any:
    return CliRunner().invoke(app, ["maturity", *arguments])


def lines_of(*arguments: str) -> dict[str, dict[str, Any]]:
    answer = invoke("--json", *arguments)
    assert answer.exit_code == 0, answer.output
    lines = [json.loads(line) for line in answer.stdout.splitlines()]
    return {line["id"]: line for line in lines}


def _train(store: TrainerStore) -> int:
    labels = [
        WindowLabel(
            event_id=f"label-{index}",
            window_id=f"window-{index}",
            upload_id="upload-1",
            device_id="device-1",
            trip_id="trip-1",
            driver_id="driver-1",
            event_type=common_pb2.EVENT_TYPE_HARSH_BRAKING,
            source=labels_pb2.LABEL_SOURCE_CONSENSUS,
            occurred_at_s=NOW.timestamp(),
            window_started_at_s=NOW.timestamp(),
            window_ended_at_s=NOW.timestamp() + 2,
        )
        for index in range(3)
    ]
    store.add_labels(labels)
    store.add_alert(RETRAIN, "retrain", "sustained drift")
    watermark = store.label_watermark()
    store.start_run(
        TrainerRunRow(
            run_id=RUN,
            model_name=MODEL,
            trigger="alert",
            trigger_reason="alert retrain: sustained drift",
            status="running",
            started_at=NOW,
            code_version="src-abc",
            parameters={"seed": 3, "epochs": 3},
            label_watermark=watermark,
        )
    )
    store.claim_alert(RETRAIN, RUN)
    for sequence, step in enumerate(("fetch", "preprocess", "train", "evaluate", "register", "shadow")):
        store.start_step(RUN, sequence, step, NOW)
        store.finish_step(RUN, sequence, "succeeded", seconds=0.5)
    store.update_run(
        RUN,
        status="succeeded",
        finished_at=NOW,
        data_version="ds-123",
        metrics={"harsh_f1": 0.91, "macro_f1": 0.84},
        gate={
            "passed": True,
            "compared_with": "michi-risk physics-3",
            "checks": [{"name": "harsh_f1", "passed": True}],
        },
        registered_version=VERSION,
        stage="shadow",
        experiment_uri=f"file:///blobs/experiments/{RUN}/experiment.md",
        experiment_markdown=f"# {RUN}",
        facts={
            "training": {"epoch_losses": [1.2, 0.6, 0.3], "cached": False},
            "export": {"parity_max_abs_diff": 3e-7, "tolerance": 1e-4, "parity_windows": 2048, "sha256": "b" * 64},
        },
    )
    return watermark


def _label_in_annotation(url: str) -> None:
    store = AnnotationStore.from_url(url)
    store.create_tables()
    try:
        for name in ("alice", "bob"):
            store.add_annotator(name, Role.ANNOTATOR, "not-a-real-hash", actor="admin", now=NOW)
        lineage = common_pb2.Lineage(window_id="window-qa", upload_id="upload-1", device_id="device-1")
        store.record_request(
            labels_pb2.LabelRequest(event_id="request-1", lineage=lineage, reason=labels_pb2.LABEL_REASON_RANDOM_QA),
            now=NOW,
        )
        for name in ("alice", "bob"):
            store.record_vote(
                "window-qa",
                name,
                common_pb2.EVENT_TYPE_NORMAL,
                lease_id=uuid.uuid4().hex,
                counted=True,
                late=False,
                now=NOW,
                consensus=ConsensusPolicy(),
                quality=QualityPolicy(),
            )
    finally:
        store.close()


def populate(home: Path) -> dict[str, Any]:
    """An installation that went round the loop once: drift asked for a retrain, the trainer trained version 1
    from three human labels, put it in shadow, and the rollout controller's policy took it to champion."""
    url = f"sqlite:///{home / 'michi.db'}"
    registry = ModelRegistry.from_url(url, RecordingPlanPublisher())
    registry.register(
        MODEL, "file:///physics", "a" * 64, "src-rules", "rules-1+features-3", {}, {}, created_by="trainer",
        version="physics-3",
    )  # fmt: skip
    registry.promote(MODEL, "physics-3", actor="trainer", reason="bootstrap")

    trainer = TrainerStore.from_url(url)
    watermark = _train(trainer)
    trainer.close()
    monitor = MonitorStore.from_url(url)
    closed = ClosedWindow(
        model_name=MODEL,
        model_version="physics-3",
        cohort="all",
        window_id="window-c",
        rows=20_000,
        reason="full",
        features=(),
        drifted=("speed_mean_mps",),
        profile_version="reference-profile-2",
        low_resolution=False,
        alert=None,
        verdict="drift",
    )
    episode = DriftEpisode(
        episode_id="episode-9",
        model_name=MODEL,
        model_version="physics-3",
        cohort="all",
        windows=["window-a", "window-b", "window-c"],
        features=["speed_mean_mps"],
        firing_event_id=DRIFT_ALERT,
        retrain_event_id=RETRAIN,
    )
    monitor.record_close(closed, NOW.timestamp(), episode)
    monitor.close()

    registry.register(
        MODEL, "file:///2", "c" * 64, "src-abc", "ds-123", {"run_id": RUN, "trigger": "alert", "seed": 3},
        {"harsh_f1": 0.91}, parent_version="physics-3", created_by="trainer",
    )  # fmt: skip
    registry.transition(MODEL, VERSION, Stage.SHADOW, actor="trainer", reason=f"alert: sustained drift ({RUN})")
    registry.start_rollout(MODEL, VERSION, actor="policy:auto-start", reason="passed the gate", weight=30)
    analysis = {"analysis": {"outcome": "pass", "reasons": []}}
    registry.set_rollout_weight(MODEL, 60, actor="policy:rollout-steps", reason="analysis passed", evidence=analysis)
    registry.promote_rollout(MODEL, actor="policy:rollout-steps", reason="every step passed", evidence=analysis)
    promotion = registry.rollout_history(MODEL)[0]
    registry.close()

    _label_in_annotation(url)
    writer = BlobParquetWriter(BlobStore(f"file://{home / 'blobs'}"))
    writer.write(part_key(PREDICTION, MOMENT, 0, 0), [prediction_row(make_prediction(), offset=0)])
    traces = home / ".michi" / "traces"
    traces.mkdir(parents=True)
    (traces / "ingest.jsonl").write_text('{"name": "ingest upload"}\n')
    return {"promotion": promotion, "watermark": watermark}


def test_an_empty_installation_meets_no_criterion_of_its_records_and_says_why(home: Path) -> None:
    lines = lines_of()
    assert set(lines) == {criterion.identifier for criterion in CRITERIA}
    for criterion in RECORDS:
        line = lines[criterion.identifier]
        assert line["verdict"] == "not met", line
        assert line["evidence"], line
    assert "nothing ran in this installation yet" in lines["google-2-training-converges"]["evidence"]
    assert "no prediction in the warehouse" in lines["microsoft-4-centralized-metrics"]["evidence"]
    assert "no span file" in lines["microsoft-1-application-telemetry"]["evidence"]
    assert not (home / "michi.db").exists()  # reading created nothing
    text = invoke()
    assert text.exit_code == 0, text.output
    assert "[not met] google-2-automated-deployment" in text.stdout
    assert re.search(r"google: 10 not met, 6 shown by CI of 16", text.stdout), text.stdout


def test_an_owner_that_never_wrote_here_is_named(home: Path) -> None:
    ModelRegistry.from_url(f"sqlite:///{home / 'michi.db'}").close()  # the registry's tables, and nothing else
    lines = lines_of()
    assert (
        lines["google-0-model-served"]["evidence"]
        == "0 versions registered, none of them is a champion: nothing is served"
    )
    for identifier, owner in (("google-2-training-converges", "trainer"), ("microsoft-4-monitored", "monitor")):
        assert lines[identifier]["verdict"] == "not met"
        assert (
            f"no {owner} tables in sqlite:///{home / 'michi.db'}: the {owner} never wrote here"
            in (lines[identifier]["evidence"])
        )


def test_a_populated_installation_shows_the_ids_its_verdicts_rest_on(home: Path) -> None:
    made = populate(home)
    lines = lines_of()
    unmet = {identifier: line["evidence"] for identifier, line in lines.items() if line["verdict"] != "met"}
    assert {lines[identifier]["verdict"] for identifier in unmet} == {"shown by CI"}, unmet
    assert len(unmet) == len(SUITE)

    converges = lines["google-2-training-converges"]
    assert converges["ids"] == {"run_id": RUN, "epoch_losses": [1.2, 0.6, 0.3]}
    assert "loss 1.2000 -> 0.3000 over 3 epochs" in converges["evidence"]
    assert converges["command"] == f"michi experiments show {RUN} --json"

    promotion = made["promotion"]
    deployed = lines["google-2-automated-deployment"]
    assert promotion.action == "promote"
    assert deployed["ids"]["revision"] == promotion.revision and deployed["ids"]["version"] == VERSION
    assert deployed["ids"]["rollout_id"] == promotion.rollout_id and deployed["ids"]["actor"] == "policy:rollout-steps"
    assert f"plan revision {promotion.revision}" in deployed["evidence"]
    assert deployed["command"] == f"michi rollouts history {MODEL}"

    lineage = lines["microsoft-3-traceability"]
    assert lineage["ids"]["data_version"] == "ds-123" and lineage["ids"]["run_id"] == RUN
    assert lineage["ids"]["label_ids"] == ["label-0", "label-1", "label-2"]
    assert lineage["ids"]["label_watermark"] == made["watermark"]
    assert f"champion {MODEL} {VERSION} <- data ds-123 <- run {RUN}" in lineage["evidence"]

    retrain = lines["google-2-monitoring-triggers-pipeline"]
    assert retrain["ids"] == {"alert_id": DRIFT_ALERT, "episode": "episode-9", "retrain_id": RETRAIN, "run_id": RUN}
    assert lines["microsoft-4-retraining-on-production-metrics"]["ids"] == retrain["ids"]

    staged = lines["microsoft-3-staged-environments"]["evidence"]
    assert staged.startswith(f"{MODEL} {VERSION}: candidate -> shadow (revision") and "-> champion (revision" in staged
    assert lines["microsoft-4-production-feedback"]["ids"] == {
        "labels_by_reason": {"random-qa": 1},
        "trainer_human_labels": 3,
    }
    assert lines["microsoft-4-policy-promotion-of-retrained"]["ids"]["run_id"] == RUN
    assert lines["microsoft-4-centralized-metrics"]["ids"] == {"predictions": 1, "versioned": 1}
    assert lines["google-1-continuous-training"]["ids"]["runs_by_trigger"] == {"alert": 1}
    assert lines["microsoft-1-application-telemetry"]["ids"] == {"services": ["ingest"]}


def test_suite_criteria_are_shown_by_ci_and_name_tests_that_exist(home: Path) -> None:
    lines = lines_of()
    assert SUITE
    for criterion in SUITE:
        line = lines[criterion.identifier]
        assert line["verdict"] == "shown by CI"
        assert line["tests"] == list(criterion.tests)
        assert "not in this checkout" not in line["evidence"]
        for test in criterion.tests:
            assert test in line["evidence"]
            path = suite_path(test)
            assert path.exists(), test
            if "::" in test:
                assert f"def {test.split('::', 1)[1]}(" in path.read_text(), test


def test_json_lines_have_one_shape(home: Path) -> None:
    answer = invoke("--json", "--framework", "microsoft")
    assert answer.exit_code == 0, answer.output
    lines = [json.loads(line) for line in answer.stdout.splitlines()]
    assert [line["id"] for line in lines] == [c.identifier for c in CRITERIA if c.framework == "microsoft"]
    for line in lines:
        assert set(line) == {
            "id", "framework", "level", "level_name", "criterion", "verdict", "evidence", "command", "decided_by",
            "tests", "ids",
        }  # fmt: skip
        assert line["framework"] == "microsoft" and 0 <= line["level"] <= 4
        assert line["verdict"] in {"met", "not met", "shown by CI", "unknown"}


def test_unmet_shows_only_what_is_not_met_and_the_tally_of_everything(home: Path) -> None:
    populate(home)
    assert lines_of("--unmet") == {}
    assert "every criterion is met or shown by CI" in invoke("--unmet").stderr
    (home / ".michi" / "traces" / "ingest.jsonl").unlink()
    assert set(lines_of("--unmet")) == {"microsoft-1-application-telemetry"}
    text = invoke("--unmet", "--framework", "microsoft")
    assert text.exit_code == 0, text.output
    assert "[not met] microsoft-1-application-telemetry" in text.stdout and "[met]" not in text.stdout
    assert "microsoft: 13 met, 1 not met, 3 shown by CI of 17" in text.stdout
    assert "google:" not in text.stdout


def test_an_unreadable_store_makes_its_criteria_unknown(home: Path) -> None:
    populate(home)
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{home / 'michi.db'}")
    with engine.begin() as connection:  # the monitor's table, broken
        connection.execute(text("ALTER TABLE monitor_drift_episode DROP COLUMN retrain_event_id"))
    engine.dispose()
    lines = lines_of()
    unknown = lines["google-2-monitoring-triggers-pipeline"]
    assert unknown["verdict"] == "unknown" and "could not read the records: OperationalError" in unknown["evidence"]
    assert lines["google-2-training-converges"]["verdict"] == "met"


def test_a_database_that_cannot_be_opened_exits_1(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICHI_DATABASE_URL", f"sqlite:///{home}")  # a folder, not a database file
    answer = invoke()
    assert answer.exit_code == 1
    assert answer.stderr.startswith("michi: cannot open the database sqlite:///")
    refused = invoke("--framework", "amazon")
    assert refused.exit_code == 2 and "choose google or microsoft" in refused.stderr


def test_docs_list_every_criterion_as_the_code_does() -> None:
    document = (ROOT / "docs" / "maturity.md").read_text()
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in document.split("\n## The criteria\n", 1)[1].split("\n## ", 1)[0].splitlines()
        if line.startswith("| `")
    ]
    assert [row[0].strip("`") for row in rows] == [criterion.identifier for criterion in CRITERIA]
    for row, criterion in zip(rows, CRITERIA, strict=True):
        assert row[1] == f"{criterion.framework} {criterion.level}", row
        assert row[2] == criterion.text, row
        decided = f"`{criterion.decided_by}`" if criterion.decide else ", ".join(f"`{t}`" for t in criterion.tests)
        assert row[3] == decided, row
        assert row[4] == f"`{criterion.command}`", row
