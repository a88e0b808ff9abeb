"""What the controller measures of an arm, and an analysis verdict that never passes on what it cannot.

Two sources, per arm and period (everything the arm served at or after the period's start, by event time):

- **Random-QA windows** (`ArmCounts`, `michi/labels/outcomes.py`): how many windows the arm served were asked
  for at random (`requested`, the arm's `predictions` for the analysis), how many came back labelled, and how
  many of those the arm called right (`agreement_with_labels`).
- **What the arm served** (`ArmExposure`): uploads and km from `michi.trip-segments.v1`, each device placed on
  its arm by the rollout's split (`michi.rollouts.assignment`, the plan's arms, as inference places it); the
  arm's own detections from `michi.detections.v1` (its model version and rollout id) and how many of them people
  overturned (the window's first label on `michi.labels.v1` says NORMAL or CONFOUNDER, as scoring reads an
  overturning label): `detections_per_1000_km`, `false_alerts_per_1000_km`; uploads inference could not process
  (its `processing-failed` dead letters, placed by device like the segments): `errors_per_1000_uploads`; the
  p99 of the time from the end of an upload to inference's trip segment of it (the segment's broker timestamp
  minus its end, in `LATENCY_RESOLUTION` buckets): `latency_p99_ms`; and the monitor's drift episodes of the
  arm's model version open at any moment of the period (`michi.alerts.v1`, kind `drift`): `drift_alerts`.

`errors_per_1000` (errors per 1,000 predictions) is the one metric the controller does not measure: a verdict
whose success rests on it is turned from PASS into INCONCLUSIVE (`verdict`), so it never passes here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from michi.rollouts.analysis import AnalysisSpec, ArmFigures, Outcome, Verdict, evaluate

# Metrics the controller cannot measure, that `ArmFigures` would still compute (as 0) from the counts it has.
UNMEASURED_METRICS = frozenset({"errors_per_1000"})
# Latencies are kept as buckets of this relative width (2 %): a percentile is the upper edge of its bucket.
LATENCY_RESOLUTION = 1.02
LATENCY_PERCENTILE = 0.99


@dataclass(frozen=True)
class ArmCounts:
    """One arm's random-QA windows in a period: asked for, labelled, and labelled the way the arm called them."""

    requested: int = 0
    labelled: int = 0
    correct: int = 0

    def figures(self) -> ArmFigures:
        return ArmFigures(predictions=self.requested, labelled_windows=self.labelled, correct=self.correct)

    def to_dict(self) -> dict[str, int]:
        return {"requested": self.requested, "labelled": self.labelled, "correct": self.correct}


@dataclass(frozen=True)
class ArmExposure:
    """What one arm served in a period beyond its random-QA windows (module docstring)."""

    uploads: int = 0
    km: float = 0.0
    detections: int = 0
    false_alerts: int = 0
    errors: int = 0
    latency_p99_ms: float | None = None
    drift_alerts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def arm_figures(counts: ArmCounts, exposure: ArmExposure) -> ArmFigures:
    return ArmFigures(
        predictions=counts.requested,
        labelled_windows=counts.labelled,
        correct=counts.correct,
        false_alerts=exposure.false_alerts,
        km=exposure.km,
        errors=exposure.errors,
        latency_p99_ms=exposure.latency_p99_ms,
        drift_alerts=exposure.drift_alerts,
        uploads=exposure.uploads,
        detections=exposure.detections,
    )


def latency_bucket(milliseconds: float) -> int:
    """The bucket of a latency: 0 for up to 1 ms, then one per `LATENCY_RESOLUTION` step."""
    if not milliseconds > 1.0:
        return 0
    return math.ceil(math.log(milliseconds) / math.log(LATENCY_RESOLUTION))


def bucket_upper_ms(bucket: int) -> float:
    return float(LATENCY_RESOLUTION**bucket)


def percentile_ms(histogram: Mapping[int, int], quantile: float = LATENCY_PERCENTILE) -> float | None:
    """The `quantile` of a latency histogram (bucket -> count), as its bucket's upper edge; None when empty."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = math.ceil(quantile * total)
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return round(bucket_upper_ms(bucket), 3)
    return round(bucket_upper_ms(max(histogram)), 3)  # pragma: no cover - the loop always reaches the rank


@dataclass
class DeviceTotals:
    """Per device over a period (SQL groups by device; the split places each device on its arm)."""

    uploads: dict[str, int] = field(default_factory=dict)
    metres: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    # (device, latency bucket, uploads)
    latency: list[tuple[str, int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class ArmDetections:
    """An arm's detections in a period and how many people overturned."""

    detections: int = 0
    false_alerts: int = 0


def exposure_by_arm(
    totals: DeviceTotals,
    route: Callable[[str], str | None],
    *,
    detections: Mapping[str, ArmDetections],
    drift_alerts: Mapping[str, int],
    arms: Iterable[str],
) -> dict[str, ArmExposure]:
    """Each arm's exposure: device totals summed by the arm `route` gives each device (None: on no arm)."""
    names = list(arms)
    uploads = dict.fromkeys(names, 0)
    metres = dict.fromkeys(names, 0.0)
    errors = dict.fromkeys(names, 0)
    histograms: dict[str, dict[int, int]] = {name: {} for name in names}
    placed: dict[str, str | None] = {}

    def arm_of(device: str) -> str | None:
        if device not in placed:
            placed[device] = route(device)
        return placed[device]

    for device, count in totals.uploads.items():
        arm = arm_of(device)
        if arm in uploads:
            uploads[arm] += count
            metres[arm] += totals.metres.get(device, 0.0)
    for device, count in totals.errors.items():
        arm = arm_of(device)
        if arm in errors:
            errors[arm] += count
    for device, bucket, count in totals.latency:
        arm = arm_of(device)
        if arm in histograms:
            histograms[arm][bucket] = histograms[arm].get(bucket, 0) + count
    return {
        name: ArmExposure(
            uploads=uploads[name],
            km=round(metres[name] / 1000.0, 6),
            detections=detections.get(name, ArmDetections()).detections,
            false_alerts=detections.get(name, ArmDetections()).false_alerts,
            errors=errors[name],
            latency_p99_ms=percentile_ms(histograms[name]),
            drift_alerts=drift_alerts.get(name, 0),
        )
        for name in names
    }


def verdict(
    analysis: AnalysisSpec,
    *,
    candidate: ArmCounts,
    champion: ArmCounts,
    candidate_exposure: ArmExposure | None = None,
    champion_exposure: ArmExposure | None = None,
) -> Verdict:
    """`evaluate` on what the controller measures; a PASS that rests on an unmeasured metric is INCONCLUSIVE."""
    found = evaluate(
        analysis,
        candidate=arm_figures(candidate, candidate_exposure or ArmExposure()),
        champion=arm_figures(champion, champion_exposure or ArmExposure()),
    )
    if found.outcome is not Outcome.PASS:
        return found
    unmeasured = [condition for condition in analysis.success if condition.metric in UNMEASURED_METRICS]
    if not unmeasured:
        return found
    lines = tuple(f"no verdict: {condition}: not measured by the rollout controller" for condition in unmeasured)
    return Verdict(Outcome.INCONCLUSIVE, lines + found.reasons)
