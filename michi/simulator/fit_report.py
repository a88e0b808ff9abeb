"""The simulator against real normal driving: every window feature and noise measure, before and after the fit.

Run:
    python -m michi.simulator.fit_report                  # writes docs/simulator-fit.md (under a minute)
    python -m michi.simulator.fit_report --output -       # prints the report instead

Real side: the recordings of `datasets/real-driving` (`michi.recordings`), cut into the uploads their device
would send and run through the product's pipeline (per device, in order: `update_calibration`, then
`extract_windows`). Every real window is normal driving.

Simulated side: for each reference group (the Auckland phone, the comma dashcam) a fleet at the group's
sample rate with every device's hardware on the fit of the group's holder kind
(`DomainRandomization.at_fit`), once with the noise model before the fit (`sensor_model="before-fit"`,
byte-identical to the simulator before it) and once fitted; a third fleet draws hardware as the default
configuration does (domain randomisation). Only windows no injected event comes within a second of count.
The same pipeline cuts the windows. Simulated windows are weighted so their GPS speeds follow the real
group's (vibration grows with speed; the road map's speed mix is not what is fitted here), and the groups
are pooled in the real windows' proportions.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from michi.contracts.v1 import upload_pb2
from michi.recordings import received, recording_uploads, shared_recording
from michi.roads import RoadMap
from michi.simulator import road, vibration
from michi.simulator.config import DEFAULT_START_TIME, SimulationConfig
from michi.simulator.fleet import FleetSimulator
from michi.simulator.hardware import (
    ACCELEROMETER_SCALE_ERROR,
    FIXED_DASHCAM,
    FIXED_DASHCAM_FIT,
    GYROSCOPE_STEP_RADPS,
    PHONE_HOLDER,
    PHONE_HOLDER_FIT,
    DomainRandomization,
)
from michi.simulator.scenarios import Scenario
from michi.simulator.signals import (
    ACCELEROMETER_NOISE_DENSITY,
    GPS_DROPOUT_SECONDS,
    GYROSCOPE_NOISE_DENSITY,
)
from michi.windows.calibration import CalibrationSums, update_calibration
from michi.windows.features import FEATURE_NAMES, extract_windows
from michi.windows.signals import low_pass
from michi.windows.upload import UploadData, upload_from_proto

FloatArray = NDArray[np.float64]
REPOSITORY = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPOSITORY / "docs" / "simulator-fit.md"
# Seconds around an injected event whose windows and uploads are not normal driving.
EVENT_MARGIN_S = 1.0
# Moving and stopped seconds by GPS speed (m/s).
MOVING_MPS = 3.0
STOPPED_MPS = 0.3
SPEED_BIN_MPS = 2.0
# Features that are not noise: set by the comparison itself, or state of the pipeline rather than the signal.
NOT_NOISE = {
    "gps_speed_mps": "matched by construction (simulated windows are weighted to the real speeds)",
    "sample_rate_hz": "set by the comparison (each group is simulated at its recording's rate)",
    "calibration_confidence": "pipeline state: grows with minutes of driving (real: 1-6 minutes from a fresh device)",
}


@dataclass(frozen=True)
class ReferenceGroup:
    """Real recordings of one kind of device and how to simulate their like."""

    name: str
    recordings: tuple[str, ...]
    holder: str
    sample_rate_hz: float
    gyroscope: bool
    devices: int
    trip_seconds: tuple[float, float]
    seed: int
    bands_hz: tuple[tuple[float, float], ...]
    # Standard deviation of the road grade of the recording's roads (fitted with the rest).
    road_grade: float


GROUPS = (
    ReferenceGroup(
        name="phone (auckland-forward, auckland-backwards)",
        recordings=("auckland-forward", "auckland-backwards"),
        holder=PHONE_HOLDER,
        sample_rate_hz=16.667,
        gyroscope=False,
        devices=16,
        trip_seconds=(330.0, 400.0),
        seed=4101,
        bands_hz=((0.5, 2.0), (2.0, 5.0), (5.0, 8.0)),
        road_grade=0.05,
    ),
    ReferenceGroup(
        name="dashcam (comma2k19)",
        recordings=("comma2k19",),
        holder=FIXED_DASHCAM,
        sample_rate_hz=104.167,
        gyroscope=True,
        devices=12,
        trip_seconds=(240.0, 300.0),
        seed=4102,
        bands_hz=((0.5, 2.0), (2.0, 5.0), (5.0, 8.0), (8.0, 15.0), (15.0, 30.0), (30.0, 50.0)),
        road_grade=0.025,
    ),
)
MODELS = ("before", "after", "randomised")
# The recordings' cars (a Corolla, a RAV4) are taken as sedans; the default fleet mixes five vehicle types.
REFERENCE_VEHICLES = Scenario(
    name="fit-reference", description="Every vehicle a sedan, like the recordings' cars.", vehicle_mix={"sedan": 1.0}
)


@dataclass
class Measured:
    """The windows and the normal-driving uploads of one side of a comparison."""

    features: FloatArray  # (windows, features)
    weights: FloatArray  # (windows,)
    # Uploads no injected event comes near (vibration measures), and every upload (clock and GPS measures).
    uploads: list[UploadData] = field(default_factory=list)
    all_uploads: list[UploadData] = field(default_factory=list)

    @property
    def speeds(self) -> FloatArray:
        return self.features[:, FEATURE_NAMES.index("gps_speed_mps")]


# ---------------------------------------------------------------- the pipeline


def windows_in_order(datas: Iterable[UploadData]) -> list[tuple[UploadData, FloatArray, FloatArray, FloatArray]]:
    """(upload, window starts, window ends, features) per analysable upload, calibration chained per device."""
    sums: dict[str, CalibrationSums] = {}
    result = []
    for data in datas:
        if data.degenerate_reason() is not None:
            continue
        after, calibration = update_calibration(sums.get(data.device_id) or CalibrationSums(), data)
        sums[data.device_id] = after
        windows = extract_windows(data, calibration)
        result.append((data, windows.starts_s, windows.ends_s, windows.features.astype(np.float64)))
    return result


def real_side(group: ReferenceGroup) -> Measured:
    datas: list[UploadData] = []
    for name in group.recordings:
        recording = shared_recording(name)
        sent = recording_uploads(recording, device_id=name, trip_id=name, started_at_s=DEFAULT_START_TIME)
        datas += [upload_from_proto(received(upload)) for upload in sent]
    windows = windows_in_order(datas)
    features = np.concatenate([item[3] for item in windows])
    uploads = [item[0] for item in windows]
    return Measured(features, np.ones(features.shape[0]), uploads, uploads)


def simulated_side(group: ReferenceGroup, model: str) -> Measured:
    randomization = (
        DomainRandomization() if model == "randomised" else DomainRandomization.at_fit(group.holder, group.road_grade)
    )
    config = SimulationConfig(
        devices=group.devices,
        duration_s=group.trip_seconds[1] + 30.0,
        seed=group.seed,
        trip_seconds=group.trip_seconds,
        sample_rate_range_hz=(group.sample_rate_hz, group.sample_rate_hz),
        sensor_model="before-fit" if model == "before" else "fitted",
        randomization=randomization,
        scenario=REFERENCE_VEHICLES,
    )
    simulator = FleetSimulator(config, road_map=RoadMap.default())
    uploads = []
    for upload in simulator.uploads():
        if not group.gyroscope:
            # The reference phone has no gyroscope: its simulated like sends none either.
            for name in ("gyro_x", "gyro_y", "gyro_z"):
                upload.imu.ClearField(name)
            upload.gyroscope = upload_pb2.GYROSCOPE_ABSENT
        uploads.append(upload)
    events: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for event in simulator.ground_truth:
        events[event.trip_id].append((event.started_at - EVENT_MARGIN_S, event.ended_at + EVENT_MARGIN_S))
    windows = windows_in_order(upload_from_proto(upload_pb2.UploadReceived(upload=upload)) for upload in uploads)
    rows, quiet_uploads = [], []
    for data, starts, ends, features in windows:
        spans = events.get(data.trip_id, [])
        begin, end = data.started_at_s + starts, data.started_at_s + ends
        normal = np.ones(starts.size, dtype=bool)
        for first, last in spans:
            normal &= (end <= first) | (begin >= last)
        rows.append(features[normal])
        upload_end = data.started_at_s + data.duration_s
        if all(upload_end <= first or data.started_at_s >= last for first, last in spans):
            quiet_uploads.append(data)
    features = np.concatenate(rows)
    return Measured(features, np.ones(features.shape[0]), quiet_uploads, [item[0] for item in windows])


def match_speeds(simulated: Measured, real: Measured) -> None:
    """Weight simulated windows so their speed histogram is the real one (bins without a simulated window drop)."""
    edges = np.arange(0.0, 60.0 + SPEED_BIN_MPS, SPEED_BIN_MPS)
    real_counts = np.histogram(np.clip(real.speeds, 0.0, 59.9), edges)[0].astype(np.float64)
    bins = np.clip(np.digitize(np.clip(simulated.speeds, 0.0, 59.9), edges) - 1, 0, edges.size - 2)
    simulated_counts = np.bincount(bins, minlength=edges.size - 1).astype(np.float64)
    share = real_counts / max(real_counts.sum(), 1.0)
    simulated.weights = np.where(simulated_counts[bins] > 0, share[bins] / np.maximum(simulated_counts[bins], 1.0), 0.0)


# ---------------------------------------------------------------- statistics


def weighted_quantile(values: FloatArray, weights: FloatArray, quantile: float) -> float:
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    if cumulative.size == 0 or cumulative[-1] <= 0:
        return math.nan
    position = int(np.searchsorted(cumulative, quantile * cumulative[-1]))
    return float(values[order][min(position, values.size - 1)])


def ks_statistic(first: FloatArray, second: FloatArray, first_weights: FloatArray, second_weights: FloatArray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic of weighted samples: the largest gap between their CDFs."""

    def cdf(values: FloatArray, weights: FloatArray, at: FloatArray) -> FloatArray:
        order = np.argsort(values, kind="stable")
        cumulative = np.concatenate([[0.0], np.cumsum(weights[order])])
        return np.asarray(cumulative[np.searchsorted(values[order], at, side="right")] / cumulative[-1])

    grid = np.unique(np.concatenate([first, second]))
    return float(np.max(np.abs(cdf(first, first_weights, grid) - cdf(second, second_weights, grid))))


def pooled(sides: Sequence[Measured], shares: Sequence[float]) -> tuple[FloatArray, FloatArray]:
    """Features and weights of several groups together, each group weighing its share."""
    features = np.concatenate([side.features for side in sides])
    weights = np.concatenate(
        [side.weights / max(side.weights.sum(), 1e-12) * share for side, share in zip(sides, shares, strict=True)]
    )
    return features, weights


# ---------------------------------------------------------------- noise measures


def _vertical_and_horizontal(data: UploadData) -> tuple[FloatArray, FloatArray]:
    """Acceleration along the upload's mean gravity, and the horizontal rest (N, 3)."""
    up = data.accel.mean(axis=0)
    up = up / np.linalg.norm(up)
    vertical = data.accel @ up
    return vertical, data.accel - np.outer(vertical, up)


def _speed_at(data: UploadData, times: FloatArray) -> FloatArray | None:
    if not data.has_gps:
        return None
    inside = (times >= data.gps_times_s[0] - 0.5) & (times <= data.gps_times_s[-1] + 0.5)
    return np.where(inside, np.interp(times, data.gps_times_s, data.speed_mps), np.nan)


def _welch(values: FloatArray, rate: float, length: int) -> FloatArray | None:
    """One-sided PSD of evenly sampled values (Hann windows, half overlap), or None if too short."""
    if values.size < length:
        return None
    window = np.hanning(length)
    starts = range(0, values.size - length + 1, length // 2)
    power = np.mean(
        [
            np.abs(np.fft.rfft((values[at : at + length] - values[at : at + length].mean()) * window)) ** 2
            for at in starts
        ],
        axis=0,
    )
    density = power / (rate * float((window**2).sum()))
    density[1:-1] *= 2.0
    return np.asarray(density, dtype=np.float64)


def noise_measures(measured: Measured, group: ReferenceGroup) -> dict[str, float]:
    """The measures the noise models are fitted to (see the report's "Fit targets")."""
    uploads = measured.uploads
    rate = group.sample_rate_hz
    length = 2 ** int(math.log2(rate * 4.0))
    frequencies = np.fft.rfftfreq(length, 1.0 / rate)
    moving_rms, stopped_rms, jerks, high_passed, slow = [], [], [], [], []
    vertical_spectra, horizontal_spectra, gyro_spectra = [], [], []
    rotation, steps, jitter = [], [], []
    for data in uploads:
        times = data.times_s
        period = np.diff(times)
        jitter.append(float(np.std(period) / np.median(period)))
        residual = data.accel - low_pass(data.accel, data.sample_rate_hz, 2.0)
        block = np.floor(times).astype(np.int64)
        counts = np.bincount(block)
        rms = np.sqrt(np.bincount(block, np.einsum("ij,ij->i", residual, residual)) / np.maximum(counts, 1))
        speed = _speed_at(data, np.arange(counts.size, dtype=np.float64) + 0.5)
        if speed is None:
            continue
        full = counts >= 0.5 * data.sample_rate_hz
        moving_rms += rms[full & (speed > MOVING_MPS)].tolist()
        stopped_rms += rms[full & (speed < STOPPED_MPS)].tolist()
        for axis in range(3):
            values = np.unique(data.accel[:, axis])
            if values.size > 1:
                steps.append(float(np.min(np.diff(values))))
        fix_speeds = data.speed_mps
        if fix_speeds.size < 2 or fix_speeds.min() <= MOVING_MPS:
            continue
        vertical, horizontal = _vertical_and_horizontal(data)
        jerks += (np.abs(np.diff(vertical)) * data.sample_rate_hz).tolist()
        high_passed += (vertical - low_pass(vertical, data.sample_rate_hz, 2.0)).tolist()
        # What the 2.5 Hz low-passed features see beyond the upload's mean: grade, manoeuvres, body sway.
        smooth = low_pass(horizontal, data.sample_rate_hz, 1.0)
        slow.append(float(np.sqrt(np.mean(np.sum((smooth - smooth.mean(axis=0)) ** 2, axis=1)))))
        grid = np.arange(times[0], times[-1], 1.0 / rate)
        vertical_spectrum = _welch(np.interp(grid, times, vertical), rate, length)
        if vertical_spectrum is None:
            continue
        vertical_spectra.append(vertical_spectrum)
        horizontal_power = [_welch(np.interp(grid, times, horizontal[:, axis]), rate, length) for axis in range(3)]
        horizontal_spectra.append(np.sum([power for power in horizontal_power if power is not None], axis=0))
        if group.gyroscope and data.has_gyroscope:
            gyro_power = [_welch(np.interp(grid, times, data.gyro[:, axis]), rate, length) for axis in range(3)]
            gyro_spectra.append(np.sum([power for power in gyro_power if power is not None], axis=0))
            spin = np.linalg.norm(low_pass(data.gyro - np.median(data.gyro, axis=0), data.sample_rate_hz, 10.0), axis=1)
            rotation.append(float(np.median(spin)))

    def band(spectra: list[FloatArray], low: float, high: float) -> float:
        if not spectra:
            return math.nan
        mean = np.mean(spectra, axis=0)
        inside = (frequencies >= low) & (frequencies < high)
        return float(np.sqrt(mean[inside].sum() * (frequencies[1] - frequencies[0])))

    measures = {
        "vibration moving: per-second rms above 2 Hz, 3 axes (m/s², median)": _median(moving_rms),
        "vibration stopped: per-second rms above 2 Hz, 3 axes (m/s², median)": _median(stopped_rms),
    }
    for low, high in group.bands_hz:
        measures[f"vertical PSD band {low:g}-{high:g} Hz, moving (rms m/s²)"] = band(vertical_spectra, low, high)
    measures["horizontal PSD band 0.5-2.5 Hz, moving (rms m/s², 2 axes)"] = band(horizontal_spectra, 0.5, 2.5)
    measures[f"horizontal PSD band 2.5-{rate / 2:.0f} Hz, moving (rms m/s², 2 axes)"] = band(
        horizontal_spectra, 2.5, rate / 2.0
    )
    measures["horizontal below 1 Hz about the upload mean, moving (rms m/s², 2 axes, median)"] = _median(slow)
    measures["vertical jerk (change per sample x rate), moving (m/s³, median)"] = _median(jerks)
    for percentile in (99.0, 99.9):
        measures[f"vertical jerk (change per sample x rate), moving (m/s³, {percentile:g}th percentile)"] = (
            float(np.percentile(jerks, percentile)) if jerks else math.nan
        )
    values = np.asarray(high_passed)
    measures["vertical above 2 Hz, moving: kurtosis (Gaussian: 3)"] = (
        float(np.mean(values**4) / np.mean(values**2) ** 2) if values.size else math.nan
    )
    if group.gyroscope:
        measures["gyro PSD band 0.5-2 Hz, moving (rms rad/s, 3 axes)"] = band(gyro_spectra, 0.5, 2.0)
        measures[f"gyro PSD band 2-{rate / 2:.0f} Hz, moving (rms rad/s, 3 axes)"] = band(gyro_spectra, 2.0, rate / 2.0)
        measures["rotation magnitude, 10 Hz low-pass (rad/s, median per upload)"] = _median(rotation)
    measures["timestamp jitter (std of the step / median step)"] = _median(jitter)
    measures["accelerometer step (m/s², smallest difference)"] = float(np.median(steps)) if steps else math.nan
    measures["GPS: accelerometer leads GPS dv/dt by (s)"] = gps_delay_s(measured.all_uploads)
    measures["GPS: gaps over 1.5 s per 10 minutes"] = gps_gaps_per_10min(measured.all_uploads)
    return measures


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


def _device_series(uploads: list[UploadData]) -> dict[str, list[UploadData]]:
    by_trip: dict[str, list[UploadData]] = defaultdict(list)
    for data in uploads:
        by_trip[data.trip_id].append(data)
    return by_trip


def gps_delay_s(uploads: list[UploadData]) -> float:
    """The delay of GPS behind the accelerometer that best explains 1 s accelerometer means by GPS dv/dt and
    speed x heading rate (any mount: the regression finds the axes), over every trip, in 0.05 s steps."""
    errors = np.zeros(41)
    delays = np.arange(41) * 0.05
    for trip in _device_series(uploads).values():
        times = np.concatenate([data.started_at_s + data.times_s for data in trip])
        accel = np.concatenate([data.accel for data in trip])
        fix_times = np.concatenate([data.started_at_s + data.gps_times_s for data in trip])
        if fix_times.size < 20:
            continue
        speed = np.concatenate([data.speed_mps for data in trip])
        heading = np.degrees(np.unwrap(np.radians(np.concatenate([data.heading_deg for data in trip]))))
        order = np.argsort(fix_times)
        fix_times, speed, heading = fix_times[order], speed[order], heading[order]
        grid = np.arange(math.ceil(max(fix_times[0], times[0])) + 3, math.floor(min(fix_times[-1], times[-1])) - 3)
        if grid.size < 20:
            continue
        gps_speed = np.interp(grid, fix_times, speed)
        yaw_rate = -np.radians(np.gradient(np.interp(grid, fix_times, heading), grid))
        design = np.column_stack([np.gradient(gps_speed, grid), gps_speed * yaw_rate, np.ones_like(grid)])
        smooth = low_pass(accel, 1.0 / float(np.median(np.diff(times))), 1.0)
        for index, delay in enumerate(delays):
            means = np.column_stack([np.interp(grid - delay, times, smooth[:, axis]) for axis in range(3)])
            coefficients = np.linalg.lstsq(design, means, rcond=None)[0]
            errors[index] += float(np.sum((design @ coefficients - means) ** 2))
    return float(delays[int(np.argmin(errors))]) if errors.any() else math.nan


def gps_gaps_per_10min(uploads: list[UploadData]) -> float:
    gaps, seconds = 0, 0.0
    for trip in _device_series(uploads).values():
        fix_times = np.sort(np.concatenate([data.started_at_s + data.gps_times_s for data in trip]))
        if fix_times.size < 2:
            continue
        gaps += int(np.count_nonzero(np.diff(fix_times) > 1.5))
        seconds += float(fix_times[-1] - fix_times[0])
    return gaps / seconds * 600.0 if seconds > 0 else math.nan


# ---------------------------------------------------------------- the report


@dataclass
class Comparison:
    real: dict[str, Measured]
    simulated: dict[tuple[str, str], Measured]  # (group, model)
    measures: dict[tuple[str, str], dict[str, float]]  # (group, side)


def compare(groups: Sequence[ReferenceGroup] = GROUPS) -> Comparison:
    comparison = Comparison({}, {}, {})
    for group in groups:
        real = real_side(group)
        comparison.real[group.name] = real
        comparison.measures[group.name, "real"] = noise_measures(real, group)
        for model in MODELS:
            simulated = simulated_side(group, model)
            match_speeds(simulated, real)
            comparison.simulated[group.name, model] = simulated
            if model != "randomised":
                comparison.measures[group.name, model] = noise_measures(simulated, group)
    return comparison


def _commit() -> str:
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPOSITORY, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "michi/simulator"], cwd=REPOSITORY, capture_output=True, text=True
    )
    suffix = " (with uncommitted changes to michi/simulator)" if dirty.returncode == 0 and dirty.stdout.strip() else ""
    return completed.stdout.strip() + suffix


def _number(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1:
        return f"{value:.2f}"
    if magnitude >= 0.01:
        return f"{value:.3f}"
    return f"{value:.4f}"


def feature_rows(comparison: Comparison, groups: Sequence[ReferenceGroup]) -> list[dict[str, float | str]]:
    real_sides = [comparison.real[group.name] for group in groups]
    shares = [side.features.shape[0] for side in real_sides]
    shares = [share / sum(shares) for share in shares]
    real_features, real_weights = pooled(real_sides, shares)
    rows: list[dict[str, float | str]] = []
    pooled_models = {
        model: pooled([comparison.simulated[group.name, model] for group in groups], shares) for model in MODELS
    }
    for index, name in enumerate(FEATURE_NAMES):
        row: dict[str, float | str] = {
            "feature": name,
            "real": weighted_quantile(real_features[:, index], real_weights, 0.5),
        }
        for model, (features, weights) in pooled_models.items():
            row[f"{model} median"] = weighted_quantile(features[:, index], weights, 0.5)
            row[f"{model} ks"] = ks_statistic(real_features[:, index], features[:, index], real_weights, weights)
        for group in groups:
            real = comparison.real[group.name]
            simulated = comparison.simulated[group.name, "after"]
            row[f"{group.name} ks"] = ks_statistic(
                real.features[:, index], simulated.features[:, index], real.weights, simulated.weights
            )
        rows.append(row)
    return rows


def _parameter_rows(groups: Sequence[ReferenceGroup]) -> list[tuple[str, str, str]]:
    """(parameter, value, where it came from) for every fitted value."""
    phone, dashcam = PHONE_HOLDER_FIT, FIXED_DASHCAM_FIT
    auckland = "Auckland phone (Blu-Tack on a Corolla's dash, 16.7 Hz, no gyroscope)"
    comma = "comma2k19 (comma EON on a RAV4's windshield, 104 Hz, gyroscope)"
    grades = ", ".join(f"{group.name.split(' ')[0]} {group.road_grade:.1%}" for group in groups)
    return [
        (
            "road vibration at the body at 10 m/s",
            f"{vibration.ROAD_RMS_AT_10_MPS:g} m/s² rms x vehicle harshness (sedan 0.9)",
            f"{auckland}: per-second vibration while moving (0.82 m/s² median, 3 axes, engine included) and "
            "vertical PSD bands",
        ),
        (
            "road vibration speed exponent",
            f"{vibration.ROAD_SPEED_EXPONENT:g}",
            "Auckland per-second vibration by speed: 0.72-0.75 m/s² at 3-8 m/s, 0.80 at 8-13, 0.83-0.85 at 13-18",
        ),
        (
            "body bounce damping; wheel hop",
            f"{vibration.BODY_DAMPING:g}; {vibration.WHEEL_HOP_HZ:g} Hz, damping {vibration.WHEEL_HOP_DAMPING:g}, "
            f"{vibration.WHEEL_HOP_SHARE:.0%} of the road's power",
            "joint least-squares fit of both recordings' vertical PSD bands (comma2k19's second hump at 10-14 Hz)",
        ),
        (
            "road roughness",
            f"log-normal factor per {road.ROUGHNESS_CELL_M:g} m, spread {road.ROUGHNESS_SPREAD:g}",
            "Auckland per-second vertical vibration: 10th-90th percentile 0.36-1.08 m/s² at similar speeds",
        ),
        (
            "road joints and cracks",
            f"{road.JOINTS_PER_KM:g} per km, peak {road.JOINT_MEDIAN_MPS2:g} m/s² median, log-spread "
            f"{road.JOINT_SPREAD:g}, at most {road.JOINT_MAX_MPS2:g} m/s²",
            "vertical kurtosis (Auckland 6-9, comma2k19 20) and jerk percentiles; harder hits are potholes (confounders)",
        ),
        (
            "road grade (standard deviation)",
            f"{grades} (randomised: {DomainRandomization().road_grade[0]:.0%}-"
            f"{DomainRandomization().road_grade[1]:.0%})",
            "comma2k19: forward acceleration minus CAN speed derivative, 0.28 m/s² (r 0.86 with the gyroscope's "
            "pitch); Auckland: longitudinal features (its README: Ayr Street 11 %)",
        ),
        (
            "engine idle shake",
            f"hump at {vibration.ENGINE_HZ:g} Hz, damping {vibration.ENGINE_DAMPING:g}; "
            f"{phone.engine_rms_mps2:g} m/s² (phone), {dashcam.engine_rms_mps2:g} m/s² (dashcam)",
            "auckland-backwards' 28 stopped seconds (0.34 m/s², 3 axes, spread over 2-8 Hz); comma2k19 has no stop: "
            "its 2-8 Hz bands leave room for little",
        ),
        (
            "phone holder: resonance, Q",
            f"{phone.resonance_hz:g} Hz, {phone.quality:g}",
            "above the phone's 8.3 Hz Nyquist frequency: only the aliased tail is fitted (typical of phone holders)",
        ),
        (
            "fixed dashcam: resonance, Q",
            f"{dashcam.resonance_hz:g} Hz, {dashcam.quality:g}",
            f"{comma}: vertical and fore-aft PSD rising towards 52 Hz",
        ),
        (
            "vibration gain vertical / longitudinal / lateral",
            f"phone {phone.vertical_gain:g} / {phone.longitudinal_gain:g} / {phone.lateral_gain:g}; "
            f"dashcam {dashcam.vertical_gain:g} / {dashcam.longitudinal_gain:g} / {dashcam.lateral_gain:g}",
            "horizontal against vertical PSD bands of each recording; the dashcam's vertical against the phone's fit",
        ),
        (
            "rotation per m/s² of road, roll / pitch / yaw",
            f"{dashcam.roll_gain:g} / {dashcam.pitch_gain:g} / {dashcam.yaw_gain:g} rad/s (both kinds)",
            f"{comma}: gyroscope PSD bands and rotation magnitude; the phone has no gyroscope and takes the same",
        ),
        (
            "accelerometer / gyroscope noise density",
            f"{ACCELEROMETER_NOISE_DENSITY:g} m/s²/√Hz / {GYROSCOPE_NOISE_DENSITY:g} rad/s/√Hz",
            "phone-class MEMS data sheets; no recording's spectrum goes below it",
        ),
        (
            "accelerometer range and resolution",
            f"phone ±{phone.accelerometer_range_g:g} g, {phone.accelerometer_bits} bits; "
            f"dashcam ±{dashcam.accelerometer_range_g:g} g, {dashcam.accelerometer_bits} bits",
            "smallest accelerometer step: 0.0096 m/s² (1/1024 g, Auckland), 0.0024 m/s² (1/4096 g, comma2k19)",
        ),
        ("gyroscope resolution", f"{GYROSCOPE_STEP_RADPS:g} rad/s", "smallest step of comma2k19's gyroscope"),
        (
            "accelerometer scale error",
            f"{ACCELEROMETER_SCALE_ERROR:.0%} per axis (standard deviation, randomised devices)",
            "gravity reads 9.68 (comma2k19) and 9.76-9.78 m/s² (Auckland) where it is 9.80",
        ),
        (
            "timestamp jitter (standard deviation, of the period)",
            f"phone {phone.jitter:.1%}, dashcam {dashcam.jitter:.1%}",
            "standard deviation of the sample step over its median: 0.12 (Auckland), 0.004 (comma2k19)",
        ),
        (
            "GPS lag behind the accelerometer",
            f"phone {phone.gps_lag_s:g} s, dashcam {dashcam.gps_lag_s:g} s",
            "best delay of the GPS dv/dt regression (fit targets); comma2k19's u-blox speed lags its CAN speed 0.14 s",
        ),
        (
            "GPS dropouts",
            f"phone {phone.gps_dropouts_per_10min:g}, dashcam {dashcam.gps_dropouts_per_10min:g} per 10 min, "
            f"{GPS_DROPOUT_SECONDS[0]:g}-{GPS_DROPOUT_SECONDS[1]:g} s each",
            "auckland-backwards lost its fix 6 times (2-7 s) in 6 minutes, auckland-forward and comma2k19 never",
        ),
    ]


def render(comparison: Comparison, groups: Sequence[ReferenceGroup] = GROUPS) -> str:
    rows = feature_rows(comparison, groups)
    noise_rows = [row for row in rows if row["feature"] not in NOT_NOISE]
    improved = [row for row in noise_rows if float(row["after ks"]) < float(row["before ks"]) - 0.02]
    worse = [row for row in noise_rows if float(row["after ks"]) > float(row["before ks"]) + 0.02]
    worst = max(noise_rows, key=lambda row: float(row["after ks"]))
    real_counts = {group.name: comparison.real[group.name].features.shape[0] for group in groups}
    simulated_counts = {
        (group.name, model): comparison.simulated[group.name, model].features.shape[0]
        for group in groups
        for model in MODELS
    }
    lines = [
        "# The simulator against real roads",
        "",
        f"Generated by `python -m michi.simulator.fit_report` (do not edit by hand) at commit `{_commit()}`.",
        "",
        "The detector is learned from the simulator, so the simulator's normal driving must look like real normal",
        "driving: where it is quieter, every real bump and mount rattle looks like a confounder. This report compares",
        "every window feature and the noise measures behind them on real recordings and on the simulator, before and",
        "after its noise, vibration, holder, sensor and GPS models were fitted to those recordings.",
        "",
        "## Headline",
        "",
        f"Of the {len(noise_rows)} noise features (all but {', '.join(f'`{name}`' for name in NOT_NOISE)}), the fit "
        f"lowered the Kolmogorov-Smirnov statistic of {len(improved)} and raised {len(worse)} "
        f"(changes under 0.02 count as unchanged). Mean KS over them: "
        f"{np.mean([float(row['before ks']) for row in noise_rows]):.2f} before, "
        f"{np.mean([float(row['after ks']) for row in noise_rows]):.2f} after. Worst after the fit: "
        f"`{worst['feature']}` (KS {float(worst['after ks']):.2f}).",
        "",
        "## Method",
        "",
        "* **Real** (normal driving only; no harsh events in them): "
        + "; ".join(
            f"{group.name}: {real_counts[group.name]} windows at {group.sample_rate_hz:g} Hz"
            + ("" if group.gyroscope else ", no gyroscope")
            for group in groups
        )
        + ". Each recording is cut into 10 s uploads (`michi.recordings.recording_uploads`) and run through the",
        "  product's pipeline: per device, in order, `update_calibration` then `extract_windows`.",
        "* **Simulated**: per group, a fleet at the recording's rate whose every device is the group's holder kind",
        "  exactly as fitted (`DomainRandomization.at_fit`) on roads of the recording's grade, without gyroscope",
        "  where the recording has none, every vehicle a sedan like the recordings' cars, trips as long as the",
        '  recordings (fresh devices). *Before* renders with `sensor_model="before-fit"` (the noise model before the',
        "  fit, byte-identical to the earlier simulator at whole-number rates), *after* with the fitted one;",
        '  *randomised* draws hardware as `SimulationConfig(sensor_model="fitted")` does by default (holder kind, stiffness and vibration',
        "  x0.5-x10, sensor range, jitter, GPS lag and dropouts, road grade). Windows an injected event comes within",
        "  1 s of are left out (simulator ground truth). Windows "
        + ", ".join(
            f"{group.name.split(' ')[0]}: {simulated_counts[group.name, 'before']} / "
            f"{simulated_counts[group.name, 'after']} / {simulated_counts[group.name, 'randomised']}"
            for group in groups
        )
        + " (before / after / randomised).",
        "* **Weights**: simulated windows are weighted so their GPS speed histogram (2 m/s bins) is the real group's",
        "  (vibration grows with speed, and the road map's speed mix is not what is fitted); groups are pooled in the",
        "  real windows' proportions.",
        "* **Statistics**: weighted medians and the two-sample Kolmogorov-Smirnov statistic (the largest gap between",
        "  the two cumulative distributions: 0 identical, 1 disjoint), numpy only.",
        "",
        "## Window features, pooled",
        "",
        "| feature | real median | simulator median before | KS before | simulator median after | KS after |"
        " randomised median | KS randomised |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        name = str(row["feature"])
        marker = " †" if name in NOT_NOISE else ""
        lines.append(
            f"| `{name}`{marker} | {_number(float(row['real']))} | {_number(float(row['before median']))} | "
            f"{float(row['before ks']):.2f} | {_number(float(row['after median']))} | {float(row['after ks']):.2f} | "
            f"{_number(float(row['randomised median']))} | {float(row['randomised ks']):.2f} |"
        )
    lines += [
        "",
        "† not a noise feature: " + "; ".join(f"`{name}`: {why}" for name, why in NOT_NOISE.items()) + ".",
        "",
    ]
    lines += ["KS after the fit, per group:", "", "| feature | " + " | ".join(group.name for group in groups) + " |"]
    lines.append("|---|" + "---:|" * len(groups))
    for row in rows:
        lines.append(
            f"| `{row['feature']}` | " + " | ".join(f"{float(row[f'{group.name} ks']):.2f}" for group in groups) + " |"
        )
    lines += [
        "",
        "## Fit targets",
        "",
        "What the noise models were fitted to, measured the same way on both sides.",
        "",
    ]
    for group in groups:
        lines += [
            f"### {group.name}",
            "",
            "| measure | real | simulator before | simulator after |",
            "|---|---:|---:|---:|",
        ]
        real = comparison.measures[group.name, "real"]
        for measure, value in real.items():
            lines.append(
                f"| {measure} | {_number(value)} | {_number(comparison.measures[group.name, 'before'][measure])} | "
                f"{_number(comparison.measures[group.name, 'after'][measure])} |"
            )
        lines.append("")
    lines += [
        "## Fitted parameters",
        "",
        "In `michi/simulator/vibration.py`, `michi/simulator/hardware.py` and `michi/simulator/signals.py`.",
        "",
        "| parameter | value | from |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {value} | {source} |" for name, value, source in _parameter_rows(groups)]
    randomization = DomainRandomization()
    lines += [
        "",
        "## Domain randomisation (the default configuration)",
        "",
        "Per device, from a random stream of its own (vehicles, drivers, trips and ground truth do not change):",
        "",
        f"* holder kind: fixed dashcam with probability {randomization.fixed_dashcam_share:g}, else a phone holder;",
        f"* mount stiffness x{randomization.stiffness[0]:g}-x{randomization.stiffness[1]:g} (the resonance moves"
        f" with its square root) and vibration x{randomization.vibration[0]:g}-x{randomization.vibration[1]:g},"
        " both log-triangular with the mode at the fit (median about x1.6, one device in five above x3);",
        f"* holder Q {randomization.phone_quality[0]:g}-{randomization.phone_quality[1]:g} (phones),"
        f" {randomization.dashcam_quality[0]:g}-{randomization.dashcam_quality[1]:g} (dashcams);",
        f"* accelerometer range {', '.join(f'±{value:g} g' for value in randomization.ranges_g)} (clipped there),"
        f" {', '.join(str(value) for value in randomization.bits)} bits, {randomization.scale_error:.0%} scale"
        " error per axis;",
        f"* timestamp jitter up to {randomization.phone_jitter[1]:.0%} (phones) or"
        f" {randomization.dashcam_jitter[1]:.0%} (dashcams) of the period;",
        f"* GPS lag {randomization.gps_lag_s[0]:g}-{randomization.gps_lag_s[1]:g} s,"
        f" {randomization.gps_dropouts_per_10min[0]:g}-{randomization.gps_dropouts_per_10min[1]:g} dropouts per"
        " 10 minutes;",
        f"* road grade {randomization.road_grade[0]:.0%}-{randomization.road_grade[1]:.0%} (standard deviation);",
        "* opt-in (`SimulationConfig.sample_rate_range_hz`, e.g. `(10, 400)`): a log-uniform IMU rate per device,"
        " fractional rates included (`sample_rate_exact_hz`), half of those devices stamping microseconds"
        " (`offset_us`, with `offset_ms` beside it). The default fleet keeps `sample_rate_hz` (50 Hz for"
        " `michi up`) and millisecond offsets.",
        "",
        "## Caveats",
        "",
        f"* Few real minutes: {sum(real_counts.values())} windows, about 13 minutes from two cars and two devices"
        " (12 urban minutes of one phone, one highway minute of one dashcam). The fit is to these two mounts;"
        " the randomisation stands in for every other car, holder and road.",
        "* No real harsh events, potholes or mount moves: only normal driving is compared, and the injected"
        " events' shapes are not fitted. The real accelerations of 1.5-3 m/s² the issue mentions are normal"
        " driving here.",
        "* The phone's holder resonance and everything above its 8.3 Hz Nyquist frequency cannot be seen: only"
        " their aliased tail is fitted, so a simulated phone sampling at 50-100 Hz shows more high-frequency"
        " vibration (and larger peak-to-peak and jerk) than any recording can confirm. The dashcam's minute has no"
        " stop, so idle shake comes from the phone alone.",
        "* Not noise, and not fitted: the simulated road map is a grid of straight roads while Auckland's streets"
        " curve (GPS lateral acceleration 10th-90th percentile about ±0.9 m/s² real, ±0.2 simulated), and real"
        " drivers modulate speed all the time (comma2k19: CAN dv/dt standard deviation 0.64 m/s² on a steady"
        " highway). Both show in `lateral_abs_max_mps2`, `cornering_evidence`, `horizontal_max_mps2` and the"
        " horizontal content below 1 Hz (fit targets); road camber is not simulated either.",
        "* GPS: the simulator's receivers give a fix every second from the start of a trip; auckland-forward"
        " had none for its first 46 s (its windows without GPS weigh in every `gps_*` feature) and comma2k19's"
        " u-blox gives 10 fixes a second.",
        "* GPS speeds are matched by weighting, so the road map's speed mix is not compared; calibration"
        " confidence depends on how long a device has driven, which differs between the two sides.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="where to write the report ('-': stdout)")
    arguments = parser.parse_args(argv)
    report = render(compare())
    if arguments.output == "-":
        sys.stdout.write(report)
    else:
        Path(arguments.output).write_text(report, encoding="utf-8")
        print(f"wrote {arguments.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
