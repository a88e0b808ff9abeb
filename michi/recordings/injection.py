"""Real-strength harsh manoeuvres added to a real drive: its own noise, mount and road, and events whose truth is known.

    moments = quiet_moments(recording)                        # steady, straight cruising (needs GPS)
    manoeuvres = plan_manoeuvres(moments)                     # brakes, pull-aways and swerves in turn
    forward, up = gps_truth(recording)
    injected, labels = inject_manoeuvres(recording.without_gps(), manoeuvres, forward=forward, up=up,
                                         speed_mps=np.interp(recording.times_s, recording.gps_times_s, recording.speed_mps))

No shipped recording holds a harsh event, and harsh events in real cars are weaker than a simulator
makes them easily: 2-3 m/s² (0.2-0.3 g) where ordinary driving peaks around 2-3 m/s² too. To know
whether a model finds events of that strength on real sensor data — a phone's 16.7 Hz accelerometer on
Auckland's roads, a dashcam's vibration — this module adds a vehicle acceleration profile in the drive's
true vehicle axes (device axes, from `services.trainer.domain.real_data.gps_truth`) at moments where
the GPS shows the car cruising steadily in a straight line, and labels each one. Everything else in
the recording (vibration, grade, mount tilt, sensor noise, its ordinary driving) stays as recorded.

Three kinds, in turn (`plan_manoeuvres`):

* a **brake** of 2.1-3.2 m/s² and a **pull-away** of 2.1-3.0 m/s²: a raised-cosine onset over
  0.25-0.45 s (5-10 m/s³ of jerk, as harsh manoeuvres build), a hold of 0.8-1.4 s, a release;
* a **swerve into the next lane** of 2.7-3.5 m/s² (labelled harsh cornering): lateral acceleration one
  way, then the other, each lobe built the same way and held 0.4-0.8 s; left and right in turn. A
  device with a gyroscope also turns: the yaw rate a lateral acceleration needs at the drive's speed
  (lateral = speed x yaw rate) is added about the up axis.

The GPS of the drive would contradict the added motion, so injected drives are evaluated as a
device without GPS sends them (the calibrated mount detects from the IMU alone;
`michi.windows.model_spec.detection_allowed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from michi.recordings import Recording
from michi.recordings.evaluation import LabelledEvent
from michi.windows.signals import FloatArray

BRAKING = "harsh_braking"
ACCELERATION = "harsh_acceleration"
CORNERING = "harsh_cornering"
KINDS = (BRAKING, ACCELERATION, CORNERING)
# Peak accelerations (m/s²) injected manoeuvres take, spread evenly over each range.
REAL_STRENGTH_MPS2 = {BRAKING: (2.1, 3.2), ACCELERATION: (2.1, 3.0), CORNERING: (2.7, 3.5)}
RAMP_RANGE_S = (0.25, 0.45)
HOLD_RANGE_S = {BRAKING: (0.8, 1.4), ACCELERATION: (0.8, 1.4), CORNERING: (0.4, 0.8)}
# A quiet moment: this fast, this steady and this straight (GPS) from 2 s before to 2 s after the manoeuvre.
MIN_SPEED_MPS = 6.0
MAX_SPEED_CHANGE_MPS2 = 0.8
MAX_LATERAL_MPS2 = 1.0
# The longest manoeuvre: a swerve's two lobes at the longest ramp and hold.
MANOEUVRE_SPAN_S = 2 * (2 * RAMP_RANGE_S[1] + HOLD_RANGE_S[CORNERING][1])
# Calibration has had this long to settle, and manoeuvres are this far apart.
FIRST_AFTER_S = 60.0
SPACING_S = 25.0


def _lobe(times_s: FloatArray, start_s: float, ramp_s: float, hold_s: float) -> FloatArray:
    """0 → 1 → 0: a raised-cosine rise over `ramp_s`, a hold, a raised-cosine fall."""
    end_s = start_s + 2.0 * ramp_s + hold_s
    rise = np.clip((times_s - start_s) / ramp_s, 0.0, 1.0)
    fall = np.clip((end_s - times_s) / ramp_s, 0.0, 1.0)
    return np.asarray(np.minimum(0.5 - 0.5 * np.cos(np.pi * rise), 0.5 - 0.5 * np.cos(np.pi * fall)), dtype=np.float64)


@dataclass(frozen=True)
class Manoeuvre:
    """One added manoeuvre on the recording's clock."""

    kind: str  # BRAKING, ACCELERATION or CORNERING (a swerve into the next lane)
    start_s: float
    peak_mps2: float  # magnitude, > 0
    hold_s: float  # of each lobe
    ramp_s: float = RAMP_RANGE_S[1]
    # A swerve's first lobe: +1 to the left, -1 to the right.
    side: float = 1.0

    @property
    def lobe_s(self) -> float:
        return 2.0 * self.ramp_s + self.hold_s

    @property
    def end_s(self) -> float:
        return self.start_s + self.lobe_s * (2.0 if self.kind == CORNERING else 1.0)

    def acceleration(self, times_s: FloatArray) -> FloatArray:
        """The vehicle's added acceleration (m/s²) along its axis at `times_s`: longitudinal (braking
        negative) for a brake or pull-away, lateral (left positive) for a swerve."""
        first = _lobe(times_s, self.start_s, self.ramp_s, self.hold_s)
        if self.kind == CORNERING:
            second = _lobe(times_s, self.start_s + self.lobe_s, self.ramp_s, self.hold_s)
            return np.asarray(self.side * self.peak_mps2 * (first - second), dtype=np.float64)
        sign = -1.0 if self.kind == BRAKING else 1.0
        return np.asarray(sign * self.peak_mps2 * first, dtype=np.float64)


def quiet_moments(
    recording: Recording,
    *,
    first_after_s: float = FIRST_AFTER_S,
    spacing_s: float = SPACING_S,
    span_s: float = MANOEUVRE_SPAN_S,
) -> list[float]:
    """Start times where the GPS shows steady, straight cruising around a manoeuvre of `span_s` (none without GPS)."""
    if not recording.has_gps:
        return []
    times = recording.gps_times_s
    grid = np.arange(times[0], times[-1] + 1.0, 0.5)
    speed = np.interp(grid, times, recording.speed_mps)
    heading = np.degrees(np.unwrap(np.radians(recording.heading_deg)))
    yaw_rate = np.radians(np.gradient(np.interp(grid, times, heading), grid))
    change = np.abs(np.gradient(speed, grid))
    lateral = np.abs(speed * yaw_rate)
    quiet = (speed >= MIN_SPEED_MPS) & (change <= MAX_SPEED_CHANGE_MPS2) & (lateral <= MAX_LATERAL_MPS2)
    # Grid points that are not quiet, counted cumulatively: a span is quiet when none falls inside it.
    noisy_before = np.concatenate([[0], np.cumsum(~quiet)])
    first = np.searchsorted(grid, grid - 2.0, side="left")
    last = np.searchsorted(grid, grid + span_s + 2.0, side="right")
    calm = noisy_before[last] - noisy_before[first] == 0
    moments: list[float] = []
    last_imu = float(recording.times_s[-1]) if recording.times_s.size else 0.0
    for start in grid[calm]:
        if start < first_after_s or start + span_s + 2.0 > min(float(times[-1]), last_imu):
            continue
        if not moments or start - moments[-1] >= spacing_s:
            moments.append(float(start))
    return moments


def plan_manoeuvres(moments: Sequence[float]) -> list[Manoeuvre]:
    """Brakes, pull-aways and swerves in turn at `moments`, strengths, ramps and holds spread evenly over their ranges."""
    count = len(moments)
    share = np.linspace(0.0, 1.0, count) if count > 1 else np.array([0.5])
    planned = []
    for position, start in enumerate(moments):
        kind = KINDS[position % len(KINDS)]
        low, high = REAL_STRENGTH_MPS2[kind]
        # Different orders for strength, ramp and hold, so the strongest is not also the fastest or longest.
        ramp_share = float(share[(position * 5 + 1) % count]) if count > 1 else 0.5
        hold_share = float(share[(position * 7 + 3) % count]) if count > 1 else 0.5
        hold_low, hold_high = HOLD_RANGE_S[kind]
        planned.append(
            Manoeuvre(
                kind=kind,
                start_s=float(start),
                peak_mps2=round(float(low + (high - low) * share[position]), 3),
                hold_s=round(hold_low + (hold_high - hold_low) * hold_share, 3),
                ramp_s=round(RAMP_RANGE_S[0] + (RAMP_RANGE_S[1] - RAMP_RANGE_S[0]) * ramp_share, 3),
                side=1.0 if (position // len(KINDS)) % 2 == 0 else -1.0,
            )
        )
    return planned


def inject_manoeuvres(
    recording: Recording,
    manoeuvres: Sequence[Manoeuvre],
    *,
    forward: FloatArray,
    up: FloatArray,
    speed_mps: FloatArray | None = None,
) -> tuple[Recording, tuple[LabelledEvent, ...]]:
    """The recording with each manoeuvre added in its vehicle axes, and their labels.

    `forward` and `up` are unit vectors in device axes (left = up x forward); `speed_mps` is the
    vehicle's speed at each IMU sample, needed to add a swerve's yaw rate to a gyroscope."""
    forward_axis = _unit(forward, "forward")
    up_axis = _unit(up, "up")
    left_axis = _unit(np.cross(up_axis, forward_axis), "left (up x forward)")
    longitudinal = np.zeros(recording.times_s.size)
    lateral = np.zeros(recording.times_s.size)
    for manoeuvre in manoeuvres:
        if manoeuvre.kind == CORNERING:
            lateral += manoeuvre.acceleration(recording.times_s)
        else:
            longitudinal += manoeuvre.acceleration(recording.times_s)
    accel = recording.accel + longitudinal[:, None] * forward_axis[None, :] + lateral[:, None] * left_axis[None, :]
    gyro = recording.gyro
    if gyro is not None and speed_mps is not None:
        yaw_rate = lateral / np.maximum(np.asarray(speed_mps, dtype=np.float64), MIN_SPEED_MPS)
        gyro = gyro + yaw_rate[:, None] * up_axis[None, :]
    labels = tuple(LabelledEvent(manoeuvre.start_s, manoeuvre.end_s, manoeuvre.kind) for manoeuvre in manoeuvres)
    return (
        replace(recording, accel=accel, gyro=gyro, name=f"{recording.name} (+{len(manoeuvres)} manoeuvres)"),
        labels,
    )


def _unit(vector: FloatArray, name: str) -> FloatArray:
    direction = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(direction))
    if norm <= 0:
        raise ValueError(f"{name} must be a non-zero vector in device axes")
    return direction / norm
