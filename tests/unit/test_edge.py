"""The edge bundle: export from a registry holding a real trained model, verification, int8 agreement, and the
device runtime deciding as the cloud pipeline does.

Run: python -m pytest -p no:cacheprovider tests/unit/test_edge.py -q   (about 30 s: trains a small model once)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from michi.blobs import BlobStore
from michi.cli import app
from michi.contracts import timestamp_to_seconds
from michi.contracts.v1 import upload_pb2
from michi.edge.bundle import (
    FP32_FILE,
    INT8_FILE,
    MANIFEST_FILE,
    REGISTRY_MANIFEST_FILE,
    BundleRefused,
    verify_bundle,
)
from michi.edge.decisions import NO_CALL, window_calls
from michi.edge.export import EdgeExportError, ExportedBundle, export_bundle
from michi.edge.quantisation import agreement, compact, predict, session
from michi.edge.reference_windows import FleetSource, WindowSet, fleet_windows, quantisation_windows
from michi.edge.runtime import EdgeRuntime
from michi.recordings import received, recording_uploads, shared_recording
from michi.registry import ModelRegistry
from michi.registry.layout import model_folder
from michi.simulator.config import DEFAULT_START_TIME, SimulationConfig
from michi.simulator.fleet import FleetSimulator
from michi.windows.features import DATA_VERSION, FEATURE_NAMES
from michi.windows.model_spec import CLASS_EVENT_TYPES, DECISION_THRESHOLD, MODEL_NAME
from michi.windows.physics import build_physics_model
from services.inference.adapters.onnx_model import ModelArtifact, OnnxDetector
from services.inference.domain.episodes import MERGE_GAP_SECONDS
from services.inference.handlers import InferencePipeline, process_uploads
from services.trainer.adapters.onnx_model import export_onnx
from services.trainer.adapters.simulation import FleetRecipe, SimulationRecipe, simulated_windows
from services.trainer.domain.dataset import build_dataset
from services.trainer.domain.training import TrainingParameters, train_model

from ..fakes import RecordingPlanPublisher

KEY = b"fleet-key-for-tests"
# The int8 model must make the fp32 model's call on at least this share of held-out windows (the acceptance bar).
MIN_AGREEMENT = 0.99
RECIPE = SimulationRecipe(
    fleets=(FleetRecipe(11, 50),),
    devices=6,
    duration_s=480.0,
    event_rate_per_10min=14.0,
    confounder_rate_per_10min=10.0,
)


@dataclass
class Platform:
    registry: ModelRegistry
    blobs: BlobStore
    fp32: bytes
    database_url: str
    blob_url: str


@pytest.fixture(scope="module")
def fp32() -> bytes:
    """A real RiskNet trained by the trainer's own code on a small simulated fleet (ONNX, as the trainer exports)."""
    parameters = TrainingParameters(epochs=6, test_percent=30)
    dataset = build_dataset([simulated_windows(RECIPE)], test_percent=parameters.test_percent)
    return export_onnx(train_model(dataset.train(), parameters).model)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, fp32: bytes) -> Iterator[Platform]:
    """A registry whose champion is the trained model, files laid out as the trainer lays them out."""
    folder = tmp_path_factory.mktemp("edge-platform")
    database_url, blob_url = f"sqlite:///{folder / 'michi.db'}", f"file://{folder / 'blobs'}"
    blobs = BlobStore(blob_url)
    registry = ModelRegistry.from_url(database_url, RecordingPlanPublisher())
    for version, payload in (("1", fp32), ("physics-3", build_physics_model())):
        uri = asyncio.run(blobs.put_bytes(f"{model_folder(MODEL_NAME, version)}/model.onnx", payload)).uri
        described = {"name": MODEL_NAME, "version": version, "sha256": hashlib.sha256(payload).hexdigest()}
        asyncio.run(blobs.put_bytes(f"{model_folder(MODEL_NAME, version)}/model.json", json.dumps(described).encode()))
        registry.register(
            MODEL_NAME,
            uri,
            hashlib.sha256(payload).hexdigest(),
            "src-test",
            f"ds-{version}",
            {},
            {},
            created_by="test",
            version=None if version == "1" else version,
        )
    registry.promote(MODEL_NAME, "1", actor="test", reason="the trained model serves")
    try:
        yield Platform(registry, blobs, fp32, database_url, blob_url)
    finally:
        registry.close()


@pytest.fixture(scope="module")
def windows() -> tuple[WindowSet, WindowSet]:
    return quantisation_windows()


@pytest.fixture(scope="module")
def bundle(
    platform: Platform, windows: tuple[WindowSet, WindowSet], tmp_path_factory: pytest.TempPathFactory
) -> ExportedBundle:
    output = tmp_path_factory.mktemp("bundles")
    return export_bundle(platform.registry, platform.blobs, MODEL_NAME, None, output, KEY, windows=windows)


def copied(bundle: ExportedBundle, tmp_path: Path) -> Path:
    target = tmp_path / bundle.folder.name
    shutil.copytree(bundle.folder, target)
    return target


def test_export_ships_the_champion_verbatim_and_an_int8_model_under_half_its_size(
    bundle: ExportedBundle, platform: Platform
) -> None:
    folder, manifest = bundle.folder, bundle.manifest
    assert folder.name == f"{MODEL_NAME}-1"
    champion = platform.registry.champion(MODEL_NAME)
    assert champion is not None
    # fp32 is the registered artifact byte for byte; the registry's model.json travels with it.
    assert (folder / FP32_FILE).read_bytes() == platform.fp32
    assert manifest["model"]["artifact_sha256"] == champion.artifact_sha256 == hashlib.sha256(platform.fp32).hexdigest()
    assert json.loads((folder / REGISTRY_MANIFEST_FILE).read_text())["version"] == "1"
    fp32_size, int8_size = (folder / FP32_FILE).stat().st_size, (folder / INT8_FILE).stat().st_size
    assert int8_size <= fp32_size / 2, (int8_size, fp32_size)
    int8_graph = onnx.load(str(folder / INT8_FILE))
    assert {"QLinearConv", "QGemm"} <= {node.op_type for node in int8_graph.graph.node}
    # What the device needs to compute and decide as the cloud does.
    assert manifest["preprocessing"]["version"] == DATA_VERSION
    assert manifest["calibration_contract"]["windows"]["features"] == list(FEATURE_NAMES)
    assert manifest["calibration_contract"]["mount"]["frame"].startswith("ISO 8855")
    assert [(entry["name"], entry["shape"]) for entry in manifest["inputs"]] == [
        ("features", ["batch", 26]),
        ("signals", ["batch", 6, 50]),
    ]
    assert manifest["outputs"][0]["name"] == "probabilities"
    assert [entry["event_type"] for entry in manifest["classes"]] == [int(value) for value in CLASS_EVENT_TYPES]
    assert manifest["detection_rule"]["threshold"] == DECISION_THRESHOLD
    assert manifest["default_precision"] == "int8"
    assert set(manifest["files"]) == {FP32_FILE, INT8_FILE, REGISTRY_MANIFEST_FILE}
    held_out = manifest["precisions"]["int8"]["held_out"]
    assert held_out["call_agreement"] >= MIN_AGREEMENT and held_out["windows"] > 1000
    verified = verify_bundle(folder, KEY)
    assert verified.model_bytes("fp32") == platform.fp32


def test_the_same_registry_entry_exports_the_same_bytes(
    bundle: ExportedBundle, platform: Platform, windows: tuple[WindowSet, WindowSet], tmp_path: Path
) -> None:
    again = export_bundle(platform.registry, platform.blobs, MODEL_NAME, "1", tmp_path, KEY, windows=windows)
    for name in (FP32_FILE, INT8_FILE, MANIFEST_FILE, "manifest.sig"):
        assert (again.folder / name).read_bytes() == (bundle.folder / name).read_bytes(), name


@pytest.mark.parametrize("changed", [FP32_FILE, INT8_FILE, REGISTRY_MANIFEST_FILE])
def test_verification_refuses_a_changed_file(bundle: ExportedBundle, tmp_path: Path, changed: str) -> None:
    folder = copied(bundle, tmp_path)
    payload = bytearray((folder / changed).read_bytes())
    payload[len(payload) // 2] ^= 0x01
    (folder / changed).write_bytes(bytes(payload))
    with pytest.raises(BundleRefused, match=f"{changed} was changed"):
        verify_bundle(folder, KEY)
    with pytest.raises(BundleRefused):
        EdgeRuntime.load(folder, KEY)


def test_verification_refuses_an_edited_manifest_a_missing_file_another_key_and_other_preprocessing(
    bundle: ExportedBundle, tmp_path: Path
) -> None:
    folder = copied(bundle, tmp_path)
    verify_bundle(folder, KEY)  # the copy itself is fine
    with pytest.raises(BundleRefused, match="holds key"):
        verify_bundle(folder, b"another fleet")
    with pytest.raises(BundleRefused, match="preprocessing"):
        verify_bundle(folder, KEY, preprocessing_version="features-0")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["detection_rule"]["threshold"] = 0.9
    original = (folder / MANIFEST_FILE).read_bytes()
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, sort_keys=True, indent=2) + "\n")
    with pytest.raises(BundleRefused, match="bad signature"):
        verify_bundle(folder, KEY)
    (folder / MANIFEST_FILE).write_bytes(original)
    (folder / INT8_FILE).unlink()
    with pytest.raises(BundleRefused, match=f"{INT8_FILE} is missing"):
        verify_bundle(folder, KEY)


def test_int8_agrees_with_fp32_on_held_out_windows_the_calibration_never_saw(
    bundle: ExportedBundle, windows: tuple[WindowSet, WindowSet]
) -> None:
    calibration, held_out = windows
    assert not set(calibration.window_ids) & set(held_out.window_ids)
    assert any(source.startswith("recording:") for source in held_out.sources)
    fp32 = (bundle.folder / FP32_FILE).read_bytes()
    int8 = (bundle.folder / INT8_FILE).read_bytes()
    # A second held-out fleet the export never looked at either (another seed, rate and mix).
    fresh = fleet_windows(FleetSource(9301, 40, devices=4, duration_s=480.0, event_rate_per_10min=14.0))
    for measured in (agreement(fp32, int8, held_out), agreement(fp32, int8, fresh)):
        # Enough risky calls that disagreeing on them would show.
        assert measured.fp32_calls >= 20, measured
        assert measured.call_agreement >= MIN_AGREEMENT, measured
        assert measured.class_agreement >= MIN_AGREEMENT, measured
        assert abs(measured.int8_calls - measured.fp32_calls) <= 0.01 * measured.windows


def test_compaction_changes_names_not_outputs(fp32: bytes, windows: tuple[WindowSet, WindowSet]) -> None:
    compacted = compact(fp32)
    assert len(compacted) < len(fp32)
    held_out = windows[1]
    assert np.array_equal(predict(session(fp32), held_out), predict(session(compacted), held_out))


def test_a_rule_graph_ships_in_fp32_only_with_the_reason(platform: Platform, tmp_path: Path) -> None:
    exported = export_bundle(platform.registry, platform.blobs, MODEL_NAME, "physics-3", tmp_path, KEY)
    assert exported.manifest["default_precision"] == "fp32"
    assert exported.manifest["precisions"]["int8"]["file"] is None
    assert "rule graph" in exported.manifest["precisions"]["int8"]["reason"]
    assert not (exported.folder / INT8_FILE).exists()
    runtime = EdgeRuntime.load(exported.folder, KEY)
    assert runtime.precision == "fp32"
    with pytest.raises(BundleRefused, match="no int8 model"):
        EdgeRuntime.load(exported.folder, KEY, precision="int8")


def test_export_refuses_an_artifact_that_is_not_the_registered_one(platform: Platform, tmp_path: Path) -> None:
    champion = platform.registry.champion(MODEL_NAME)
    assert champion is not None

    class Tampered:
        def get(self, name: str, version: str) -> object:
            return champion

        def champion(self, name: str) -> object:
            from dataclasses import replace

            return replace(champion, artifact_sha256="0" * 64)

    with pytest.raises(EdgeExportError, match="refusing to ship"):
        export_bundle(Tampered(), platform.blobs, MODEL_NAME, None, tmp_path, KEY)  # type: ignore[arg-type]


def _uploads() -> list[upload_pb2.Upload]:
    """A simulated fleet with harsh events, then a real drive: what a device would send, in each device's order."""
    config = SimulationConfig(devices=3, duration_s=600.0, seed=9401, event_rate_per_10min=14.0)
    simulated = list(FleetSimulator(config).uploads())
    real = recording_uploads(
        shared_recording("auckland-forward"),
        device_id="edge-real",
        trip_id="edge-real",
        started_at_s=DEFAULT_START_TIME,
    )
    return simulated + real


def test_the_device_runtime_decides_as_the_cloud_pipeline_on_the_same_uploads(
    bundle: ExportedBundle, platform: Platform, tmp_path: Path
) -> None:
    uploads = _uploads()
    # The cloud: inference's own pipeline serving the registered fp32 model.
    path = tmp_path / "model.onnx"
    path.write_bytes(platform.fp32)
    artifact = ModelArtifact(MODEL_NAME, "1", "ds-1", path, hashlib.sha256(platform.fp32).hexdigest())
    pipeline = InferencePipeline(OnnxDetector(artifact), None, qa_sample_rate=0.0)
    states: dict = {}
    cloud = [
        outcome
        for first in range(0, len(uploads), 16)
        for outcome in process_uploads(
            [received(upload) for upload in uploads[first : first + 16]], states, pipeline
        ).uploads
    ]
    predictions = {p.lineage.window_id: p for outcome in cloud for p in outcome.predictions}
    detections = [d for outcome in cloud for d in outcome.detections if d.detector.startswith("onnx:")]
    assert len(detections) >= 5, len(detections)

    # The device, fp32: the same features, probabilities and calls.
    device = EdgeRuntime.load(bundle.folder, KEY, precision="fp32")
    results = [device.process(upload) for upload in uploads]
    window_ids = [identifier for result in results for identifier in result.window_ids]
    assert sorted(window_ids) == sorted(predictions)
    for result in results:
        for position, identifier in enumerate(result.window_ids):
            cloud_scores = np.array([score.probability for score in predictions[identifier].scores])
            assert np.allclose(result.probabilities[position], cloud_scores, atol=1e-6), identifier
    calls = [call for result in results for call in result.calls]
    # Every cloud detection starts at a window the device called the same way...
    called = {call.window_id: call.event_type for call in calls}
    for detection in detections:
        assert called.get(detection.lineage.window_id) == detection.event_type, detection.lineage.window_id
    # ...and every device call lies inside a cloud detection of its type on its device, or continues one across an
    # upload boundary (inference emits such a detection with the upload where it began, spanning that upload's windows).
    spans = [
        (
            d.lineage.device_id,
            d.event_type,
            timestamp_to_seconds(d.window.started_at),
            timestamp_to_seconds(d.window.ended_at),
        )
        for d in detections
    ]
    device_of = {identifier: result.device_id for result in results for identifier in result.window_ids}
    covered: dict[str, tuple[int, float]] = {}  # device → (type, end) of its last covered call
    for call in sorted(calls, key=lambda call: (device_of[call.window_id], call.start_s)):
        device_id = device_of[call.window_id]
        inside = any(
            owner == device_id and kind == call.event_type and start - 1e-3 <= call.start_s and call.end_s <= end + 1e-3
            for owner, kind, start, end in spans
        )
        last = covered.get(device_id)
        continues = last is not None and last[0] == call.event_type and call.start_s <= last[1] + MERGE_GAP_SECONDS
        assert inside or continues, call
        covered[device_id] = (call.event_type, call.end_s)

    # The device, int8 (the bundle's default): the cloud's calls on at least 99 % of the windows.
    int8_device = EdgeRuntime.load(bundle.folder, KEY)
    assert int8_device.precision == "int8"
    int8_calls = np.concatenate([int8_device.process(upload).window_calls for upload in uploads])
    fp32_calls = np.concatenate([result.window_calls for result in results])
    assert np.count_nonzero(fp32_calls != NO_CALL) >= 10
    assert float(np.mean(int8_calls == fp32_calls)) >= MIN_AGREEMENT


def test_window_calls_follow_the_threshold_and_the_calibration_gate() -> None:
    probabilities = np.array(
        [
            [0.1, 0.8, 0.05, 0.03, 0.02],  # braking, strong
            [0.5, 0.49, 0.0, 0.0, 0.01],  # normal wins
            [0.2, 0.1, 0.45, 0.15, 0.1],  # acceleration most likely, below the threshold
            [0.05, 0.0, 0.0, 0.9, 0.05],  # cornering, but not allowed
            [0.1, 0.0, 0.0, 0.0, 0.9],  # confounder: never a call
        ],
        dtype=np.float32,
    )
    allowed = np.array([True, True, True, False, True])
    assert window_calls(probabilities, allowed).tolist() == [
        int(CLASS_EVENT_TYPES[1]),
        NO_CALL,
        NO_CALL,
        NO_CALL,
        NO_CALL,
    ]


def test_the_cli_exports_and_verifies_a_bundle(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICHI_DATABASE_URL", platform.database_url)
    monkeypatch.setenv("MICHI_BLOB_URL", platform.blob_url)
    monkeypatch.setenv("MICHI_EDGE_BUNDLE_KEY", KEY.decode())
    runner = CliRunner()
    exported = runner.invoke(app, ["edge", "export", MODEL_NAME, "physics-3", "--output", str(tmp_path)])
    assert exported.exit_code == 0, exported.output
    assert "int8  not shipped" in exported.output
    folder = tmp_path / f"{MODEL_NAME}-physics-3"
    verified = runner.invoke(app, ["edge", "verify", str(folder)])
    assert verified.exit_code == 0 and "files verified" in verified.output, verified.output
    (folder / FP32_FILE).write_bytes(b"not the model")
    refused = runner.invoke(app, ["edge", "verify", str(folder)])
    assert refused.exit_code == 1 and "model.fp32.onnx was changed" in refused.output
    unknown = runner.invoke(app, ["edge", "export", MODEL_NAME, "99", "--output", str(tmp_path)])
    assert unknown.exit_code == 1


def test_the_runtime_sends_events_only_uploads_but_one_in_a_hundred_in_full(bundle: ExportedBundle) -> None:
    from michi.edge.calibration_state import sums_to_json
    from michi.edge.reports import sampled_in_full
    from michi.windows.calibration import CalibrationSums

    device = EdgeRuntime.load(bundle.folder, KEY)
    model = device.edge_model
    manifest = (bundle.folder / MANIFEST_FILE).read_bytes()
    assert (model.name, model.precision) == (MODEL_NAME, "int8")
    assert model.version == bundle.manifest["model"]["version"] == "1"
    assert model.data_version == "ds-1" and model.bundle_sha256 == hashlib.sha256(manifest).hexdigest()
    uploads = _uploads()[:60]
    sums_before = []
    sent = []
    for upload in uploads:
        sums_before.append(sums_to_json(device.calibration.get(upload.device_id) or CalibrationSums()))
        sent.append(device.upload_to_send(upload))
    assert any(sampled_in_full(upload.upload_id) for upload in uploads)
    for upload, to_send, sums in zip(uploads, sent, sums_before, strict=True):
        if sampled_in_full(upload.upload_id):
            # In full, with the device's sums from before it (docs/edge.md): the upload itself otherwise.
            assert to_send.device_calibration.sums_json == sums
            to_send.ClearField("device_calibration")
            assert to_send == upload
        else:
            assert to_send.HasField("edge") and not to_send.imu.offset_ms and not to_send.imu.offset_us
            assert to_send.edge.model == model and to_send.upload_id == upload.upload_id
    assert sum(to_send.HasField("edge") for to_send in sent) >= 55
    # Everything sent with every upload: ten times smaller, and more, over a drive.
    full = sum(len(upload.SerializeToString()) for upload in uploads)
    assert sum(len(to_send.SerializeToString()) for to_send in sent) < full / 5
