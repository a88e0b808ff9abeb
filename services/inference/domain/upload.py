"""An upload as numpy arrays (converted from the protobuf at the handler boundary)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.inference.domain.signals import FloatArray

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
    declared_sample_rate_hz: int
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
