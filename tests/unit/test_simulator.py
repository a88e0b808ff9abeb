"""Unit tests of the fleet simulator: wire shape, determinism, physics, ground truth, drift.

Run: python -m pytest tests/unit/test_simulator.py -q
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from michi.contracts import timestamp_to_seconds
from michi.contracts.v1 import upload_pb2
from michi.roads import RoadMap
from michi.simulator import (
    CONFOUNDER_KINDS,
    GRAVITY_MPS2,
    RISKY_KINDS,
    FleetSimulator,
    GroundTruthEvent,
    MountOrientation,
    SimulationConfig,
    list_scenarios,
    read_ground_truth_lines,
)
from michi.simulator.hardware import DomainRandomization
from michi.simulator.scenarios import SCENARIOS

G = GRAVITY_MPS2
# Hardware that keeps the kinematics readable: the fitted noise and holders, but no vibration multiplier,
# flat roads, exact accelerometer scale, a wide range, and a GPS without lag or dropouts.
STEADY = DomainRandomization(
    stiffness=(1.0, 1.0),
    vibration=(1.0, 1.0),
    road_grade=(0.0, 0.0),
    gps_lag_s=(0.0, 0.0),
    gps_dropouts_per_10min=(0.0, 0.0),
    scale_error=0.0,
    ranges_g=(16.0,),
    bits=(16,),
)

# ---------------------------------------------------------------- fixtures and helpers


class Run:
    """A finished simulation with its uploads kept in memory (small runs only)."""

    def __init__(self, config: SimulationConfig) -> None:
        self.simulator = FleetSimulator(config, road_map=RoadMap.default())
        self.uploads = list(self.simulator.uploads())
        self.by_trip: dict[str, list[upload_pb2.Upload]] = defaultdict(list)
        for upload in self.uploads:
            self.by_trip[upload.trip_id].append(upload)
        self.profiles = {profile.device_id: profile for profile in self.simulator.devices}

    def mount_at(self, device_id: str, moment: float) -> NDArray[np.float64]:
        """The vehicle-to-device rotation in force, following `mount_moved` ground truth."""
        mount = self.profiles[device_id].mount
        for event in self.simulator.ground_truth:
            if event.device_id == device_id and event.kind == "mount_moved" and event.ended_at <= moment:
                detail = event.detail
                mount = MountOrientation(detail["new_yaw_deg"], detail["new_pitch_deg"], detail["new_roll_deg"])
        return mount.rotation

    def trip_signals(self, trip_id: str) -> dict[str, NDArray[np.float64]]:
        """IMU of a whole trip turned back into the vehicle frame, plus its GPS fixes."""
        times, accelerometer, gyroscope, gps_times, gps_speed = [], [], [], [], []
        for upload in self.by_trip[trip_id]:
            start = timestamp_to_seconds(upload.started_at)
            offsets = np.array(upload.imu.offset_ms) / 1000.0  # a 50 Hz fleet stamps milliseconds
            imu = upload.imu
            device_accelerometer = np.stack([imu.accel_x, imu.accel_y, imu.accel_z], axis=1)
            device_gyroscope = np.stack([imu.gyro_x, imu.gyro_y, imu.gyro_z], axis=1)
            rotation = self.mount_at(upload.device_id, start + 10.0)
            # device = rotation @ vehicle, so vehicle rows = device rows @ rotation.
            accelerometer.append(device_accelerometer @ rotation)
            gyroscope.append(device_gyroscope @ rotation)
            times.append(start + offsets)
            gps_times += [start + fix.offset_ms / 1000.0 for fix in upload.gps]
            gps_speed += [fix.speed_mps for fix in upload.gps]
        return {
            "times": np.concatenate(times),
            "accelerometer": np.concatenate(accelerometer),
            "gyroscope": np.concatenate(gyroscope),
            "gps_times": np.array(gps_times),
            "gps_speed": np.array(gps_speed),
        }


def _smoothed(values: NDArray[np.float64], samples: int) -> NDArray[np.float64]:
    return np.convolve(values, np.ones(samples) / samples, mode="same")


@pytest.fixture(scope="module")
def clean_run() -> Run:
    """Risky events but no confounders, so the mount never moves."""
    return Run(
        SimulationConfig(
            devices=3,
            duration_s=420.0,
            seed=5,
            trip_seconds=(150.0, 250.0),
            confounder_rate_per_10min=0.0,
            randomization=STEADY,
        )
    )


@pytest.fixture(scope="module")
def event_run() -> Run:
    return Run(
        SimulationConfig(
            devices=8,
            duration_s=900.0,
            seed=21,
            trip_seconds=(300.0, 600.0),
            event_rate_per_10min=4.0,
            confounder_rate_per_10min=4.0,
            randomization=STEADY,
        )
    )


# ---------------------------------------------------------------- wire shape


def test_uploads_is_a_lazy_generator_in_time_order(clean_run: Run) -> None:
    assert inspect.isgenerator(clean_run.simulator.uploads())
    starts = [timestamp_to_seconds(upload.started_at) for upload in clean_run.uploads]
    assert starts == sorted(starts)
    assert len({upload.upload_id for upload in clean_run.uploads}) == len(clean_run.uploads)


def test_trips_are_numbered_and_closed(clean_run: Run) -> None:
    trips = {trip.trip_id: trip for trip in clean_run.simulator.trips}
    assert set(trips) == set(clean_run.by_trip)
    assert len(trips) >= 4  # several trips per device with a park between
    for trip_id, uploads in clean_run.by_trip.items():
        assert [upload.sequence for upload in uploads] == list(range(len(uploads)))
        assert [upload.trip_end for upload in uploads] == [False] * (len(uploads) - 1) + [True]
        assert len(uploads) == trips[trip_id].upload_count
        assert {upload.device_id for upload in uploads} == {trips[trip_id].device_id}
        assert trips[trip_id].distance_km > 0.1
        assert uploads[0].vehicle_type and uploads[0].firmware_version and uploads[0].driver_id


def test_imu_offsets_increase_strictly_and_arrays_have_equal_length(clean_run: Run) -> None:
    for upload in clean_run.uploads:
        imu = upload.imu
        offsets = np.array(imu.offset_ms)
        assert offsets.size > 0
        assert np.all(np.diff(offsets) > 0)
        lengths = {
            len(values) for values in (imu.accel_x, imu.accel_y, imu.accel_z, imu.gyro_x, imu.gyro_y, imu.gyro_z)
        }
        assert lengths == {offsets.size}
        assert offsets[-1] < 10_000
        gps_offsets = [fix.offset_ms for fix in upload.gps]
        assert gps_offsets == sorted(set(gps_offsets)) and 0 < len(gps_offsets) <= 10
        assert all(0.4 <= fix.hdop <= 3.0 and 0.0 <= fix.heading_deg < 360.0 for fix in upload.gps)


@pytest.mark.parametrize("rate", [25, 50, 100])
def test_sample_rate_is_honoured(rate: int) -> None:
    config = SimulationConfig(devices=1, duration_s=75.0, seed=3, sample_rate_hz=rate, trip_seconds=(62.0, 62.0))
    uploads = list(FleetSimulator(config).uploads())
    assert uploads
    period_ms = 1000 / rate
    for upload in uploads:
        assert upload.sample_rate_hz == rate
        offsets = np.array(upload.imu.offset_ms)
        # Sample times jitter around the rate's grid (a few % of the period), never out of order.
        assert np.all(np.diff(offsets) > 0)
        assert np.abs(offsets - np.arange(offsets.size) * period_ms).max() <= 0.4 * period_ms + 1.0
    assert len(uploads[0].imu.offset_ms) == rate * 10
    assert len(uploads[-1].imu.offset_ms) == rate * 2  # 62 s trip: a 2 s last slice


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    config = SimulationConfig(devices=2, duration_s=200.0, seed=9, trip_seconds=(90.0, 120.0))

    def run(seed_config: SimulationConfig, name: str) -> tuple[list[bytes], bytes]:
        simulator = FleetSimulator(seed_config)
        payloads = [upload.SerializeToString(deterministic=True) for upload in simulator.uploads()]
        simulator.write_ground_truth(tmp_path / name)
        return payloads, (tmp_path / name).read_bytes()

    first, second = run(config, "a.jsonl"), run(config, "b.jsonl")
    assert first == second
    other = run(SimulationConfig(devices=2, duration_s=200.0, seed=10, trip_seconds=(90.0, 120.0)), "c.jsonl")
    assert other[0] != first[0]


# ---------------------------------------------------------------- physics


def test_gravity_reads_9_81_in_device_axes_at_rest(clean_run: Run) -> None:
    for uploads in clean_run.by_trip.values():
        first = uploads[0]
        # Every trip starts with the vehicle parked for at least 4 s.
        resting = np.array(first.imu.offset_ms) < 3000
        device = np.stack([first.imu.accel_x, first.imu.accel_y, first.imu.accel_z], axis=1)[resting]
        mean = device.mean(axis=0)
        assert abs(np.linalg.norm(mean) - G) < 0.12
        expected = clean_run.profiles[first.device_id].mount_rotation @ np.array([0.0, 0.0, G])
        assert np.linalg.norm(mean - expected) < 0.15
        assert first.gps[0].speed_mps < 0.3
        # The mount is really tilted and turned: gravity is not on one device axis.
        assert np.max(np.abs(mean)) < G * 0.999


def test_longitudinal_acceleration_matches_gps_speed_derivative(clean_run: Run) -> None:
    measured, expected = [], []
    for trip_id in clean_run.by_trip:
        signals = clean_run.trip_signals(trip_id)
        times, longitudinal = signals["times"], signals["accelerometer"][:, 0]
        gps_times, gps_speed = signals["gps_times"], signals["gps_speed"]
        for index in range(gps_times.size - 1):
            start, end = gps_times[index], gps_times[index + 1]
            inside = (times >= start) & (times < end)
            measured.append(float(longitudinal[inside].mean()))
            expected.append((gps_speed[index + 1] - gps_speed[index]) / (end - start))
    measured_array, expected_array = np.array(measured), np.array(expected)
    assert np.std(expected_array) > 0.3  # the vehicles really accelerate and brake
    assert np.corrcoef(measured_array, expected_array)[0, 1] > 0.95
    assert np.sqrt(np.mean((measured_array - expected_array) ** 2)) < 0.25


def test_lateral_acceleration_is_speed_times_yaw_rate(clean_run: Run) -> None:
    for trip_id in list(clean_run.by_trip)[:3]:
        signals = clean_run.trip_signals(trip_id)
        lateral = _smoothed(signals["accelerometer"][:, 1], 25)
        yaw_rate = _smoothed(signals["gyroscope"][:, 2], 25)
        speed = np.interp(signals["times"], signals["gps_times"], signals["gps_speed"])
        turning = np.abs(yaw_rate) > 0.15
        assert turning.sum() > 50
        assert np.median(np.abs(lateral[turning] - speed[turning] * yaw_rate[turning])) < 0.5


def test_normal_driving_stays_gentle_and_harsh_events_stand_out(event_run: Run) -> None:
    events_by_trip: dict[str, list[GroundTruthEvent]] = defaultdict(list)
    for event in event_run.simulator.ground_truth:
        events_by_trip[event.trip_id].append(event)
    peaks: dict[str, list[float]] = defaultdict(list)
    for trip_id in event_run.by_trip:
        signals = event_run.trip_signals(trip_id)
        times = signals["times"]
        rate = event_run.by_trip[trip_id][0].sample_rate_hz
        longitudinal = _smoothed(signals["accelerometer"][:, 0], rate // 2)
        lateral = _smoothed(signals["accelerometer"][:, 1], rate // 2)
        quiet = np.ones(times.size, dtype=bool)
        for event in events_by_trip[trip_id]:
            window = (times >= event.started_at - 2.0) & (times <= event.ended_at + 2.0)
            quiet &= ~window
            inside = (times >= event.started_at) & (times <= event.ended_at)
            if event.kind == "harsh_braking":
                peaks[event.kind].append(float(-longitudinal[inside].min()))
            elif event.kind == "harsh_acceleration":
                peaks[event.kind].append(float(longitudinal[inside].max()))
            elif event.kind == "harsh_cornering":
                peaks[event.kind].append(float(np.abs(lateral[inside]).max()))
        # Normal driving ramps over seconds; over one second the body's bounce on rough road (±1 m/s² at
        # 1-2 Hz in the fitted model) averages out.
        for axis in (0, 1):
            assert np.abs(_smoothed(signals["accelerometer"][:, axis], rate)[quiet]).max() < 0.28 * G
    assert min(peaks["harsh_braking"]) > 0.42 * G
    assert min(peaks["harsh_acceleration"]) > 0.33 * G
    assert min(peaks["harsh_cornering"]) > 0.42 * G


# ---------------------------------------------------------------- ground truth


def test_ground_truth_has_every_kind_with_expected_magnitudes(event_run: Run) -> None:
    events = event_run.simulator.ground_truth
    kinds = {event.kind for event in events}
    assert kinds == set(RISKY_KINDS) | set(CONFOUNDER_KINDS)
    for event in events:
        assert event.risky == (event.kind in RISKY_KINDS)
        if event.kind == "harsh_braking":
            assert event.peak_magnitude >= 0.45 * G and event.detail["seconds_over_threshold"] >= 0.5
            assert event.detail["speed_change_mps"] < -3.0  # GPS speed really drops
        elif event.kind == "harsh_acceleration":
            assert event.peak_magnitude >= 0.35 * G and event.detail["speed_change_mps"] > 3.0
        elif event.kind == "harsh_cornering":
            assert event.peak_magnitude >= 0.45 * G
        elif event.kind == "speeding":
            assert event.peak_magnitude > 10.0 and event.detail["seconds_over_threshold"] >= 5.0
            assert RoadMap.default().speed_limit_at(event.latitude, event.longitude) is not None
        assert event.event_type.startswith("EVENT_TYPE_")
    per_device: dict[str, list[GroundTruthEvent]] = defaultdict(list)
    for event in events:
        per_device[event.device_id].append(event)
    for device_events in per_device.values():
        device_events.sort(key=lambda event: event.started_at)
        for before, after in itertools.pairwise(device_events):
            assert after.started_at - before.ended_at >= 20.0


def test_ground_truth_points_at_the_uploads_it_falls_in(event_run: Run, tmp_path: Path) -> None:
    uploads = {upload.upload_id: upload for upload in event_run.uploads}
    trips = {trip.trip_id: trip for trip in event_run.simulator.trips}
    for event in event_run.simulator.ground_truth:
        assert event.upload_ids and all(upload_id in uploads for upload_id in event.upload_ids)
        assert {uploads[upload_id].trip_id for upload_id in event.upload_ids} == {event.trip_id}
        first = timestamp_to_seconds(uploads[event.upload_ids[0]].started_at)
        assert first <= event.started_at < first + 10.0
        assert event.started_at >= trips[event.trip_id].started_at + 1.0
        assert event.ended_at <= trips[event.trip_id].ended_at
    event_run.simulator.write_ground_truth(tmp_path / "truth.jsonl")
    trip_records, event_records = read_ground_truth_lines(tmp_path / "truth.jsonl")
    assert len(trip_records) == len(trips) and len(event_records) == len(event_run.simulator.ground_truth)
    assert {"distance_km", "duration_s", "upload_count"} <= set(trip_records[0])
    assert {"event_id", "kind", "risky", "upload_ids", "started_at", "peak_magnitude"} <= set(event_records[0])


def test_confounders_leave_gps_speed_alone_but_shake_the_imu(event_run: Run) -> None:
    checked: defaultdict[str, int] = defaultdict(int)
    for event in event_run.simulator.ground_truth:
        if event.kind not in CONFOUNDER_KINDS:
            continue
        signals = event_run.trip_signals(event.trip_id)
        fixes = (signals["gps_times"] >= event.started_at - 1.0) & (signals["gps_times"] <= event.ended_at + 1.0)
        speeds = signals["gps_speed"][fixes]
        # Normal driving at most (0.25 g), unlike the ~5 m/s per second of a harsh stop.
        assert np.all(np.diff(speeds) > -0.25 * G - 0.3)
        times = signals["times"]
        inside = (times >= event.started_at) & (times <= event.ended_at)
        if event.kind in ("pothole", "speed_bump"):
            vertical = signals["accelerometer"][inside, 2] - G
            assert np.abs(vertical).max() > 1.5
            rate = event_run.by_trip[event.trip_id][0].sample_rate_hz
            longitudinal = _smoothed(signals["accelerometer"][:, 0], rate // 2)[inside]
            assert np.abs(longitudinal).max() < 0.3 * G
        checked[event.kind] += 1
    assert set(checked) == set(CONFOUNDER_KINDS)


def test_mount_moved_changes_where_gravity_points(event_run: Run) -> None:
    moves = [event for event in event_run.simulator.ground_truth if event.kind == "mount_moved"]
    assert moves
    for event in moves:
        assert 10.0 <= abs(event.detail["yaw_change_deg"]) <= 45.0
        before = event_run.mount_at(event.device_id, event.started_at - 0.1)
        after = event_run.mount_at(event.device_id, event.ended_at + 0.1)
        assert not np.allclose(before, after)


# ---------------------------------------------------------------- drift scenarios


def _rest_gravity(uploads: list[upload_pb2.Upload]) -> float:
    norms = []
    for upload in uploads:
        if upload.sequence != 0:
            continue
        resting = np.array(upload.imu.offset_ms) < 3000
        device = np.stack([upload.imu.accel_x, upload.imu.accel_y, upload.imu.accel_z], axis=1)[resting]
        norms.append(float(np.linalg.norm(device.mean(axis=0))))
    return float(np.mean(norms))


def test_scenarios_are_listed_and_unknown_names_refused() -> None:
    assert list_scenarios() == ["firmware-accel-scale", "new-vehicle-mix", "sample-rate-change", "winter-roads"]
    with pytest.raises(ValueError, match="unknown scenario"):
        FleetSimulator(SimulationConfig(devices=1, scenario="summer-holidays"))


def test_firmware_scenario_scales_accel_and_reports_the_new_version() -> None:
    config = SimulationConfig(devices=3, duration_s=150.0, seed=4, trip_seconds=(120.0, 140.0))
    healthy = list(FleetSimulator(config).uploads())
    drifted = list(FleetSimulator(replace(config, scenario="firmware-accel-scale")).uploads())
    assert {upload.firmware_version for upload in healthy} == {"2.4.1"}
    assert {upload.firmware_version for upload in drifted} == {"2.5.0"}
    assert _rest_gravity(healthy) == pytest.approx(G, abs=0.1)
    assert _rest_gravity(drifted) == pytest.approx(1.08 * G, abs=0.1)


def test_scenario_can_start_later_in_the_run() -> None:
    scenario = SCENARIOS["sample-rate-change"].starting_at(300.0)
    config = SimulationConfig(devices=4, duration_s=700.0, seed=4, trip_seconds=(120.0, 200.0), scenario=scenario)
    simulator = FleetSimulator(config)
    rates_by_trip_start: dict[bool, set[int]] = defaultdict(set)
    trip_starts = {}
    uploads = list(simulator.uploads())
    for trip in simulator.trips:
        trip_starts[trip.trip_id] = trip.started_at
    for upload in uploads:
        late = trip_starts[upload.trip_id] - config.start_time >= 300.0
        rates_by_trip_start[late].add(upload.sample_rate_hz)
    assert rates_by_trip_start == {False: {50}, True: {25}}


def test_new_vehicle_mix_is_mostly_trucks_and_buses() -> None:
    def heavy_share(scenario: str | None) -> float:
        devices = FleetSimulator(SimulationConfig(devices=40, seed=2, scenario=scenario)).devices
        return sum(profile.vehicle_type in ("truck", "bus") for profile in devices) / len(devices)

    assert heavy_share(None) < 0.3
    assert heavy_share("new-vehicle-mix") > 0.6


def test_winter_roads_brake_gentler_and_vibrate_more() -> None:
    config = SimulationConfig(
        devices=6, duration_s=600.0, seed=8, trip_seconds=(400.0, 600.0), event_rate_per_10min=5.0
    )
    dry = FleetSimulator(config)
    winter = FleetSimulator(replace(config, scenario="winter-roads"))

    def vertical_spread(simulator: FleetSimulator) -> float:
        spreads = []
        for upload in simulator.uploads():
            if min((fix.speed_mps for fix in upload.gps), default=0.0) > 8.0:
                spreads.append(float(np.std(np.array(upload.imu.accel_z))))
        return float(np.median(spreads))

    assert vertical_spread(winter) > 1.3 * vertical_spread(dry)
    dry_braking = [event.peak_magnitude for event in dry.ground_truth if event.kind == "harsh_braking"]
    winter_braking = [event.peak_magnitude for event in winter.ground_truth if event.kind == "harsh_braking"]
    assert dry_braking and winter_braking
    assert max(winter_braking) <= 0.5 * G < max(dry_braking)
    assert math.isclose(min(winter_braking), 0.475 * G, rel_tol=0.1)


def test_harsh_event_strength_and_pace_are_opt_in_knobs() -> None:
    """`harsh_peak_g` and `harsh_jerk_mps3` draw harsh events at real strength (the trainer's fleets); unset, the
    simulator's own ranges hold (the default fleet is byte-identical to one without the knobs)."""
    assert SimulationConfig().harsh_peak_g == () and SimulationConfig().harsh_jerk_mps3 is None
    ranges = (("harsh_braking", 0.2, 0.3), ("harsh_acceleration", 0.2, 0.3), ("harsh_cornering", 0.25, 0.35))
    run = Run(
        SimulationConfig(
            devices=6,
            duration_s=900.0,
            seed=21,
            trip_seconds=(300.0, 600.0),
            event_rate_per_10min=8.0,
            confounder_rate_per_10min=0.0,
            randomization=STEADY,
            harsh_peak_g=ranges,
            harsh_jerk_mps3=(5.0, 8.0),
        )
    )
    peaks: dict[str, list[float]] = defaultdict(list)
    for event in run.simulator.ground_truth:
        peaks[event.kind].append(event.peak_magnitude / G)
    for kind, lowest, highest in ranges:
        assert peaks[kind], kind
        # The measured peak is the commanded one (a turn's, at the speed it was entered with).
        assert lowest - 0.02 <= min(peaks[kind]) and max(peaks[kind]) <= highest + 0.02, (kind, peaks[kind])
    with pytest.raises(ValueError, match="harsh_peak_g"):
        SimulationConfig(harsh_peak_g=(("pothole", 0.2, 0.3),))
    with pytest.raises(ValueError, match="harsh_peak_g"):
        SimulationConfig(harsh_peak_g=(("harsh_braking", 0.5, 0.3),))
    with pytest.raises(ValueError, match="harsh_jerk_mps3"):
        SimulationConfig(harsh_jerk_mps3=(8.0, 5.0))


def test_swerves_and_gradual_everyday_turns_are_opt_in_knobs() -> None:
    """`swerve_share` makes harsh cornering an evasive lane change (lateral one way, then the other) and `turn_in_s`
    ramps everyday turns in over seconds, while harsh cornering stays thrown in at once (off by default)."""
    assert SimulationConfig().swerve_share == 0.0 and SimulationConfig().turn_in_s is None
    base = SimulationConfig(
        devices=3, duration_s=600.0, seed=5, trip_seconds=(300.0, 450.0), confounder_rate_per_10min=0.0,
        randomization=STEADY,
    )  # fmt: skip
    swerving = Run(
        replace(
            base,
            event_rate_per_10min=10.0,
            risky_mix=(("harsh_cornering", 1.0),),
            harsh_peak_g=(("harsh_cornering", 0.3, 0.4),),
            swerve_share=1.0,
        )
    )
    swerves = [event for event in swerving.simulator.ground_truth if event.kind == "harsh_cornering"]
    assert swerves and all(event.detail.get("swerve") == 1.0 for event in swerves)
    for event in swerves[:4]:
        assert 0.3 * G - 0.01 <= event.peak_magnitude <= 0.4 * G + 0.01
        signals = swerving.trip_signals(event.trip_id)
        inside = (signals["times"] >= event.started_at) & (signals["times"] <= event.ended_at)
        lateral = _smoothed(signals["accelerometer"][:, 1], 10)[inside]
        assert lateral.max() > 0.25 * G and lateral.min() < -0.25 * G, (lateral.min(), lateral.max())

    def lateral_build(config: SimulationConfig) -> tuple[float, float]:
        """The largest lateral acceleration of everyday turns and the fastest it changed (m/s³)."""
        run = Run(config)
        peak, build = 0.0, 0.0
        for trip_id in run.by_trip:
            signals = run.trip_signals(trip_id)
            lateral = _smoothed(signals["accelerometer"][:, 1], 25)
            peak = max(peak, float(np.abs(lateral).max()))
            build = max(build, float(np.abs(np.diff(lateral[::25]) / np.diff(signals["times"][::25])).max()))
        return peak, build

    hard_turns = replace(base, event_rate_per_10min=0.0, ordinary_turn_lateral_g=(0.35, 0.4))
    stepped_peak, stepped_build = lateral_build(hard_turns)
    eased_peak, eased_build = lateral_build(replace(hard_turns, turn_in_s=(2.5, 2.5)))
    assert stepped_peak > 0.3 * G and eased_peak > 0.2 * G, (stepped_peak, eased_peak)
    assert eased_build < 0.6 * stepped_build, (eased_build, stepped_build)
    print(f"swerves {len(swerves)}; everyday turns: peak {stepped_peak:.2f} / {eased_peak:.2f} m/s², "
          f"build {stepped_build:.1f} / {eased_build:.1f} m/s³ (stepped / turned in)")  # fmt: skip
