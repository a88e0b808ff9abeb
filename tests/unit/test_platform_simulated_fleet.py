"""The simulated fleet of `michi up` (what `make run` drives): devices re-registered on an existing home,
first trips short enough for scores within minutes, later trips and every other fleet unchanged."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import numpy as np
import pytest

from michi.cli.platform import (
    MAX_FLEET_LAG_S,
    UP_FIRST_TRIP_SECONDS,
    register_simulated_devices,
    up_fleet_start,
    up_simulation_config,
)
from michi.contracts import timestamp_to_seconds
from michi.contracts.v1 import upload_pb2
from michi.device_client import UploadResult, send_fleet
from michi.roads import RoadMap
from michi.settings import MichiSettings
from michi.simulator import FleetSimulator, SimulationConfig
from services.ingest.domain.tokens import RevokedToken
from services.ingest.domain.validation import UploadLimits, check_started_at, check_upload_end
from services.ingest.settings import IngestSettings
from services.ingest.wiring import device_registry

START = 1_800_000_000.0
# What `make run` asks for: `michi up --simulate 20` with the default duration and seed.
MAKE_RUN_DEVICES, MAKE_RUN_DURATION_S, MAKE_RUN_SEED = 20, 24 * 3600.0, 7
# The first trip starts within one upload of the fleet's start and lasts less than UP_FIRST_TRIP_SECONDS[1];
# its trip-end upload is sent once its slice has passed: at most 10 + 90 s after the start at speed 1.
FIRST_TRIP_END_BOUND_S = 10.0 + UP_FIRST_TRIP_SECONDS[1]


def test_a_second_and_a_tenth_run_get_working_tokens_and_the_old_ones_stop(tmp_path: Path) -> None:
    settings = MichiSettings(home=tmp_path / ".michi", database_url=f"sqlite:///{tmp_path / 'michi.db'}")
    devices = ["sim-7-0000", "sim-7-0001"]
    runs = [register_simulated_devices(settings, devices) for _ in range(10)]
    registry = device_registry(IngestSettings(**settings.model_dump()))
    try:
        for device_id in devices:
            assert registry.verify(runs[-1][device_id]) == device_id
            for earlier in runs[:-1]:
                with pytest.raises(RevokedToken):
                    registry.verify(earlier[device_id])
        records = registry.list_devices()
        assert len(records) == 10 * len(devices)
        assert sorted(record.device_id for record in records if record.active) == devices
        assert {record.label for record in records} == {"simulated"}
    finally:
        registry.close()
    # Nothing secret is kept in the home: only the registry's hashes.
    stored = b"".join(path.read_bytes() for path in tmp_path.rglob("*") if path.is_file())
    assert not any(token.encode() in stored for run in runs for token in run.values())


def _first_trip_ends(config: SimulationConfig) -> tuple[dict[str, float], dict[str, float]]:
    """Per device: when its first trip-end upload is sent (slice over, speed 1) and how long that trip lasted."""
    simulator = FleetSimulator(config, road_map=RoadMap.default())
    ends: dict[str, float] = {}
    for upload in simulator.uploads():
        if upload.trip_end and upload.device_id not in ends:
            ends[upload.device_id] = timestamp_to_seconds(upload.started_at) + config.upload_seconds
            if len(ends) == config.devices:
                break
    lasted: dict[str, float] = {}
    for trip in sorted(simulator.trips, key=lambda trip: trip.started_at):
        lasted.setdefault(trip.device_id, trip.duration_s)
    return ends, lasted


def test_every_make_run_device_ends_its_first_trip_within_100_simulated_seconds() -> None:
    config = up_simulation_config(
        devices=MAKE_RUN_DEVICES, duration=MAKE_RUN_DURATION_S, seed=MAKE_RUN_SEED, start_time=START
    )
    ends, lasted = _first_trip_ends(config)
    assert len(ends) == MAKE_RUN_DEVICES
    latest = max(ends.values()) - START
    assert latest <= FIRST_TRIP_END_BOUND_S, f"a first trip ends {latest:.0f} s after the start"
    assert all(UP_FIRST_TRIP_SECONDS[0] - 1 <= seconds < UP_FIRST_TRIP_SECONDS[1] for seconds in lasted.values())


def test_without_short_first_trips_the_first_trip_is_drawn_like_any_other() -> None:
    config = up_simulation_config(
        devices=5, duration=3600.0, seed=MAKE_RUN_SEED, start_time=START, short_first_trips=False
    )
    assert config.first_trip_seconds is None
    ends, lasted = _first_trip_ends(config)
    assert min(ends.values()) - START > FIRST_TRIP_END_BOUND_S
    assert all(config.trip_seconds[0] <= seconds < config.trip_seconds[1] for seconds in lasted.values())


def test_only_the_first_trip_is_short_and_the_fleet_is_otherwise_the_same() -> None:
    common = {"devices": 3, "duration_s": 2400.0, "seed": 5, "start_time": START}
    short = FleetSimulator(SimulationConfig(**common, first_trip_seconds=UP_FIRST_TRIP_SECONDS))  # type: ignore[arg-type]
    usual = FleetSimulator(SimulationConfig(**common))  # type: ignore[arg-type]
    short.run()
    usual.run()
    assert [profile.device_id for profile in short.devices] == [profile.device_id for profile in usual.devices]
    assert [profile.vehicle_type for profile in short.devices] == [profile.vehicle_type for profile in usual.devices]
    for device in short.devices:
        trips = sorted((trip for trip in short.trips if trip.device_id == device.device_id), key=lambda t: t.started_at)
        first, *later = trips
        assert UP_FIRST_TRIP_SECONDS[0] - 1 <= first.duration_s < UP_FIRST_TRIP_SECONDS[1]
        # Later trips are drawn from the usual range (the run's last one may be cut at the end).
        assert later and all(300.0 <= trip.duration_s < 900.0 for trip in later[:-1])
    assert SimulationConfig().first_trip_seconds is None


def test_first_trip_seconds_are_checked() -> None:
    with pytest.raises(ValueError, match="first_trip_seconds"):
        SimulationConfig(first_trip_seconds=(90.0, 60.0))
    with pytest.raises(ValueError, match="first_trip_seconds"):
        SimulationConfig(first_trip_seconds=(0.0, 60.0))


# --- `michi up --speed`: a fleet faster than real time never sends from the future


class CheckingClient:
    """Stands for ingest: applies its time rules (`started_at`, last sample) at the moment each upload is sent."""

    def __init__(self) -> None:
        self.refusals: list[str] = []
        self.sent = 0
        self.limits = UploadLimits()

    async def send(self, upload: upload_pb2.Upload, token: str) -> UploadResult:
        now = time.time()
        violations = check_started_at(upload, now, self.limits) + check_upload_end(upload, now, self.limits)
        self.refusals.extend(violation.reason for violation in violations)
        self.sent += 1
        outcome = "refused" if violations else "accepted"
        return UploadResult(upload.upload_id, 422 if violations else 202, outcome, 1, 0.0)


def _drive_paced(start_time: float, *, duration: float, speed: float) -> CheckingClient:
    """Two `michi up` dashcams starting at `start_time`, paced at `speed` by the device client like `simulate_fleet`."""
    config = up_simulation_config(devices=2, duration=duration, seed=MAKE_RUN_SEED, start_time=start_time)
    simulator = FleetSimulator(config, road_map=RoadMap.default())
    client = CheckingClient()
    tokens = {profile.device_id: "token" for profile in simulator.devices}
    asyncio.run(
        send_fleet(simulator.uploads(), client, tokens, speed=speed, upload_seconds=config.upload_seconds)  # type: ignore[arg-type]
    )
    return client


def test_a_fleet_at_speed_above_1_is_never_ahead_of_the_wall_clock() -> None:
    duration, speed = 1800.0, 1800.0  # half an hour of driving in about a second
    # As `michi up` started it before: the fleet's clock ran ahead of the wall clock and ingest refused it.
    before = _drive_paced(time.time(), duration=duration, speed=speed)
    assert {"started-at-in-future", "sample-in-future"} <= set(before.refusals)
    # Now: the fleet's clock starts in the past and catches up with the wall clock as the run ends.
    client = _drive_paced(up_fleet_start(time.time(), duration=duration, speed=speed), duration=duration, speed=speed)
    assert client.sent > 300
    assert client.refusals == []


@pytest.mark.parametrize("speed", [0.5, 1.0, 1.5, 2.0, 4.0, 10.0, 100.0])
@pytest.mark.parametrize("duration", [3600.0, 24 * 3600.0, 3 * 86_400.0])
def test_the_fleet_clock_stays_between_ingests_bounds_for_the_whole_run(speed: float, duration: float) -> None:
    """The fleet's clock at wall time t is start + speed x (t - now) (what the pacer does), for the whole run."""
    start = up_fleet_start(START, duration=duration, speed=speed)
    for fraction in np.linspace(0.0, 1.0, 101):
        wall = START + fraction * duration / speed
        fleet = start + speed * (wall - START)
        # A slice has passed on the wall clock before it is sent (at speed 1 and below: the fleet starts now).
        assert fleet <= wall - (10.0 if speed > 1 else 0.0) + 1e-6
        assert wall - fleet <= MAX_FLEET_LAG_S + 10.0  # and is younger than ingest's 7 days
    # The run ends level with the wall clock (one upload behind) when it runs at or above real time.
    if speed > 1:
        assert START + duration / speed - (start + duration) == pytest.approx(10.0)


@pytest.mark.parametrize("speed", [0.0, -1.0, math.nan, math.inf])
def test_a_speed_that_is_not_above_0_is_refused(speed: float) -> None:
    with pytest.raises(ValueError, match="--speed must be a number above 0"):
        up_fleet_start(START, duration=3600.0, speed=speed)


def test_a_run_that_would_leave_ingests_time_bounds_is_refused_with_the_longest_that_fits() -> None:
    with pytest.raises(ValueError, match=r"use --duration 1036800 or less"):
        up_fleet_start(START, duration=30 * 86_400.0, speed=2.0)
    up_fleet_start(START, duration=1_036_800.0, speed=2.0)
    # The default run (a day) fits at any speed.
    up_fleet_start(START, duration=MAKE_RUN_DURATION_S, speed=1e6)


def test_michi_up_refuses_a_bad_speed_before_starting_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from michi.cli import app

    monkeypatch.setenv("MICHI_HOME", str(tmp_path / ".michi"))
    result = CliRunner().invoke(app, ["up", "--simulate", "2", "--speed", "0"])
    assert result.exit_code == 1
    assert "--speed must be a number above 0" in result.output
    assert not (tmp_path / ".michi").exists() or not any((tmp_path / ".michi").rglob("*.log"))
