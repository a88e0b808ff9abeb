"""Sensor rendering: vehicle motion to IMU samples in device axes and noisy 1 Hz GPS fixes.

Vehicle-frame specific force is (dv/dt, v * yaw_rate, g + vertical); the gyroscope sees
(roll rate, pitch rate, yaw rate). Road and engine vibration, shaped by the device's holder
(`michi.simulator.vibration`), are added in the vehicle frame; both are turned into device axes by
the mount rotation in force at each sample, then get per-device bias, scale error and white noise,
and are clipped at the sensor's range and quantised to its resolution (`michi.simulator.hardware`).
Samples are taken at jittered times. Overlays add potholes, speed bumps, winter slips (vehicle
frame) and a device being moved (device frame). GPS fixes lag the vehicle and drop out now and then.

The model before the fit to real recordings (`fitted=False`: white vibration through a 3-tap kernel,
no holder, engine, clipping, quantisation, jitter or GPS lag) renders exactly as it did, so the fit
report (`python -m michi.simulator.fit_report`) can show what the fit changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from michi.roads import LocalProjection
from michi.simulator.hardware import GYROSCOPE_RANGE_RADPS, GYROSCOPE_STEP_RADPS, DeviceHardware
from michi.simulator.kinematics import Overlay, TripKinematics
from michi.simulator.path import Path
from michi.simulator.road import RoadSurface
from michi.simulator.vehicles import GRAVITY_MPS2, MountOrientation, VehicleType
from michi.simulator.vibration import (
    WHEEL_HOP_DAMPING,
    WHEEL_HOP_HZ,
    coloured_noise,
    engine_density,
    road_density,
    road_rms,
    through_holder,
)

GPS_SPEED_NOISE_MPS = 0.08
# Before the fit: white sensor noise of a fixed rms whatever the rate, and road vibration through a 3-tap kernel.
ACCELEROMETER_NOISE_MPS2 = 0.03
GYROSCOPE_NOISE_RADPS = 0.002
_VIBRATION_KERNEL = np.array([0.2, 0.6, 0.2]) / math.sqrt(0.44)
# Fitted: white noise densities of a phone-class MEMS IMU (about 300 µg/√Hz and 0.02 °/s/√Hz); the noise
# floor of comma2k19's spectra above its resonances is no lower.
ACCELEROMETER_NOISE_DENSITY = 0.003
GYROSCOPE_NOISE_DENSITY = 0.0003
# Jitter never reorders samples: it is clipped at this fraction of the period.
MAX_JITTER = 0.4
# Above this rate a millisecond clock cannot stamp samples apart: such devices stamp microseconds.
MILLISECOND_CLOCK_MAX_HZ = 200.0
# A GPS dropout lasts between these many seconds (auckland-backwards: 2-7 s).
GPS_DROPOUT_SECONDS = (1.0, 7.0)


@dataclass
class ImuBlock:
    # Sample times in µs from the slice start; multiples of 1000 unless `microseconds`.
    offset_us: NDArray[np.int64]
    accelerometer: NDArray[np.float64]  # (samples, 3) device axes, m/s²
    gyroscope: NDArray[np.float64]  # (samples, 3) device axes, rad/s
    # The device stamps microseconds (send offset_us), else milliseconds (offset_ms).
    microseconds: bool = False


@dataclass
class GpsTrack:
    """Fixes at whole trip seconds 0, 1, 2, ..."""

    times_s: NDArray[np.float64]
    latitude: NDArray[np.float64]
    longitude: NDArray[np.float64]
    speed_mps: NDArray[np.float64]
    heading_deg: NDArray[np.float64]
    hdop: NDArray[np.float64]
    # False where the receiver had no fix (a dropout): no fix is sent for that second.
    present: NDArray[np.bool_]


@dataclass
class SensorModel:
    vehicle: VehicleType
    sample_rate_hz: float
    accelerometer_scale: float
    vibration_scale: float
    accelerometer_bias: NDArray[np.float64]
    gyroscope_bias: NDArray[np.float64]
    # (from trip second, orientation), first entry at 0.
    mounts: list[tuple[float, MountOrientation]]
    hardware: DeviceHardware
    road: RoadSurface
    # False: the noise model before the fit to real recordings (see the module docstring).
    fitted: bool = True
    # Ordinary turns build their curvature over this many seconds of driving (0: at once; `SimulationConfig.turn_in_s`).
    turn_in_s: float = 0.0


def render_imu(
    path: Path,
    kinematics: TripKinematics,
    sensor: SensorModel,
    start_s: float,
    end_s: float,
    random: np.random.Generator,
) -> ImuBlock:
    """IMU samples for trip seconds [start_s, end_s), offsets in µs from start_s."""
    rate = sensor.sample_rate_hz
    count = max(0, math.ceil((end_s - start_s) * rate - 1e-9))
    offset_us, microseconds = _sample_times(count, rate, sensor, random)
    times = start_s + offset_us / 1e6
    speed = kinematics.speed_at(times)
    positions = kinematics.position_at(times)
    _, _, _, curvature = path.sample(positions)
    if sensor.turn_in_s > 0.0:
        curvature = _turned_in(path, kinematics, positions, curvature, np.maximum(speed * sensor.turn_in_s, 1.0))
    longitudinal = kinematics.acceleration_at(times)
    yaw_rate = speed * curvature
    lateral = speed * yaw_rate
    vertical = np.zeros(count)
    roll_rate = np.zeros(count)
    pitch_rate = np.zeros(count)

    if sensor.fitted:
        vibration = _fitted_vibration(speed, positions, sensor, count, random)
        road = sensor.road
        # Uphill the accelerometer reads gravity forward; a crest or sag adds v² times the road's curvature.
        grade = road.grade_at(positions)
        slope = road.grade_slope_at(positions)
        longitudinal = longitudinal + GRAVITY_MPS2 * np.sin(grade)
        vertical += GRAVITY_MPS2 * (np.cos(grade) - 1.0) + speed**2 * slope
        pitch_rate -= speed * slope
        vertical += _joints(times, kinematics, sensor)
    else:
        vibration = _vibration_before_fit(speed, sensor, count, random)
    vertical += vibration[0]
    longitudinal = longitudinal + vibration[1]
    lateral = lateral + vibration[2]
    roll_rate += vibration[3]
    pitch_rate += vibration[4]
    yaw_rate = yaw_rate + vibration[5]

    device_accelerometer_extra = np.zeros((count, 3))
    device_gyroscope_extra = np.zeros((count, 3))
    for overlay in kinematics.overlays:
        if overlay.start_s > end_s or overlay.start_s + overlay.duration_s < start_s:
            continue
        local = times - overlay.start_s
        if overlay.kind == "pothole":
            front, rear = _impulse(local, 11.0, 0.05), _impulse(local - overlay.axle_delay_s, 11.0, 0.05)
            vertical += overlay.amplitude * (front + 0.8 * rear)
            if sensor.fitted:
                # A sharp hit rings the holder too, as road joints do (a loose holder rings more).
                vertical += (
                    overlay.amplitude * sensor.hardware.vibration_scale * _holder_ringing(local, overlay, sensor)
                )
            longitudinal += 0.12 * overlay.amplitude * (front + 0.8 * rear)
            pitch_rate += 0.05 * overlay.amplitude * (front - 0.8 * rear)
        elif overlay.kind == "speed_bump":
            frequency = 1.5 * sensor.vehicle.suspension_frequency_hz
            front, rear = _impulse(local, frequency, 0.3), _impulse(local - overlay.axle_delay_s, frequency, 0.3)
            vertical += overlay.amplitude * (front + 0.9 * rear)
            longitudinal += 0.08 * overlay.amplitude * (front + 0.9 * rear)
            pitch_rate += 0.06 * overlay.amplitude * (front - 0.9 * rear)
        elif overlay.kind == "slip":
            wiggle = overlay.amplitude * np.sin(2.0 * math.pi * 1.5 * local) * _hann(local, overlay.duration_s)
            lateral += wiggle
            yaw_rate += wiggle / np.maximum(speed, 3.0)
        elif overlay.kind == "swerve":
            swerve = overlay.side * overlay.amplitude * _swerve_shape(local, overlay)
            lateral += swerve
            yaw_rate += swerve / np.maximum(speed, 3.0)
        elif overlay.kind == "mount_moved":
            burst_accelerometer, burst_gyroscope = _handling_burst(local, overlay)
            device_accelerometer_extra += burst_accelerometer
            device_gyroscope_extra += burst_gyroscope

    specific_force = np.stack([longitudinal, lateral, GRAVITY_MPS2 + vertical], axis=1)
    angular_rate = np.stack([roll_rate, pitch_rate, yaw_rate], axis=1)
    accelerometer = np.empty_like(specific_force)
    gyroscope = np.empty_like(angular_rate)
    for index, (since, mount) in enumerate(sensor.mounts):
        until = sensor.mounts[index + 1][0] if index + 1 < len(sensor.mounts) else math.inf
        selected = (times >= since) & (times < until)
        if not selected.any():
            continue
        rotation = mount.rotation
        accelerometer[selected] = specific_force[selected] @ rotation.T
        gyroscope[selected] = angular_rate[selected] @ rotation.T
    accelerometer += device_accelerometer_extra + sensor.accelerometer_bias
    gyroscope += device_gyroscope_extra + sensor.gyroscope_bias
    if not sensor.fitted:
        accelerometer += ACCELEROMETER_NOISE_MPS2 * random.standard_normal((count, 3))
        gyroscope += GYROSCOPE_NOISE_RADPS * random.standard_normal((count, 3))
        accelerometer *= sensor.accelerometer_scale
        return ImuBlock(offset_us=offset_us, accelerometer=accelerometer, gyroscope=gyroscope)
    # White noise of a fixed density: its rms grows with the bandwidth (half the rate).
    bandwidth = math.sqrt(rate / 2.0)
    accelerometer += ACCELEROMETER_NOISE_DENSITY * bandwidth * random.standard_normal((count, 3))
    gyroscope += GYROSCOPE_NOISE_DENSITY * bandwidth * random.standard_normal((count, 3))
    hardware = sensor.hardware
    accelerometer *= sensor.accelerometer_scale * np.array(hardware.accelerometer_scale)
    # The sensor saturates at its range and reports whole counts of its resolution.
    limit = hardware.accelerometer_range_g * GRAVITY_MPS2
    step = hardware.accelerometer_step_mps2
    accelerometer = np.round(np.clip(accelerometer, -limit, limit) / step) * step
    gyroscope = np.round(np.clip(gyroscope, -GYROSCOPE_RANGE_RADPS, GYROSCOPE_RANGE_RADPS) / GYROSCOPE_STEP_RADPS)
    gyroscope *= GYROSCOPE_STEP_RADPS
    return ImuBlock(offset_us=offset_us, accelerometer=accelerometer, gyroscope=gyroscope, microseconds=microseconds)


def _sample_times(
    count: int, rate: float, sensor: SensorModel, random: np.random.Generator
) -> tuple[NDArray[np.int64], bool]:
    """Sample offsets in µs from the slice start, and whether the device stamps microseconds."""
    if not sensor.fitted:
        return np.round(np.arange(count) * (1000.0 / rate)).astype(np.int64) * 1000, False
    hardware = sensor.hardware
    jitter = np.clip(random.standard_normal(count) * hardware.jitter, -MAX_JITTER, MAX_JITTER)
    exact_s = np.maximum((np.arange(count) + jitter) / rate, 0.0)
    if hardware.microsecond_clock or rate > MILLISECOND_CLOCK_MAX_HZ:
        return np.round(exact_s * 1e6).astype(np.int64), True
    milliseconds = np.round(exact_s * 1000.0).astype(np.int64)
    # Two samples rounded onto one millisecond: the later one moves on (times must increase strictly).
    ordinal = np.arange(count, dtype=np.int64)
    milliseconds = np.maximum.accumulate(milliseconds - ordinal) + ordinal
    return milliseconds * 1000, False


def _vibration_before_fit(
    speed: NDArray[np.float64], sensor: SensorModel, count: int, random: np.random.Generator
) -> NDArray[np.float64]:
    """(vertical, longitudinal, lateral, roll, pitch, yaw) vibration of the model before the fit."""
    harshness = sensor.vehicle.suspension_harshness * sensor.vibration_scale
    sigma = harshness * (0.03 + 0.016 * speed)
    white = random.standard_normal((5, count + 2))
    vibration = np.stack([np.convolve(row, _VIBRATION_KERNEL, mode="valid") for row in white])
    rotation_sigma = harshness * (0.003 + 0.0005 * speed)
    return np.stack(
        [
            sigma * vibration[0],
            0.25 * sigma * vibration[1],
            0.3 * sigma * vibration[2],
            rotation_sigma * vibration[3],
            rotation_sigma * vibration[4],
            np.zeros(count),
        ]
    )


def _turned_in(
    path: Path,
    kinematics: TripKinematics,
    positions: NDArray[np.float64],
    curvature: NDArray[np.float64],
    turn_in_m: NDArray[np.float64],
) -> NDArray[np.float64]:
    """The curvature a driver steers, averaged over `turn_in_m` of road (per sample: the distance the turn-in
    takes at its speed): at an arc's ends it ramps over that distance (a clothoid's linear ramp) instead of
    stepping. The mean curvature over [s - L/2, s + L/2] is the heading change across it over L. Harsh cornering
    (and the turn-in distance either side) keeps the path's step: it is thrown in at once."""
    half = turn_in_m / 2.0
    _, _, heading_ahead, _ = path.sample(positions + half)
    _, _, heading_behind, _ = path.sample(np.maximum(positions - half, float(path.start_s[0])))
    # Headings are wrapped at each straight (atan2): the change across a turn is the wrapped difference.
    eased = (np.mod(heading_ahead - heading_behind + math.pi, 2.0 * math.pi) - math.pi) / turn_in_m
    keep = np.zeros(positions.shape, dtype=bool)
    for event in kinematics.events:
        if event.kind == "harsh_cornering":
            exit_m = float(np.interp(event.end_s, kinematics.times_s, kinematics.positions_s))
            keep |= (positions >= event.position_s - turn_in_m) & (positions <= exit_m + turn_in_m)
    return np.where(keep, curvature, eased)


def _fitted_vibration(
    speed: NDArray[np.float64],
    positions: NDArray[np.float64],
    sensor: SensorModel,
    count: int,
    random: np.random.Generator,
) -> NDArray[np.float64]:
    """(vertical, longitudinal, lateral, roll, pitch, yaw) road and engine vibration through the holder."""
    hardware = sensor.hardware
    fit = hardware.fit
    rate = sensor.sample_rate_hz
    body_hz = sensor.vehicle.suspension_frequency_hz
    road = coloured_noise(
        random, 3, count, rate, through_holder(road_density(body_hz), hardware.resonance_hz, hardware.quality)
    )
    rocking = coloured_noise(
        random, 3, count, rate, through_holder(road_density(body_hz, 0.0), hardware.resonance_hz, hardware.quality)
    )
    engine = coloured_noise(
        random, 3, count, rate, through_holder(engine_density(), hardware.resonance_hz, hardware.quality)
    )
    road_amplitude = road_rms(speed, sensor.vehicle.suspension_harshness * sensor.vibration_scale)
    road_amplitude *= hardware.vibration_scale * sensor.road.roughness_at(positions)
    # The engine runs for the whole trip: stopped at a light, only its idle shake is left.
    engine_amplitude = fit.engine_rms_mps2 * hardware.vibration_scale
    linear_gains = np.array([fit.vertical_gain, fit.longitudinal_gain, fit.lateral_gain])[:, None]
    angular_gains = np.array([fit.roll_gain, fit.pitch_gain, fit.yaw_gain])[:, None]
    linear = linear_gains * (road_amplitude * road + engine_amplitude * engine)
    angular = angular_gains * road_amplitude * rocking
    return np.asarray(np.concatenate([linear, angular]), dtype=np.float64)


def render_gps(
    path: Path,
    kinematics: TripKinematics,
    projection: LocalProjection,
    duration_s: float,
    random: np.random.Generator,
    lag_s: float = 0.0,
    dropouts_per_10min: float = 0.0,
    dropout_random: np.random.Generator | None = None,
) -> GpsTrack:
    """Fixes at whole trip seconds, each reporting where the vehicle was `lag_s` earlier."""
    times = np.arange(0.0, math.floor(duration_s) + 1.0)
    # A receiver's fix describes the vehicle a moment ago (filtering, Doppler averaging over the epoch).
    seen = np.maximum(times - lag_s, 0.0)
    speed = kinematics.speed_at(seen)
    east, north, theta, _ = path.sample(kinematics.position_at(seen))
    base_hdop = float(random.uniform(0.7, 1.3))
    hdop = np.clip(base_hdop + 0.08 * random.standard_normal(times.size), 0.5, 3.0)
    # Position error wanders slowly (multipath, satellite geometry): AR(1) per second.
    innovations = random.standard_normal((times.size, 2)) * 1.5 * hdop[:, None] * math.sqrt(1.0 - 0.85**2)
    error = np.empty_like(innovations)
    previous = random.standard_normal(2) * 1.5 * base_hdop
    for index in range(times.size):
        previous = 0.85 * previous + innovations[index]
        error[index] = previous
    latitude, longitude = projection.to_geographic_arrays(east + error[:, 0], north + error[:, 1])
    reported_speed = np.abs(speed + GPS_SPEED_NOISE_MPS * random.standard_normal(times.size))
    heading = (90.0 - np.degrees(theta)) % 360.0
    heading = (heading + random.standard_normal(times.size) * np.where(speed > 3.0, 1.0, 4.0)) % 360.0
    # A receiver at rest keeps reporting its last heading of motion.
    moving = np.where(speed > 0.5, np.arange(times.size), 0)
    heading = heading[np.maximum.accumulate(moving)]
    present = np.ones(times.size, dtype=bool)
    if dropout_random is not None and dropouts_per_10min > 0.0:
        # Dropouts (trees, bridges, urban canyons) come as a Poisson process over the trip.
        count = int(dropout_random.poisson(dropouts_per_10min * duration_s / 600.0))
        starts = dropout_random.uniform(0.0, duration_s, count)
        lengths = dropout_random.uniform(*GPS_DROPOUT_SECONDS, count)
        for start, length in zip(starts, lengths, strict=True):
            present &= (times < start) | (times >= start + length)
    return GpsTrack(times, latitude, longitude, reported_speed, heading, hdop, present)


def _joints(times: NDArray[np.float64], kinematics: TripKinematics, sensor: SensorModel) -> NDArray[np.float64]:
    """Vertical spikes of both axles crossing the road's joints: wheel hop ringing plus the holder's own."""
    road = sensor.road
    result = np.zeros(times.size)
    if road.joint_positions_m.size == 0 or times.size == 0:
        return result
    # When the front axle reaches each joint (positions never decrease, so this inverts them).
    reached = np.interp(road.joint_positions_m, kinematics.positions_s, kinematics.times_s)
    speeds = np.maximum(kinematics.speed_at(reached), 1.0)
    hardware = sensor.hardware
    vehicle = sensor.vehicle
    scale = (
        vehicle.suspension_harshness * sensor.vibration_scale * hardware.vibration_scale * hardware.fit.vertical_gain
    )
    # A resonance rings down (to 1/e) in Q / (π f) seconds.
    holder_decay = hardware.quality / (math.pi * hardware.resonance_hz)
    wheel_decay = 1.0 / (2.0 * math.pi * WHEEL_HOP_DAMPING * WHEEL_HOP_HZ)
    delays = vehicle.wheelbase_m / speeds
    # Joints whose ringing (a few decay times after the rear axle) reaches into these samples.
    near = (reached <= times[-1]) & (reached + delays + 0.5 >= times[0])
    for when, delay, amplitude in zip(reached[near], delays[near], road.joint_amplitudes_mps2[near], strict=True):
        for offset, share in ((0.0, 1.0), (float(delay), 0.8)):
            local = times - when - offset
            ringing = _impulse(local, WHEEL_HOP_HZ, wheel_decay) + _impulse(local, hardware.resonance_hz, holder_decay)
            result += scale * amplitude * share * ringing
    return result


def _holder_ringing(local: NDArray[np.float64], overlay: Overlay, sensor: SensorModel) -> NDArray[np.float64]:
    """Both axles' hits ringing the holder at its resonance (unit amplitude for the front axle)."""
    hardware = sensor.hardware
    decay = hardware.quality / (math.pi * hardware.resonance_hz)
    front = _impulse(local, hardware.resonance_hz, decay)
    return front + 0.8 * _impulse(local - overlay.axle_delay_s, hardware.resonance_hz, decay)


def _impulse(local: NDArray[np.float64], frequency_hz: float, decay_s: float) -> NDArray[np.float64]:
    """A damped oscillation starting at local time 0 (suspension ringing after a hit)."""
    started = local >= 0.0
    clipped = np.where(started, local, 0.0)
    return np.where(started, np.exp(-clipped / decay_s) * np.sin(2.0 * math.pi * frequency_hz * clipped), 0.0)


def _swerve_shape(local: NDArray[np.float64], overlay: Overlay) -> NDArray[np.float64]:
    """+1 then -1: two lobes, each a raised-cosine rise over the ramp, a hold and a fall (a lane change)."""
    lobe_s = overlay.duration_s / 2.0
    ramp = max(overlay.ramp_s, 1e-3)

    def lobe(start: float) -> NDArray[np.float64]:
        rise = np.clip((local - start) / ramp, 0.0, 1.0)
        fall = np.clip((start + lobe_s - local) / ramp, 0.0, 1.0)
        return np.minimum(0.5 - 0.5 * np.cos(np.pi * rise), 0.5 - 0.5 * np.cos(np.pi * fall))

    return np.asarray(lobe(0.0) - lobe(lobe_s), dtype=np.float64)


def _hann(local: NDArray[np.float64], duration_s: float) -> NDArray[np.float64]:
    inside = (local >= 0.0) & (local <= duration_s)
    return np.where(inside, np.sin(math.pi * np.clip(local, 0.0, duration_s) / duration_s) ** 2, 0.0)


def _handling_burst(local: NDArray[np.float64], overlay: Overlay) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Shaking in device axes while a hand moves the camera: zero-mean, a few hertz."""
    random = np.random.default_rng(overlay.seed)
    window = _hann(local, overlay.duration_s)
    accelerometer = np.zeros((local.size, 3))
    gyroscope = np.zeros((local.size, 3))
    for axis in range(3):
        for _ in range(2):
            frequency = float(random.uniform(2.0, 7.0))
            phase = float(random.uniform(0.0, 2.0 * math.pi))
            wave = np.sin(2.0 * math.pi * frequency * local + phase) * window
            accelerometer[:, axis] += overlay.amplitude * float(random.uniform(0.4, 0.7)) * wave
            gyroscope[:, axis] += 0.3 * overlay.amplitude * float(random.uniform(0.4, 0.7)) * wave
    return accelerometer, gyroscope
