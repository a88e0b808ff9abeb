"""What the risk model outputs: its classes (column order of the probabilities) and decision rule.

The decision rule holds for every served model, baseline or learned, champion or shadow:

* a window is *risky* when its most likely class is harsh braking, acceleration or cornering with
  probability ≥ `DECISION_THRESHOLD`;
* it may become a detection only when `detection_allowed` says the sensors can back it: the mount
  is calibrated (up and forward known with high confidence: the IMU alone is enough, GPS or not),
  or gravity is known and GPS corroborates the window (GPS tells braking from cornering). With no
  usable calibration and no GPS the device axes cannot be read as vehicle axes: no detection, the
  window's prediction says why (its calibration state), and uncertain windows still go to people.

Speeding is a map rule (`services/inference/domain/speeding.py`) and needs GPS by nature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from michi.contracts.v1 import common_pb2

if TYPE_CHECKING:
    from michi.windows.calibration import Calibration

MODEL_NAME = "michi-risk"
# The graph's tensors: inputs `features` [batch, F] and `signals` [batch, C, T] (a model declares at least one),
# output `probabilities` [batch, 5] in CLASS_EVENT_TYPES order (docs/inference.md, "The model contract").
FEATURES_INPUT = "features"
SIGNALS_INPUT = "signals"
PROBABILITIES_OUTPUT = "probabilities"
BASELINE_MODEL_VERSION = "baseline-1"

# Column order of the model's [N, 5] probabilities.
CLASS_EVENT_TYPES: tuple[common_pb2.EventType, ...] = (
    common_pb2.EVENT_TYPE_NORMAL,
    common_pb2.EVENT_TYPE_HARSH_BRAKING,
    common_pb2.EVENT_TYPE_HARSH_ACCELERATION,
    common_pb2.EVENT_TYPE_HARSH_CORNERING,
    common_pb2.EVENT_TYPE_CONFOUNDER,
)
RISKY_EVENT_TYPES = frozenset(
    {
        common_pb2.EVENT_TYPE_HARSH_BRAKING,
        common_pb2.EVENT_TYPE_HARSH_ACCELERATION,
        common_pb2.EVENT_TYPE_HARSH_CORNERING,
    }
)
# A window is risky when its most likely class is risky with at least this probability.
DECISION_THRESHOLD = 0.5


CALIBRATION_STATES: dict[str, common_pb2.CalibrationState] = {
    "calibrated": common_pb2.CALIBRATION_STATE_CALIBRATED,
    "gravity-only": common_pb2.CALIBRATION_STATE_GRAVITY_ONLY,
    "uncalibrated": common_pb2.CALIBRATION_STATE_UNCALIBRATED,
}


def calibration_summary(calibration: Calibration | None) -> common_pb2.CalibrationSummary:
    """The calibration a window was scored with, as `Prediction.calibration` and `Detection.calibration` carry it
    (on the device too: an events-only upload's report)."""
    if calibration is None:
        return common_pb2.CalibrationSummary(state=common_pb2.CALIBRATION_STATE_UNCALIBRATED, forward_method="none")
    return common_pb2.CalibrationSummary(
        state=CALIBRATION_STATES[calibration.state],
        gravity_confidence=calibration.gravity_confidence,
        forward_confidence=calibration.forward_confidence,
        forward_method=calibration.forward_method,
    )


# Widths of the `features` input a model may declare: the current list, and earlier lists it extends
# (features-3's 23 columns are the first 23 of features-4's). Feature names are only ever appended.
ACCEPTED_FEATURE_WIDTHS = frozenset({23, 26})


def declared_feature_width(session: Any, input_name: str = FEATURES_INPUT) -> int | None:
    """The fixed width of an ONNX Runtime session's `features` input (None: symbolic or absent)."""
    for node in session.get_inputs():
        if node.name == input_name and len(node.shape) == 2 and isinstance(node.shape[1], int):
            return int(node.shape[1])
    return None


def model_features(features: np.ndarray, width: int | None) -> np.ndarray:
    """The columns a model declaring `width` features reads (all when its width is symbolic: None)."""
    if width is None or width == features.shape[1]:
        return features
    if width not in ACCEPTED_FEATURE_WIDTHS or width > features.shape[1]:
        raise ValueError(f"a model reading {width} features; accepted: {sorted(ACCEPTED_FEATURE_WIDTHS)}")
    return features[:, :width]


def detection_allowed(calibration_state: str, gps_available: np.ndarray) -> np.ndarray:
    """Per window: whether a risky call may become a detection (see the module docstring)."""
    corroborated = np.asarray(gps_available) > 0
    if calibration_state == "calibrated":
        return np.ones(corroborated.shape, dtype=bool)
    if calibration_state == "gravity-only":
        return corroborated
    return np.zeros(corroborated.shape, dtype=bool)
