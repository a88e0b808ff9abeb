"""Real-strength harsh manoeuvres added to a real drive: its own noise, mount and road, and events whose truth is known.

    moments = quiet_moments(recording)                        # steady, straight cruising (needs GPS)
    manoeuvres = plan_manoeuvres(moments)                     # braking and acceleration, 0.26-0.33 g
    injected, labels = inject_manoeuvres(recording.without_gps(), manoeuvres, forward=forward)

No shipped recording holds a harsh event, and harsh events in real cars are weaker than a simulator
makes them easily: 2.5-3.2 m/s² (0.25-0.33 g) where ordinary driving peaks around 2-3 m/s². To know
whether a model finds events of that strength on real sensor data — a phone's 16.7 Hz accelerometer on
Auckland's roads, a dashcam's vibration — this module adds a vehicle acceleration profile along the
drive's true forward axis (device axes, from `services.trainer.domain.real_data.gps_truth`) at moments
where the GPS shows the car cruising steadily in a straight line, and labels each one. Everything else
in the recording (vibration, grade, mount tilt, sensor noise, its ordinary driving) stays as recorded.

The profile is the shape of a real brake or pull-away: a raised-cosine onset over `ramp_s` (about
6 m/s³ of jerk), a hold, a raised-cosine release. Only longitudinal manoeuvres are added: a turn
would need a heading change the rest of the drive does not have. The GPS of the drive would contradict
the added speed change, so injected drives are evaluated as a device without GPS sends them (the
calibrated mount detects from the IMU alone; `michi.windows.model_spec.detection_allowed`).
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
# Peak accelerations (m/s²) injected manoeuvres take, spread evenly over each range.
REAL_STRENGTH_MPS2 = {BRAKING: (2.7, 3.2), ACCELERATION: (2.5, 3.0)}
RAMP_S = 0.45
HOLD_RANGE_S = (0.8, 1.4)
# A quiet moment: this fast, this steady and this straight (GPS) from 2 s before to 2 s after the manoeuvre.
MIN_SPEED_MPS = 6.0
MAX_SPEED_CHANGE_MPS2 = 0.8
MAX_LATERAL_MPS2 = 1.0
MANOEUVRE_SPAN_S = 2 * RAMP_S + HOLD_RANGE_S[1]
# Calibration has had this long to settle, and manoeuvres are this far apart.
FIRST_AFTER_S = 60.0
SPACING_S = 25.0


@dataclass(frozen=True)
class Manoeuvre:
    """One added longitudinal manoeuvre on the recording's clock."""

    kind: str  # BRAKING or ACCELERATION
    start_s: float
    peak_mps2: float  # magnitude, > 0
    hold_s: float
    ramp_s: float = RAMP_S

    @property
    def end_s(self) -> float:
        return self.start_s + 2.0 * self.ramp_s + self.hold_s

    def acceleration(self, times_s: FloatArray) -> FloatArray:
        """The vehicle's added longitudinal acceleration (m/s², braking negative) at `times_s`."""
        elapsed = times_s - self.start_s
        rise = np.clip(elapsed / self.ramp_s, 0.0, 1.0)
        fall = np.clip((self.end_s - times_s) / self.ramp_s, 0.0, 1.0)
        shape = np.minimum(0.5 - 0.5 * np.cos(np.pi * rise), 0.5 - 0.5 * np.cos(np.pi * fall))
        sign = -1.0 if self.kind == BRAKING else 1.0
        return np.asarray(sign * self.peak_mps2 * shape, dtype=np.float64)


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
    """Braking and acceleration in turn at `moments`, strengths and holds spread evenly over their ranges."""
    count = len(moments)
    share = np.linspace(0.0, 1.0, count) if count > 1 else np.array([0.5])
    planned = []
    for position, start in enumerate(moments):
        kind = BRAKING if position % 2 == 0 else ACCELERATION
        low, high = REAL_STRENGTH_MPS2[kind]
        # A different order for strength and hold, so the strongest is not also the longest.
        hold_share = float(share[(position * 7 + 3) % count]) if count > 1 else 0.5
        planned.append(
            Manoeuvre(
                kind=kind,
                start_s=float(start),
                peak_mps2=round(float(low + (high - low) * share[position]), 3),
                hold_s=round(HOLD_RANGE_S[0] + (HOLD_RANGE_S[1] - HOLD_RANGE_S[0]) * hold_share, 3),
            )
        )
    return planned


def inject_manoeuvres(
    recording: Recording, manoeuvres: Sequence[Manoeuvre], *, forward: FloatArray
) -> tuple[Recording, tuple[LabelledEvent, ...]]:
    """The recording with each manoeuvre added along `forward` (a unit vector in device axes), and their labels."""
    direction = np.asarray(forward, dtype=np.float64)
    norm = float(np.linalg.norm(direction))
    if norm <= 0:
        raise ValueError("forward must be a non-zero vector in device axes")
    direction = direction / norm
    added = np.zeros(recording.times_s.size)
    for manoeuvre in manoeuvres:
        added += manoeuvre.acceleration(recording.times_s)
    accel = recording.accel + added[:, None] * direction[None, :]
    labels = tuple(LabelledEvent(manoeuvre.start_s, manoeuvre.end_s, manoeuvre.kind) for manoeuvre in manoeuvres)
    return replace(recording, accel=accel, name=f"{recording.name} (+{len(manoeuvres)} manoeuvres)"), labels
