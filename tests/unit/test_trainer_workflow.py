"""The workflow on real SQLite and a file:// blob store (no Kafka: rollout plans go to a recording publisher).

Covers: registering a candidate and shadowing it, the model folder contract, labels rebuilt from the raw
archive exactly as serving computed them, the gate refusing (nothing registered), failures at different
steps leaving the champion untouched with the reason visible, `michi train --dry-run`, and
`michi experiments list|show`.

Run: .venv/bin/pytest tests/unit/test_trainer_workflow.py -q
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from michi.archive import archive_uploads
from michi.blobs import BlobStore
from michi.cli import app
from michi.contracts import stable_event_id, timestamp_from_seconds
from michi.contracts.v1 import common_pb2, labels_pb2, operations_pb2, upload_pb2
from michi.edge.runtime import with_device_calibration
from michi.registry import Stage
from michi.roads import RoadMap
from michi.simulator import FleetSimulator, SimulationConfig
from michi.windows.calibration import CalibrationSums
from michi.windows.features import FEATURE_NAMES, window_id
from michi.windows.model_spec import CLASS_EVENT_TYPES
from michi.windows.physics import PHYSICS_MODEL_VERSION
from services.inference.domain.state import DeviceState
from services.inference.handlers import InferencePipeline, process_uploads
from services.trainer.adapters.artifacts import ArtifactStore
from services.trainer.adapters.onnx_model import OnnxRiskModel
from services.trainer.domain.labels import label_from_message
from services.trainer.domain.triggers import MANUAL, Trigger
from services.trainer.handlers import TrainerWiring, bootstrap_champion, dry_run, run_workflow
from services.trainer.settings import TrainerSettings
from services.trainer.wiring import build_wiring

from ..fakes import RecordingPlanPublisher

SIMULATION = {
    "fleets": [{"seed": 21, "sample_rate_hz": 50}],
    "devices": 6,
    "duration_s": 600.0,
    "event_rate_per_10min": 14.0,
    "confounder_rate_per_10min": 10.0,
}
PARAMETERS = {"epochs": 3, "test_percent": 30}
PERMISSIVE_GATE: dict[str, dict[str, float]] = {
    "minimums": {},
    "maximums": {},
    "not_behind_champion": {},
    "not_behind_physics": {},
}


class FailingModelWrites(ArtifactStore):
    """A blob store that refuses model files (a full disk, a revoked bucket permission)."""

    def put(self, key: str, data: bytes) -> str:
        if key.startswith("models/"):
            raise OSError(28, "No space left on device")
        return super().put(key, data)


def settings_for(home: Path, **overrides: object) -> TrainerSettings:
    values: dict[str, object] = {
        "home": home,
        "database_url": f"sqlite:///{home / 'michi.db'}",
        "blob_url": f"file://{home / 'blobs'}",
        "trainer_cache_dir": home / "cache" / "models",
        "trainer_simulation": SIMULATION,
        # The served traffic models are profiled on: the small fleet itself (the default simulates 60 device-hours).
        "trainer_reference_traffic": SIMULATION,
        "trainer_parameters": PARAMETERS,
        "trainer_gate": PERMISSIVE_GATE,
        "trainer_label_trigger": 5,
    }
    values.update(overrides)
    return TrainerSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / ".michi"


@pytest.fixture
def publisher() -> RecordingPlanPublisher:
    return RecordingPlanPublisher()


@pytest.fixture
def wiring(home: Path, publisher: RecordingPlanPublisher) -> Iterator[TrainerWiring]:
    built = build_wiring(settings_for(home), producer=publisher)
    try:
        yield built
    finally:
        built.registry.close()
        built.store.close()


def archive_fleet(
    blob_url: str, seed: int = 31, devices: int = 3, duration_s: float = 240.0
) -> list[upload_pb2.Upload]:
    """Simulated uploads written to the raw archive as ingest writes them."""
    simulator = FleetSimulator(
        SimulationConfig(devices=devices, duration_s=duration_s, seed=seed), road_map=RoadMap.default()
    )
    uploads = list(simulator.uploads())
    store = BlobStore(blob_url)

    asyncio.run(archive_uploads(store, uploads))
    return uploads


def label_for(
    upload: upload_pb2.Upload, start_offset_s: float, event_type: int, source: int = labels_pb2.LABEL_SOURCE_CONSENSUS
) -> labels_pb2.Label:
    started = upload.started_at.seconds + upload.started_at.nanos / 1e9 + start_offset_s
    identifier = window_id(upload.upload_id, start_offset_s)
    return labels_pb2.Label(
        event_id=stable_event_id("test-label", identifier, event_type),
        occurred_at=timestamp_from_seconds(started + 600.0),
        lineage=common_pb2.Lineage(
            upload_id=upload.upload_id,
            window_id=identifier,
            trip_id=upload.trip_id,
            device_id=upload.device_id,
            driver_id=upload.driver_id,
        ),
        event_type=event_type,  # type: ignore[arg-type]
        source=source,  # type: ignore[arg-type]
        window=common_pb2.TimeSpan(
            started_at=timestamp_from_seconds(started), ended_at=timestamp_from_seconds(started + 2.0)
        ),
    )


def serving_features(uploads: list[upload_pb2.Upload]) -> dict[str, np.ndarray]:
    """window id → the features inference computed (its `Prediction.features`), with the baseline model."""
    from services.trainer.wiring import baseline_model

    pipeline = InferencePipeline(OnnxRiskModel(baseline_model(), model_version="baseline-1"), None)
    states: dict[str, DeviceState] = {}
    received = [upload_pb2.UploadReceived(upload=upload) for upload in uploads]
    features = {}
    for outcome in process_uploads(received, states, pipeline).uploads:
        for prediction in outcome.predictions:
            features[prediction.lineage.window_id] = np.array(
                [prediction.features[name] for name in FEATURE_NAMES], dtype=np.float32
            )
    return features


def test_labels_are_rebuilt_from_the_archive_as_serving_computed_them(home: Path, wiring: TrainerWiring) -> None:
    uploads = archive_fleet(wiring.archive.blob_url)
    first_trips: dict[str, str] = {}
    for upload in uploads:
        first_trips.setdefault(upload.device_id, upload.trip_id)
    # Late uploads of each device's first trip: serving's calibration came from this trip alone.
    chosen = [upload for upload in uploads if upload.trip_id == first_trips[upload.device_id] and upload.sequence >= 6][
        :6
    ]
    assert len(chosen) == 6
    messages = [label_for(upload, 3.0, common_pb2.EVENT_TYPE_HARSH_BRAKING) for upload in chosen]
    stored = [label_from_message(message) for message in messages]
    missing = replace(stored[0], event_id="missing", upload_id="never-archived", window_id="w-missing")
    unknown_window = replace(stored[1], event_id="unknown-window", window_id="not-a-window-of-this-upload")
    assert wiring.store.add_labels([*stored, missing, unknown_window]) == 8
    assert wiring.store.add_labels(stored) == 0  # idempotent by event id
    rebuilt, unresolved = wiring.archive.labeled_windows(wiring.store.labels())
    assert unresolved == {"upload-not-archived": 1, "window-not-found": 1}
    assert sorted(rebuilt.window_ids) == sorted(message.lineage.window_id for message in messages)
    assert set(rebuilt.labels.tolist()) == {CLASS_EVENT_TYPES.index(common_pb2.EVENT_TYPE_HARSH_BRAKING)}
    assert set(rebuilt.sources) == {labels_pb2.LABEL_SOURCE_CONSENSUS}
    served = serving_features(uploads)
    for row, identifier in enumerate(rebuilt.window_ids):
        np.testing.assert_allclose(rebuilt.features[row], served[identifier], rtol=1e-6, atol=1e-6)


def test_an_edge_device_s_upload_is_rebuilt_from_the_calibration_it_carried(home: Path, wiring: TrainerWiring) -> None:
    """An edge device's upload sent in full carries the device's own sums (`Upload.device_calibration`): inference
    folds it from them, so the archive's rebuild must too, or the trainer learns from windows serving never saw."""
    simulator = FleetSimulator(SimulationConfig(devices=2, duration_s=240.0, seed=31), road_map=RoadMap.default())
    uploads = list(simulator.uploads())
    first_trips: dict[str, str] = {}
    for upload in uploads:
        first_trips.setdefault(upload.device_id, upload.trip_id)
    # The device's mount moved just before its 6th upload: it sends that upload with fresh sums.
    carried = {
        index: with_device_calibration(upload, CalibrationSums())
        for index, upload in enumerate(uploads)
        if upload.trip_id == first_trips[upload.device_id] and upload.sequence == 6
    }
    assert len(carried) == 2
    for index, upload in carried.items():
        uploads[index] = upload
    asyncio.run(archive_uploads(BlobStore(wiring.archive.blob_url), uploads))
    chosen = [upload for upload in uploads if upload.trip_id == first_trips[upload.device_id] and upload.sequence >= 6]
    messages = [label_for(upload, 3.0, common_pb2.EVENT_TYPE_HARSH_BRAKING) for upload in chosen]
    assert wiring.store.add_labels([label_from_message(message) for message in messages]) == len(messages)
    rebuilt, unresolved = wiring.archive.labeled_windows(wiring.store.labels())
    assert unresolved == {} and sorted(rebuilt.window_ids) == sorted(m.lineage.window_id for m in messages)
    served = serving_features(uploads)
    for row, identifier in enumerate(rebuilt.window_ids):
        np.testing.assert_allclose(rebuilt.features[row], served[identifier], rtol=1e-6, atol=1e-6)
    # The carried sums changed what serving computed: without them the windows would differ.
    stripped = [upload_pb2.Upload() for _ in uploads]
    for copy, upload in zip(stripped, uploads, strict=True):
        copy.CopyFrom(upload)
        copy.ClearField("device_calibration")
    ignored = serving_features(stripped)
    assert any(not np.allclose(ignored[identifier], served[identifier], atol=1e-4) for identifier in rebuilt.window_ids)


def test_a_run_registers_a_candidate_and_puts_it_in_shadow_next_to_the_champion(
    home: Path, wiring: TrainerWiring, publisher: RecordingPlanPublisher
) -> None:
    bootstrapped = bootstrap_champion(wiring)
    assert bootstrapped is not None and bootstrapped.status == "succeeded", bootstrapped and bootstrapped.reason
    assert (bootstrapped.version, bootstrapped.stage) == ("1", "champion")
    # A person accepted the fleet's own traffic as the champion's reference (`michi models reprofile`): a new
    # version of the model serves that fleet, so it inherits that profile rather than the simulated traffic's.
    champion_profile = home / "blobs" / "models" / wiring.model_name / "1" / "reference_profile.json"
    accepted = {**json.loads(champion_profile.read_text()), "source": "live", "accepted": {"by": "dana"}}
    champion_profile.write_text(json.dumps(accepted))
    outcome = run_workflow(wiring, Trigger(MANUAL, "test run"))
    assert outcome.status == "succeeded", outcome.reason
    assert (outcome.version, outcome.stage) == ("2", "shadow")
    plan = publisher.plans[-1]
    assert plan.strategy == operations_pb2.ROLLOUT_STRATEGY_SHADOW
    assert [(arm.model.version, arm.traffic_share) for arm in plan.arms] == [("1", 1.0), ("2", 0.0)]
    registered = wiring.registry.get(wiring.model_name, "2")
    assert registered.parent_version == "1" and registered.created_by == "trainer"
    assert registered.metrics["harsh_recall"] == outcome.facts.candidate_evaluation["metrics"]["harsh_recall"]  # type: ignore[index]
    # The real-data section: candidate, champion and the physics baseline on the shipped drives, with and
    # without GPS, and the two Auckland drives without GPS with real-strength manoeuvres added.
    real = outcome.facts.candidate_evaluation["real_data"]  # type: ignore[index]
    assert real["metrics"]["real_recordings"] == 8 and len(real["recordings"]) == 8
    assert registered.metrics["real_false_alerts_per_hour"] == real["metrics"]["real_false_alerts_per_hour"]
    assert outcome.facts.real_data is not None and outcome.facts.real_data["reference"] == PHYSICS_MODEL_VERSION
    assert outcome.facts.real_data["physics"]["metrics"]["real_aggressive_found"] >= 6
    blobs = BlobStore(wiring.artifacts.blobs.url)
    folder = home / "blobs" / "models" / wiring.model_name / "2"
    payload = (folder / "model.onnx").read_bytes()
    assert registered.artifact_uri == blobs.uri(f"models/{wiring.model_name}/2/model.onnx")
    assert registered.artifact_sha256 == hashlib.sha256(payload).hexdigest()
    manifest = json.loads((folder / "model.json").read_text())
    assert {key: manifest[key] for key in ("name", "version", "sha256", "data_version")} == {
        "name": wiring.model_name,
        "version": "2",
        "sha256": registered.artifact_sha256,
        "data_version": registered.data_version,
    }
    assert [entry["name"] for entry in manifest["inputs"]] == ["features", "signals"]
    assert manifest["outputs"][0]["name"] == "probabilities" and manifest["classes"][0] == "normal"
    inherited = json.loads((folder / "reference_profile.json").read_text())
    assert set(inherited["features"]) == set(FEATURE_NAMES)
    assert (inherited["source"], inherited["inherited_from"], inherited["accepted"]) == ("live", "1", {"by": "dana"})
    record = (folder / "experiment.md").read_text()
    assert "## Next action" in record and "Real recordings (8 recording variants" in record
    assert "| auckland-backwards/no-gps |" in record and "No real-data check ran" in record  # permissive gate
    run = wiring.store.run(outcome.run_id)
    assert run is not None and run.status == "succeeded" and run.registered_version == "2"
    assert [(step.name, step.status) for step in run.steps] == [
        ("fetch", "succeeded"),
        ("preprocess", "succeeded"),
        ("train", "cached"),  # same code, data and parameters as the bootstrap: reused
        ("evaluate", "succeeded"),
        ("register", "succeeded"),
        ("shadow", "succeeded"),
    ]
    assert all(step.seconds is not None for step in run.steps)
    assert (home / "blobs" / "experiments" / outcome.run_id / "experiment.md").exists()
    assert (home / "blobs" / "datasets" / registered.data_version / "members.jsonl").exists()


def test_a_refused_candidate_is_not_registered(home: Path, publisher: RecordingPlanPublisher) -> None:
    strict = build_wiring(settings_for(home, trainer_gate={"minimums": {"harsh_recall": 1.01}}), producer=publisher)
    try:
        outcome = run_workflow(strict, Trigger(MANUAL, "strict gate"))
        assert outcome.status == "refused" and "harsh_recall" in outcome.reason
        assert strict.registry.list(strict.model_name) == [] and publisher.plans == []
        run = strict.store.run(outcome.run_id)
        assert run is not None and run.gate["passed"] is False
        assert [(step.name, step.status) for step in run.steps][-2:] == [("register", "skipped"), ("shadow", "skipped")]
        assert "The gate refused the candidate" in run.experiment_markdown
    finally:
        strict.registry.close()
        strict.store.close()


def always_braking() -> bytes:
    """A graph that calls every window harsh braking (a stand-in physics baseline that finds every brake)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes=[
            helper.make_node("MatMul", ["features", "weights"], ["scaled"]),
            helper.make_node("Add", ["scaled", "bias"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        name="always_braking",
        inputs=[helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", len(FEATURE_NAMES)])],
        outputs=[helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 5])],
        initializer=[
            numpy_helper.from_array(np.zeros((len(FEATURE_NAMES), 5), dtype=np.float32), "weights"),
            numpy_helper.from_array(np.array([0, 10, 0, 0, 0], dtype=np.float32), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def held_to_a_physics_baseline_that_finds_everything(
    home: Path, publisher: RecordingPlanPublisher, *, enforce_at_bootstrap: bool = False
) -> TrainerWiring:
    """A trainer whose real recordings are one drive with a labelled brake, judged against `always_braking`."""
    from tests.unit.test_trainer_real_data import write_recording

    folder = home.parent / "my-drives"
    folder.mkdir(parents=True)
    write_recording(folder / "drive.json")
    (folder / "drive.labels.csv").write_text("t_start_s,t_end_s,label\n50.0,52.0,harsh_braking\n")
    gate = {
        **PERMISSIVE_GATE,
        "not_behind_physics": {"real_missed_aggressive": 0},
        "enforce_real_data_at_bootstrap": enforce_at_bootstrap,
    }
    settings = settings_for(home, trainer_gate=gate, trainer_real_recordings=folder, trainer_shipped_recordings=False)
    return build_wiring(settings, producer=publisher, physics=always_braking)


def test_a_candidate_missing_a_labelled_event_the_physics_baseline_finds_is_refused(
    home: Path, publisher: RecordingPlanPublisher
) -> None:
    judged = held_to_a_physics_baseline_that_finds_everything(home, publisher)
    try:
        outcome = run_workflow(judged, Trigger(MANUAL, "held to the physics baseline"))
        assert outcome.status == "refused", outcome.reason
        assert "real_missed_aggressive not behind physics baseline" in outcome.reason
        assert judged.registry.list(judged.model_name) == []
        run = judged.store.run(outcome.run_id)
        assert run is not None and "| drive/gps |" in run.experiment_markdown
        # The labelled brake with and without GPS, and the brake added to the drive without GPS.
        assert "✗ real_missed_aggressive (not behind physics baseline): 3" in run.experiment_markdown
    finally:
        judged.registry.close()
        judged.store.close()


@pytest.mark.parametrize("enforced", [False, True], ids=["advisory", "enforced"])
def test_a_bootstrap_candidate_behind_the_physics_baseline_on_real_drives_leaves_it_the_champion(
    home: Path, publisher: RecordingPlanPublisher, enforced: bool
) -> None:
    judged = held_to_a_physics_baseline_that_finds_everything(home, publisher, enforce_at_bootstrap=enforced)
    try:
        outcome = bootstrap_champion(judged)
        assert outcome is not None
        champion = judged.registry.champion(judged.model_name)
        # A fresh platform always gets a champion: the baseline that finds what the learned model misses.
        assert champion is not None and champion.version == PHYSICS_MODEL_VERSION
        assert publisher.plans[-1].champion.version == PHYSICS_MODEL_VERSION
        stages = {version.version: version.stage for version in judged.registry.list(judged.model_name)}
        if enforced:
            assert outcome.status == "refused" and "real_missed_aggressive" in outcome.reason
            assert stages == {PHYSICS_MODEL_VERSION: Stage.CHAMPION}
        else:
            # Advisory: the learned candidate is kept and compared on live traffic, never served.
            assert (outcome.status, outcome.version, outcome.stage) == ("succeeded", "1", "shadow")
            assert stages == {PHYSICS_MODEL_VERSION: Stage.CHAMPION, "1": Stage.SHADOW}
            arms = [(arm.model.version, arm.traffic_share) for arm in publisher.plans[-1].arms]
            assert arms == [(PHYSICS_MODEL_VERSION, 1.0), ("1", 0.0)]
        # Started again, the trainer finds a champion and does not bootstrap twice.
        assert bootstrap_champion(judged) is None
    finally:
        judged.registry.close()
        judged.store.close()


def test_failures_leave_the_champion_untouched_and_say_why(
    home: Path, wiring: TrainerWiring, publisher: RecordingPlanPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    bootstrap_champion(wiring)
    champion = wiring.registry.champion(wiring.model_name)
    assert champion is not None
    plans_before = len(publisher.plans)
    settings = settings_for(home)
    broken_store = build_wiring(
        settings, producer=publisher, artifacts=FailingModelWrites(settings.resolved_blob_url())
    )
    strict_parity = build_wiring(
        settings_for(home, trainer_parity_tolerance=1e-12, trainer_parameters={**PARAMETERS, "seed": 5}),
        producer=publisher,
    )
    try:
        with caplog.at_level(logging.ERROR, logger="services.trainer.handlers"):
            at_register = run_workflow(broken_store, Trigger(MANUAL, "disk full"))
            at_train = run_workflow(strict_parity, Trigger(MANUAL, "impossible parity"))
        assert at_register.status == "failed" and at_register.reason.startswith("register failed: OSError")
        assert at_train.status == "failed" and "ParityFailure" in at_train.reason
        for outcome, failed_step in ((at_register, "register"), (at_train, "train")):
            run = wiring.store.run(outcome.run_id)
            assert run is not None and run.status == "failed" and run.status_reason == outcome.reason
            steps = {step.name: step for step in run.steps}
            assert steps[failed_step].status == "failed" and steps[failed_step].error
            assert steps["shadow"].status == "skipped"
            assert "The run failed" in run.experiment_markdown
            assert any(
                getattr(record, "run_id", None) == outcome.run_id and record.getMessage() == "training run finished"
                for record in caplog.records
            )
        after = wiring.registry.champion(wiring.model_name)
        assert after is not None and (after.version, after.artifact_sha256) == (
            champion.version,
            champion.artifact_sha256,
        )
        assert len(publisher.plans) == plans_before  # no rollout plan went out
        assert [version.stage for version in wiring.registry.list(wiring.model_name)] == [Stage.CHAMPION]
    finally:
        for built in (broken_store, strict_parity):
            built.registry.close()
            built.store.close()


def test_dry_run_and_experiment_commands(home: Path, wiring: TrainerWiring, monkeypatch: pytest.MonkeyPatch) -> None:
    uploads = archive_fleet(wiring.archive.blob_url, devices=2, duration_s=180.0)
    labels = [label_for(upload, 2.0, common_pb2.EVENT_TYPE_NORMAL) for upload in uploads[:6]]
    wiring.store.add_labels([label_from_message(label) for label in labels])
    report = dry_run(wiring)
    assert report["trigger"]["kind"] == "labels"  # 6 new human labels, threshold 5
    assert report["labels"]["new_since_last_run"] == 6 and report["labels"]["windows_rebuilt"] == 6
    assert report["dataset"]["sources"]["consensus"] == 6
    assert report["training"] == "train" and report["gate"]["would_run"]
    assert wiring.store.runs() == []  # a dry run records nothing

    for name, value in {
        "MICHI_HOME": str(home),
        "MICHI_DATABASE_URL": f"sqlite:///{home / 'michi.db'}",
        "MICHI_BLOB_URL": f"file://{home / 'blobs'}",
        "MICHI_TRAINER_CACHE_DIR": str(home / "cache" / "models"),
        "MICHI_TRAINER_SIMULATION": json.dumps(SIMULATION),
        "MICHI_TRAINER_REFERENCE_TRAFFIC": json.dumps(SIMULATION),
        "MICHI_TRAINER_PARAMETERS": json.dumps(PARAMETERS),
        "MICHI_TRAINER_LABEL_TRIGGER": "5",
    }.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    shown = runner.invoke(app, ["train", "--dry-run"])
    assert shown.exit_code == 0, shown.output
    assert "trigger now     labels: 6 new labels" in shown.output
    assert report["dataset"]["data_version"] in shown.output
    assert "epochs=3" in shown.output and "gate            would run against baseline-1" in shown.output

    outcome = run_workflow(wiring, Trigger(MANUAL, "for the record"))
    listed = runner.invoke(app, ["experiments", "list"])
    assert listed.exit_code == 0 and outcome.run_id in listed.output and outcome.status in listed.output
    record = runner.invoke(app, ["experiments", "show", outcome.run_id])
    assert record.exit_code == 0 and "## Purpose" in record.output and "for the record" in record.output
    as_json = json.loads(runner.invoke(app, ["experiments", "show", outcome.run_id, "--json"]).output)
    assert [step["name"] for step in as_json["steps"]][:3] == ["fetch", "preprocess", "train"]
    assert runner.invoke(app, ["experiments", "show", "run-nope"]).exit_code == 1
    assert dry_run(wiring)["trigger"]["kind"] is None  # the run consumed the label trigger


def test_labelled_real_recordings_join_the_dataset_with_their_own_version(
    home: Path, wiring: TrainerWiring, publisher: RecordingPlanPublisher
) -> None:
    from tests.unit.test_trainer_real_data import write_recording

    folder = home.parent / "labelled-drives"
    folder.mkdir(parents=True)
    write_recording(folder / "drive.json")
    (folder / "drive.labels.csv").write_text("t_start_s,t_end_s,label\n40.0,42.0,harsh_acceleration\n")
    without = dry_run(wiring)
    learning = build_wiring(settings_for(home, trainer_real_training=folder), producer=publisher)
    try:
        report = dry_run(learning)
    finally:
        learning.registry.close()
        learning.store.close()
    assert report["real_training"]["recordings"] == 1 and report["real_training"]["version"].startswith("real-")
    assert report["dataset"]["sources"]["imported"] == report["real_training"]["windows"] > 80
    assert report["dataset"]["windows"] == without["dataset"]["windows"] + report["real_training"]["windows"]
    assert report["dataset"]["data_version"] != without["dataset"]["data_version"]
