"""Scripted drives with known events and a known mount, for the tests (never the product).

The fleet simulator (`michi.simulator`) is the realistic source; this module is the small,
exact one: a vehicle cruising with gentle speed changes, plus the events you place — harsh
braking/acceleration/cornering, potholes, speed bumps, a phone moved in its mount, normal
stops and turns — rendered through a mount rotation into device axes and cut into uploads.

Frames follow `michi/windows/calibration.py`: vehicle x forward, y left, z up; `device = mount @ vehicle`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from michi.contracts import stable_event_id, timestamp_from_seconds
from michi.contracts.v1 import common_pb2, upload_pb2

GRAVITY = 9.80665
METRES_PER_DEGREE = 111_320.0


def mount_matrix(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Vehicle → device rotation (same construction as the simulator's `mount_rotation`)."""
    yaw, pitch, roll = (math.radians(value) for value in (yaw_deg, pitch_deg, roll_deg))
    about_z = np.array([[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
    about_y = np.array(
        [[math.cos(pitch), 0.0, math.sin(pitch)], [0.0, 1.0, 0.0], [-math.sin(pitch), 0.0, math.cos(pitch)]]
    )
    about_x = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(roll), -math.sin(roll)], [0.0, math.sin(roll), math.cos(roll)]])
    return np.asarray((about_z @ about_y @ about_x).T)


@dataclass
class ScriptedEvent:
    # harsh_braking, harsh_acceleration, harsh_cornering, lane_change, pothole, speed_bump, mount_moved, stop, turn
    kind: str
    time_s: float
    duration_s: float = 1.5
    magnitude: float = 5.5
    # Seconds the acceleration takes to build to `magnitude` (and to release): harsh manoeuvres build
    # in a few tenths of a second, firm everyday driving over a second or more.
    ramp_s: float = 0.3


@dataclass
class ScriptedDrive:
    device_id: str = "device-1"
    driver_id: str = "driver-1"
    trip_id: str = "trip-1"
    duration_s: float = 120.0
    # Any rate, fractional ones included (uploads then carry sample_rate_exact_hz and microsecond offsets).
    sample_rate_hz: float = 50
    # Each reported sample time is off its grid by up to this share of a period (uniform).
    timestamp_jitter: float = 0.0
    # False: a device without gyroscope (GYROSCOPE_ABSENT, gyro arrays empty).
    gyroscope: bool = True
    upload_seconds: float = 10.0
    start_time_s: float = 1_767_225_600.0
    mount: tuple[float, float, float] = (35.0, 6.0, -4.0)
    moved_mount: tuple[float, float, float] = (70.0, 10.0, -1.0)
    cruise_mps: float = 14.0
    events: list[ScriptedEvent] = field(default_factory=list)
    seed: int = 1
    origin: tuple[float, float] = (35.68, 139.76)
    accel_noise: float = 0.25
    gps_speed_noise: float = 0.1
    vehicle_type: str = "sedan"

    def signals(self) -> dict[str, np.ndarray]:
        """Vehicle-frame truth at the IMU rate."""
        random = np.random.default_rng(self.seed)
        rate = self.sample_rate_hz
        times = np.arange(round(self.duration_s * rate)) / rate
        # Gentle cruise: ±1.5 m/s sinusoids (≤ 0.3 m/s^2), enough for the forward axis to show.
        acceleration = 1.5 * (2 * math.pi / 40.0) * np.cos(2 * math.pi * times / 40.0) + 0.8 * (
            2 * math.pi / 23.0
        ) * np.cos(2 * math.pi * times / 23.0 + 1.0)
        yaw_rate = np.zeros_like(times)
        lateral_extra = np.zeros_like(times)
        vertical = np.zeros_like(times)
        mount_switch = math.inf
        for event in self.events:
            active = (times >= event.time_s) & (times < event.time_s + event.duration_s)
            ramp = (
                np.clip(
                    np.minimum(times - event.time_s, event.time_s + event.duration_s - times) / event.ramp_s, 0.0, 1.0
                )
                * active
            )
            if event.kind == "harsh_braking" or event.kind == "stop":
                acceleration -= event.magnitude * ramp
                acceleration += (
                    event.magnitude
                    * event.duration_s
                    / 8.0
                    * (
                        (times >= event.time_s + event.duration_s + 2.0)
                        & (times < event.time_s + event.duration_s + 10.0)
                    )
                )
            elif event.kind == "harsh_acceleration":
                acceleration += event.magnitude * ramp
                acceleration -= (
                    event.magnitude
                    * event.duration_s
                    / 8.0
                    * (
                        (times >= event.time_s + event.duration_s + 2.0)
                        & (times < event.time_s + event.duration_s + 10.0)
                    )
                )
            elif event.kind in ("harsh_cornering", "turn"):
                yaw_rate += ramp * event.magnitude / self.cruise_mps
            elif event.kind == "lane_change":
                # Steer into the next lane, then back straight: lateral acceleration one way, then the other.
                middle = event.time_s + event.duration_s / 2.0
                half = (
                    np.clip(
                        np.minimum(np.abs(times - middle), event.duration_s / 2.0 - np.abs(times - middle))
                        / event.ramp_s,
                        0.0,
                        1.0,
                    )
                    * active
                )
                yaw_rate += np.where(times < middle, 1.0, -1.0) * half * event.magnitude / self.cruise_mps
            elif event.kind in ("pothole", "speed_bump"):
                local = times - event.time_s
                bump = (local >= 0) & (local < event.duration_s)
                frequency = 11.0 if event.kind == "pothole" else 3.0
                vertical += (
                    bump
                    * event.magnitude
                    * np.sin(2 * math.pi * frequency * local)
                    * np.exp(-np.clip(local, 0, None) * 4.0)
                )
                lateral_extra += (
                    bump
                    * 0.3
                    * event.magnitude
                    * np.sin(2 * math.pi * 9.0 * local)
                    * np.exp(-np.clip(local, 0, None) * 4.0)
                )
            elif event.kind == "mount_moved":
                mount_switch = event.time_s
        speed = np.maximum(self.cruise_mps + np.cumsum(acceleration) / rate, 0.0)
        acceleration = np.where(speed > 0, acceleration, 0.0)
        lateral = speed * yaw_rate + lateral_extra
        specific_force = np.column_stack([acceleration, lateral, GRAVITY + vertical])
        # Engine and road vibration.
        specific_force += random.normal(0.0, self.accel_noise, specific_force.shape)
        rotation = np.column_stack([np.zeros_like(times), np.zeros_like(times), yaw_rate]) + random.normal(
            0.0, 0.01, (times.size, 3)
        )
        return {
            "times": times,
            "speed": speed,
            "yaw_rate": yaw_rate,
            "specific_force": specific_force,
            "rotation": rotation,
            "mount_switch": np.array([mount_switch]),
        }

    def uploads(self) -> list[upload_pb2.UploadReceived]:
        signals = self.signals()
        times, speed, yaw_rate = signals["times"], signals["speed"], signals["yaw_rate"]
        switch = float(signals["mount_switch"][0])
        before, after = mount_matrix(*self.mount), mount_matrix(*self.moved_mount)
        device_force = np.where(
            (times < switch)[:, None], signals["specific_force"] @ before.T, signals["specific_force"] @ after.T
        )
        device_rotation = np.where(
            (times < switch)[:, None], signals["rotation"] @ before.T, signals["rotation"] @ after.T
        )
        if math.isfinite(switch):
            # Someone grabs the phone: a second of shaking and spinning.
            handling = (times >= switch - 0.8) & (times < switch)
            random = np.random.default_rng(self.seed + 1)
            device_force[handling] += random.normal(0.0, 3.0, (int(handling.sum()), 3))
            device_rotation[handling] += random.normal(0.0, 1.5, (int(handling.sum()), 3))
        heading = (
            90.0 - np.degrees(np.cumsum(yaw_rate) / self.sample_rate_hz)
        ) % 360.0  # starts east, left turn lowers it
        east = np.cumsum(speed * np.sin(np.radians(heading))) / self.sample_rate_hz
        north = np.cumsum(speed * np.cos(np.radians(heading))) / self.sample_rate_hz
        random = np.random.default_rng(self.seed + 2)
        uploads = []
        per_upload = round(self.upload_seconds * self.sample_rate_hz)
        for sequence, first in enumerate(range(0, times.size, per_upload)):
            piece = slice(first, min(first + per_upload, times.size))
            upload_start = float(times[first])
            reported = times[piece] - upload_start
            if self.timestamp_jitter > 0:
                jitter = np.random.default_rng(self.seed + 3 + sequence).uniform(-1.0, 1.0, reported.size)
                reported = reported + jitter * self.timestamp_jitter / self.sample_rate_hz
                reported = np.maximum(reported, 0.0)
            # Jitter under half a period cannot reorder samples.
            offsets_us = np.round(reported * 1e6).astype(np.int64)
            precise = self.timestamp_jitter > 0 or float(self.sample_rate_hz) != round(self.sample_rate_hz)
            fixes = []
            for second in range(math.ceil((times[piece.stop - 1] - upload_start) + 1e-9)):
                index = first + round(second * self.sample_rate_hz)
                if index >= times.size:
                    break
                fixes.append(
                    upload_pb2.GpsFix(
                        offset_ms=second * 1000,
                        latitude=self.origin[0] + north[index] / METRES_PER_DEGREE,
                        longitude=self.origin[1]
                        + east[index] / (METRES_PER_DEGREE * math.cos(math.radians(self.origin[0]))),
                        speed_mps=float(max(speed[index] + random.normal(0.0, self.gps_speed_noise), 0.0)),
                        heading_deg=float(heading[index]),
                        hdop=0.8,
                    )
                )
            upload_id = stable_event_id("synthetic-upload", self.device_id, self.trip_id, sequence)
            upload = upload_pb2.Upload(
                upload_id=upload_id,
                device_id=self.device_id,
                driver_id=self.driver_id,
                trip_id=self.trip_id,
                sequence=sequence,
                trip_end=piece.stop >= times.size,
                firmware_version="2.4.1",
                sample_rate_hz=round(self.sample_rate_hz),
                sample_rate_exact_hz=float(self.sample_rate_hz) if precise else 0.0,
                started_at=timestamp_from_seconds(self.start_time_s + upload_start),
                imu=upload_pb2.ImuSamples(
                    offset_ms=[] if precise else np.round(offsets_us / 1000.0).astype(np.uint32).tolist(),
                    offset_us=offsets_us.tolist() if precise else [],
                    accel_x=device_force[piece, 0].tolist(),
                    accel_y=device_force[piece, 1].tolist(),
                    accel_z=device_force[piece, 2].tolist(),
                    gyro_x=device_rotation[piece, 0].tolist() if self.gyroscope else [],
                    gyro_y=device_rotation[piece, 1].tolist() if self.gyroscope else [],
                    gyro_z=device_rotation[piece, 2].tolist() if self.gyroscope else [],
                ),
                gyroscope=upload_pb2.GYROSCOPE_PRESENT if self.gyroscope else upload_pb2.GYROSCOPE_ABSENT,
                gps=fixes,
                vehicle_type=self.vehicle_type,
            )
            uploads.append(
                upload_pb2.UploadReceived(
                    event_id=stable_event_id("upload-received", upload_id),
                    occurred_at=timestamp_from_seconds(self.start_time_s + upload_start),
                    lineage=common_pb2.Lineage(
                        upload_id=upload_id, trip_id=self.trip_id, device_id=self.device_id, driver_id=self.driver_id
                    ),
                    upload=upload,
                    received_at=timestamp_from_seconds(self.start_time_s + upload_start + self.upload_seconds),
                )
            )
        return uploads
