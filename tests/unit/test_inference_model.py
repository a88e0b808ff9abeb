"""The baseline ONNX model: built deterministically, loaded only when its sha256 matches."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from michi.windows.features import DATA_VERSION, FEATURE_INDEX, FEATURE_NAMES, SIGNAL_CHANNELS, SIGNAL_STEPS
from services.inference.adapters.onnx_model import (
    ModelIntegrityError,
    OnnxDetector,
    build_baseline_model,
    install_baseline_model,
)


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


def test_missing_model_is_refused(tmp_path: Path) -> None:
    artifact = install_baseline_model(tmp_path)
    artifact.path.unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        OnnxDetector(artifact)
