"""What a simulation run is asked to do."""

from __future__ import annotations

from dataclasses import dataclass

from michi.simulator.scenarios import Scenario

# 2026-01-01T00:00:00Z: a fixed default start keeps runs byte-identical.
DEFAULT_START_TIME = 1_767_225_600.0


@dataclass(frozen=True)
class SimulationConfig:
    devices: int = 20
    duration_s: float = 600.0
    seed: int = 7
    sample_rate_hz: int = 50
    upload_seconds: float = 10.0
    # A trip lasts between these many seconds (the last one is cut at the end of the run).
    trip_seconds: tuple[float, float] = (300.0, 900.0)
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

    def __post_init__(self) -> None:
        if self.devices < 0:
            raise ValueError("devices must be >= 0")
        if self.duration_s <= 0:
            raise ValueError("duration_s must be > 0")
        if not 1 <= self.sample_rate_hz <= 1000:
            raise ValueError("sample_rate_hz must be between 1 and 1000")
        if self.upload_seconds < 1.0:
            raise ValueError("upload_seconds must be >= 1")
        shortest, longest = self.trip_seconds
        if not 0 < shortest <= longest:
            raise ValueError("trip_seconds must be (shortest, longest) with 0 < shortest <= longest")
