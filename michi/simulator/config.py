"""What a simulation run is asked to do."""

from __future__ import annotations

from dataclasses import dataclass, field

from michi.simulator.hardware import DomainRandomization
from michi.simulator.scenarios import Scenario

# 2026-01-01T00:00:00Z: a fixed default start keeps runs byte-identical.
DEFAULT_START_TIME = 1_767_225_600.0
# "fitted": noise, vibration, holder, sensor and GPS models fitted to real recordings (docs/simulator-fit.md).
# "before-fit": the earlier white-noise model, kept so the fit report can show what the fit changed.
SENSOR_MODELS = ("fitted", "before-fit")


@dataclass(frozen=True)
class SimulationConfig:
    devices: int = 20
    duration_s: float = 600.0
    seed: int = 7
    sample_rate_hz: int = 50
    upload_seconds: float = 10.0
    # A trip lasts between these many seconds (the last one is cut at the end of the run).
    trip_seconds: tuple[float, float] = (300.0, 900.0)
    # Opt-in: each device's first trip lasts between these many seconds instead (`michi up` shows its
    # first scores sooner this way); None draws it from `trip_seconds` like every other trip.
    first_trip_seconds: tuple[float, float] | None = None
    # Name from `list_scenarios()`, a `Scenario`, or None for a healthy fleet.
    scenario: str | Scenario | None = None
    start_time: float = DEFAULT_START_TIME
    # Risky events (harsh braking, acceleration, cornering, speeding) per device per 10 minutes.
    event_rate_per_10min: float = 3.0
    # Confounders (potholes, speed bumps, mount moved) per device per 10 minutes.
    confounder_rate_per_10min: float = 3.0
    # Parked time between two trips of one device.
    park_seconds: tuple[float, float] = (30.0, 120.0)
    # Relative weights of the risky kinds and of the confounder kinds.
    risky_mix: tuple[tuple[str, float], ...] = (
        ("harsh_braking", 0.3),
        ("harsh_acceleration", 0.25),
        ("harsh_cornering", 0.25),
        ("speeding", 0.2),
    )
    confounder_mix: tuple[tuple[str, float], ...] = (("pothole", 0.4), ("speed_bump", 0.4), ("mount_moved", 0.2))
    # Opt-in: how hard harsh events are, per kind (kind, lowest g, highest g), drawn uniformly; a kind not named
    # keeps its default (`kinematics.HARSH_PEAK_G`: brakes 0.5-0.7 g, pull-aways 0.38-0.5 g, too-fast turns
    # 0.5-0.62 g, stronger than most real cars' harsh manoeuvres of 0.2-0.35 g). A trainer recipe can draw them
    # down to real strength and below (docs/training.md, *Datasets*).
    harsh_peak_g: tuple[tuple[str, float, float], ...] = ()
    # Opt-in: how fast a harsh brake or pull-away builds (m/s³, lowest and highest, drawn uniformly); None: 12.
    harsh_jerk_mps3: tuple[float, float] | None = None
    # Opt-in: the lateral acceleration (g) each driver aims for in an ordinary turn, drawn per device from this
    # range; None: 0.12-0.17 g (`DriverStyle`). Real drivers take turns at up to about 0.45 g.
    ordinary_turn_lateral_g: tuple[float, float] | None = None
    # Opt-in: ordinary turns build their curvature over this many seconds of driving (drawn per device), as a
    # driver turns the wheel in: the lateral acceleration ramps instead of stepping at the arc. Harsh cornering is
    # still thrown in at once. None: every turn steps at its arc (the path's geometry either way).
    turn_in_s: tuple[float, float] | None = None
    # Opt-in: this share of harsh cornering events is an evasive swerve into the next lane on a straight (lateral
    # one way then the other, each lobe built at `harsh_jerk_mps3` and held 0.3-1.0 s) instead of a too-fast turn.
    # Only the IMU swerves: the GPS track keeps to the road's centre line.
    swerve_share: float = 0.0
    # Opt-in: how hard everyday brakes and pull-aways are, drawn afresh for each manoeuvre (the next stop or turn)
    # from a log-normal of this (median, 95th percentile) in g (`kinematics.EverydayStrength`). None: every
    # manoeuvre of a trip keeps the driver's vehicle comfort values (brakes planned at up to 0.19 g and corrected
    # up to 0.24 g, pull-aways up to 0.2 g), so everyday brakes pile up at 1.9-2.35 m/s² where real drivers' spread
    # from about 1 to 3 m/s². (0.13, 0.22) and (0.19, 0.42) fit real drives (`michi.simulator.everyday_fit`).
    everyday_braking_g: tuple[float, float] | None = None
    everyday_acceleration_g: tuple[float, float] | None = None
    # The fitted models are opt-in until the trainer and the detection thresholds are tuned on them.
    sensor_model: str = "before-fit"
    # How each device's holder, sensors, clock and GPS are drawn around the fit (`DomainRandomization.at_fit`
    # puts every device on the fit of one holder kind).
    randomization: DomainRandomization = field(default_factory=DomainRandomization)
    # Opt-in: every device draws its own IMU rate (log-uniform, fractional) from this range instead of
    # `sample_rate_hz`, and half of them stamp microseconds. Costs up to 8x the samples of a 50 Hz fleet.
    sample_rate_range_hz: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.devices < 0:
            raise ValueError("devices must be >= 0")
        if self.duration_s <= 0:
            raise ValueError("duration_s must be > 0")
        if not 1 <= self.sample_rate_hz <= 1000:
            raise ValueError("sample_rate_hz must be between 1 and 1000")
        if self.sample_rate_range_hz is not None:
            lowest, highest = self.sample_rate_range_hz
            if not 1 <= lowest <= highest <= 1000:
                raise ValueError("sample_rate_range_hz must be (lowest, highest) with 1 <= lowest <= highest <= 1000")
        for kind, lowest, highest in self.harsh_peak_g:
            if kind not in ("harsh_braking", "harsh_acceleration", "harsh_cornering"):
                raise ValueError(
                    f"harsh_peak_g names {kind!r}: one of harsh_braking, harsh_acceleration, harsh_cornering"
                )
            if not 0.05 <= lowest <= highest <= 1.0:
                raise ValueError(
                    "harsh_peak_g ranges must be (kind, lowest, highest) with 0.05 <= lowest <= highest <= 1"
                )
        if self.harsh_jerk_mps3 is not None and not 1.0 <= self.harsh_jerk_mps3[0] <= self.harsh_jerk_mps3[1]:
            raise ValueError("harsh_jerk_mps3 must be (lowest, highest) with 1 <= lowest <= highest")
        if self.ordinary_turn_lateral_g is not None and not (
            0.05 <= self.ordinary_turn_lateral_g[0] <= self.ordinary_turn_lateral_g[1] <= 0.6
        ):
            raise ValueError("ordinary_turn_lateral_g must be (lowest, highest) with 0.05 <= lowest <= highest <= 0.6")
        for name, strength in (
            ("everyday_braking_g", self.everyday_braking_g),
            ("everyday_acceleration_g", self.everyday_acceleration_g),
        ):
            if strength is not None and not 0.02 <= strength[0] <= strength[1] <= 0.6:
                raise ValueError(f"{name} must be (median, 95th percentile) with 0.02 <= median <= 95th <= 0.6")
        if not 0.0 <= self.swerve_share <= 1.0:
            raise ValueError("swerve_share must be between 0 and 1")
        if self.turn_in_s is not None and not 0.0 <= self.turn_in_s[0] <= self.turn_in_s[1] <= 10.0:
            raise ValueError("turn_in_s must be (lowest, highest) with 0 <= lowest <= highest <= 10")
        if self.sensor_model not in SENSOR_MODELS:
            raise ValueError(f"sensor_model must be one of {', '.join(SENSOR_MODELS)}")
        if self.upload_seconds < 1.0:
            raise ValueError("upload_seconds must be >= 1")
        shortest, longest = self.trip_seconds
        if not 0 < shortest <= longest:
            raise ValueError("trip_seconds must be (shortest, longest) with 0 < shortest <= longest")
        if self.first_trip_seconds is not None:
            shortest, longest = self.first_trip_seconds
            if not 0 < shortest <= longest:
                raise ValueError("first_trip_seconds must be (shortest, longest) with 0 < shortest <= longest")
