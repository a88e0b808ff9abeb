"""The baseline ONNX model: built deterministically, loaded only when its sha256 matches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from michi.windows.features import DATA_VERSION, FEATURE_INDEX, FEATURE_NAMES, SIGNAL_CHANNELS, SIGNAL_STEPS
from services.inference.adapters.onnx_model import (
    ModelArtifact,
    ModelContractError,
    ModelIntegrityError,
    OnnxDetector,
    build_baseline_model,
    install_baseline_model,
)

from ..model_graphs import build_signals_model


def test_baseline_bytes_are_deterministic() -> None:
    assert hashlib.sha256(build_baseline_model()).hexdigest() == hashlib.sha256(build_baseline_model()).hexdigest()


def test_install_writes_model_and_manifest(tmp_path: Path) -> None:
    artifact = install_baseline_model(tmp_path)
    assert artifact.path == tmp_path / "michi-risk" / "baseline-1" / "model.onnx"
    assert hashlib.sha256(artifact.path.read_bytes()).hexdigest() == artifact.sha256
    assert artifact.data_version == DATA_VERSION
    assert (artifact.path.parent / "model.json").exists()


def test_scores_a_batch_in_one_run(tmp_path: Path) -> None:
    detector = OnnxDetector(install_baseline_model(tmp_path), threads=1)
    features = np.zeros((3, len(FEATURE_NAMES)), dtype=np.float32)
    features[1, FEATURE_INDEX["braking_evidence"]] = 1.5
    features[2, FEATURE_INDEX["cornering_evidence"]] = 0.95
    signals = np.zeros((3, len(SIGNAL_CHANNELS), SIGNAL_STEPS), dtype=np.float32)
    probabilities = detector.predict(features, signals)
    assert probabilities.shape == (3, 5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert probabilities[0].argmax() == 0  # normal
    assert probabilities[1].argmax() == 1 and probabilities[1, 1] > 0.9  # harsh braking
    assert 0.3 < probabilities[2, 3] < 0.5  # just under the threshold: uncertain
    assert detector.predict(features[:0], signals[:0]).shape == (0, 5)


def test_tampered_model_is_refused(tmp_path: Path) -> None:
    artifact = install_baseline_model(tmp_path)
    payload = bytearray(artifact.path.read_bytes())
    payload[-1] ^= 0x01
    artifact.path.write_bytes(bytes(payload))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        OnnxDetector(artifact)
    # Installing again does not silently repair a tampered file: it is still refused.
    with pytest.raises(ModelIntegrityError):
        OnnxDetector(install_baseline_model(tmp_path))


def test_a_baseline_written_by_an_earlier_release_is_replaced(tmp_path: Path) -> None:
    artifact = install_baseline_model(tmp_path)
    # An earlier release wrote other bytes (another preprocessing version) and their manifest.
    older = build_baseline_model(gain_scale=0.5)
    artifact.path.write_bytes(older)
    manifest_path = artifact.path.parent / "model.json"
    manifest = json.loads(manifest_path.read_text()) | {"sha256": hashlib.sha256(older).hexdigest()}
    manifest_path.write_text(json.dumps(manifest))
    upgraded = install_baseline_model(tmp_path)
    assert OnnxDetector(upgraded).model_version == "baseline-1"
    assert upgraded.path.read_bytes() == build_baseline_model()


def test_missing_model_is_refused(tmp_path: Path) -> None:
    artifact = install_baseline_model(tmp_path)
    artifact.path.unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        OnnxDetector(artifact)


def _artifact(tmp_path: Path, payload: bytes, version: str = "x") -> ModelArtifact:
    path = tmp_path / f"{version}.onnx"
    path.write_bytes(payload)
    return ModelArtifact("michi-risk", version, DATA_VERSION, path, hashlib.sha256(payload).hexdigest())


def _graph(inputs: list[tuple[str, list[str | int | None]]], output: str = "probabilities", classes: int = 5) -> bytes:
    """A graph whose output is a softmax over zeros of [batch, classes], whatever its inputs hold."""
    first = inputs[0][0]
    nodes = [
        helper.make_node("Flatten", [first], ["flat"], axis=1),
        helper.make_node("ReduceSum", ["flat", "axes"], ["total"], keepdims=1),
        helper.make_node("Mul", ["total", "zero"], ["zeros"]),
        helper.make_node("Expand", ["zeros", "shape"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [output], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "contract_probe",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims) for name, dims in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", classes])],
        initializer=[
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
            numpy_helper.from_array(np.zeros(1, dtype=np.float32), "zero"),
            numpy_helper.from_array(np.array([1, classes], dtype=np.int64), "shape"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def test_models_are_fed_by_the_inputs_they_declare(tmp_path: Path) -> None:
    features = np.zeros((4, len(FEATURE_NAMES)), dtype=np.float32)
    features[1, FEATURE_INDEX["braking_evidence"]] = 1.5
    signals = np.random.default_rng(1).standard_normal((4, len(SIGNAL_CHANNELS), SIGNAL_STEPS)).astype(np.float32)
    baseline = OnnxDetector(install_baseline_model(tmp_path))
    both = OnnxDetector(_artifact(tmp_path, build_signals_model(), "both"))
    only_signals = OnnxDetector(_artifact(tmp_path, build_signals_model(with_features=False), "signals"))
    assert baseline.input_names == ("features",)
    assert both.input_names == ("features", "signals")
    assert only_signals.input_names == ("signals",)
    # The signals model is the baseline plus a small signal term: same decisions, different numbers.
    np.testing.assert_array_equal(
        both.predict(features, signals).argmax(1), baseline.predict(features, signals).argmax(1)
    )
    assert not np.allclose(both.predict(features, signals), baseline.predict(features, signals))
    # A signals-only model ignores the features entirely.
    scrambled = np.random.default_rng(2).standard_normal(features.shape).astype(np.float32)
    np.testing.assert_array_equal(only_signals.predict(features, signals), only_signals.predict(scrambled, signals))
    assert only_signals.predict(features[:0], signals[:0]).shape == (0, 5)


@pytest.mark.parametrize(
    ("inputs", "output", "classes", "message"),
    [
        ([("images", ["batch", 23])], "probabilities", 5, "inputs"),
        ([("features", ["batch", 22])], "probabilities", 5, "features"),
        ([("signals", ["batch", 50, 6])], "probabilities", 5, "signals"),
        ([("features", ["batch", 23])], "scores", 5, "output"),
        ([("features", ["batch", 23])], "probabilities", 4, "trial run"),
    ],
)
def test_graphs_outside_the_contract_are_refused(
    tmp_path: Path, inputs: list[tuple[str, list[str | int | None]]], output: str, classes: int, message: str
) -> None:
    with pytest.raises(ModelContractError, match=message):
        OnnxDetector(_artifact(tmp_path, _graph(inputs, output, classes)))
    # The probe itself is a valid contract graph when named and shaped right.
    assert OnnxDetector(_artifact(tmp_path, _graph([("features", ["batch", 23])]), "ok")).predict(
        np.zeros((3, 23), dtype=np.float32), np.zeros((3, 6, 50), dtype=np.float32)
    ).shape == (3, 5)
