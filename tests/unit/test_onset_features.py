"""Onsets (how fast a manoeuvre built) and the append-only feature list that carries them.

`michi.windows.features.onset_rates` on hand-made series: a harsh brake counts on the flat and on a
hill, a firm stop of the same strength does not, nor the end of a pull-away, nor a brake ending at a
halt, nor a vibration spike. Models trained on features-3's 23 columns keep being served on features-4:
they read the first 23 columns, in inference and in the trainer alike.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from michi.windows.features import (
    DATA_VERSION,
    FEATURE_NAMES,
    ONSET_BAR_LONGITUDINAL_MPS2,
    ONSET_FLOOR_SHARE,
    ONSET_SPAN_S,
    SIGNAL_CHANNELS,
    SIGNAL_STEPS,
    onset_rates,
)
from michi.windows.model_spec import ACCEPTED_FEATURE_WIDTHS, model_features
from michi.windows.signals import low_pass
from services.inference.adapters.onnx_model import ModelArtifact, ModelContractError, OnnxDetector
from services.trainer.adapters.onnx_model import OnnxRiskModel

RATE = 50.0
BAR = ONSET_BAR_LONGITUDINAL_MPS2


def _lobe(times: np.ndarray, start: float, peak: float, ramp: float, hold: float) -> np.ndarray:
    """0 → peak → 0 with raised-cosine ramps of `ramp` seconds and a hold."""
    end = start + 2 * ramp + hold
    rise = np.clip((times - start) / ramp, 0, 1)
    fall = np.clip((end - times) / ramp, 0, 1)
    return peak * np.minimum(0.5 - 0.5 * np.cos(np.pi * rise), 0.5 - 0.5 * np.cos(np.pi * fall))


def _onset(values: np.ndarray) -> float:
    """The largest onset in a 10 s series, as the features see it (2.5 Hz low-pass first)."""
    return float(onset_rates(low_pass(values, RATE, 2.5), RATE, BAR).max())


TIMES = np.arange(0, 10, 1 / RATE)


@pytest.mark.parametrize("peak", [2.2, 2.6, 3.2])
@pytest.mark.parametrize("ramp", [0.25, 0.35])
def test_a_harsh_brake_builds_fast_on_the_flat_and_on_a_hill(peak: float, ramp: float) -> None:
    brake = _lobe(TIMES, 4.0, peak, ramp, 1.0)  # deceleration, positive
    assert _onset(brake) >= 3.5
    # The rise is measured where it happens, not only where it crosses the bar.
    assert onset_rates(low_pass(brake, RATE, 2.5), RATE, BAR)[TIMES < 3.5].max() == 0.0
    # Uphill: the grade puts +1.2 m/s² on the longitudinal axis (-1.2 on deceleration) for the whole
    # upload. The brake still counts while what the accelerometer reads of it stands above the floor
    # (ONSET_FLOOR_SHARE of the bar, 1.35 m/s²): from 2.6 m/s² on such a hill.
    uphill = _onset(brake - 1.2)
    if peak - 1.2 > ONSET_FLOOR_SHARE * BAR:
        assert uphill == pytest.approx(_onset(brake), abs=1e-9)
    else:
        assert uphill == 0.0
    # Downhill the grade adds to the brake: it counts as on the flat.
    assert _onset(brake + 1.2) == pytest.approx(_onset(brake), abs=1e-9)


def test_a_firm_stop_of_the_same_strength_builds_slowly() -> None:
    assert 0.0 < _onset(_lobe(TIMES, 3.0, 2.6, 1.5, 1.5)) < 3.0


def test_the_end_of_a_pull_away_is_not_a_brake() -> None:
    # Accelerating at 2.8 m/s² for 2 s, then released at once into a mild 1.0 m/s² deceleration.
    deceleration = -_lobe(TIMES, 2.0, 2.8, 0.3, 2.0) + 1.0 * (TIMES > 4.6)
    assert _onset(deceleration) == 0.0


def test_a_brake_ending_at_a_halt_is_not_a_pull_away() -> None:
    # Braking at 2.0 m/s² all upload long, then the car stops: acceleration jumps from -2.0 to 0 at once.
    acceleration = np.where(TIMES < 7.0, -2.0, 0.0)
    assert _onset(acceleration) == 0.0
    # The same jump from a standstill to 2.0 m/s² is a pull-away.
    assert _onset(np.where(TIMES < 7.0, 0.0, 2.0)) >= 3.5


def test_a_vibration_spike_is_too_short_to_count() -> None:
    spike = np.zeros_like(TIMES)
    spike[(TIMES >= 5.0) & (TIMES < 5.08)] = 12.0  # 80 ms of a hard knock
    raw = onset_rates(spike, RATE, BAR)  # unfiltered on purpose: a run beyond the bar, but under 0.2 s
    assert raw.max() == 0.0


def test_onsets_need_more_samples_than_their_span() -> None:
    short = np.full(round(ONSET_SPAN_S * RATE), 5.0)
    assert onset_rates(short, RATE, BAR).tolist() == [0.0] * short.size
    assert onset_rates(np.zeros(0), RATE, BAR).size == 0


# ------------------------------------------------------------------ the append-only feature list


def _linear_model(width: int, weights: np.ndarray) -> bytes:
    """softmax(features[:, :width] @ weights) as an ONNX graph declaring `width` features."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "weights"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "earlier_features",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 5])],
        initializer=[numpy_helper.from_array(weights.astype(np.float32), "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _artifact(tmp_path: Path, payload: bytes) -> ModelArtifact:
    path = tmp_path / "model.onnx"
    path.write_bytes(payload)
    return ModelArtifact("michi-risk", "earlier", DATA_VERSION, path, hashlib.sha256(payload).hexdigest())


def test_a_model_of_the_earlier_23_features_reads_the_first_23_columns(tmp_path: Path) -> None:
    assert len(FEATURE_NAMES) == 26
    assert sorted(ACCEPTED_FEATURE_WIDTHS) == [23, 26]
    random = np.random.default_rng(3)
    weights = random.standard_normal((23, 5))
    features = random.standard_normal((7, len(FEATURE_NAMES))).astype(np.float32)
    signals = np.zeros((7, len(SIGNAL_CHANNELS), SIGNAL_STEPS), dtype=np.float32)
    logits = features[:, :23].astype(np.float64) @ weights
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    payload = _linear_model(23, weights)
    served = OnnxDetector(_artifact(tmp_path, payload)).predict(features, signals)
    evaluated = OnnxRiskModel(payload).predict_in_batches(features, signals)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    np.testing.assert_allclose(evaluated, expected, atol=1e-5)
    # The new columns change nothing for it.
    changed = features.copy()
    changed[:, 23:] = 99.0
    np.testing.assert_allclose(OnnxDetector(_artifact(tmp_path, payload)).predict(changed, signals), served)


def test_a_width_no_feature_list_ever_had_is_refused(tmp_path: Path) -> None:
    payload = _linear_model(24, np.zeros((24, 5)))
    with pytest.raises(ModelContractError, match="features"):
        OnnxDetector(_artifact(tmp_path, payload))
    with pytest.raises(ValueError, match="24 features"):
        model_features(np.zeros((2, len(FEATURE_NAMES)), dtype=np.float32), 24)
