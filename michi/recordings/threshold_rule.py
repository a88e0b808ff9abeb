"""The reference rule real-data figures are held against: smoothed horizontal acceleration above a threshold.

    detections = recording_rule_detections(recording)                 # DetectedEvents on the recording's clock
    detections = recording_rule_detections(recording, ThresholdRule(threshold_mps2=3.0))
    figures = evaluate_detections(detections, labels, duration_s=recording.duration_s)

The served champion's target on real recordings is to be better than a smoothed-threshold rule on
every figure: a 0.5 s-smoothed horizontal-acceleration magnitude above 2.5 m/s². This module is that
rule, run on the uploads a device would send through the product's own preprocessing, so it
sees what the served model sees:

* the recording is cut into uploads (`michi.recordings.recording_uploads`), decoded
  (`michi.windows.upload.upload_from_proto`) and chained through calibration as serving does
  (`michi.windows.chain.windows_in_order`): an upload the product cannot analyse (too few samples,
  times not increasing, values not finite) is skipped, and each upload is read with the calibration
  serving used for it;
* **horizontal acceleration** is the acceleration less its component along the calibrated up axis,
  which removes gravity (with `ACCELERATION_KIND_LINEAR` the samples are already gravity-free and the
  same projection removes only vertical motion); it is kept as its longitudinal and lateral
  components in the calibrated vehicle axes;
* the samples of consecutive uploads are joined into one stream on the recording's clock, split where
  samples are more than `MAX_GAP_S` apart (a skipped upload), and each stretch is resampled by linear
  interpolation onto a uniform grid at its own median sample interval, as the product resamples its
  signals: fractional rates (16.7 Hz) and jittery timestamps need nothing more;
* the horizontal magnitude is smoothed by a centred moving average of `smoothing_s` (0.5 s, the odd
  number of grid samples nearest to it, so the average stays centred);
* a run of smoothed magnitude above `threshold_mps2` (2.5 m/s²) is one detection spanning the run;
  runs less than `merge_gap_s` (1 s) apart are one detection (one manoeuvre that dips under the
  threshold for a moment is not two);
* its **event type** comes from the run's peak when the upload's mount is calibrated (the forward
  axis known, `Calibration.state == "calibrated"`): the larger of the smoothed longitudinal and lateral
  components there, negative longitudinal `harsh_braking`, positive `harsh_acceleration`, lateral
  `harsh_cornering`. Otherwise the detection is `UNTYPED_EVENT`: it counts for recall and precision
  and is not judged for axis agreement (`michi.recordings.evaluation`).

The rule needs no GPS and ignores it (the calibration may use it, as serving's does).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from michi.recordings import Recording, received, recording_uploads
from michi.recordings.evaluation import UNTYPED_EVENT, DetectedEvent
from michi.windows.chain import ChainedUpload, windows_in_order
from michi.windows.signals import FloatArray, gapless_stretches, moving_average, true_runs
from michi.windows.upload import upload_from_proto

THRESHOLD_MPS2 = 2.5
SMOOTHING_S = 0.5
MERGE_GAP_S = 1.0
# Samples further apart than this are not interpolated across: the stream is split there.
MAX_GAP_S = 0.5


@dataclass(frozen=True)
class ThresholdRule:
    """The rule's parameters (module docstring)."""

    threshold_mps2: float = THRESHOLD_MPS2
    smoothing_s: float = SMOOTHING_S
    merge_gap_s: float = MERGE_GAP_S

    def describe(self) -> str:
        return (
            f"horizontal acceleration smoothed over {self.smoothing_s:g} s above {self.threshold_mps2:g} m/s², "
            f"runs less than {self.merge_gap_s:g} s apart merged"
        )

    def to_json(self) -> dict[str, float]:
        return {
            "threshold_mps2": self.threshold_mps2,
            "smoothing_s": self.smoothing_s,
            "merge_gap_s": self.merge_gap_s,
        }


@dataclass(frozen=True)
class _Stream:
    """Horizontal acceleration of the analysed uploads, joined on the recording's clock."""

    times_s: FloatArray
    horizontal: FloatArray  # (N, 2): longitudinal, lateral in the calibrated vehicle axes
    typed: np.ndarray  # (N,) bool: the sample's upload had its forward axis calibrated


def _horizontal_stream(chained: Iterable[ChainedUpload], origin_s: float) -> _Stream:
    times, horizontal, typed = [], [], []
    for link in chained:
        if link.calibration is None:
            continue
        rotation = link.calibration.rotation
        # Rows forward and left of the rotation: the projection drops the component along up (gravity).
        horizontal.append(link.data.accel @ rotation[:2].T)
        times.append(link.data.started_at_s - origin_s + link.data.times_s)
        typed.append(np.full(link.data.times_s.size, link.calibration.state == "calibrated"))
    if not times:
        return _Stream(np.zeros(0), np.zeros((0, 2)), np.zeros(0, dtype=bool))
    return _Stream(np.concatenate(times), np.concatenate(horizontal), np.concatenate(typed))


def _stretches(times_s: FloatArray) -> list[tuple[int, int]]:
    """(first, end) index ranges of samples no more than `MAX_GAP_S` apart, of two samples or more."""
    return [(first, end) for first, end in gapless_stretches(times_s, MAX_GAP_S) if end - first >= 2]


def _smoothing_width(smoothing_s: float, step_s: float) -> int:
    """The odd number of grid samples nearest to `smoothing_s` (at least 1)."""
    samples = smoothing_s / step_s
    return max(1, 2 * round((samples - 1.0) / 2.0) + 1)


def _event_type(longitudinal: float, lateral: float) -> str:
    if abs(longitudinal) >= abs(lateral):
        return "harsh_braking" if longitudinal < 0 else "harsh_acceleration"
    return "harsh_cornering"


def _stretch_detections(stream: _Stream, first: int, end: int, rule: ThresholdRule) -> list[DetectedEvent]:
    times = stream.times_s[first:end]
    steps = np.diff(times)
    step = float(np.median(steps[steps > 0])) if np.any(steps > 0) else 0.0
    if step <= 0:
        return []
    grid = times[0] + np.arange(int(np.floor((times[-1] - times[0]) / step + 1e-9)) + 1) * step
    components = np.column_stack([np.interp(grid, times, stream.horizontal[first:end, axis]) for axis in range(2)])
    width = _smoothing_width(rule.smoothing_s, step)
    magnitude = moving_average(np.hypot(components[:, 0], components[:, 1]), width)
    smoothed = moving_average(components, width)
    # Whether the grid point's nearest sample came from an upload with a calibrated forward axis.
    nearest = np.clip(np.searchsorted(times, grid), 1, times.size - 1)
    nearest -= (grid - times[nearest - 1]) < (times[nearest] - grid)
    typed = stream.typed[first:end][nearest]

    runs: list[list[int]] = []
    for start, after in true_runs(magnitude > rule.threshold_mps2):
        last = after - 1  # the run's last grid index
        if runs and grid[start] - grid[runs[-1][1]] < rule.merge_gap_s:
            runs[-1][1] = last
        else:
            runs.append([start, last])
    detections = []
    for start, last in runs:
        peak = start + int(np.argmax(magnitude[start : last + 1]))
        event_type = _event_type(*smoothed[peak]) if typed[peak] else UNTYPED_EVENT
        detections.append(DetectedEvent(float(grid[start]), float(grid[last]), event_type))
    return detections


def rule_detections(
    chained: Iterable[ChainedUpload], *, origin_s: float, rule: ThresholdRule | None = None
) -> list[DetectedEvent]:
    """The rule's detections on chained uploads (in order), on a clock starting at `origin_s`."""
    rule = rule or ThresholdRule()
    stream = _horizontal_stream(chained, origin_s)
    detections = [
        detection
        for first, end in _stretches(stream.times_s)
        for detection in _stretch_detections(stream, first, end, rule)
    ]
    return sorted(detections, key=lambda detection: (detection.start_s, detection.end_s))


def recording_rule_detections(recording: Recording, rule: ThresholdRule | None = None) -> list[DetectedEvent]:
    """The rule on a recording cut into a device's uploads, chained through calibration as serving does."""
    # As `michi evaluate`: a whole-second origin, so times brought back to the recording's clock are exact.
    origin = float(int(time.time()))
    uploads = recording_uploads(recording, device_id="reference-device", trip_id="reference-trip", started_at_s=origin)
    chained = windows_in_order(upload_from_proto(received(upload)) for upload in uploads)
    return rule_detections(chained, origin_s=origin, rule=rule)
