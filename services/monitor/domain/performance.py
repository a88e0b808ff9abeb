"""Performance without labels (confidence-based, CBPE-style): what a window's accuracy and false-alert rate are
expected to be from the model's own confidence, calibrated on the labels people gave windows drawn at random.

The model's confidence in its call (the probability of its predicted class) is binned in `CONFIDENCE_BINS`
equal bins over [0, 1]. Per model version, `Calibration` counts the random-QA outcomes per bin (how many
calls, how many right) and turns them into a calibration curve, P(right | confidence bin): the per-bin rates
(with one pseudo-call at the bin's own confidence, so a bin of one label is not 0 or 1) made non-decreasing by
pool-adjacent-violators (isotonic regression, as confidence-based performance estimation calibrates), bins
without labels taking their neighbours' value. Under `MIN_CALIBRATION_LABELS` labels the curve is the raw
confidence (the model taken as calibrated, and said to be uncalibrated).

A window counts its predictions per confidence bin, and its risky calls (a risky class at or above the
decision threshold: an alert) per bin. Then

    expected accuracy          = sum(calls[b] * curve[b]) / sum(calls)
    expected false-alert rate  = sum(risky[b] * (1 - curve[b])) / sum(risky)     (wrong alerts / alerts)

and the realised figures, from the latest random-QA outcomes of the version (`RealisedPerformance`), are the
share of right calls and the share of wrong calls among its risky ones. The estimate assumes the confidence
means the same thing in the window as in the labelled sample (no concept drift): the realised figures beside it
say when it does not.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from michi.windows.model_spec import DECISION_THRESHOLD, RISKY_EVENT_TYPES

CONFIDENCE_BINS = 20
MIN_CALIBRATION_LABELS = 200
# Outcomes behind the realised figures (the latest of the version).
REALISED_LABELS = 500


def confidence_bin(confidence: float) -> int:
    """The bin of a confidence in [0, 1] (out-of-range values clipped)."""
    return min(CONFIDENCE_BINS - 1, max(0, int(confidence * CONFIDENCE_BINS)))


def risky_call(predicted: int, confidence: float) -> bool:
    """Whether the call is an alert: a risky class at or above the decision threshold."""
    return predicted in RISKY_EVENT_TYPES and confidence >= DECISION_THRESHOLD


RISKY_CLASSES = np.array(sorted(RISKY_EVENT_TYPES), dtype=np.int64)
# Whether a class is risky, by class, from 0 to one past the largest risky class (False there: a class beyond it,
# or below 0, is read at the nearest end, never risky).
_RISKY_BY_CLASS = np.zeros(int(RISKY_CLASSES.max(initial=0)) + 2, dtype=bool)
_RISKY_BY_CLASS[RISKY_CLASSES[RISKY_CLASSES >= 0]] = True
if RISKY_CLASSES.size and RISKY_CLASSES.min() <= 0:  # a class 0 or below is risky: compared one by one
    _RISKY_BY_CLASS = np.zeros(0, dtype=bool)


def confidence_bins_and_alerts(predicted: np.ndarray, confidences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`confidence_bin` and `risky_call` of many calls at once."""
    bins = (confidences * CONFIDENCE_BINS).astype(np.int64)
    # Two ufuncs in place: `numpy.clip` costs several times more on a poll batch.
    np.minimum(np.maximum(bins, 0, out=bins), CONFIDENCE_BINS - 1, out=bins)
    alerts = confidences >= DECISION_THRESHOLD
    if _RISKY_BY_CLASS.size:
        alerts &= _RISKY_BY_CLASS.take(predicted, mode="clip")
        return bins, alerts
    risky = np.zeros(predicted.shape, dtype=bool)
    for risky_class in RISKY_CLASSES.tolist():
        risky |= predicted == risky_class
    return bins, alerts & risky


BIN_CENTRES = (np.arange(CONFIDENCE_BINS) + 0.5) / CONFIDENCE_BINS


def isotonic(rates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pool-adjacent-violators: the non-decreasing sequence closest to `rates` in weighted least squares."""
    blocks: list[list[float]] = []  # [value, weight, length]
    for rate, weight in zip(rates, weights, strict=True):
        blocks.append([float(rate), float(weight), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            value, weight_b, length = blocks.pop()
            previous = blocks[-1]
            total = previous[1] + weight_b
            previous[0] = (previous[0] * previous[1] + value * weight_b) / total if total > 0 else value
            previous[1] = total
            previous[2] += length
    return np.concatenate([np.full(int(length), value) for value, _, length in blocks])


class Calibration:
    """Random-QA outcomes of one model version per confidence bin, and the curve they make."""

    def __init__(self) -> None:
        self.calls = np.zeros(CONFIDENCE_BINS)
        self.right = np.zeros(CONFIDENCE_BINS)

    @property
    def labels(self) -> int:
        return int(self.calls.sum())

    def add(self, confidence: float, correct: bool) -> None:
        position = confidence_bin(confidence)
        self.calls[position] += 1
        self.right[position] += 1.0 if correct else 0.0

    def curve(self, min_labels: int = MIN_CALIBRATION_LABELS) -> tuple[np.ndarray, bool]:
        """P(right | confidence bin), and whether it is calibrated (else the raw confidence)."""
        if self.labels < min_labels:
            return BIN_CENTRES.copy(), False
        used = self.calls > 0
        rates = (self.right[used] + BIN_CENTRES[used]) / (self.calls[used] + 1.0)
        fitted = isotonic(rates, self.calls[used] + 1.0)
        return np.interp(BIN_CENTRES, BIN_CENTRES[used], fitted), True


@dataclass(frozen=True)
class ExpectedPerformance:
    accuracy: float
    # Wrong alerts among the window's alerts (NaN without alerts).
    false_alert_rate: float
    alerts: int
    calibrated: bool
    calibration_labels: int


def expected_performance(calls: np.ndarray, risky: np.ndarray, calibration: Calibration | None) -> ExpectedPerformance:
    """A window's expected accuracy and false-alert rate from its calls and alerts per confidence bin."""
    curve, calibrated = (calibration or Calibration()).curve()
    total, alerts = float(calls.sum()), float(risky.sum())
    accuracy = float(np.dot(calls, curve) / total) if total > 0 else float("nan")
    false_alerts = float(np.dot(risky, 1.0 - curve) / alerts) if alerts > 0 else float("nan")
    labels = calibration.labels if calibration is not None else 0
    return ExpectedPerformance(accuracy, false_alerts, int(alerts), calibrated, labels)


class RealisedPerformance:
    """The latest `size` random-QA outcomes of a version: the share right, and the share wrong among alerts."""

    def __init__(self, size: int = REALISED_LABELS) -> None:
        self.outcomes: deque[tuple[bool, bool]] = deque(maxlen=size)

    def add(self, correct: bool, alert: bool) -> None:
        self.outcomes.append((correct, alert))

    @property
    def labels(self) -> int:
        return len(self.outcomes)

    @property
    def accuracy(self) -> float:
        return sum(correct for correct, _ in self.outcomes) / len(self.outcomes) if self.outcomes else float("nan")

    @property
    def false_alert_rate(self) -> float:
        alerts = [correct for correct, alert in self.outcomes if alert]
        return sum(not correct for correct in alerts) / len(alerts) if alerts else float("nan")
