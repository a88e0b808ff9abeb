"""Cutting a window's time span (plus some context) out of an archived upload, for the page to plot.

Times in the result count in seconds from the window's start (negative: context before it).
Long series are thinned to at most `max_points` samples so a response stays small.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from michi.contracts import timestamp_to_seconds
from michi.contracts.v1 import upload_pb2


@dataclass(frozen=True)
class WindowTraces:
    """What the page plots for one window."""

    window_started_at_s: float
    window_ended_at_s: float
    # IMU: seconds from the window start, accelerometer (m/s^2) and gyroscope (rad/s) per axis.
    imu_times_s: list[float] = field(default_factory=list)
    accel: dict[str, list[float]] = field(default_factory=dict)
    gyro: dict[str, list[float]] = field(default_factory=dict)
    # GPS fixes: seconds from the window start, speed (m/s), position.
    gps_times_s: list[float] = field(default_factory=list)
    speed_mps: list[float] = field(default_factory=list)
    latitude: list[float] = field(default_factory=list)
    longitude: list[float] = field(default_factory=list)
    media_names: list[str] = field(default_factory=list)
    sample_rate_hz: int = 0
    vehicle_type: str = ""

    @property
    def empty(self) -> bool:
        return not self.imu_times_s and not self.gps_times_s


def _thin(indices: list[int], max_points: int) -> list[int]:
    if len(indices) <= max_points:
        return indices
    step = len(indices) / max_points
    return [indices[int(position * step)] for position in range(max_points)]


def cut_window(
    upload: upload_pb2.Upload,
    window_started_at_s: float,
    window_ended_at_s: float,
    *,
    context_s: float = 2.0,
    max_points: int = 1500,
) -> WindowTraces:
    """The samples of `upload` within [start - context, end + context], relative to the window start."""
    origin = timestamp_to_seconds(upload.started_at)
    low, high = window_started_at_s - context_s, window_ended_at_s + context_s
    imu = upload.imu
    # Microsecond offsets, when the device sends them, are the sample times.
    offsets_s = [value / 1e6 for value in imu.offset_us] if len(imu.offset_us) else [v / 1000.0 for v in imu.offset_ms]
    # A device without a gyroscope sends its gyro arrays empty: the traces show none.
    has_gyroscope = len(imu.gyro_x) > 0 and upload.gyroscope != upload_pb2.GYROSCOPE_ABSENT
    lengths = [len(offsets_s), len(imu.accel_x), len(imu.accel_y), len(imu.accel_z)]
    if has_gyroscope:
        lengths += [len(imu.gyro_x), len(imu.gyro_y), len(imu.gyro_z)]
    length = min(lengths)
    inside = [index for index in range(length) if low <= origin + offsets_s[index] <= high]
    inside = _thin(inside, max_points)

    def column(values: object) -> list[float]:
        series = list(values)  # type: ignore[call-overload]
        return [round(float(series[index]), 4) for index in inside]

    fixes = sorted(upload.gps, key=lambda fix: fix.offset_ms)
    gps_inside = [fix for fix in fixes if low <= origin + fix.offset_ms / 1000.0 <= high]
    return WindowTraces(
        window_started_at_s=window_started_at_s,
        window_ended_at_s=window_ended_at_s,
        imu_times_s=[round(origin + offsets_s[index] - window_started_at_s, 4) for index in inside],
        accel={"x": column(imu.accel_x), "y": column(imu.accel_y), "z": column(imu.accel_z)},
        gyro=(
            {"x": column(imu.gyro_x), "y": column(imu.gyro_y), "z": column(imu.gyro_z)}
            if has_gyroscope
            else {"x": [], "y": [], "z": []}
        ),
        gps_times_s=[round(origin + fix.offset_ms / 1000.0 - window_started_at_s, 3) for fix in gps_inside],
        speed_mps=[round(float(fix.speed_mps), 3) for fix in gps_inside],
        latitude=[fix.latitude for fix in gps_inside],
        longitude=[fix.longitude for fix in gps_inside],
        media_names=list(upload.media_names),
        sample_rate_hz=int(upload.sample_rate_hz or round(upload.sample_rate_exact_hz)),
        vehicle_type=upload.vehicle_type,
    )


def window_location(
    upload: upload_pb2.Upload, window_started_at_s: float, window_ended_at_s: float
) -> tuple[float, float] | None:
    """The GPS fix closest to the window's middle (None when the upload has no fix)."""
    if not upload.gps:
        return None
    origin = timestamp_to_seconds(upload.started_at)
    middle = (window_started_at_s + window_ended_at_s) / 2.0
    closest = min(upload.gps, key=lambda fix: abs(origin + fix.offset_ms / 1000.0 - middle))
    return closest.latitude, closest.longitude
