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
