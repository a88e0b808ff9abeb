"""A canary analysis: the candidate's and the champion's figures of one period against explicit conditions.

    analysis = AnalysisSpec(success=(parse_condition("agreement_with_labels >= champion - 0.02"),))
    verdict = evaluate(analysis, candidate=ArmFigures(predictions=4000, labelled_windows=250, correct=221, ...),
                       champion=ArmFigures(...))
    verdict.outcome, verdict.reasons          # Outcome.PASS / FAIL / INCONCLUSIVE, one line per finding

A condition reads `<metric> <operator> <threshold>`: the operator one of >=, <=, >, <, ==, !=; the threshold
a number, `champion` (the champion's figure of the same period) or `champion + x`, `champion - x`,
`champion * x`. The metrics, per arm and period (`ArmFigures`):

| metric | from | defined when |
|---|---|---|
| `agreement_with_labels` | correct / labelled windows | labelled windows ≥ `minimum_labelled_windows` |
| `false_alerts_per_1000_km` | false alerts / km x 1000 | km ≥ `minimum_km` |
| `detections_per_1000_km` | detections / km x 1000 | km ≥ `minimum_km` |
| `errors_per_1000_uploads` | errors / uploads x 1000 | uploads ≥ `minimum_uploads` |
| `errors_per_1000` | errors / predictions x 1000 | predictions ≥ `minimum_predictions` |
| `latency_p99_ms` | measured p99 latency | measured, and uploads ≥ `minimum_uploads` |
| `drift_alerts` | drift alerts raised on the arm | uploads ≥ `minimum_uploads` |
| `predictions`, `labelled_windows`, `uploads`, `km` | the counts themselves | always |

The verdict, in this order:
1. **FAIL** when any failure condition holds on defined figures. A failure condition needs only its own
   figures, so a candidate that errors on every window fails before its first label comes back. When the
   analysis declares no failure conditions, a success condition that does not hold (on defined figures)
   is the failure (as Argo Rollouts reads a lone success condition), except one on a count: too little
   data is never a failure.
2. **INCONCLUSIVE** when the candidate has fewer predictions or labelled windows than the minimums (when a
   success condition reads labels or predictions, or only counts), or a success condition cannot be
   computed (too little data on either arm it reads), or does not hold while not failing. No data, or too
   little, is never a pass.
3. **PASS** when every success condition holds on defined figures and the candidate meets the minimums.
"""

from __future__ import annotations

import enum
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_MINIMUM_PREDICTIONS = 1000
DEFAULT_MINIMUM_LABELLED_WINDOWS = 200
DEFAULT_MINIMUM_KM = 100.0
DEFAULT_MINIMUM_UPLOADS = 500


class Outcome(enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class Basis(enum.Enum):
    """What a metric is computed from, and so which minimum makes it defined."""

    LABELS = "labels"
    DISTANCE = "distance"
    PREDICTIONS = "predictions"
    UPLOADS = "uploads"
    COUNT = "count"


METRICS: dict[str, Basis] = {
    "agreement_with_labels": Basis.LABELS,
    "false_alerts_per_1000_km": Basis.DISTANCE,
    "detections_per_1000_km": Basis.DISTANCE,
    "errors_per_1000_uploads": Basis.UPLOADS,
    "errors_per_1000": Basis.PREDICTIONS,
    "latency_p99_ms": Basis.UPLOADS,
    "drift_alerts": Basis.UPLOADS,
    "predictions": Basis.COUNT,
    "labelled_windows": Basis.COUNT,
    "uploads": Basis.COUNT,
    "km": Basis.COUNT,
}

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
NEGATED = {">=": "<", "<=": ">", ">": "<=", "<": ">=", "==": "!=", "!=": "=="}

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_CONDITION = re.compile(r"^\s*([a-z_0-9]+)\s*(>=|<=|==|!=|>|<)\s*(.*?)\s*$")
_THRESHOLD_NUMBER = re.compile(rf"^({_NUMBER})$")
_THRESHOLD_CHAMPION = re.compile(rf"^champion(?:\s*([-+*])\s*({_NUMBER}))?$")


@dataclass(frozen=True)
class ArmFigures:
    """One arm's measured figures for one period (counts and sums, so periods add up)."""

    predictions: int = 0
    labelled_windows: int = 0
    correct: int = 0
    false_alerts: int = 0
    km: float = 0.0
    errors: int = 0
    latency_p99_ms: float | None = None
    drift_alerts: int = 0
    # Uploads the arm served (processed or failed) and the detections it emitted over `km`.
    uploads: int = 0
    detections: int = 0

    def __post_init__(self) -> None:
        counts = (
            self.predictions,
            self.labelled_windows,
            self.correct,
            self.false_alerts,
            self.errors,
            self.drift_alerts,
            self.uploads,
            self.detections,
        )
        if any(count < 0 for count in counts) or not self.km >= 0:
            raise ValueError(f"figures must be non-negative: {self}")
        if self.correct > self.labelled_windows:
            raise ValueError(f"{self.correct} correct of {self.labelled_windows} labelled windows")

    def metric(self, name: str) -> float | None:
        """The metric's raw value, or None when it cannot be computed at all (no windows, no km, no latency)."""
        if name == "agreement_with_labels":
            return self.correct / self.labelled_windows if self.labelled_windows else None
        if name == "false_alerts_per_1000_km":
            return 1000.0 * self.false_alerts / self.km if self.km > 0 else None
        if name == "detections_per_1000_km":
            return 1000.0 * self.detections / self.km if self.km > 0 else None
        if name == "errors_per_1000_uploads":
            return 1000.0 * self.errors / self.uploads if self.uploads else None
        if name == "errors_per_1000":
            return 1000.0 * self.errors / self.predictions if self.predictions else None
        if name == "latency_p99_ms":
            return self.latency_p99_ms
        if name in ("drift_alerts", "predictions", "labelled_windows", "uploads", "km"):
            return float(getattr(self, name))
        raise KeyError(f"unknown metric {name!r}")


@dataclass(frozen=True)
class Condition:
    """`metric operator threshold`; the threshold is `value`, or the champion's figure combined with it."""

    metric: str
    operator: str
    value: float
    # None: an absolute threshold; "": the champion's figure; "+", "-", "*": the champion's figure and `value`.
    champion_operation: str | None = None

    @property
    def reads_champion(self) -> bool:
        return self.champion_operation is not None

    def threshold(self, champion_value: float | None) -> float | None:
        if self.champion_operation is None:
            return self.value
        if champion_value is None:
            return None
        if self.champion_operation == "+":
            return champion_value + self.value
        if self.champion_operation == "-":
            return champion_value - self.value
        if self.champion_operation == "*":
            return champion_value * self.value
        return champion_value

    def negated(self) -> Condition:
        return Condition(self.metric, NEGATED[self.operator], self.value, self.champion_operation)

    def __str__(self) -> str:
        if self.champion_operation is None:
            threshold = f"{self.value:g}"
        elif self.champion_operation == "":
            threshold = "champion"
        else:
            threshold = f"champion {self.champion_operation} {self.value:g}"
        return f"{self.metric} {self.operator} {threshold}"


def parse_condition(text: str) -> Condition:
    """A condition from its text, e.g. `false_alerts_per_1000_km <= champion * 1.2`; ValueError says what is wrong."""
    match = _CONDITION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not '<metric> <operator> <threshold>' (operators: {', '.join(OPERATORS)})")
    metric, operator_text, threshold_text = match.groups()
    if metric not in METRICS:
        raise ValueError(f"{text!r}: unknown metric {metric!r}; known: {', '.join(METRICS)}")
    number = _THRESHOLD_NUMBER.match(threshold_text)
    if number is not None:
        return Condition(metric, operator_text, float(number.group(1)))
    champion = _THRESHOLD_CHAMPION.match(threshold_text)
    if champion is not None:
        operation, value = champion.groups()
        if operation is None:
            return Condition(metric, operator_text, 0.0, "")
        return Condition(metric, operator_text, float(value), operation)
    raise ValueError(
        f"{text!r}: threshold {threshold_text!r} is not a number, 'champion', or 'champion +|-|* <number>'"
    )


@dataclass(frozen=True)
class AnalysisSpec:
    """What one analysis checks: success and failure conditions, and the data both arms need first."""

    success: tuple[Condition, ...]
    failure: tuple[Condition, ...] = ()
    minimum_predictions: int = DEFAULT_MINIMUM_PREDICTIONS
    minimum_labelled_windows: int = DEFAULT_MINIMUM_LABELLED_WINDOWS
    minimum_km: float = DEFAULT_MINIMUM_KM
    minimum_uploads: int = DEFAULT_MINIMUM_UPLOADS

    @property
    def failure_conditions(self) -> tuple[Condition, ...]:
        """The declared failure conditions, or the negated success conditions when none are declared.

        Success conditions on the counts themselves (`predictions >= 5000`) are left out of the negation: too
        little data is a reason to wait, never a failure.
        """
        if self.failure:
            return self.failure
        return tuple(condition.negated() for condition in self.success if METRICS[condition.metric] is not Basis.COUNT)


@dataclass(frozen=True)
class Verdict:
    """The outcome of one analysis and, one line each, why (what held, what failed, what lacked data)."""

    outcome: Outcome
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome.value, "reasons": list(self.reasons)}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Verdict:
        return cls(Outcome(state["outcome"]), tuple(str(reason) for reason in state["reasons"]))


def defined_metric(analysis: AnalysisSpec, figures: ArmFigures, name: str) -> float | None:
    """The metric when the arm has enough data for it under the analysis' minimums, else None."""
    basis = METRICS[name]
    if basis is Basis.LABELS and figures.labelled_windows < max(analysis.minimum_labelled_windows, 1):
        return None
    if basis is Basis.DISTANCE and (figures.km <= 0 or figures.km < analysis.minimum_km):
        return None
    if basis is Basis.PREDICTIONS and figures.predictions < max(analysis.minimum_predictions, 1):
        return None
    if basis is Basis.UPLOADS and figures.uploads < max(analysis.minimum_uploads, 1):
        return None
    value = figures.metric(name)
    return value if value is not None and math.isfinite(value) else None


def _check(
    analysis: AnalysisSpec, condition: Condition, candidate: ArmFigures, champion: ArmFigures
) -> tuple[bool | None, str]:
    """Whether the condition holds (None: not computable on this data), and a line saying so."""
    value = defined_metric(analysis, candidate, condition.metric)
    champion_value = defined_metric(analysis, champion, condition.metric) if condition.reads_champion else None
    threshold = condition.threshold(champion_value)
    if value is None:
        return None, f"{condition}: too little data on the candidate for {condition.metric}"
    if threshold is None:
        return None, f"{condition}: too little data on the champion for {condition.metric}"
    holds = OPERATORS[condition.operator](value, threshold)
    against = f"threshold {threshold:.6g}" + (f" (champion {champion_value:.6g})" if champion_value is not None else "")
    return holds, f"{condition}: candidate {value:.6g} vs {against}"


def evaluate(analysis: AnalysisSpec, *, candidate: ArmFigures, champion: ArmFigures) -> Verdict:
    """PASS, FAIL or INCONCLUSIVE for one period's figures, with the reasons (see the module docstring)."""
    failures = []
    for condition in analysis.failure_conditions:
        holds, line = _check(analysis, condition, candidate, champion)
        if holds:
            failures.append(f"failed: {line}")
    if failures:
        return Verdict(Outcome.FAIL, tuple(failures))

    reasons = []
    # The random-QA minimums guard what the windows and their labels measure. An analysis whose success reads
    # neither (errors per upload, latency, drift, detections per km) is guarded by those figures' own minimums
    # (uploads, km), so it can pass before any person has labelled a window; one reading only counts keeps both.
    bases = {METRICS[condition.metric] for condition in analysis.success}
    reads_labels = Basis.LABELS in bases or not bases - {Basis.COUNT}
    if (reads_labels or Basis.PREDICTIONS in bases) and candidate.predictions < max(analysis.minimum_predictions, 1):
        reasons.append(
            f"too little data: candidate has {candidate.predictions} of {analysis.minimum_predictions} predictions"
        )
    if reads_labels and candidate.labelled_windows < max(analysis.minimum_labelled_windows, 1):
        reasons.append(
            f"too little data: candidate has {candidate.labelled_windows} of "
            f"{analysis.minimum_labelled_windows} labelled windows"
        )
    passed = []
    for condition in analysis.success:
        holds, line = _check(analysis, condition, candidate, champion)
        if holds is None:
            reasons.append(f"no verdict: {line}")
        elif holds:
            passed.append(f"met: {line}")
        else:
            reasons.append(f"not met: {line}")
    if reasons:
        return Verdict(Outcome.INCONCLUSIVE, tuple(reasons + passed))
    return Verdict(Outcome.PASS, tuple(passed))


def figures_to_dict(figures: ArmFigures) -> dict[str, Any]:
    """JSON-safe figures (for the evidence a decision records)."""
    return asdict(figures)
