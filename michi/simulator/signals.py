"""Sensor rendering: vehicle motion to IMU samples in device axes and noisy 1 Hz GPS fixes.

Vehicle-frame specific force is (dv/dt, v * yaw_rate, g + vertical); the gyroscope sees
(roll rate, pitch rate, yaw rate). Both are turned into device axes by the mount rotation in
force at each sample, then get per-device bias, white noise and road vibration. Overlays add
potholes, speed bumps, winter slips (vehicle frame) and a device being moved (device frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from michi.roadmap import LocalProjection
from michi.simulator.kinematics import Overlay, TripKinematics
from michi.simulator.path import Path
from michi.simulator.vehicles import GRAVITY_MPS2, MountOrientation, VehicleType

ACCELEROMETER_NOISE_MPS2 = 0.03
GYROSCOPE_NOISE_RADPS = 0.002
GPS_SPEED_NOISE_MPS = 0.08
_VIBRATION_KERNEL = np.array([0.2, 0.6, 0.2]) / math.sqrt(0.44)


@dataclass
class ImuBlock:
    offset_ms: NDArray[np.int64]
    accelerometer: NDArray[np.float64]  # (samples, 3) device axes, m/s²
    gyroscope: NDArray[np.float64]  # (samples, 3) device axes, rad/s


@dataclass
class GpsTrack:
    """Fixes at whole trip seconds 0, 1, 2, ..."""

    times_s: NDArray[np.float64]
    latitude: NDArray[np.float64]
    longitude: NDArray[np.float64]
    speed_mps: NDArray[np.float64]
    heading_deg: NDArray[np.float64]
    hdop: NDArray[np.float64]


@dataclass
class SensorModel:
    vehicle: VehicleType
    sample_rate_hz: int
    accelerometer_scale: float
    vibration_scale: float
    accelerometer_bias: NDArray[np.float64]
    gyroscope_bias: NDArray[np.float64]
    # (from trip second, orientation), first entry at 0.
    mounts: list[tuple[float, MountOrientation]]


def render_imu(
    path: Path,
    kinematics: TripKinematics,
    sensor: SensorModel,
    start_s: float,
    end_s: float,
    random: np.random.Generator,
) -> ImuBlock:
    """IMU samples for trip seconds [start_s, end_s), offsets in ms from start_s."""
    rate = sensor.sample_rate_hz
    count = max(0, math.ceil((end_s - start_s) * rate - 1e-9))
    offset_ms = np.round(np.arange(count) * (1000.0 / rate)).astype(np.int64)
    times = start_s + offset_ms / 1000.0
    speed = kinematics.speed_at(times)
    _, _, _, curvature = path.sample(kinematics.position_at(times))
    longitudinal = kinematics.acceleration_at(times)
    yaw_rate = speed * curvature
    lateral = speed * yaw_rate
    vertical = np.zeros(count)
    roll_rate = np.zeros(count)
    pitch_rate = np.zeros(count)

    harshness = sensor.vehicle.suspension_harshness * sensor.vibration_scale
    sigma = harshness * (0.03 + 0.016 * speed)
    white = random.standard_normal((5, count + 2))
    vibration = np.stack([np.convolve(row, _VIBRATION_KERNEL, mode="valid") for row in white])
    vertical += sigma * vibration[0]
    longitudinal = longitudinal + 0.25 * sigma * vibration[1]
    lateral = lateral + 0.3 * sigma * vibration[2]
    rotation_sigma = harshness * (0.003 + 0.0005 * speed)
    roll_rate += rotation_sigma * vibration[3]
    pitch_rate += rotation_sigma * vibration[4]

    device_accelerometer_extra = np.zeros((count, 3))
    device_gyroscope_extra = np.zeros((count, 3))
    for overlay in kinematics.overlays:
        if overlay.start_s > end_s or overlay.start_s + overlay.duration_s < start_s:
            continue
        local = times - overlay.start_s
        if overlay.kind == "pothole":
            front, rear = _impulse(local, 11.0, 0.05), _impulse(local - overlay.axle_delay_s, 11.0, 0.05)
            vertical += overlay.amplitude * (front + 0.8 * rear)
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
    accelerometer += ACCELEROMETER_NOISE_MPS2 * random.standard_normal((count, 3))
    gyroscope += device_gyroscope_extra + sensor.gyroscope_bias
    gyroscope += GYROSCOPE_NOISE_RADPS * random.standard_normal((count, 3))
    accelerometer *= sensor.accelerometer_scale
    return ImuBlock(offset_ms=offset_ms, accelerometer=accelerometer, gyroscope=gyroscope)


def render_gps(
    path: Path,
    kinematics: TripKinematics,
    projection: LocalProjection,
    duration_s: float,
    random: np.random.Generator,
) -> GpsTrack:
    times = np.arange(0.0, math.floor(duration_s) + 1.0)
    speed = kinematics.speed_at(times)
    east, north, theta, _ = path.sample(kinematics.position_at(times))
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
    return GpsTrack(times, latitude, longitude, reported_speed, heading, hdop)


def _impulse(local: NDArray[np.float64], frequency_hz: float, decay_s: float) -> NDArray[np.float64]:
    """A damped oscillation starting at local time 0 (suspension ringing after a hit)."""
    started = local >= 0.0
    clipped = np.where(started, local, 0.0)
    return np.where(started, np.exp(-clipped / decay_s) * np.sin(2.0 * math.pi * frequency_hz * clipped), 0.0)


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
