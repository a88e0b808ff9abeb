"""An upload as numpy arrays (converted from the protobuf at the handler boundary)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from michi.contracts import timestamp_to_seconds
from michi.contracts.v1 import upload_pb2
from michi.windows.signals import FloatArray

# Below this many IMU samples an upload cannot hold one window: it is skipped (its segment is still emitted).
MIN_IMU_SAMPLES = 10


@dataclass(frozen=True)
class UploadData:
    upload_id: str
    device_id: str
    driver_id: str
    trip_id: str
    sequence: int
    trip_end: bool
    firmware_version: str
    vehicle_type: str
    declared_sample_rate_hz: float
    # Absolute start (epoch seconds); every offset counts from here.
    started_at_s: float
    trace_id: str
    times_s: FloatArray
    accel: FloatArray  # (N, 3) device axes, m/s^2, gravity included
    gyro: FloatArray  # (N, 3) device axes, rad/s
    gps_times_s: FloatArray
    latitude: FloatArray
    longitude: FloatArray
    speed_mps: FloatArray
    heading_deg: FloatArray
    # False when the device has no gyroscope: `gyro` is then zeros and means nothing.
    has_gyroscope: bool = True
    # True when the accelerometer arrays are gravity-removed ("linear acceleration").
    linear_acceleration: bool = False

    @property
    def has_gps(self) -> bool:
        return self.gps_times_s.size >= 2

    @property
    def sample_rate_hz(self) -> float:
        """Measured rate (the declared one may lie); the declared one if too few samples to tell."""
        if self.times_s.size >= 2:
            span = float(self.times_s[-1] - self.times_s[0])
            if span > 0:
                return (self.times_s.size - 1) / span
        return float(self.declared_sample_rate_hz or 50)

    @property
    def duration_s(self) -> float:
        """How much driving this upload covers (IMU span plus one sample, or GPS span plus one fix)."""
        imu = float(self.times_s[-1]) + 1.0 / self.sample_rate_hz if self.times_s.size else 0.0
        gps = float(self.gps_times_s[-1]) + 1.0 if self.gps_times_s.size else 0.0
        return max(imu, gps, 0.0)

    def degenerate_reason(self) -> str | None:
        """Why this upload cannot be analysed, or None when it can."""
        if self.times_s.size < MIN_IMU_SAMPLES:
            return "too-few-imu-samples"
        if not (self.accel.shape == (self.times_s.size, 3) and self.gyro.shape == (self.times_s.size, 3)):
            return "imu-arrays-of-unequal-length"
        if not np.all(np.diff(self.times_s) > 0):
            return "imu-offsets-not-increasing"
        if not (np.all(np.isfinite(self.accel)) and np.all(np.isfinite(self.gyro))):
            return "imu-not-finite"
        return None


def upload_from_proto(received: upload_pb2.UploadReceived) -> UploadData:
    """The numpy view of a received upload (arrays of unequal length become empty: degenerate)."""
    upload = received.upload
    imu = upload.imu
    if len(imu.offset_us):
        times = np.asarray(imu.offset_us, dtype=np.float64) / 1e6
    else:
        times = np.asarray(imu.offset_ms, dtype=np.float64) / 1000.0
    accel_columns = [np.asarray(values, dtype=np.float64) for values in (imu.accel_x, imu.accel_y, imu.accel_z)]
    gyro_columns = [np.asarray(values, dtype=np.float64) for values in (imu.gyro_x, imu.gyro_y, imu.gyro_z)]
    # A device without a gyroscope says so, or sends the gyro arrays empty.
    has_gyroscope = upload.gyroscope != upload_pb2.GYROSCOPE_ABSENT and any(column.size for column in gyro_columns)
    if not has_gyroscope:
        gyro_columns = [np.zeros(times.size) for _ in range(3)]
    lengths = {times.size, *(column.size for column in accel_columns + gyro_columns)}
    if len(lengths) == 1:
        accel, gyro = np.column_stack(accel_columns), np.column_stack(gyro_columns)
    else:
        accel, gyro = np.zeros((0, 3)), np.zeros((0, 3))
    fixes = sorted(upload.gps, key=lambda fix: fix.offset_ms)
    gps_times = np.array([fix.offset_ms / 1000.0 for fix in fixes], dtype=np.float64)
    # Duplicate fix times would break interpolation: keep the first of each.
    keep = np.concatenate([[True], np.diff(gps_times) > 0]) if gps_times.size else np.zeros(0, dtype=bool)
    return UploadData(
        upload_id=upload.upload_id,
        device_id=upload.device_id,
        driver_id=upload.driver_id,
        trip_id=upload.trip_id,
        sequence=int(upload.sequence),
        trip_end=bool(upload.trip_end),
        firmware_version=upload.firmware_version,
        vehicle_type=upload.vehicle_type,
        declared_sample_rate_hz=float(upload.sample_rate_exact_hz or upload.sample_rate_hz),
        started_at_s=timestamp_to_seconds(upload.started_at),
        trace_id=received.lineage.trace_id,
        times_s=times,
        accel=accel,
        gyro=gyro,
        gps_times_s=gps_times[keep],
        latitude=np.array([fix.latitude for fix in fixes], dtype=np.float64)[keep],
        longitude=np.array([fix.longitude for fix in fixes], dtype=np.float64)[keep],
        speed_mps=np.array([fix.speed_mps for fix in fixes], dtype=np.float64)[keep],
        heading_deg=np.array([fix.heading_deg for fix in fixes], dtype=np.float64)[keep],
        has_gyroscope=has_gyroscope,
        linear_acceleration=upload.acceleration_kind == upload_pb2.ACCELERATION_KIND_LINEAR,
    )
