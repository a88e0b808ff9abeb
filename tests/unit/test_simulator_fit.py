"""The simulator's fitted noise, holders, sensors, clocks and GPS, its domain randomisation, and the fit report.

Run: python -m pytest tests/unit/test_simulator_fit.py -q
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

import numpy as np
import pytest

from michi.contracts import timestamp_to_seconds
from michi.contracts.v1 import upload_pb2
from michi.simulator import FleetSimulator, SimulationConfig, fit_report
from michi.simulator.hardware import (
    FIXED_DASHCAM,
    FIXED_DASHCAM_FIT,
    PHONE_HOLDER,
    PHONE_HOLDER_FIT,
    DomainRandomization,
)
from michi.simulator.road import RoadSurface
from michi.simulator.vibration import (
    coloured_noise,
    road_density,
    sampled_density,
    through_holder,
    transmissibility,
)
from michi.windows.features import FEATURE_NAMES
from michi.windows.upload import upload_from_proto
from services.ingest.domain.validation import UploadLimits, validate_upload

G = 9.80665
QUIET_GPS = DomainRandomization(gps_lag_s=(0.0, 0.0), gps_dropouts_per_10min=(0.0, 0.0))


def _run(config: SimulationConfig) -> tuple[FleetSimulator, list[upload_pb2.Upload]]:
    simulator = FleetSimulator(config)
    return simulator, list(simulator.uploads())


def _imu(upload: upload_pb2.Upload) -> tuple[np.ndarray, np.ndarray]:
    """(times in s, accelerometer (N, 3)) as ingest reads them."""
    imu = upload.imu
    times = np.array(imu.offset_us) / 1e6 if len(imu.offset_us) else np.array(imu.offset_ms) / 1000.0
    return times, np.stack([imu.accel_x, imu.accel_y, imu.accel_z], axis=1).astype(np.float64)


# ---------------------------------------------------------------- spectra


def test_coloured_noise_has_the_variance_of_its_sampled_density() -> None:
    rate = 50.0
    density = through_holder(road_density(1.3), 18.0, 3.0)
    frequencies = np.linspace(0.0, rate / 2.0, 20_001)
    expected = float(np.trapezoid(sampled_density(density, rate, frequencies), frequencies))
    noise = coloured_noise(np.random.default_rng(1), 40, 2_000, rate, density)
    assert noise.shape == (40, 2_000)
    assert float(noise.var()) == pytest.approx(expected, rel=0.08)


def test_a_slow_sensor_sees_fast_vibration_folded_back_and_damped() -> None:
    frequencies = np.linspace(0.1, 8.3, 500)
    wheel_hop_only = road_density(1.3, 1.0)
    folded = float(np.trapezoid(sampled_density(wheel_hop_only, 16.667, frequencies), frequencies))
    # A 12 Hz hump is above the 8.3 Hz Nyquist frequency: some of it aliases in, most is filtered out.
    assert 0.02 < folded < 0.5
    assert transmissibility(np.array([18.0]), 18.0, 3.0)[0] == pytest.approx(1.0 + 9.0, rel=0.01)
    assert transmissibility(np.array([1.0]), 18.0, 3.0)[0] == pytest.approx(1.0, abs=0.01)


def test_road_surface_grade_roughness_and_joints_follow_their_settings() -> None:
    road = RoadSurface.draw(np.random.default_rng(3), start_m=100.0, length_m=50_000.0, grade_std=0.04)
    positions = np.linspace(100.0, 50_100.0, 200_001)
    grade = road.grade_at(positions)
    assert float(np.std(grade)) == pytest.approx(0.04, rel=0.35)
    numeric_slope = np.gradient(grade, positions)
    assert np.allclose(road.grade_slope_at(positions)[1:-1], numeric_slope[1:-1], atol=1e-4)
    assert float(np.mean(road.roughness**2)) == pytest.approx(1.0, rel=0.1)
    assert road.joint_positions_m.size == pytest.approx(50 * 30, rel=0.15)
    # Joints stay below the smallest pothole: a harder hit is a confounder with its own ground truth.
    assert road.joint_amplitudes_mps2.max() == pytest.approx(3.0)
    flat = RoadSurface.draw(np.random.default_rng(3), start_m=0.0, length_m=1_000.0, grade_std=0.0)
    assert not np.any(flat.grade_at(np.linspace(0.0, 1_000.0, 11)))


# ---------------------------------------------------------------- domain randomisation


def test_hardware_is_drawn_widely_around_the_fit() -> None:
    randomization = DomainRandomization()
    drawn = [randomization.draw(np.random.default_rng([5, index])) for index in range(400)]
    vibration = np.array([hardware.vibration_scale for hardware in drawn])
    assert vibration.min() >= 0.5 and vibration.max() <= 10.0
    assert vibration.max() > 5.0 and vibration.min() < 0.7  # wide
    assert 1.1 < float(np.median(vibration)) < 2.2  # but mostly near the fit
    assert {hardware.holder for hardware in drawn} == {PHONE_HOLDER, FIXED_DASHCAM}
    assert {hardware.accelerometer_range_g for hardware in drawn} == {2.0, 4.0, 8.0, 16.0}
    for hardware in drawn:
        fit = hardware.fit
        assert fit.resonance_hz * math.sqrt(0.5) - 1e-9 <= hardware.resonance_hz <= fit.resonance_hz * math.sqrt(10.0)
        assert 0.0 <= hardware.gps_lag_s <= 1.5 and 0.0 <= hardware.gps_dropouts_per_10min <= 10.0
        assert hardware.sample_rate_hz is None and not hardware.microsecond_clock
        assert hardware.jitter <= (0.1 if hardware.holder == PHONE_HOLDER else 0.01)
    at_fit = DomainRandomization.at_fit(FIXED_DASHCAM, road_grade=0.02).draw(np.random.default_rng(1))
    assert (at_fit.holder, at_fit.resonance_hz, at_fit.vibration_scale) == (FIXED_DASHCAM, 55.0, 1.0)
    assert at_fit.accelerometer_range_g == FIXED_DASHCAM_FIT.accelerometer_range_g and at_fit.road_grade == 0.02
    with pytest.raises(ValueError, match="holder must be one of"):
        DomainRandomization.at_fit("suction_cup")


def test_hardware_draws_leave_vehicles_trips_and_ground_truth_alone() -> None:
    config = SimulationConfig(sensor_model="fitted", devices=3, duration_s=400.0, seed=12, trip_seconds=(150.0, 250.0))
    plain, _ = _run(dataclasses.replace(config, randomization=DomainRandomization.at_fit(PHONE_HOLDER)))
    wide, _ = _run(config)
    assert [profile.vehicle_type for profile in plain.devices] == [profile.vehicle_type for profile in wide.devices]
    assert [trip.trip_id for trip in plain.trips] == [trip.trip_id for trip in wide.trips]
    assert [event.to_dict() for event in plain.ground_truth] == [event.to_dict() for event in wide.ground_truth]


def test_fitted_and_before_fit_models_share_the_drive() -> None:
    config = SimulationConfig(sensor_model="fitted", devices=2, duration_s=300.0, seed=4, trip_seconds=(120.0, 200.0))
    before, before_uploads = _run(dataclasses.replace(config, sensor_model="before-fit"))
    fitted, fitted_uploads = _run(config)
    assert [event.to_dict() for event in before.ground_truth] == [event.to_dict() for event in fitted.ground_truth]
    assert [upload.upload_id for upload in before_uploads] == [upload.upload_id for upload in fitted_uploads]
    # Before the fit: offsets exactly on the millisecond grid of the rate.
    assert all(set(np.diff(np.array(upload.imu.offset_ms))) == {20} for upload in before_uploads)
    with pytest.raises(ValueError, match="sensor_model"):
        SimulationConfig(sensor_model="white")


# ---------------------------------------------------------------- sensors and clocks


def test_accelerometer_saturates_at_its_range_and_reports_whole_counts() -> None:
    tiny_range = dataclasses.replace(
        DomainRandomization(), ranges_g=(2.0,), bits=(12,), vibration=(6.0, 6.0), fixed_dashcam_share=0.0
    )
    config = SimulationConfig(
        sensor_model="fitted",
        devices=3,
        duration_s=400.0,
        seed=8,
        confounder_rate_per_10min=8.0,
        randomization=tiny_range,
    )
    _, uploads = _run(config)
    step = 4.0 * G / 2**12
    accelerometer = np.concatenate([_imu(upload)[1] for upload in uploads])
    assert np.abs(accelerometer).max() <= 2.0 * G + 1e-3
    assert np.mean(np.isclose(np.abs(accelerometer), 2.0 * G, atol=1e-3)) > 0.001  # some samples do clip
    counts = accelerometer / step
    assert np.allclose(counts, np.round(counts), atol=2e-3)


def test_timestamps_jitter_but_keep_the_rate_and_their_order() -> None:
    jittery = dataclasses.replace(DomainRandomization(), fixed_dashcam_share=0.0, phone_jitter=(0.1, 0.1))
    _, uploads = _run(
        SimulationConfig(sensor_model="fitted", devices=2, duration_s=200.0, seed=3, randomization=jittery)
    )
    for upload in uploads:
        offsets = np.array(upload.imu.offset_ms, dtype=np.int64)
        assert not upload.imu.offset_us  # the default fleet stamps milliseconds
        assert np.all(np.diff(offsets) > 0)
        grid = np.arange(offsets.size) * 20.0
        assert np.abs(offsets - grid).max() <= 0.4 * 20.0 + 1.0
        assert len(set(np.diff(offsets))) > 3
        if offsets.size == 500:
            assert np.mean(np.diff(offsets)) == pytest.approx(20.0, abs=0.1)


def test_randomised_rates_are_fractional_stamped_and_accepted_by_ingest() -> None:
    config = SimulationConfig(
        sensor_model="fitted", devices=8, duration_s=150.0, seed=6, sample_rate_range_hz=(10.0, 400.0)
    )
    simulator, uploads = _run(config)
    rates = {profile.device_id: profile.sample_rate_hz for profile in simulator.devices}
    assert all(10.0 <= rate <= 400.0 for rate in rates.values())
    assert len({round(rate) for rate in rates.values()}) == len(rates)
    assert any(rate != round(rate) for rate in rates.values())
    limits = UploadLimits()
    microsecond_devices = set()
    for upload in uploads:
        rate = rates[upload.device_id]
        assert upload.sample_rate_hz == round(rate)
        assert upload.sample_rate_exact_hz == (rate if rate != round(rate) else 0.0)
        if upload.imu.offset_us:
            microsecond_devices.add(upload.device_id)
            milliseconds = np.array(upload.imu.offset_ms, dtype=np.float64) * 1000.0
            assert np.abs(milliseconds - np.array(upload.imu.offset_us, dtype=np.float64)).max() < 1000.0
        assert validate_upload(upload, timestamp_to_seconds(upload.started_at) + 20.0, limits) == []
        data = upload_from_proto(upload_pb2.UploadReceived(upload=upload))
        if data.times_s.size >= 10:
            assert data.degenerate_reason() is None
            assert data.sample_rate_hz == pytest.approx(rate, rel=0.05)
    assert microsecond_devices and microsecond_devices != set(rates)


def test_default_fleet_uploads_are_accepted_by_ingest() -> None:
    """What `michi simulate` and `michi up` send at their default settings."""
    _, uploads = _run(SimulationConfig(sensor_model="fitted", devices=6, duration_s=300.0, seed=7))
    limits = UploadLimits()
    for upload in uploads:
        assert upload.sample_rate_hz == 50 and upload.sample_rate_exact_hz == 0.0
        assert validate_upload(upload, timestamp_to_seconds(upload.started_at) + 20.0, limits) == []


# ---------------------------------------------------------------- GPS


def _fix_speeds(uploads: list[upload_pb2.Upload]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    fixes: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for upload in uploads:
        start = timestamp_to_seconds(upload.started_at)
        fixes[upload.trip_id] += [(start + fix.offset_ms / 1000.0, fix.speed_mps) for fix in upload.gps]
    return {trip: (np.array([t for t, _ in items]), np.array([v for _, v in items])) for trip, items in fixes.items()}


def test_gps_fixes_lag_the_vehicle() -> None:
    config = SimulationConfig(sensor_model="fitted", devices=3, duration_s=400.0, seed=9, randomization=QUIET_GPS)
    _, on_time = _run(config)
    _, late = _run(dataclasses.replace(config, randomization=dataclasses.replace(QUIET_GPS, gps_lag_s=(1.5, 1.5))))
    punctual, lagging = _fix_speeds(on_time), _fix_speeds(late)
    shifted, unshifted = [], []
    for trip, (times, speeds) in lagging.items():
        reference_times, reference_speeds = punctual[trip]
        inside = times >= reference_times[0] + 2.0
        shifted.append(np.abs(speeds[inside] - np.interp(times[inside] - 1.5, reference_times, reference_speeds)))
        unshifted.append(np.abs(speeds[inside] - np.interp(times[inside], reference_times, reference_speeds)))
    # The same GPS noise draws: what remains is interpolating the 1 Hz reference (and its noise) half-way.
    assert float(np.mean(np.concatenate(shifted))) < 0.5 * float(np.mean(np.concatenate(unshifted)))


def test_gps_drops_out_for_a_few_seconds_at_a_time() -> None:
    lossy = dataclasses.replace(QUIET_GPS, gps_dropouts_per_10min=(10.0, 10.0))
    config = SimulationConfig(sensor_model="fitted", devices=4, duration_s=900.0, seed=2, randomization=lossy)
    _, uploads = _run(config)
    gaps = np.concatenate([np.diff(times) for times, _ in _fix_speeds(uploads).values()])
    long_gaps = gaps[gaps > 1.5]
    assert long_gaps.size >= 10
    assert long_gaps.max() <= 7.0 + 1.0 + 1e-6
    _, complete = _run(dataclasses.replace(config, randomization=QUIET_GPS))
    assert sum(len(upload.gps) for upload in uploads) < sum(len(upload.gps) for upload in complete)


# ---------------------------------------------------------------- the fit and its report


SMALL_GROUPS = tuple(dataclasses.replace(group, devices=4, trip_seconds=(200.0, 260.0)) for group in fit_report.GROUPS)


@pytest.fixture(scope="module")
def comparison() -> fit_report.Comparison:
    return fit_report.compare(SMALL_GROUPS)


def test_fitted_vibration_matches_the_real_phone_and_the_old_model_did_not(
    comparison: fit_report.Comparison,
) -> None:
    phone = SMALL_GROUPS[0].name
    moving = "vibration moving: per-second rms above 2 Hz, 3 axes (m/s², median)"
    stopped = "vibration stopped: per-second rms above 2 Hz, 3 axes (m/s², median)"
    real, before, after = (comparison.measures[phone, side] for side in ("real", "before", "after"))
    assert real[moving] == pytest.approx(0.82, abs=0.05)  # the recordings themselves
    assert before[moving] < 0.4 * real[moving]
    assert after[moving] == pytest.approx(real[moving], rel=0.25)
    assert after[stopped] == pytest.approx(real[stopped], rel=0.35)
    assert PHONE_HOLDER_FIT.accelerometer_bits == 12
    step = "accelerometer step (m/s², smallest difference)"
    assert after[step] == pytest.approx(4.0 * G / 2**12, rel=0.05)


def test_the_fit_brings_vibration_features_close_to_real_driving(comparison: fit_report.Comparison) -> None:
    rows = {row["feature"]: row for row in fit_report.feature_rows(comparison, SMALL_GROUPS)}
    for name in ("vertical_peak_to_peak_mps2", "vertical_jerk_max_mps3", "confounder_evidence"):
        before, after = float(rows[name]["before ks"]), float(rows[name]["after ks"])
        assert before > 0.6, (name, before)
        assert after < 0.3, (name, after)


def test_report_lists_every_feature_and_the_commit(comparison: fit_report.Comparison) -> None:
    report = fit_report.render(comparison, SMALL_GROUPS)
    assert "at commit `" in report and "`unknown`" not in report
    for name in FEATURE_NAMES:
        assert f"| `{name}`" in report
    for heading in ("## Method", "## Fit targets", "## Fitted parameters", "## Caveats"):
        assert heading in report


def test_weighted_statistics() -> None:
    values = np.array([0.0, 1.0, 2.0, 3.0])
    assert fit_report.weighted_quantile(values, np.ones(4), 0.5) == 1.0
    assert fit_report.weighted_quantile(values, np.array([0.0, 0.0, 0.0, 1.0]), 0.5) == 3.0
    same = fit_report.ks_statistic(values, values, np.ones(4), np.ones(4))
    apart = fit_report.ks_statistic(values, values + 10.0, np.ones(4), np.ones(4))
    assert (same, apart) == (0.0, 1.0)
    half = fit_report.ks_statistic(values, np.array([0.0, 1.0, 10.0, 11.0]), np.ones(4), np.ones(4))
    assert half == pytest.approx(0.5)
