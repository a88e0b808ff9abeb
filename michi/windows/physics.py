"""The physics baseline `physics-2`: harsh events from calibrated accelerations, as an ONNX graph.

    payload = build_physics_model()          # deterministic bytes: same code, same sha256
    PHYSICS_MODEL_VERSION, PHYSICS_DATA_VERSION, physics_parameters()

A rule set written down from vehicle physics, not learned, served and registered like any model
(`michi-risk` version `physics-2`), so it can be the champion, the shadow, or the yardstick the
trainer's gate holds learned models to on real recordings (docs/training.md). It reads only the
summary features (`features` [N, 23]) and needs no GPS. On a fresh platform it is the champion
whenever the simulator-trained model is behind it on the real recordings (the trainer's bootstrap).

**Calibrated mount** (`calibration_confidence` ≥ 0.5: up and forward known, so the longitudinal and
lateral features are vehicle axes). Each class has a *score*; 1 is its threshold:

| class | score | threshold |
|---|---|---|
| harsh braking | min(-`longitudinal_min` / 2.5 m/s², `braking_seconds` / 0.2 s) | a deceleration of 2.5 m/s² (0.25 g) held at least 0.2 s |
| harsh acceleration | min(`longitudinal_max` / 2.3 m/s², `acceleration_seconds` / 0.2 s) | 2.3 m/s² (0.23 g) held 0.2 s |
| harsh cornering | min(max(`lateral_abs_max` / 5.0, min(`lateral_abs_max` / 3.4, `yaw_rate_abs_max` / 0.2 rad/s)), `cornering_seconds` / 0.2 s) | 5.0 m/s² (0.51 g) from the accelerometer alone; 3.4 m/s² (0.35 g) when the gyroscope shows a yaw rate of 0.2 rad/s; 0.2 s beyond 3.4 m/s² |
| confounder | max(`vertical_peak_to_peak` / 14 m/s², `rotation_unexplained` / 1.0 rad/s), 0 when a harsh score ≥ 1 | a jolt or a device handled, beyond what road vibration and turns give |

A harsh class past its threshold wins over a jolt in the same window: a sustained deceleration is
what the vehicle did, a pothole is what the road did on top of it.
The yaw rate can only *raise* cornering: a device without a gyroscope reports a yaw rate of 0, which
must not veto a turn the accelerometer measured, so the accelerometer-only path stays open with a
higher threshold. The durations (time beyond the feature thresholds of `michi.windows.features`,
which are these peaks, inside the 2 s window) keep a single vibration spike from becoming an event.

**Otherwise** (the mount is not calibrated yet, or just moved) the score of each class is its
evidence feature, exactly as `baseline-1` weighs them: GPS corroboration, with the IMU capped
below 1 when not even gravity is known (`michi.windows.features`).

Probabilities: softmax over logits `GAIN · (score - 1)` for the four risky/confounder classes and 0
for normal, so a class reaches 0.5 against normal where its score crosses 1. Whether a risky window
becomes a detection is still decided by `michi.windows.model_spec.detection_allowed`, as for every
model.

**Why these numbers.** Harsh manoeuvres of real cars reach 2.5-3 m/s²: published fleet thresholds
for cars sit at 0.25-0.45 g, and labelled harsh brakes and pull-aways of phone recordings peak at
1.5-3 m/s². The longitudinal thresholds are the lowest the simulator's ordinary driving allows
(its everyday brakes and pull-aways reach 2.2-2.4 m/s² once sensor noise is added; at 2.3 / 2.2 the
simulated fleet already gets false detections), so every real-strength manoeuvre of 2.6 m/s² and
more is found (`tests/unit/test_detection_any_device.py`; the trainer adds such manoeuvres to the
shipped drives, `michi.recordings.injection`). The price is paid on firm everyday driving: on the
shipped Auckland drives (a phone on the dash, steep hills) physics-2 flags 7 moments in 26 minutes,
each a brake or pull-away the GPS confirms, partly steepened by an 11 % grade (about 1.1 m/s²), and
none of the annotated ordinary manoeuvres' turns. Below 2.5 m/s² magnitude cannot tell harsh from
firm, and that is left to learned models and people. Cornering keeps the accelerometer-only bar of
5.0 m/s²: ordinary slow urban turns reach 4.6 m/s² on the same drives; a gyroscope confirming the
turn lowers it to 3.4 m/s².
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from michi.windows.features import DATA_VERSION, FEATURE_INDEX, FEATURE_NAMES, RELIABLE_CALIBRATION
from michi.windows.model_spec import CLASS_EVENT_TYPES, MODEL_NAME

PHYSICS_MODEL_VERSION = "physics-2"
INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"
OPSET = 17

BRAKING_PEAK_MPS2 = 2.5
ACCELERATION_PEAK_MPS2 = 2.3
CORNERING_PEAK_MPS2 = 5.0
# With a gyroscope confirming the turn, a lower lateral peak is enough.
CORNERING_CONFIRMED_MPS2 = 3.4
CONFIRMING_YAW_RATE_RADPS = 0.2
# Seconds beyond the features' own thresholds (braking_seconds, acceleration_seconds, cornering_seconds).
SUSTAINED_SECONDS = 0.2
VERTICAL_PEAK_TO_PEAK_MPS2 = 14.0
ROTATION_UNEXPLAINED_RADPS = 1.0
# How fast confidence grows past a threshold; the same gain as baseline-1's.
GAIN = 10.0
CALIBRATED_CONFIDENCE = RELIABLE_CALIBRATION

# The affine terms the graph computes from the features: (name, feature or None for the constant 1, scale).
_TERMS: tuple[tuple[str, str | None, float], ...] = (
    ("one", None, 0.0),
    ("braking_peak", "longitudinal_min_mps2", -1.0 / BRAKING_PEAK_MPS2),
    ("braking_sustained", "braking_seconds", 1.0 / SUSTAINED_SECONDS),
    ("acceleration_peak", "longitudinal_max_mps2", 1.0 / ACCELERATION_PEAK_MPS2),
    ("acceleration_sustained", "acceleration_seconds", 1.0 / SUSTAINED_SECONDS),
    ("cornering_peak", "lateral_abs_max_mps2", 1.0 / CORNERING_PEAK_MPS2),
    ("cornering_confirmed_peak", "lateral_abs_max_mps2", 1.0 / CORNERING_CONFIRMED_MPS2),
    ("yaw_confirmation", "yaw_rate_abs_max_radps", 1.0 / CONFIRMING_YAW_RATE_RADPS),
    ("cornering_sustained", "cornering_seconds", 1.0 / SUSTAINED_SECONDS),
    ("vertical", "vertical_peak_to_peak_mps2", 1.0 / VERTICAL_PEAK_TO_PEAK_MPS2),
    ("rotation", "rotation_unexplained_radps", 1.0 / ROTATION_UNEXPLAINED_RADPS),
    ("braking_evidence", "braking_evidence", 1.0),
    ("acceleration_evidence", "acceleration_evidence", 1.0),
    ("cornering_evidence", "cornering_evidence", 1.0),
    ("confounder_evidence", "confounder_evidence", 1.0),
    ("calibration_confidence", "calibration_confidence", 1.0),
)


def physics_parameters() -> dict[str, float | str]:
    """The rule set: every threshold (the registry's `parameters` of physics-2)."""
    return {
        "rules": PHYSICS_MODEL_VERSION,
        "braking_peak_mps2": BRAKING_PEAK_MPS2,
        "acceleration_peak_mps2": ACCELERATION_PEAK_MPS2,
        "cornering_peak_mps2": CORNERING_PEAK_MPS2,
        "cornering_confirmed_mps2": CORNERING_CONFIRMED_MPS2,
        "confirming_yaw_rate_radps": CONFIRMING_YAW_RATE_RADPS,
        "sustained_seconds": SUSTAINED_SECONDS,
        "vertical_peak_to_peak_mps2": VERTICAL_PEAK_TO_PEAK_MPS2,
        "rotation_unexplained_radps": ROTATION_UNEXPLAINED_RADPS,
        "gain": GAIN,
        "calibrated_confidence": CALIBRATED_CONFIDENCE,
    }


# The rule set's version is its content, so a changed threshold can never hide behind an old name.
PHYSICS_RULES_VERSION = (
    "rules-" + hashlib.sha256(json.dumps(physics_parameters(), sort_keys=True).encode()).hexdigest()[:16]
)
# What a physics-2 detection was computed from: the rule set and the preprocessing (features) version.
PHYSICS_DATA_VERSION = f"{PHYSICS_RULES_VERSION}+{DATA_VERSION}"


def _affine_terms() -> tuple[np.ndarray, np.ndarray]:
    """Weights [F, T] and bias [T] turning the features into the graph's terms (`_TERMS` order)."""
    weights = np.zeros((len(FEATURE_NAMES), len(_TERMS)), dtype=np.float32)
    bias = np.zeros(len(_TERMS), dtype=np.float32)
    for column, (_, feature, scale) in enumerate(_TERMS):
        if feature is None:
            bias[column] = 1.0
        else:
            weights[FEATURE_INDEX[feature], column] = scale
    return weights, bias


def build_physics_model() -> bytes:
    """The physics-2 graph as deterministic bytes (input `features`, output `probabilities`)."""
    weights, bias = _affine_terms()
    names = [name for name, _, _ in _TERMS]
    nodes = [
        helper.make_node("MatMul", [INPUT_NAME, "term_weights"], ["scaled_terms"]),
        helper.make_node("Add", ["scaled_terms", "term_bias"], ["terms"]),
        helper.make_node("Split", ["terms", "term_sizes"], names, axis=1),
        # Calibrated mount: peaks that last, yaw confirming (never vetoing) a turn.
        helper.make_node("Min", ["braking_peak", "braking_sustained"], ["braking"]),
        helper.make_node("Min", ["acceleration_peak", "acceleration_sustained"], ["acceleration"]),
        helper.make_node("Min", ["cornering_confirmed_peak", "yaw_confirmation"], ["cornering_confirmed"]),
        helper.make_node("Max", ["cornering_peak", "cornering_confirmed"], ["cornering_either"]),
        helper.make_node("Min", ["cornering_either", "cornering_sustained"], ["cornering"]),
        helper.make_node("Max", ["vertical", "rotation"], ["jolt"]),
        # A harsh class past its threshold wins over a jolt: what the vehicle did, not what the road did on top.
        helper.make_node("Max", ["braking", "acceleration", "cornering"], ["harsh"]),
        helper.make_node("GreaterOrEqual", ["harsh", "score_one"], ["harsh_crossed"]),
        helper.make_node("Where", ["harsh_crossed", "score_zero", "jolt"], ["confounder"]),
        helper.make_node(
            "Concat", ["one", "braking", "acceleration", "cornering", "confounder"], ["calibrated_scores"], axis=1
        ),
        helper.make_node(
            "Concat",
            ["one", "braking_evidence", "acceleration_evidence", "cornering_evidence", "confounder_evidence"],
            ["evidence_scores"],
            axis=1,
        ),
        helper.make_node("GreaterOrEqual", ["calibration_confidence", "calibrated_threshold"], ["calibrated"]),
        helper.make_node("Where", ["calibrated", "calibrated_scores", "evidence_scores"], ["scores"]),
        helper.make_node("Sub", ["scores", "score_one"], ["past_threshold"]),
        helper.make_node("Mul", ["past_threshold", "gain"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=1),
    ]
    initializers = [
        numpy_helper.from_array(weights, "term_weights"),
        numpy_helper.from_array(bias, "term_bias"),
        numpy_helper.from_array(np.ones(len(_TERMS), dtype=np.int64), "term_sizes"),
        numpy_helper.from_array(np.array(CALIBRATED_CONFIDENCE, dtype=np.float32), "calibrated_threshold"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "score_one"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "score_zero"),
        numpy_helper.from_array(np.array(GAIN, dtype=np.float32), "gain"),
    ]
    graph = helper.make_graph(
        nodes=nodes,
        name="michi_risk_physics",
        inputs=[helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", len(FEATURE_NAMES)])],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", len(CLASS_EVENT_TYPES)])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="michi")
    model.ir_version = 8
    model.doc_string = f"{MODEL_NAME} {PHYSICS_MODEL_VERSION}; data version {PHYSICS_DATA_VERSION}; " + json.dumps(
        physics_parameters(), sort_keys=True
    )
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())
