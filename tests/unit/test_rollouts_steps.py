"""The rollout document (`michi/rollouts/steps.py`): what it reads, and every way it refuses a document."""

from __future__ import annotations

import json
from typing import Any

import pytest

from michi.rollouts.analysis import Condition, parse_condition
from michi.rollouts.steps import (
    Analyse,
    Pause,
    RolloutSpecError,
    SetWeight,
    parse_duration,
    parse_rollout_spec,
    rollout_spec_from_mapping,
)

DOCUMENT = """
analyses:
  label-agreement:
    interval: 10m
    deadline: 2h
    minimum_labelled_windows: 150
    success:
      - agreement_with_labels >= champion - 0.02
      - false_alerts_per_1000_km <= champion * 1.2
      - errors_per_1000 <= 1
      - latency_p99_ms <= 200
      - drift_alerts == 0
    failure:
      - agreement_with_labels < champion - 0.05
steps:
  - set_weight: 10
  - pause: {duration: 10m}
  - analyse: label-agreement
  - set_weight: 50
  - pause: {labelled_windows: 500, duration: 1h30m}
  - analyse:
      interval: 15m
      on_deadline: hold
      success: [agreement_with_labels >= champion - 0.01]
"""


def test_the_documented_example_reads() -> None:
    spec = parse_rollout_spec(DOCUMENT)
    assert spec.steps[0] == SetWeight(10.0)
    assert spec.steps[1] == Pause(duration_seconds=600.0)
    named = spec.steps[2]
    assert isinstance(named, Analyse)
    assert (named.interval_seconds, named.deadline_seconds, named.on_deadline) == (600.0, 7200.0, "rollback")
    assert named.analysis.minimum_labelled_windows == 150
    assert named.analysis.minimum_predictions == 1000  # the default
    assert [str(condition) for condition in named.analysis.success] == [
        "agreement_with_labels >= champion - 0.02",
        "false_alerts_per_1000_km <= champion * 1.2",
        "errors_per_1000 <= 1",
        "latency_p99_ms <= 200",
        "drift_alerts == 0",
    ]
    assert spec.steps[4] == Pause(duration_seconds=5400.0, labelled_windows=500)
    inline = spec.steps[5]
    assert isinstance(inline, Analyse)
    assert (inline.interval_seconds, inline.on_deadline, inline.analysis.failure) == (900.0, "hold", ())


def test_json_reads_the_same_as_yaml() -> None:
    document: dict[str, Any] = {
        "steps": [
            {"set_weight": 5},
            {"pause": {"duration": "30s"}},
            {"analyse": {"success": ["errors_per_1000 <= 1"], "minimum_km": 20.5}},
        ]
    }
    from_json = parse_rollout_spec(json.dumps(document))
    assert from_json == rollout_spec_from_mapping(document)
    analyse = from_json.steps[2]
    assert isinstance(analyse, Analyse) and analyse.analysis.minimum_km == 20.5


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("10m", 600.0), ("2h", 7200.0), ("1d", 86400.0), ("1h30m", 5400.0), ("1.5m", 90.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "10 minutes", "m10", "0s", "-5m", "10m1h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("agreement_with_labels >= champion - 0.02", Condition("agreement_with_labels", ">=", 0.02, "-")),
        ("false_alerts_per_1000_km<=champion*1.2", Condition("false_alerts_per_1000_km", "<=", 1.2, "*")),
        ("latency_p99_ms < champion", Condition("latency_p99_ms", "<", 0.0, "")),
        ("errors_per_1000 <= 1e-1", Condition("errors_per_1000", "<=", 0.1)),
        ("drift_alerts == 0", Condition("drift_alerts", "==", 0.0)),
        ("labelled_windows != -3", Condition("labelled_windows", "!=", -3.0)),
    ],
)
def test_conditions(text: str, expected: Condition) -> None:
    assert parse_condition(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("accuracy >= 0.9", "unknown metric 'accuracy'"),
        ("agreement_with_labels => 0.9", "not '<metric> <operator> <threshold>'"),
        ("agreement_with_labels >= champion / 2", "threshold"),
        ("agreement_with_labels >= baseline", "threshold"),
        ("agreement_with_labels >=", "threshold"),
    ],
)
def test_bad_conditions(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_condition(text)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("- set_weight: 10", "must be a mapping with 'steps'"),
        ("steps: []", "steps: must be a non-empty list"),
        ("stpes: []", "stpes: unknown key"),
        ("steps: [{set_weight: 10, pause: {duration: 1m}}]", "steps[0]: a step is exactly one of"),
        ("steps: [{wait: 1m}]", "steps[0]: a step is exactly one of"),
        ("steps: [{set_weight: 0}]", "steps[0].set_weight: must be a percent in (0, 100]"),
        ("steps: [{set_weight: 150}]", "steps[0].set_weight: must be a percent in (0, 100]"),
        ("steps: [{set_weight: '10'}]", "steps[0].set_weight"),
        ("steps: [{set_weight: true}]", "steps[0].set_weight"),
        ("steps: [{pause: {duration: 10}}]", "steps[0].pause.duration: 10 is not a duration"),
        ("steps: [{pause: {}}]", "steps[0].pause: must be a mapping"),
        ("steps: [{pause: {labelled_windows: 0}}]", "steps[0].pause.labelled_windows: must be a positive whole"),
        ("steps: [{pause: {hours: 1}}]", "steps[0].pause.hours: unknown key"),
        ("steps: [{analyse: missing}]", "steps[0].analyse: no analysis named 'missing'"),
        ("steps: [{analyse: {sucess: [drift_alerts == 0]}}]", "steps[0].analyse.sucess: unknown key"),
        ("steps: [{analyse: {failure: [drift_alerts > 0]}}]", "steps[0].analyse.success: at least one"),
        ("steps: [{analyse: {success: drift_alerts == 0}}]", "steps[0].analyse.success: must be a list"),
        ("steps: [{analyse: {success: [drift > 0]}}]", "steps[0].analyse.success[0]: 'drift > 0': unknown metric"),
        (
            "steps: [{analyse: {success: [drift_alerts == 0], interval: 1h, deadline: 10m}}]",
            "steps[0].analyse.deadline: 600 s is shorter than the interval 3600 s",
        ),
        ("steps: [{analyse: {success: [drift_alerts == 0], on_deadline: promote}}]", "on_deadline: must be one of"),
        ("steps: [{analyse: {success: [drift_alerts == 0], minimum_km: -1}}]", "minimum_km: must be a positive"),
        ("steps: [{analyse: {success: [drift_alerts == 0], minimum_predictions: 0}}]", "minimum_predictions"),
        ("steps: [{set_weight: 10}, {pause: {duration: 1m}}]", "steps: no analyse step"),
        (
            "analyses: {a: {success: [drift_alerts == 0]}}\nsteps: [{set_weight: 10}, {analyse: a}, {set_weight: 50}]",
            "steps[2]: the last weight is never analysed",
        ),
        ("steps: [{set_weight: 10}\n", "not a YAML document"),
    ],
)
def test_invalid_documents_say_where_and_why(document: str, expected: str) -> None:
    with pytest.raises(RolloutSpecError) as raised:
        parse_rollout_spec(document)
    assert any(expected in problem for problem in raised.value.problems), raised.value.problems


def test_every_problem_is_reported_at_once() -> None:
    document = "steps: [{set_weight: 0}, {pause: {duration: soon}}, {analyse: {success: [nonsense]}}]"
    with pytest.raises(RolloutSpecError) as raised:
        parse_rollout_spec(document)
    assert len(raised.value.problems) == 3
    assert str(raised.value).startswith("invalid rollout document:\n  - steps[0].set_weight")
