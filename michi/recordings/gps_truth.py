"""What a drive's own GPS says the vehicle did, as labels to judge detections by (`michi evaluate --gps-truth`).

    truth = gps_manoeuvres(recording)            # needs the recording's GPS fixes (speed, course)
    figures = evaluate_detections(detections, truth.labels, duration_s=recording.duration_s, covered=truth.covered)
    truth.events[0].label, truth.events[0].strength_mps2, truth.covered_s

A test drive with GPS and no hand labels still says what the vehicle did: how fast it went, which way.
This turns that into `LabelledEvent`s (`michi.recordings.evaluation`) so IMU-only detections (the model
given no GPS) can be judged against it. Pure computation on numpy arrays.

How the motion is derived, at every fix:

* Fixes more than `GAP_S` (2.5 s) apart split the drive into stretches; nothing is derived across a
  gap, and the time between two fixes of one stretch is *covered*. A detection that does not lie wholly
  in covered time and matches no label cannot be judged: it is neither a hit nor an other detection.
* **Longitudinal acceleration** is the slope of a least-squares line through the speeds of the fixes
  within `FIT_HALF_WIDTH_S` (1 s, with `FIT_TOLERANCE_S` for a logger's jitter) of the fix: the three
  fixes around it at 1 Hz (the central difference), 25 at 10 Hz. A fit needs `FIT_MINIMUM_FIXES` (3)
  reaching at least half the width on each side (none at a stretch's ends). Why not the difference of
  two consecutive fixes, the sharpest 1 Hz allows: a phone's Doppler speed has single-fix jumps — on
  auckland-backwards at 160 s two fixes 1 s apart differ by 3.6 m/s² while the accelerometer's mean
  over that second is 1.1 m/s² — and the 2 s fit brings such a jump down to 2.2 while it keeps
  0.8-1.0 of a real brake's peak (below). It does not remove it: that moment is still a harsh
  acceleration by GPS (31 to 54 km/h in 3 s), which the IMU does not confirm.
* **Lateral acceleration** is speed x heading rate, the rate fitted the same way to the course
  unwrapped over the stretch (positive is to the right, as compass courses turn). A course is noise
  when the vehicle hardly moves, so lateral is only derived where every fix of the fit is at
  `HEADING_MINIMUM_SPEED_MPS` (3 m/s) or faster.
* A run of consecutive fixes whose braking (minus longitudinal), acceleration or |lateral| reaches the
  *firm* bar of `THRESHOLDS` is one event spanning the run and `EVENT_PADDING_S` (half a 1 Hz fix
  interval) each side; its strength is the run's peak. It is **harsh** (`harsh_braking`,
  `harsh_acceleration`, `harsh_cornering`: detections must find it) when the peak reaches the harsh
  bar, else **firm** (`firm_braking`, ...: `UNCERTAIN_LABELS`, a detection there is neither right nor
  wrong).

The bars (m/s², on the 2 s fit), from the physics model's harsh bars (`michi.windows.physics`: 2.5
braking, 2.3 acceleration, 3.4 lateral with a gyroscope's yaw rate, 5.0 from the accelerometer alone;
a peak held 0.2 s after a 2.5 Hz low-pass) and what the fit reads of real manoeuvres:

| manoeuvre | firm from | harsh from |
|---|---|---|
| braking | 1.5 | 2.2 |
| acceleration | 1.4 | 2.0 |
| cornering | 2.8 | 3.6 |

* **Harsh = the physics bar x 0.88.** A 2 s fit of speed is the mean acceleration over 2 s, never more
  than the peak. Against the accelerometer's 0.5 s-smoothed peak (the phone's axes known from GPS over
  the whole drive, `services.trainer.domain.real_data.gps_truth`, the grade's share removed with a 15 s
  median), the fit read a median 0.90 (0.66-1.23, and 1.55 at the 160 s jump) of the 27 firm or
  harsh moments it finds on
  auckland-forward, auckland-backwards and comma2k19, and 0.66-0.99 (median 0.85) of the ten whose
  peak reached 2.5 m/s²: a manoeuvre at the physics bar reads about 0.88 of it. Over every second of
  the Auckland drives the 1 s IMU means follow the GPS derivative with a slope of 0.77-0.82
  (longitudinal, correlation 0.79-0.84, the grade and a mount without a gyroscope adding their noise)
  and 0.90-0.93 (lateral, correlation 0.95); on comma2k19's 100 Hz IMU and 10 Hz GNSS, 0.88
  (correlation 0.94; that drive barely turns, so its lateral says nothing). Cornering's bar is the
  physics model's 3.4 when a gyroscope confirms the turn (the GPS course is such a confirmation) plus
  the GPS lateral's own spread against the IMU (0.3 m/s²), rounded up to 3.6: a turn from 3.4 to 5.0
  is called harsh by a detector with a gyroscope and not by one without, so the lower part of it is
  better grey than harsh.
* **Firm = harsh x 0.7** (0.62 of the physics bar), the grey band where 1 Hz GPS cannot tell: the
  lowest reading above (0.66 of the peak, a brake cut off where the log ends) lands in it, and so does
  a harsh brake held only 1 s (0.35 s ramps), which a 2 s fit reads at 0.68 of its peak. One held
  0.5 s reads 0.43 and the physics model may fire on a peak held 0.2 s: such short ones 1 Hz GPS
  cannot see at all. Below the firm bar GPS says the vehicle did not brake, accelerate or turn
  firmly, and a detection there is an other detection.

On the shipped drives (`python -m benchmarks reference-rule`, docs/recordings.md): auckland-backwards
gives harsh moments at 51-54 s (acceleration), 154-157 s (braking), 159-161 s (the Doppler jump above),
165-168 s (braking) and 289-291 s (cornering), and 8 firm ones; auckland-forward and comma2k19 give
only firm ones (11 and 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from michi.recordings import Recording
from michi.recordings.evaluation import LabelledEvent
from michi.windows.signals import FloatArray, gapless_stretches, true_runs

GAP_S = 2.5
FIT_HALF_WIDTH_S = 1.0
FIT_TOLERANCE_S = 0.25
FIT_MINIMUM_FIXES = 3
HEADING_MINIMUM_SPEED_MPS = 3.0
EVENT_PADDING_S = 0.5

BRAKING = "braking"
ACCELERATION = "acceleration"
CORNERING = "cornering"


@dataclass(frozen=True)
class Bars:
    """Where a GPS manoeuvre becomes firm (grey: neither hit nor false alarm) and harsh (m/s²)."""

    firm_mps2: float
    harsh_mps2: float


THRESHOLDS = {
    BRAKING: Bars(firm_mps2=1.5, harsh_mps2=2.2),
    ACCELERATION: Bars(firm_mps2=1.4, harsh_mps2=2.0),
    CORNERING: Bars(firm_mps2=2.8, harsh_mps2=3.6),
}


@dataclass(frozen=True)
class GpsMotion:
    """The vehicle's acceleration at every fix; NaN where the GPS cannot say (a gap, a slow course)."""

    times_s: FloatArray
    longitudinal_mps2: FloatArray
    # Right positive, as compass courses grow when turning right.
    lateral_mps2: FloatArray
    # The drive's stretches without a gap, as (first fix time, last fix time).
    covered: list[tuple[float, float]]


@dataclass(frozen=True)
class GpsEvent:
    """One manoeuvre the GPS shows: its span, kind, peak strength and whether it is harsh or firm."""

    start_s: float
    end_s: float
    manoeuvre: str  # BRAKING, ACCELERATION or CORNERING
    strength_mps2: float
    peak_s: float
    harsh: bool

    @property
    def label(self) -> str:
        return f"{'harsh' if self.harsh else 'firm'}_{self.manoeuvre}"

    def labelled(self) -> LabelledEvent:
        return LabelledEvent(self.start_s, self.end_s, self.label)

    def to_json(self) -> dict[str, Any]:
        return {
            "start_s": self.start_s,
            "end_s": self.end_s,
            "label": self.label,
            "strength_mps2": round(self.strength_mps2, 2),
            "peak_s": self.peak_s,
        }


@dataclass(frozen=True)
class GpsTruth:
    """The manoeuvres a recording's GPS shows and the time it covers."""

    events: list[GpsEvent]
    covered: list[tuple[float, float]]

    @property
    def labels(self) -> list[LabelledEvent]:
        return [event.labelled() for event in self.events]

    @property
    def covered_s(self) -> float:
        return sum(end - start for start, end in self.covered)

    @property
    def harsh(self) -> int:
        return sum(1 for event in self.events if event.harsh)

    @property
    def firm(self) -> int:
        return len(self.events) - self.harsh

    def to_json(self) -> dict[str, Any]:
        return {
            "covered_s": round(self.covered_s, 3),
            "covered": [[round(start, 3), round(end, 3)] for start, end in self.covered],
            "thresholds_mps2": {
                manoeuvre: {"firm": bars.firm_mps2, "harsh": bars.harsh_mps2} for manoeuvre, bars in THRESHOLDS.items()
            },
            "events": [event.to_json() for event in self.events],
        }


def _stretches(times_s: FloatArray) -> list[tuple[int, int]]:
    """(first index, index after the last) of each run of fixes no more than `GAP_S` apart."""
    return gapless_stretches(times_s, GAP_S)


def _fitted_slopes(times_s: FloatArray, values: FloatArray) -> FloatArray:
    """At each fix of one stretch, the slope of the least-squares line through the fixes within the fit's width."""
    slopes = np.full(times_s.size, np.nan)
    reach = FIT_HALF_WIDTH_S + FIT_TOLERANCE_S
    first = np.searchsorted(times_s, times_s - reach, side="left")
    last = np.searchsorted(times_s, times_s + reach, side="right")
    for index in range(times_s.size):
        low, high = int(first[index]), int(last[index])
        # Enough fixes, reaching half the width on each side: a fit at a stretch's end would be one-sided.
        if (
            high - low < FIT_MINIMUM_FIXES
            or times_s[index] - times_s[low] < FIT_HALF_WIDTH_S / 2
            or times_s[high - 1] - times_s[index] < FIT_HALF_WIDTH_S / 2
        ):
            continue
        offsets = times_s[low:high] - times_s[low:high].mean()
        spread = float(np.dot(offsets, offsets))
        if spread > 0:
            slopes[index] = float(np.dot(offsets, values[low:high] - values[low:high].mean())) / spread
    return slopes


def _slowest_in_fit(times_s: FloatArray, speed_mps: FloatArray) -> FloatArray:
    """At each fix, the lowest speed among the fixes its fit uses."""
    reach = FIT_HALF_WIDTH_S + FIT_TOLERANCE_S
    first = np.searchsorted(times_s, times_s - reach, side="left")
    last = np.searchsorted(times_s, times_s + reach, side="right")
    return np.array([float(speed_mps[low:high].min()) for low, high in zip(first, last, strict=True)])


def gps_motion(times_s: FloatArray, speed_mps: FloatArray, heading_deg: FloatArray) -> GpsMotion:
    """Longitudinal and lateral acceleration at every fix (module docstring), stretch by stretch."""
    times_s = np.asarray(times_s, dtype=np.float64)
    speed_mps = np.asarray(speed_mps, dtype=np.float64)
    heading_deg = np.asarray(heading_deg, dtype=np.float64)
    longitudinal = np.full(times_s.size, np.nan)
    lateral = np.full(times_s.size, np.nan)
    covered = []
    for low, high in _stretches(times_s):
        times, speed = times_s[low:high], speed_mps[low:high]
        if high - low >= 2:
            covered.append((float(times[0]), float(times[-1])))
        longitudinal[low:high] = _fitted_slopes(times, speed)
        course = np.unwrap(np.radians(heading_deg[low:high]))
        lateral_here = speed * _fitted_slopes(times, course)
        lateral_here[_slowest_in_fit(times, speed) < HEADING_MINIMUM_SPEED_MPS] = np.nan
        lateral[low:high] = lateral_here
    return GpsMotion(times_s, longitudinal, lateral, covered)


def manoeuvres_of(motion: GpsMotion) -> list[GpsEvent]:
    """The firm and harsh runs of braking, acceleration and cornering, in time order."""
    strengths = {
        BRAKING: -motion.longitudinal_mps2,
        ACCELERATION: motion.longitudinal_mps2,
        CORNERING: np.abs(motion.lateral_mps2),
    }
    events = []
    for manoeuvre, strength in strengths.items():
        bars = THRESHOLDS[manoeuvre]
        # NaN (no fit, a slow course) is below every bar; runs are found stretch by stretch, so that
        # fixes either side of a gap never join into one event.
        above = np.nan_to_num(strength, nan=-np.inf) >= bars.firm_mps2
        for low, high in _stretches(motion.times_s):
            for first, after in true_runs(above[low:high]):
                run = slice(low + first, low + after)
                peak = low + first + int(np.argmax(strength[run]))
                stretch_start, stretch_end = float(motion.times_s[low]), float(motion.times_s[high - 1])
                events.append(
                    GpsEvent(
                        start_s=round(max(stretch_start, float(motion.times_s[run.start]) - EVENT_PADDING_S), 2),
                        end_s=round(min(stretch_end, float(motion.times_s[run.stop - 1]) + EVENT_PADDING_S), 2),
                        manoeuvre=manoeuvre,
                        strength_mps2=float(strength[peak]),
                        peak_s=round(float(motion.times_s[peak]), 2),
                        harsh=bool(strength[peak] >= bars.harsh_mps2),
                    )
                )
    return sorted(events, key=lambda event: (event.start_s, event.end_s, event.manoeuvre))


def gps_manoeuvres(recording: Recording) -> GpsTruth:
    """The manoeuvres the recording's GPS shows, as labels, and the time it covers. Needs GPS fixes."""
    if not recording.has_gps:
        raise ValueError(f"{recording.name}: judging by GPS needs the recording's GPS fixes")
    motion = gps_motion(recording.gps_times_s, recording.speed_mps, recording.heading_deg)
    return GpsTruth(manoeuvres_of(motion), motion.covered)
