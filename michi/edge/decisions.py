"""The serving decision rule applied to a batch of probabilities, on the device as in the cloud.

A window's call is its risky event type when the most likely class is harsh braking, acceleration or
cornering with probability ≥ `DECISION_THRESHOLD` *and* `detection_allowed` lets the sensors back it;
otherwise there is no call (None). This is what `services/inference/handlers.py` decides per window before
merging calls into detections; both read the same constants from `michi.windows.model_spec`.
"""

from __future__ import annotations

import numpy as np

from michi.contracts.v1 import common_pb2
from michi.windows.model_spec import CLASS_EVENT_TYPES, DECISION_THRESHOLD, RISKY_EVENT_TYPES, detection_allowed

# The "no call" class in arrays of calls: EVENT_TYPE_UNSPECIFIED (0) is no class the model outputs.
NO_CALL = int(common_pb2.EVENT_TYPE_UNSPECIFIED)


def window_calls(probabilities: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Per window: the risky event type called (an `EventType` value), or `NO_CALL`."""
    if probabilities.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    columns = np.argmax(probabilities, axis=1)
    types = np.asarray(CLASS_EVENT_TYPES, dtype=np.int64)[columns]
    risky = np.isin(types, np.asarray(sorted(RISKY_EVENT_TYPES), dtype=np.int64))
    strong = probabilities[np.arange(columns.size), columns] >= DECISION_THRESHOLD
    return np.where(risky & strong & np.asarray(allowed, dtype=bool), types, NO_CALL)


def allowed_windows(calibration_state: str, gps_available: np.ndarray) -> np.ndarray:
    """`detection_allowed` for one upload's windows (re-exported so callers need one import)."""
    return detection_allowed(calibration_state, gps_available)
