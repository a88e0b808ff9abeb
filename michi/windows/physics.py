"""The physics baseline `physics-3`: harsh events from calibrated accelerations, as an ONNX graph.

    payload = build_physics_model()          # deterministic bytes: same code, same sha256
    PHYSICS_MODEL_VERSION, PHYSICS_DATA_VERSION, physics_parameters()

A rule set written down from vehicle physics, not learned, served and registered like any model
(`michi-risk` version `physics-3`), so it can be the champion, the shadow, or the yardstick the
trainer's gate holds learned models to on real recordings (docs/training.md). It reads only the
summary features (`features` [N, 26]) and needs no GPS. On a fresh platform it is the champion
whenever the simulator-trained model is behind it on the real recordings (the trainer's bootstrap).

**Calibrated mount** (`calibration_confidence` ≥ 0.5: up and forward known, so the longitudinal and
lateral features are vehicle axes). Each class has a *score*; 1 is its threshold. A class fires on a
strong peak that lasts, or on a weaker one that built fast (its *onset*):

| class | score | threshold |
|---|---|---|
| harsh braking | max(min(-`longitudinal_min` / 2.5 m/s², `braking_seconds` / 0.2 s), `braking_onset` / 3.5 m/s³) | a deceleration of 2.5 m/s² (0.25 g) held at least 0.2 s; or one that rose 1.8 m/s² above its level of a second before, held 0.2 s, building at 3.5 m/s³ |
| harsh acceleration | max(min(`longitudinal_max` / 2.3 m/s², `acceleration_seconds` / 0.2 s), `acceleration_onset` / 3.5 m/s³) | 2.3 m/s² (0.23 g) held 0.2 s; or a rise of 1.8 m/s² building at 3.5 m/s³ |
| harsh cornering | max(min(max(`lateral_abs_max` / 5.0, min(`lateral_abs_max` / 3.4, `yaw_rate_abs_max` / 0.2 rad/s)), `cornering_seconds` / 0.2 s), `cornering_onset` / 3.5 m/s³) | 5.0 m/s² (0.51 g) from the accelerometer alone; 3.4 m/s² (0.35 g) when the gyroscope shows a yaw rate of 0.2 rad/s; 0.2 s beyond 3.4 m/s²; or a lateral rise of 2.5 m/s² building at 3.5 m/s³ (a swerve, a turn thrown in) |
| confounder | max(`vertical_peak_to_peak` / 14 m/s², `rotation_unexplained` / 1.0 rad/s), 0 when a harsh score ≥ 1 | a jolt or a device handled, beyond what road vibration and turns give |

A harsh class past its threshold wins over a jolt in the same window: a sustained deceleration is
what the vehicle did, a pothole is what the road did on top of it.
The yaw rate can only *raise* cornering: a device without a gyroscope reports a yaw rate of 0, which
must not veto a turn the accelerometer measured, so the accelerometer-only path stays open with a
higher threshold. The durations (time beyond the feature thresholds of `michi.windows.features`,
which are these peaks, inside the 2 s window) keep a single vibration spike from becoming an event.
The onsets (`michi.windows.features.onset_rates`) are measured from the level a second before, so a
brake on a hill counts like one on the flat, and never from the end of the opposite manoeuvre (a
pull-away released, a brake ending at a halt).

**Otherwise** (the mount is not calibrated yet, or just moved) the score of each class is its
evidence feature, exactly as `baseline-1` weighs them: GPS corroboration, with the IMU capped
below 1 when not even gravity is known (`michi.windows.features`).

Probabilities: softmax over logits `GAIN · (score - 1)` for the four risky/confounder classes and 0
for normal, so a class reaches 0.5 against normal where its score crosses 1. Whether a risky window
becomes a detection is still decided by `michi.windows.model_spec.detection_allowed`, as for every
model.

**Why these numbers.** Harsh manoeuvres of real cars reach 2-3 m/s²: published fleet thresholds
for cars sit at 0.25-0.45 g, and labelled harsh brakes and pull-aways of phone recordings peak at
1.5-3 m/s². Magnitude alone cannot tell a harsh 2.2 m/s² brake from a firm everyday stop of the same
strength; how fast it builds can: everyday driving changes its acceleration at 1-3 m/s³ (the
simulator's drivers at most 2.5; all but one of the Auckland phone's firm brakes and pull-aways under
3 once filtered), a harsh manoeuvre at 5-10 m/s³, which reads 3.6-4.6 m/s³ after the 2.5 Hz low-pass. So the peaks stay
where the simulator's ordinary driving makes no false detection (2.5 / 2.3 m/s²; its everyday brakes
and pull-aways reach 2.2-2.4 m/s² once sensor noise is added), and weaker manoeuvres of 2-2.5 m/s²
count when they build at 3.5 m/s³ or faster (`tests/unit/test_detection_any_device.py`; the trainer
adds such brakes, pull-aways and swerves to the shipped drives, `michi.recordings.injection`, and
physics-3 finds every one on the drive whose mount calibrates without GPS, physics-2 two of six).
The price is paid on firm everyday driving: on the shipped Auckland drives (a phone on the dash, steep
hills) physics-3 flags 9 moments in 26 minutes (physics-2: 7): seven brakes and pull-aways the GPS
confirms, partly steepened by an 11 % grade (about 1.1 m/s²), and two turns of
0.42-0.45 g thrown in fast. Cornering keeps the accelerometer-only bar of 5.0 m/s² for turns that
build slowly: ordinary slow urban turns reach 4.6 m/s² on the same drives; a gyroscope confirming
the turn lowers it to 3.4 m/s².
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from michi.windows.features import (
    DATA_VERSION,
    FEATURE_INDEX,
    FEATURE_NAMES,
    ONSET_BAR_LATERAL_MPS2,
    ONSET_BAR_LONGITUDINAL_MPS2,
    RELIABLE_CALIBRATION,
)
from michi.windows.model_spec import CLASS_EVENT_TYPES, FEATURES_INPUT, MODEL_NAME, PROBABILITIES_OUTPUT

PHYSICS_MODEL_VERSION = "physics-3"
OPSET = 17

BRAKING_PEAK_MPS2 = 2.5
ACCELERATION_PEAK_MPS2 = 2.3
CORNERING_PEAK_MPS2 = 5.0
# With a gyroscope confirming the turn, a lower lateral peak is enough.
CORNERING_CONFIRMED_MPS2 = 3.4
CONFIRMING_YAW_RATE_RADPS = 0.2
# Seconds beyond the features' own thresholds (braking_seconds, acceleration_seconds, cornering_seconds).
SUSTAINED_SECONDS = 0.2
# A weaker manoeuvre counts when it built fast: a rise of the features' onset bars (2.0 m/s² braking or
# accelerating, 2.5 m/s² lateral, over the level before, held 0.2 s) at ONSET_RATE_MPS3 or faster.
ONSET_RATE_MPS3 = 3.5
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
    ("braking_onset", "braking_onset_mps3", 1.0 / ONSET_RATE_MPS3),
    ("acceleration_onset", "acceleration_onset_mps3", 1.0 / ONSET_RATE_MPS3),
    ("cornering_onset", "cornering_onset_mps3", 1.0 / ONSET_RATE_MPS3),
    ("vertical", "vertical_peak_to_peak_mps2", 1.0 / VERTICAL_PEAK_TO_PEAK_MPS2),
    ("rotation", "rotation_unexplained_radps", 1.0 / ROTATION_UNEXPLAINED_RADPS),
    ("braking_evidence", "braking_evidence", 1.0),
    ("acceleration_evidence", "acceleration_evidence", 1.0),
    ("cornering_evidence", "cornering_evidence", 1.0),
    ("confounder_evidence", "confounder_evidence", 1.0),
    ("calibration_confidence", "calibration_confidence", 1.0),
)


def physics_parameters() -> dict[str, float | str]:
    """The rule set: every threshold (the registry's `parameters` of physics-3)."""
    return {
        "rules": PHYSICS_MODEL_VERSION,
        "braking_peak_mps2": BRAKING_PEAK_MPS2,
        "acceleration_peak_mps2": ACCELERATION_PEAK_MPS2,
        "cornering_peak_mps2": CORNERING_PEAK_MPS2,
        "cornering_confirmed_mps2": CORNERING_CONFIRMED_MPS2,
        "confirming_yaw_rate_radps": CONFIRMING_YAW_RATE_RADPS,
        "sustained_seconds": SUSTAINED_SECONDS,
        "onset_bar_longitudinal_mps2": ONSET_BAR_LONGITUDINAL_MPS2,
        "onset_bar_lateral_mps2": ONSET_BAR_LATERAL_MPS2,
        "onset_rate_mps3": ONSET_RATE_MPS3,
        "vertical_peak_to_peak_mps2": VERTICAL_PEAK_TO_PEAK_MPS2,
        "rotation_unexplained_radps": ROTATION_UNEXPLAINED_RADPS,
        "gain": GAIN,
        "calibrated_confidence": CALIBRATED_CONFIDENCE,
    }


# The rule set's version is its content, so a changed threshold can never hide behind an old name.
PHYSICS_RULES_VERSION = (
    "rules-" + hashlib.sha256(json.dumps(physics_parameters(), sort_keys=True).encode()).hexdigest()[:16]
)
# What a physics-3 detection was computed from: the rule set and the preprocessing (features) version.
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
    """The physics-3 graph as deterministic bytes (input `features`, output `probabilities`)."""
    weights, bias = _affine_terms()
    names = [name for name, _, _ in _TERMS]
    nodes = [
        helper.make_node("MatMul", [FEATURES_INPUT, "term_weights"], ["scaled_terms"]),
        helper.make_node("Add", ["scaled_terms", "term_bias"], ["terms"]),
        helper.make_node("Split", ["terms", "term_sizes"], names, axis=1),
        # Calibrated mount: peaks that last, yaw confirming (never vetoing) a turn; or weaker peaks that built fast.
        helper.make_node("Min", ["braking_peak", "braking_sustained"], ["braking_strong"]),
        helper.make_node("Max", ["braking_strong", "braking_onset"], ["braking"]),
        helper.make_node("Min", ["acceleration_peak", "acceleration_sustained"], ["acceleration_strong"]),
        helper.make_node("Max", ["acceleration_strong", "acceleration_onset"], ["acceleration"]),
        helper.make_node("Min", ["cornering_confirmed_peak", "yaw_confirmation"], ["cornering_confirmed"]),
        helper.make_node("Max", ["cornering_peak", "cornering_confirmed"], ["cornering_either"]),
        helper.make_node("Min", ["cornering_either", "cornering_sustained"], ["cornering_strong"]),
        helper.make_node("Max", ["cornering_strong", "cornering_onset"], ["cornering"]),
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
        helper.make_node("Softmax", ["logits"], [PROBABILITIES_OUTPUT], axis=1),
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
        inputs=[helper.make_tensor_value_info(FEATURES_INPUT, TensorProto.FLOAT, ["batch", len(FEATURE_NAMES)])],
        outputs=[
            helper.make_tensor_value_info(PROBABILITIES_OUTPUT, TensorProto.FLOAT, ["batch", len(CLASS_EVENT_TYPES)])
        ],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="michi")
    model.ir_version = 8
    model.doc_string = f"{MODEL_NAME} {PHYSICS_MODEL_VERSION}; data version {PHYSICS_DATA_VERSION}; " + json.dumps(
        physics_parameters(), sort_keys=True
    )
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())
