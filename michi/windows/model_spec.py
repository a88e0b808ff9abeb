"""What the risk model outputs: its classes (column order of the probabilities) and decision rule."""

from __future__ import annotations

from michi.contracts.v1 import common_pb2

MODEL_NAME = "michi-risk"
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
