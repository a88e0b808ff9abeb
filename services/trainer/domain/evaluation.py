"""How good a model is on a set of labelled windows: ML metrics, business metrics, and per slice.

Decisions follow serving (`michi.windows.model_spec`): a window is *risky* when its most likely
class is a harsh class with probability ≥ `DECISION_THRESHOLD`; a harsh argmax below it counts as
normal. All class metrics use these decided classes.

- per class: precision, recall, F1, support; the confusion matrix (rows true, columns decided);
  accuracy and macro F1 (over classes present in truth or decisions);
- harsh windows: precision and recall where a hit needs the same harsh class;
- business: the distance driven is Σ GPS speed x the seconds each window stands for. An *alert*
  is a run of consecutive windows (gap ≤ `EPISODE_GAP_S`) of one trip decided as the same harsh
  class, as inference merges them into one detection; it is false when it overlaps (± `TOLERANCE_S`)
  no labelled run of that class. A *harsh event* is such a run of labelled windows; it is missed when
  no alert of its class overlaps it. Both are reported per 1,000 km (0 when no distance was driven);
- slices: the same figures per vehicle type, IMU sample rate and mount orientation bucket.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from michi.windows.model_spec import DECISION_THRESHOLD
from services.trainer.domain.dataset import LabeledWindows
from services.trainer.domain.labels import CLASS_NAMES, NORMAL_CLASS, RISKY_CLASSES

EPISODE_GAP_S = 2.0
TOLERANCE_S = 1.5
SLICES = {"vehicle_type": "vehicle_types", "sample_rate_hz": "sample_rates", "mount": "mount_buckets"}
# Direction of every headline metric: +1 higher is better, -1 lower is better.
METRIC_DIRECTIONS: dict[str, int] = {
    "accuracy": 1,
    "macro_f1": 1,
    "harsh_precision": 1,
    "harsh_recall": 1,
    "harsh_f1": 1,
    "false_alerts_per_1000_km": -1,
    "missed_harsh_per_1000_km": -1,
}


def decided_classes(probabilities: np.ndarray) -> np.ndarray:
    """The class serving acts on for each window."""
    if probabilities.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    best = np.argmax(probabilities, axis=1)
    confident = probabilities[np.arange(best.size), best] >= DECISION_THRESHOLD
    risky = np.isin(best, RISKY_CLASSES)
    return np.where(risky & ~confident, NORMAL_CLASS, best).astype(np.int64)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator > 0 else 0.0


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _runs(trips: Sequence[str], starts: np.ndarray, classes: np.ndarray) -> list[tuple[str, int, float, float]]:
    """(trip, class, start, end) of every run of consecutive harsh windows of one class."""
    order = sorted(range(len(trips)), key=lambda row: (trips[row], float(starts[row])))
    runs: list[tuple[str, int, float, float]] = []
    current: list[Any] | None = None
    for row in order:
        kind = int(classes[row])
        start = float(starts[row])
        if kind not in RISKY_CLASSES:
            continue
        if (
            current is not None
            and current[0] == trips[row]
            and current[1] == kind
            and start - current[3] <= EPISODE_GAP_S
        ):
            current[3] = start
            continue
        if current is not None:
            runs.append((current[0], current[1], current[2], current[3]))
        current = [trips[row], kind, start, start]
    if current is not None:
        runs.append((current[0], current[1], current[2], current[3]))
    # A run's windows each last 2 s from their start.
    return [(trip, kind, start, end + 2.0) for trip, kind, start, end in runs]


def _overlapping(run: tuple[str, int, float, float], others: dict[tuple[str, int], list[tuple[float, float]]]) -> bool:
    trip, kind, start, end = run
    return any(
        other_start - TOLERANCE_S <= end and start <= other_end + TOLERANCE_S
        for other_start, other_end in others.get((trip, kind), [])
    )


def business_figures(windows: LabeledWindows, decided: np.ndarray) -> dict[str, float]:
    kilometres = float(np.sum(np.clip(windows.speeds_mps, 0.0, None) * windows.exposures_s)) / 1000.0
    alerts = _runs(windows.trip_ids, windows.starts_s, decided)
    events = _runs(windows.trip_ids, windows.starts_s, windows.labels)
    by_key: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    for trip, kind, start, end in events:
        by_key[(trip, kind)].append((start, end))
    alerts_by_key: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    for trip, kind, start, end in alerts:
        alerts_by_key[(trip, kind)].append((start, end))
    false_alerts = sum(1 for alert in alerts if not _overlapping(alert, by_key))
    missed = sum(1 for event in events if not _overlapping(event, alerts_by_key))
    return {
        "kilometres": kilometres,
        "alerts": float(len(alerts)),
        "false_alerts": float(false_alerts),
        "harsh_events": float(len(events)),
        "missed_harsh_events": float(missed),
        "false_alerts_per_1000_km": _ratio(false_alerts * 1000.0, kilometres),
        "missed_harsh_per_1000_km": _ratio(missed * 1000.0, kilometres),
    }


def headline_metrics(windows: LabeledWindows, decided: np.ndarray) -> dict[str, float]:
    truth = windows.labels
    harsh_truth = np.isin(truth, RISKY_CLASSES)
    harsh_decided = np.isin(decided, RISKY_CLASSES)
    hits = int(np.count_nonzero(harsh_truth & (decided == truth)))
    precision = _ratio(hits, int(np.count_nonzero(harsh_decided)))
    recall = _ratio(hits, int(np.count_nonzero(harsh_truth)))
    metrics = {
        "windows": float(truth.size),
        "accuracy": _ratio(int(np.count_nonzero(decided == truth)), int(truth.size)),
        "harsh_precision": precision,
        "harsh_recall": recall,
        "harsh_f1": _f1(precision, recall),
    }
    metrics.update(business_figures(windows, decided))
    return metrics


def evaluate(probabilities: np.ndarray, windows: LabeledWindows) -> dict[str, Any]:
    """Every figure of one model on `windows` (probabilities aligned with its rows)."""
    if probabilities.shape[0] != windows.count:
        raise ValueError(f"{probabilities.shape[0]} predictions for {windows.count} windows")
    decided = decided_classes(probabilities)
    classes = len(CLASS_NAMES)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (windows.labels, decided), 1)
    per_class: dict[str, dict[str, float]] = {}
    f1_scores = []
    for index, name in enumerate(CLASS_NAMES):
        true_count = int(confusion[index].sum())
        decided_count = int(confusion[:, index].sum())
        precision = _ratio(int(confusion[index, index]), decided_count)
        recall = _ratio(int(confusion[index, index]), true_count)
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": _f1(precision, recall),
            "support": true_count,
        }
        if true_count or decided_count:
            f1_scores.append(_f1(precision, recall))
    metrics = headline_metrics(windows, decided)
    metrics["macro_f1"] = float(np.mean(f1_scores)) if f1_scores else 0.0
    slices: dict[str, dict[str, dict[str, float]]] = {}
    for slice_name, column in SLICES.items():
        values = [str(value) for value in getattr(windows, column)]
        groups: dict[str, list[int]] = defaultdict(list)
        for row, value in enumerate(values):
            groups[value].append(row)
        slices[slice_name] = {
            value: headline_metrics(windows.take(rows), decided[np.asarray(rows)])
            for value, rows in sorted(groups.items())
        }
    return {
        "metrics": metrics,
        "per_class": per_class,
        "confusion": {"classes": list(CLASS_NAMES), "matrix": confusion.tolist()},
        "slices": slices,
    }
