"""Everyday braking and acceleration strength (`SimulationConfig.everyday_braking_g`, `everyday_acceleration_g`).

Opt-in: unset, every manoeuvre of a trip keeps the driver's vehicle comfort values, so everyday brakes pile up
just under the 0.24 g limit (1.9-2.35 m/s²) and pull-aways stay under 0.2 g. Set, each brake and pull-away is drawn
afresh from a log-normal (median, 95th percentile in g), as real drivers' spread. The manoeuvres are read the way
the fit reads real drives (`michi.simulator.everyday_fit`): 1 Hz GPS speed, a run of 1-s changes beyond 0.5 m/s²
that changes the speed by 2 m/s or more.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import numpy as np
import pytest

from michi.contracts import timestamp_to_seconds
from michi.roads import RoadMap
from michi.simulator import FleetSimulator, SimulationConfig
from michi.simulator.everyday_fit import FITTED_ACCELERATION_G, FITTED_BRAKING_G, manoeuvre_peaks
from michi.simulator.hardware import DomainRandomization
from michi.simulator.vehicles import GRAVITY_MPS2

# The fit to real normal driving.
FITTED = {"everyday_braking_g": FITTED_BRAKING_G, "everyday_acceleration_g": FITTED_ACCELERATION_G}
STEADY = DomainRandomization(gps_lag_s=(0.0, 0.0), gps_dropouts_per_10min=(0.0, 0.0))
# Ordinary driving only: no injected events or confounders, so every manoeuvre is an everyday one.
BASE = SimulationConfig(
    devices=6,
    duration_s=900.0,
    seed=13,
    trip_seconds=(300.0, 600.0),
    event_rate_per_10min=0.0,
    confounder_rate_per_10min=0.0,
    randomization=STEADY,
)


def fleet_peaks(config: SimulationConfig) -> tuple[list[float], list[float], list[tuple[str, float, float]]]:
    """Peaks (m/s²) of everyday brakes and pull-aways on the fleet's 1 Hz GPS speed, and its trips (id, start, length)."""
    simulator = FleetSimulator(config, road_map=RoadMap.default())
    fixes: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for upload in simulator.uploads():
        start = timestamp_to_seconds(upload.started_at)
        fixes[upload.trip_id].extend((start + fix.offset_ms / 1000.0, fix.speed_mps) for fix in upload.gps)
    brakes: list[float] = []
    pulls: list[float] = []
    for track in fixes.values():
        times, speeds = np.array(track).T
        trip_brakes, trip_pulls = manoeuvre_peaks(np.interp(np.arange(times[0], times[-1], 1.0), times, speeds))
        brakes += trip_brakes
        pulls += trip_pulls
    trips = [(trip.trip_id, trip.started_at, trip.duration_s) for trip in simulator.trips]
    return brakes, pulls, trips


def test_everyday_strengths_are_off_by_default_and_spread_like_real_drivers_when_set() -> None:
    assert SimulationConfig().everyday_braking_g is None and SimulationConfig().everyday_acceleration_g is None
    default_brakes, default_pulls, default_trips = fleet_peaks(BASE)
    fitted_brakes, fitted_pulls, fitted_trips = fleet_peaks(replace(BASE, **FITTED))  # type: ignore[arg-type]
    assert len(default_brakes) >= 30 and len(fitted_brakes) >= 30 and len(fitted_pulls) >= 30
    # Its own random stream: the same devices drive the same trips.
    assert fitted_trips == default_trips
    # Unset: brakes bunched under the 0.24 g limit, pull-aways under 0.2 g (the GPS speed adds up to 0.3 m/s²).
    assert np.percentile(default_brakes, 90) <= 0.24 * GRAVITY_MPS2 + 0.1
    assert np.percentile(default_brakes, 10) > 0.24 * GRAVITY_MPS2 - 0.7
    assert max(default_pulls) <= 0.2 * GRAVITY_MPS2 + 0.3
    # Set: most brakes gentler and spread wider, a few firmer than the limit allows; pull-aways past 0.2 g.
    assert np.median(fitted_brakes) < np.median(default_brakes) - 0.3, (
        np.median(fitted_brakes),
        np.median(default_brakes),
    )
    assert np.percentile(fitted_brakes, 10) < np.percentile(default_brakes, 10) - 0.4
    assert max(fitted_brakes) > max(default_brakes) + 0.3
    assert np.percentile(fitted_pulls, 90) > max(default_pulls) + 0.3
    print(
        f"everyday brakes: median {np.median(default_brakes):.2f} / {np.median(fitted_brakes):.2f} m/s², "
        f"largest {max(default_brakes):.2f} / {max(fitted_brakes):.2f}; pull-aways largest "
        f"{max(default_pulls):.2f} / {max(fitted_pulls):.2f} (default / fitted)"
    )


def test_everyday_strengths_are_checked() -> None:
    with pytest.raises(ValueError, match="everyday_braking_g"):
        SimulationConfig(everyday_braking_g=(0.3, 0.2))
    with pytest.raises(ValueError, match="everyday_acceleration_g"):
        SimulationConfig(everyday_acceleration_g=(0.01, 0.2))


def test_everyday_strengths_are_a_training_recipe_knob() -> None:
    from services.trainer.adapters.simulation import SimulationRecipe, _fleet_config

    recipe = SimulationRecipe.from_dict(
        {
            "fleets": [{"seed": 101, "sample_rate_hz": 50}, {"seed": 104, "simulator_defaults": True}],
            "everyday_braking_g": [0.13, 0.22],
            "everyday_acceleration_g": [0.19, 0.42],
        }
    )
    assert (recipe.everyday_braking_g, recipe.everyday_acceleration_g) == ((0.13, 0.22), (0.19, 0.42))
    fitted, default = (_fleet_config(recipe, fleet) for fleet in recipe.fleets)
    assert (fitted.everyday_braking_g, fitted.everyday_acceleration_g) == ((0.13, 0.22), (0.19, 0.42))
    assert default.everyday_braking_g is None and default.everyday_acceleration_g is None
    assert replace(recipe, everyday_braking_g=None).cache_key() != recipe.cache_key()
    plain = SimulationRecipe()
    assert _fleet_config(plain, plain.fleets[0]).everyday_braking_g is None
