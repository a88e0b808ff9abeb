"""Mount-orientation calibration: which device axes point forward, left and up in the vehicle.

Convention: the vehicle frame is ISO 8855 — x forward, y left, z up, right-handed — the same as
the simulator's. The accelerometer measures specific force, so at rest it reads +g along *up*
(gravity itself points down, along -up). The calibrated rotation `R` has rows (forward, left, up)
written in device axes, so `vehicle = R @ device`. left = up x forward, which is the brief's
"down x forward" with the sign flipped so the frame is (forward, left, up) rather than
(forward, right, down).

How it is estimated, from running sums kept per device across uploads (exponentially
forgotten so the estimate follows slow changes and improves with data):

* up: mean specific force over *quiet* samples — GPS speed steady, heading steady, gyro calm —
  where the vehicle does not accelerate, so the mean is gravity (plus a constant bias that the
  same subtraction removes later).
* forward: the horizontal acceleration that correlates with the GPS speed derivative
  (dv/dt between 1 Hz fixes): `cov(a, dv/dt)` projected on the horizontal plane. With thin
  evidence (little speed change seen yet) the principal horizontal axis of the per-interval
  mean accelerations is used, with its sign taken from the same correlation.
* a moved mount: a quiet-gravity direction that jumps by more than `GRAVITY_JUMP_DEG`, or a
  well-evidenced forward axis that disagrees by more than `FORWARD_JUMP_DEG`, resets the sums
  so the new orientation is re-estimated from that upload on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from michi.windows.signals import FloatArray, angle_between_deg, low_pass, unit
from michi.windows.upload import UploadData

# Each upload scales the previous sums by this, so about 30 uploads (5 min) dominate.
DECAY_PER_UPLOAD = 0.97
GRAVITY_JUMP_DEG = 3.0
FORWARD_JUMP_DEG = 25.0
# Quiet: GPS speed change and gyro below these.
QUIET_DVDT_MPS2 = 0.25
QUIET_GYRO_RADPS = 0.06
QUIET_HEADING_RATE_DEGPS = 3.0
# Sum of squared centred dv/dt ((m/s^2)^2 seconds) that counts as full forward evidence.
FULL_FORWARD_EVIDENCE = 12.0
# Samples of quiet gravity that count as full gravity evidence.
FULL_GRAVITY_EVIDENCE = 150.0
# Device rotation not explained by the GPS heading above this (rad/s) means someone handled it.
HANDLING_RADPS = 0.8
# An upload's own forward estimate is trusted to flag a moved mount above this evidence.
JUMP_FORWARD_EVIDENCE = 4.0


@dataclass
class CalibrationSums:
    """Running sums; everything the estimate needs, small enough to live in a table row."""

    gravity_sum: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    gravity_weight: float = 0.0
    # Per GPS interval: mean acceleration a_i (3) and speed derivative d_i.
    interval_count: float = 0.0
    accel_sum: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    dvdt_sum: float = 0.0
    dvdt_squared_sum: float = 0.0
    accel_dvdt_sum: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    accel_outer_sum: list[float] = field(default_factory=lambda: [0.0] * 9)
    orientation_changes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibrationSums:
        return cls(**{key: value for key, value in data.items() if key in cls.__dataclass_fields__})

    def scaled(self, factor: float) -> CalibrationSums:
        return CalibrationSums(
            gravity_sum=[value * factor for value in self.gravity_sum],
            gravity_weight=self.gravity_weight * factor,
            interval_count=self.interval_count * factor,
            accel_sum=[value * factor for value in self.accel_sum],
            dvdt_sum=self.dvdt_sum * factor,
            dvdt_squared_sum=self.dvdt_squared_sum * factor,
            accel_dvdt_sum=[value * factor for value in self.accel_dvdt_sum],
            accel_outer_sum=[value * factor for value in self.accel_outer_sum],
            orientation_changes=self.orientation_changes,
        )

    def plus(self, other: CalibrationSums) -> CalibrationSums:
        def add(first: list[float], second: list[float]) -> list[float]:
            return [a + b for a, b in zip(first, second, strict=True)]

        return CalibrationSums(
            gravity_sum=add(self.gravity_sum, other.gravity_sum),
            gravity_weight=self.gravity_weight + other.gravity_weight,
            interval_count=self.interval_count + other.interval_count,
            accel_sum=add(self.accel_sum, other.accel_sum),
            dvdt_sum=self.dvdt_sum + other.dvdt_sum,
            dvdt_squared_sum=self.dvdt_squared_sum + other.dvdt_squared_sum,
            accel_dvdt_sum=add(self.accel_dvdt_sum, other.accel_dvdt_sum),
            accel_outer_sum=add(self.accel_outer_sum, other.accel_outer_sum),
            orientation_changes=self.orientation_changes,
        )


@dataclass(frozen=True)
class Calibration:
    """The estimate used for one upload."""

    rotation: FloatArray  # rows forward, left, up in device axes: vehicle = rotation @ device
    gravity_mps2: float
    confidence: float
    gravity_confidence: float
    forward_confidence: float
    # "correlation", "principal-axis" or "none" (no horizontal evidence at all).
    forward_method: str
    orientation_changed: bool


def upload_sums(upload: UploadData) -> tuple[CalibrationSums, bool]:
    """The evidence one upload contributes (vectorised), and whether a hand moved the device in it."""
    sums = CalibrationSums()
    times, accel = upload.times_s, upload.accel
    # Gyros have a bias (tenths of a degree per second): "calm" is measured from the upload's median.
    smooth_gyro = np.linalg.norm(
        low_pass(upload.gyro - np.median(upload.gyro, axis=0), upload.sample_rate_hz, 2.0), axis=1
    )
    quiet = smooth_gyro < QUIET_GYRO_RADPS
    spin = np.linalg.norm(low_pass(upload.gyro - np.median(upload.gyro, axis=0), upload.sample_rate_hz, 10.0), axis=1)
    explained = np.zeros_like(spin)
    if upload.has_gps:
        gps_times = upload.gps_times_s
        gaps = np.diff(gps_times)
        dvdt = np.diff(upload.speed_mps) / np.where(gaps > 0, gaps, 1.0)
        heading_rate = np.abs(_wrapped_degrees(np.diff(upload.heading_deg))) / np.where(gaps > 0, gaps, 1.0)
        usable = (gaps > 0.5) & (gaps < 2.5)
        # Which GPS interval each IMU sample falls in (-1 / len: outside every interval).
        interval_of_sample = np.searchsorted(gps_times, times, side="right") - 1
        inside = (interval_of_sample >= 0) & (interval_of_sample < gaps.size)
        steady = np.zeros(times.size, dtype=bool)
        interval_steady = usable & (np.abs(dvdt) < QUIET_DVDT_MPS2) & (heading_rate < QUIET_HEADING_RATE_DEGPS)
        steady[inside] = interval_steady[interval_of_sample[inside]]
        quiet &= steady
        # Turning explains rotation; what the GPS heading does not explain is the device itself moving.
        interval_yaw = np.radians(heading_rate)
        explained[inside] = interval_yaw[interval_of_sample[inside]]
        # Mean acceleration over each GPS interval, from cumulative sums.
        starts = np.searchsorted(times, gps_times[:-1], side="left")
        ends = np.searchsorted(times, gps_times[1:], side="left")
        counts = ends - starts
        cumulative = np.vstack([np.zeros((1, 3)), np.cumsum(accel, axis=0)])
        valid = usable & (counts >= max(3, int(0.5 * upload.sample_rate_hz)))
        if np.any(valid):
            means = (cumulative[ends[valid]] - cumulative[starts[valid]]) / counts[valid, None]
            derivatives = dvdt[valid]
            sums.interval_count = float(valid.sum())
            sums.accel_sum = means.sum(axis=0).tolist()
            sums.dvdt_sum = float(derivatives.sum())
            sums.dvdt_squared_sum = float(np.dot(derivatives, derivatives))
            sums.accel_dvdt_sum = (means * derivatives[:, None]).sum(axis=0).tolist()
            sums.accel_outer_sum = (means.T @ means).reshape(-1).tolist()
    if np.count_nonzero(quiet) >= max(10, int(0.5 * upload.sample_rate_hz)):
        sums.gravity_sum = accel[quiet].sum(axis=0).tolist()
        sums.gravity_weight = float(np.count_nonzero(quiet))
    handled = bool(np.any(spin - explained > HANDLING_RADPS))
    return sums, handled


def _wrapped_degrees(delta: FloatArray) -> FloatArray:
    return np.asarray((delta + 180.0) % 360.0 - 180.0, dtype=np.float64)


def update_calibration(previous: CalibrationSums, upload: UploadData) -> tuple[CalibrationSums, Calibration]:
    """Fold one upload into the device's sums and return the estimate to use for it."""
    current, handled = upload_sums(upload)
    changed = False
    if (
        previous.gravity_weight >= 100.0
        and current.gravity_weight >= 50.0
        and angle_between_deg(np.array(previous.gravity_sum), np.array(current.gravity_sum)) > GRAVITY_JUMP_DEG
    ):
        changed = True
    # A yaw-only move leaves gravity where it was: trust a forward jump only when the device was handled.
    if not changed and handled and previous.gravity_weight > 0:
        previous_estimate = estimate(previous)
        if previous_estimate.forward_confidence > 0.5 and previous_estimate.forward_method == "correlation":
            up = previous_estimate.rotation[2]
            own = _forward_from_correlation(current, up)
            if (
                own is not None
                and own[1] >= JUMP_FORWARD_EVIDENCE
                and angle_between_deg(own[0], previous_estimate.rotation[0]) > FORWARD_JUMP_DEG
            ):
                changed = True
    if changed:
        combined = current
        combined.orientation_changes = previous.orientation_changes + 1
    else:
        combined = previous.scaled(DECAY_PER_UPLOAD).plus(current)
    if combined.gravity_weight == 0:
        # No quiet moment yet: the whole upload's mean is the best guess of gravity.
        combined.gravity_sum = upload.accel.sum(axis=0).tolist()
        combined.gravity_weight = 0.0
        fallback = estimate(combined, gravity_hint=upload.accel.mean(axis=0))
        return combined, _with_change(fallback, changed)
    return combined, _with_change(estimate(combined), changed)


def _with_change(calibration: Calibration, changed: bool) -> Calibration:
    if not changed:
        return calibration
    return Calibration(
        rotation=calibration.rotation,
        gravity_mps2=calibration.gravity_mps2,
        confidence=calibration.confidence,
        gravity_confidence=calibration.gravity_confidence,
        forward_confidence=calibration.forward_confidence,
        forward_method=calibration.forward_method,
        orientation_changed=True,
    )


def _forward_from_correlation(sums: CalibrationSums, up: FloatArray) -> tuple[FloatArray, float] | None:
    """Horizontal direction whose acceleration follows dv/dt, and the evidence behind it."""
    count = sums.interval_count
    if count < 3:
        return None
    centred_dvdt = sums.dvdt_squared_sum - sums.dvdt_sum**2 / count
    if centred_dvdt <= 1e-6:
        return None
    covariance = np.array(sums.accel_dvdt_sum) - np.array(sums.accel_sum) * sums.dvdt_sum / count
    horizontal = covariance - np.dot(covariance, up) * up
    if float(np.linalg.norm(horizontal)) <= 1e-9:
        return None
    return unit(horizontal), float(centred_dvdt)


def estimate(sums: CalibrationSums, gravity_hint: FloatArray | None = None) -> Calibration:
    """Rotation and confidence from the sums alone (deterministic)."""
    gravity_vector = np.array(sums.gravity_sum, dtype=np.float64)
    if gravity_hint is not None or sums.gravity_weight <= 0:
        gravity_vector = np.asarray(gravity_hint if gravity_hint is not None else gravity_vector, dtype=np.float64)
        gravity_mean = gravity_vector
    else:
        gravity_mean = gravity_vector / sums.gravity_weight
    up = unit(gravity_mean) if np.linalg.norm(gravity_mean) > 0 else np.array([0.0, 0.0, 1.0])
    gravity_confidence = min(1.0, sums.gravity_weight / FULL_GRAVITY_EVIDENCE) if gravity_hint is None else 0.1
    forward_method = "none"
    forward_confidence = 0.0
    forward: FloatArray | None = None
    correlation = _forward_from_correlation(sums, up)
    count = sums.interval_count
    if correlation is not None:
        direction, evidence = correlation
        mean_accel = np.array(sums.accel_sum) / count
        scatter = np.array(sums.accel_outer_sum).reshape(3, 3) / count - np.outer(mean_accel, mean_accel)
        projector = np.eye(3) - np.outer(up, up)
        # Correlation of the acceleration *along the estimated forward axis* with dv/dt: lateral
        # acceleration in turns is orthogonal to it and must not lower the confidence.
        forward_variance = float(direction @ scatter @ direction)
        covariance = np.array(sums.accel_dvdt_sum) / count - mean_accel * sums.dvdt_sum / count
        along = float(np.dot(covariance, direction))
        dvdt_variance = evidence / count
        correlation_coefficient = along / math.sqrt(max(dvdt_variance * forward_variance, 1e-12))
        strength = min(1.0, evidence / FULL_FORWARD_EVIDENCE)
        if evidence >= 1.0:
            forward, forward_method = direction, "correlation"
            forward_confidence = float(np.clip(correlation_coefficient, 0.0, 1.0)) * strength
        else:
            # Thin evidence: principal horizontal axis, sign from the (weak) correlation.
            values, vectors = np.linalg.eigh(projector @ scatter @ projector)
            axis = vectors[:, int(np.argmax(values))]
            axis = axis - np.dot(axis, up) * up
            if np.linalg.norm(axis) > 1e-9:
                axis = unit(axis)
                forward = axis if np.dot(axis, direction) >= 0 else -axis
                forward_method = "principal-axis"
                forward_confidence = 0.3 * strength
    if forward is None:
        # Nothing to go on: any horizontal axis (the device's x projected), confidence zero.
        seed_axis = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        forward = unit(seed_axis - np.dot(seed_axis, up) * up)
    left = np.cross(up, forward)
    rotation = np.vstack([forward, unit(left), up])
    return Calibration(
        rotation=rotation,
        gravity_mps2=float(np.linalg.norm(gravity_mean)),
        confidence=float(min(gravity_confidence, forward_confidence)),
        gravity_confidence=float(gravity_confidence),
        forward_confidence=float(forward_confidence),
        forward_method=forward_method,
        orientation_changed=False,
    )
