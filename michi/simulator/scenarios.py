"""Named drift scenarios: what changes in the fleet, for whom, and from when.

A scenario applies to a fraction of devices (chosen deterministically from the seed) for every
trip that starts at or after `start_offset_s` seconds into the simulation. The monitor is meant
to notice each one: a new firmware's accelerometer scale, a heavier vehicle mix, winter roads,
a lower IMU sample rate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

BASE_FIRMWARE_VERSION = "2.4.1"


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    start_offset_s: float = 0.0
    device_fraction: float = 1.0
    accelerometer_scale: float = 1.0
    firmware_version: str | None = None
    vehicle_mix: dict[str, float] | None = None
    sample_rate_hz: int | None = None
    # Road friction as a fraction of dry asphalt; caps braking and stretches stops.
    friction: float = 1.0
    vibration_scale: float = 1.0
    # Small tyre slips (yaw wiggles) per ten minutes of driving, none risky.
    slips_per_10min: float = 0.0

    def starting_at(self, start_offset_s: float, device_fraction: float | None = None) -> Scenario:
        """The same scenario from another time or for another share of the fleet."""
        fraction = self.device_fraction if device_fraction is None else device_fraction
        return replace(self, start_offset_s=start_offset_s, device_fraction=fraction)


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            name="firmware-accel-scale",
            description="New firmware multiplies accelerometer readings by 1.08 and reports version 2.5.0.",
            accelerometer_scale=1.08,
            firmware_version="2.5.0",
        ),
        Scenario(
            name="new-vehicle-mix",
            description="The fleet becomes mostly trucks and buses.",
            vehicle_mix={"truck": 0.45, "bus": 0.35, "van": 0.15, "sedan": 0.05},
        ),
        Scenario(
            name="winter-roads",
            description="Low friction: gentler braking, longer stops, tyre slips and more vibration.",
            friction=0.5,
            vibration_scale=1.8,
            slips_per_10min=3.0,
        ),
        Scenario(
            name="sample-rate-change",
            description="Devices switch their IMU to 25 Hz.",
            sample_rate_hz=25,
        ),
    )
}


def list_scenarios() -> list[str]:
    """Names accepted by `SimulationConfig.scenario`."""
    return sorted(SCENARIOS)


def resolve_scenario(scenario: str | Scenario | None) -> Scenario | None:
    if scenario is None or isinstance(scenario, Scenario):
        return scenario
    try:
        return SCENARIOS[scenario]
    except KeyError:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(list_scenarios())}") from None
