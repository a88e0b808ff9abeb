"""How a model does on real drives: false alerts per hour of normal driving, agreement with labels, calibration error.

Pure figures over windows computed elsewhere (`adapters/recordings.py` reads the recordings and cuts
them into the windows serving would compute, calibration chained upload by upload):

    section = real_data_section(model.predict_in_batches, recordings)   # the evaluation's real-data section
    forward, up = gps_truth(recording)                                   # the mount's truth from GPS
    yaw_error_deg(calibration, forward, up)

A real recording is evaluated as each *variant* a device could have sent it: with its GPS, and with
its GPS removed (phones and dashcams without a fix). On each:

- **detections** as serving makes them: a window's decided class (`evaluation.decided_classes`, the
  0.5 threshold), kept only where `michi.windows.model_spec.detection_allowed` lets it through (the
  mount calibrated, or gravity known and GPS covering the window), consecutive windows of one class
  merged as inference merges them (starts at most `EPISODE_GAP_S` apart);
- **labels**, from one source per recording (`label_source`): its labels file when it has one (hand
  labels always win); else, when it has GPS, what its own GPS says the vehicle did
  (`michi.recordings.gps_truth.gps_manoeuvres`: harsh and firm braking, acceleration and cornering);
  else none, and the recording is taken as normal driving throughout. The variant with added
  manoeuvres has the added manoeuvres' labels alone;
- **false alerts**: detections that overlap (± `WIDEN_S`) no aggressive label of their own class and
  no firm label (`UNCERTAIN_LABELS`: `firm_braking`, ...) of their own class (`harsh_braking` on
  `firm_braking`): a firm manoeuvre is what 1 Hz GPS cannot call harsh or ordinary, so a detection of
  that manoeuvre there is neither right nor wrong, while one of another class is as wrong as anywhere.
  Detections where the labels' source did not see (before a GPS fix, across a gap) are judged like
  any other: the recording's owner put it in the evaluation set as ordinary driving, and GPS labels
  only say where it was not. Per hour of *normal* driving: the recording's duration less its
  aggressive labels (widened by `WIDEN_S`); firm labels stay in it;
- **agreement with labels**: an aggressive label (`harsh_braking`, `harsh_acceleration`,
  `harsh_cornering`) is *found* when a detection of its class overlaps it (± `WIDEN_S`); a firm label
  is no recall target; a normal label (a turn, a roundabout, braking for a junction) is *alerted* when
  any detection overlaps it;
- **calibration error** where the truth is known (the recording has GPS): the yaw angle between the
  forward axis of the last calibration of the upload chain and the forward axis `gps_truth` finds.
  It is the same for every model (calibration comes before the model); it says how far the
  longitudinal and lateral features can be trusted on that drive.

The section's `metrics` pool every variant of every recording: `real_false_alerts_per_hour` (false
alerts / hours of normal driving), `real_aggressive_recall`, `real_normal_labels_alerted` (share),
`real_calibration_error_deg_max`, and the counts of firm labels and of the detections they spared
(`real_uncertain_labels`, `real_uncertain_detections`); `label_sources` says where each recording's
labels came from. A figure with nothing to measure is None, never 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from michi.recordings import Recording
from michi.recordings.evaluation import (
    UNCERTAIN_LABELS,
    WIDEN_S,
    DetectedEvent,
    LabelledEvent,
    overlaps,
)
from michi.windows.calibration import Calibration
from services.trainer.domain.evaluation import EPISODE_GAP_S, decided_classes
from services.trainer.domain.labels import CLASS_NAMES, RISKY_CLASSES

SECONDS_PER_HOUR = 3600.0
# Variants of one recording: as recorded, with the GPS fixes removed, and without GPS with real-strength
# harsh manoeuvres added (`michi.recordings.injection`; for recall only, its driving is counted once).
WITH_GPS = "gps"
WITHOUT_GPS = "no-gps"
WITH_MANOEUVRES = "no-gps+manoeuvres"
# Where a recording's labels came from (`RealWindows.label_source`, the section's `label_sources`).
LABELS_FROM_FILE = "hand"  # its labels file: a person's labels always win
LABELS_FROM_GPS = "gps"  # no labels file: what its own GPS says the vehicle did
NO_LABELS = "none"  # neither: normal driving throughout
LABELS_FROM_ADDED_MANOEUVRES = "added"  # the variant with added manoeuvres: their labels alone
# The detection class a firm label spares (`firm_braking` → `harsh_braking`): the same manoeuvre, not harsh for sure.
SPARED_CLASS = {label: "harsh_" + label.removeprefix("firm_") for label in UNCERTAIN_LABELS}
# Which way each real-data figure is better (+1 higher, -1 lower), for the gate and the records.
REAL_METRIC_DIRECTIONS: dict[str, int] = {
    "real_false_alerts_per_hour": -1,
    "real_aggressive_recall": 1,
    "real_normal_labels_alerted": -1,
    # Aggressive labels a reference model finds that this one misses (the gate's comparison).
    "real_missed_aggressive": -1,
}

Predict = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RealWindows:
    """One variant of one real recording as serving sees it: its windows and what is known about it."""

    recording: str  # short name or file stem
    variant: str  # WITH_GPS or WITHOUT_GPS
    duration_s: float
    starts_s: np.ndarray  # window starts, seconds on the recording's clock
    ends_s: np.ndarray
    features: np.ndarray  # [N, F] float32
    signals: np.ndarray  # [N, C, T] float32
    allowed: np.ndarray  # [N] bool: detection_allowed (calibration state, GPS coverage)
    labels: tuple[LabelledEvent, ...] = ()
    calibration_state: str = "uncalibrated"  # of the last upload
    calibration_error_deg: float | None = None  # None: no GPS truth for this recording
    sample_rate_hz: float = 0.0
    gyroscope: bool = False
    # False for a variant made to measure recall (added manoeuvres): the same drive's ordinary driving
    # is already counted by its plain variants, so detections outside its labels are not false alerts again.
    normal_driving: bool = True
    label_source: str = NO_LABELS

    @property
    def key(self) -> str:
        return f"{self.recording}/{self.variant}"

    @property
    def count(self) -> int:
        return int(self.starts_s.size)


@dataclass
class RecordingFigures:
    """One model on one variant of one recording."""

    key: str
    hours: float
    normal_hours: float
    windows: int
    detections: list[DetectedEvent] = field(default_factory=list)
    false_alerts: int = 0
    aggressive_labels: int = 0
    aggressive_found: list[int] = field(default_factory=list)  # indices into the recording's labels
    normal_labels: int = 0
    normal_labels_alerted: int = 0
    calibration_state: str = ""
    calibration_error_deg: float | None = None
    label_source: str = NO_LABELS
    uncertain_labels: int = 0
    # Detections that would be false alerts but for a firm label of their class they overlap.
    uncertain_detections: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "recording": self.key,
            "hours": self.hours,
            "normal_hours": self.normal_hours,
            "windows": self.windows,
            "detections": [
                {"event_type": event.event_type, "start_s": round(event.start_s, 3), "end_s": round(event.end_s, 3)}
                for event in self.detections
            ],
            "false_alerts": self.false_alerts,
            "false_alerts_per_hour": _ratio(self.false_alerts, self.normal_hours),
            "aggressive_labels": self.aggressive_labels,
            "aggressive_found": list(self.aggressive_found),
            "normal_labels": self.normal_labels,
            "normal_labels_alerted": self.normal_labels_alerted,
            "calibration_state": self.calibration_state,
            "calibration_error_deg": self.calibration_error_deg,
            "label_source": self.label_source,
            "uncertain_labels": self.uncertain_labels,
            "uncertain_detections": self.uncertain_detections,
        }


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator) / float(denominator) if denominator > 0 else None


def detections_of(probabilities: np.ndarray, windows: RealWindows) -> list[DetectedEvent]:
    """Serving's detections: decided risky classes where the rule allows them, runs of one class merged."""
    decided = decided_classes(probabilities)
    events: list[DetectedEvent] = []
    current: list[Any] | None = None  # [class, first start, last start, last end]
    for row in np.argsort(windows.starts_s, kind="stable"):
        kind = int(decided[row])
        if kind not in RISKY_CLASSES or not windows.allowed[row]:
            continue
        start, end = float(windows.starts_s[row]), float(windows.ends_s[row])
        if current is not None and current[0] == kind and start - current[2] <= EPISODE_GAP_S:
            current[2], current[3] = start, max(current[3], end)
            continue
        if current is not None:
            events.append(DetectedEvent(current[1], current[3], CLASS_NAMES[current[0]]))
        current = [kind, start, start, end]
    if current is not None:
        events.append(DetectedEvent(current[1], current[3], CLASS_NAMES[current[0]]))
    return events


def _covered_seconds(spans: Sequence[tuple[float, float]], duration_s: float) -> float:
    """Length of the union of spans, clipped to [0, duration]."""
    total, reach = 0.0, 0.0
    for start, end in sorted((max(start, 0.0), min(end, duration_s)) for start, end in spans):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def recording_figures(probabilities: np.ndarray, windows: RealWindows) -> RecordingFigures:
    """Every figure of one model on one variant of one recording (module docstring)."""
    if probabilities.shape[0] != windows.count:
        raise ValueError(f"{probabilities.shape[0]} predictions for {windows.count} windows of {windows.key}")
    detections = detections_of(probabilities, windows)
    aggressive = [(index, label) for index, label in enumerate(windows.labels) if label.aggressive]
    uncertain = [label for label in windows.labels if label.uncertain]
    normal = [label for label in windows.labels if not label.aggressive and not label.uncertain]
    aggressive_seconds = _covered_seconds(
        [(label.start_s - WIDEN_S, label.end_s + WIDEN_S) for _, label in aggressive], windows.duration_s
    )
    unmatched = [
        detection
        for detection in detections
        if not any(label.label == detection.event_type and overlaps(detection, label) for _, label in aggressive)
    ]
    spared = [
        detection
        for detection in unmatched
        if any(
            SPARED_CLASS.get(label.label) == detection.event_type and overlaps(detection, label) for label in uncertain
        )
    ]
    false_alerts = len(unmatched) - len(spared) if windows.normal_driving else 0
    found = [
        index
        for index, label in aggressive
        if any(detection.event_type == label.label and overlaps(detection, label) for detection in detections)
    ]
    return RecordingFigures(
        key=windows.key,
        hours=windows.duration_s / SECONDS_PER_HOUR,
        normal_hours=max(windows.duration_s - aggressive_seconds, 0.0) / SECONDS_PER_HOUR
        if windows.normal_driving
        else 0.0,
        windows=windows.count,
        detections=detections,
        false_alerts=false_alerts,
        aggressive_labels=len(aggressive),
        aggressive_found=found,
        normal_labels=len(normal),
        normal_labels_alerted=sum(1 for label in normal if any(overlaps(detection, label) for detection in detections)),
        calibration_state=windows.calibration_state,
        calibration_error_deg=windows.calibration_error_deg,
        label_source=windows.label_source,
        uncertain_labels=len(uncertain),
        uncertain_detections=len(spared) if windows.normal_driving else 0,
    )


def real_data_section(predict: Predict, recordings: Sequence[RealWindows]) -> dict[str, Any]:
    """The real-data section of one model's evaluation: per recording variant, and pooled `metrics`."""
    figures = [
        recording_figures(predict(windows.features, windows.signals), windows) if windows.count else None
        for windows in recordings
    ]
    rows = [
        figure
        if figure is not None
        else RecordingFigures(
            windows.key, windows.duration_s / SECONDS_PER_HOUR, 0.0, 0, label_source=windows.label_source
        )
        for figure, windows in zip(figures, recordings, strict=True)
    ]
    normal_hours = sum(row.normal_hours for row in rows)
    aggressive = sum(row.aggressive_labels for row in rows)
    normal_labels = sum(row.normal_labels for row in rows)
    errors = [row.calibration_error_deg for row in rows if row.calibration_error_deg is not None]
    metrics: dict[str, Any] = {
        "real_recordings": len(rows),
        "real_hours": sum(row.hours for row in rows),
        "real_normal_hours": normal_hours,
        "real_detections": sum(len(row.detections) for row in rows),
        "real_false_alerts": sum(row.false_alerts for row in rows),
        "real_false_alerts_per_hour": _ratio(sum(row.false_alerts for row in rows), normal_hours),
        "real_aggressive_labels": aggressive,
        "real_aggressive_found": sum(len(row.aggressive_found) for row in rows),
        "real_aggressive_recall": _ratio(sum(len(row.aggressive_found) for row in rows), aggressive),
        "real_normal_labels": normal_labels,
        "real_normal_labels_alerted": _ratio(sum(row.normal_labels_alerted for row in rows), normal_labels),
        "real_calibration_error_deg_max": max(errors) if errors else None,
        "real_uncertain_labels": sum(row.uncertain_labels for row in rows),
        "real_uncertain_detections": sum(row.uncertain_detections for row in rows),
    }
    return {
        "metrics": metrics,
        "recordings": [row.to_dict() for row in rows],
        "aggressive_found": sorted(f"{row.key}#{index}" for row in rows for index in row.aggressive_found),
        # Per recording, where the labels its ordinary driving is judged by came from (its plain variants).
        "label_sources": {windows.recording: windows.label_source for windows in recordings if windows.normal_driving},
    }


def missed_against(section: dict[str, Any], reference: dict[str, Any]) -> list[str]:
    """Aggressive labels (`recording/variant#index`) the reference model finds and this one misses."""
    return sorted(set(reference.get("aggressive_found", [])) - set(section.get("aggressive_found", [])))


# ------------------------------------------------------------------ calibration truth from GPS


def gps_truth(recording: Recording) -> tuple[np.ndarray, np.ndarray]:
    """(forward, up) in device axes, from the recording's GPS speed and heading over the whole drive.

    The 1 s means of the device's acceleration are regressed on the GPS speed derivative
    (longitudinal), speed x GPS heading rate (lateral, left positive) and a constant, with the GPS
    delay (0-2 s in 0.25 s steps) that fits best; the longitudinal coefficient's horizontal
    direction is the true forward axis, the mean acceleration's direction is up. Needs GPS.
    """
    if not recording.has_gps:
        raise ValueError(f"{recording.name}: the truth needs GPS fixes")
    times = np.arange(math.ceil(recording.gps_times_s[0]) + 2, math.floor(recording.gps_times_s[-1]) - 2)
    speed = np.interp(times, recording.gps_times_s, recording.speed_mps)
    heading = np.degrees(np.unwrap(np.radians(recording.heading_deg)))
    yaw_rate = -np.radians(np.gradient(np.interp(times, recording.gps_times_s, heading), times))
    design = np.column_stack([np.gradient(speed, times), speed * yaw_rate, np.ones_like(times)])
    up = recording.accel.mean(axis=0) / np.linalg.norm(recording.accel.mean(axis=0))
    best: tuple[float, np.ndarray] | None = None
    for delay in np.arange(0.0, 2.01, 0.25):
        means = np.column_stack(
            [np.interp(times - delay, recording.times_s, recording.accel[:, axis]) for axis in range(3)]
        )
        coefficients, residuals, *_ = np.linalg.lstsq(design, means, rcond=None)
        error = float(residuals.sum())
        if best is None or error < best[0]:
            best = (error, coefficients[0])
    if best is None:
        raise ValueError(f"{recording.name}: too short for a GPS truth")
    forward = best[1] - np.dot(best[1], up) * up
    return forward / np.linalg.norm(forward), up


def yaw_error_deg(calibration: Calibration, forward: np.ndarray, up: np.ndarray) -> float:
    """Angle (degrees, 0-180) between the calibration's forward axis and the true one, in the horizontal plane."""
    estimated = calibration.rotation[0] - np.dot(calibration.rotation[0], up) * up
    return abs(
        math.degrees(math.atan2(float(np.dot(np.cross(forward, estimated), up)), float(np.dot(forward, estimated))))
    )
