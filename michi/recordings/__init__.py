"""Real recordings as an input of the platform: read a drive, cut it into genuine device uploads.

    recording = read_recording("datasets/real-driving/quat-orient-auckland/accel_2020-10-15-21.csv")
    recording = shared_recording("auckland-backwards")          # one of the recordings shipped in datasets/
    uploads = recording_uploads(recording, device_id="cam-1", trip_id="t-1", started_at_s=time.time())

A recording is an IMU stream (accelerometer in m/s², gravity included unless said otherwise;
gyroscope in rad/s when the device has one) plus optional GPS fixes, on one clock in seconds.
Three layouts are read:

* **CSV** with a header. Columns are found by name (`COLUMN_NAMES`: `t_ms`/`t_s`/`t_us`/`time_s`,
  `acc_x`/`accel_x`/`acc_x_mps2`..., `gyro_x`...), or given explicitly with `columns=` as
  `{"time": "...", "time_unit": "ms", "accel": ["...", "...", "..."], "gyro": [...]}`. A GPS CSV
  beside it (`gps=`) needs time, latitude, longitude, speed (m/s, or km/h in a `*_kmh` column)
  and heading/course columns. Accelerations in g are converted when the column ends in `_g`.
* **JSON**: `{"imu": {"time_s": [...], "accel": [[x, y, z], ...], "gyro": [[...], ...] | null,
  "linear_acceleration": false}, "gps": {"time_s": [...], "latitude": [...], "longitude": [...],
  "speed_mps": [...], "heading_deg": [...]}}`.
* **NPZ** with the same names flattened: `imu_time_s`, `accel` (N, 3), optional `gyro` (N, 3),
  `gps_time_s`, `latitude`, `longitude`, `speed_mps`, `heading_deg`, optional `linear_acceleration`.

`recording_uploads` cuts the stream into uploads of `upload_seconds` (10 s), numbered from 0 with
the device's own sequence, each carrying its samples' microsecond offsets, the measured (possibly
fractional) sample rate, the gyroscope's absence and the GPS fixes that fall inside it, with its
start rebased to `started_at_s` (ingest refuses uploads older than its window).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from michi.contracts import stable_event_id, timestamp_from_seconds
from michi.contracts.v1 import upload_pb2
from michi.windows.signals import FloatArray

STANDARD_GRAVITY = 9.80665
# The shipped recordings: beside the source tree, or where MICHI_DATASETS_DIR says (an installed package).
DATASETS = Path(
    os.environ.get("MICHI_DATASETS_DIR") or Path(__file__).resolve().parents[2] / "datasets" / "real-driving"
)

COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "time": ("t_s", "time_s", "t_ms", "time_ms", "t_us", "time_us", "t_boot_s", "timestamp_s", "timestamp_ms"),
    "accel_x": ("acc_x_mps2", "accel_x_mps2", "acc_x", "accel_x", "ax", "acc_fwd_mps2", "accel_x_g", "acc_x_g"),
    "accel_y": ("acc_y_mps2", "accel_y_mps2", "acc_y", "accel_y", "ay", "acc_right_mps2", "accel_y_g", "acc_y_g"),
    "accel_z": ("acc_z_mps2", "accel_z_mps2", "acc_z", "accel_z", "az", "acc_down_mps2", "accel_z_g", "acc_z_g"),
    "gyro_x": ("gyro_x_rps", "gyro_x_radps", "gyro_x", "gx", "gyro_fwd_rps"),
    "gyro_y": ("gyro_y_rps", "gyro_y_radps", "gyro_y", "gy", "gyro_right_rps"),
    "gyro_z": ("gyro_z_rps", "gyro_z_radps", "gyro_z", "gz", "gyro_down_rps"),
    "latitude": ("lat_deg", "latitude", "lat", "gps_lat"),
    "longitude": ("lon_deg", "longitude", "lon", "lng", "gps_long"),
    "speed": ("speed_mps", "speed_kmh", "speed"),
    "heading": ("course_deg", "bearing_deg", "heading_deg", "heading", "course", "gps_heading"),
}


@dataclass(frozen=True)
class Recording:
    """One drive: IMU and optional GPS on one clock (seconds from the recording's start)."""

    name: str
    times_s: FloatArray
    accel: FloatArray  # (N, 3) m/s^2, device axes
    gyro: FloatArray | None  # (N, 3) rad/s, device axes; None without a gyroscope
    gps_times_s: FloatArray
    latitude: FloatArray
    longitude: FloatArray
    speed_mps: FloatArray
    heading_deg: FloatArray
    linear_acceleration: bool = False

    @property
    def sample_rate_hz(self) -> float:
        """The median rate of the IMU clock (robust to jitter and dropped samples)."""
        steps = np.diff(self.times_s)
        steps = steps[steps > 0]
        return float(1.0 / np.median(steps)) if steps.size else 0.0

    @property
    def duration_s(self) -> float:
        return float(self.times_s[-1] - self.times_s[0]) if self.times_s.size else 0.0

    @property
    def has_gps(self) -> bool:
        return self.gps_times_s.size >= 2

    def without_gps(self) -> Recording:
        empty = np.zeros(0)
        return replace(
            self,
            gps_times_s=empty,
            latitude=empty,
            longitude=empty,
            speed_mps=empty,
            heading_deg=empty,
            name=f"{self.name} (GPS removed)",
        )


class RecordingError(ValueError):
    """A recording that cannot be read, with the reason."""


def _read_csv(path: Path) -> dict[str, list[str]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            raise RecordingError(f"{path}: no header row")
        columns: dict[str, list[str]] = {name: [] for name in reader.fieldnames}
        for row in reader:
            for name in reader.fieldnames:
                columns[name].append(row.get(name) or "")
    return columns


def _numbers(values: Sequence[str]) -> FloatArray:
    return np.array([float(value) if value not in ("", "NA", "nan") else math.nan for value in values])


def _find(columns: Mapping[str, list[str]], role: str, explicit: str | None = None) -> str | None:
    if explicit is not None:
        if explicit not in columns:
            raise RecordingError(f"column {explicit!r} not found (have {', '.join(columns)})")
        return explicit
    lowered = {name.lower(): name for name in columns}
    for candidate in COLUMN_NAMES[role]:
        if candidate in lowered:
            return lowered[candidate]
    return None


def _time_seconds(name: str, values: FloatArray, unit: str | None) -> FloatArray:
    unit = unit or ("us" if name.endswith("us") else "ms" if name.endswith("ms") else "s")
    scale = {"s": 1.0, "ms": 1e-3, "us": 1e-6}.get(unit)
    if scale is None:
        raise RecordingError(f"time unit must be s, ms or us, not {unit!r}")
    return values * scale


def _read_csv_imu(path: Path, mapping: Mapping[str, Any]) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    columns = _read_csv(path)
    time_name = _find(columns, "time", mapping.get("time"))
    if time_name is None:
        raise RecordingError(f"{path}: no time column (one of {', '.join(COLUMN_NAMES['time'])}, or columns=)")
    times = _time_seconds(time_name, _numbers(columns[time_name]), mapping.get("time_unit"))
    accel_names = list(mapping.get("accel") or [_find(columns, f"accel_{axis}") for axis in "xyz"])
    if None in accel_names or len(accel_names) != 3:
        raise RecordingError(f"{path}: three accelerometer columns are needed (columns= names them)")
    accel = np.column_stack([_numbers(columns[name]) for name in accel_names])
    for axis, name in enumerate(accel_names):
        if str(name).lower().endswith("_g"):
            accel[:, axis] *= STANDARD_GRAVITY
    gyro_names = list(mapping.get("gyro") or [_find(columns, f"gyro_{axis}") for axis in "xyz"])
    gyro = None
    if len(gyro_names) == 3 and None not in gyro_names:
        gyro = np.column_stack([_numbers(columns[name]) for name in gyro_names])
    return times, accel, gyro


def _read_csv_gps(path: Path, mapping: Mapping[str, Any]) -> dict[str, FloatArray]:
    columns = _read_csv(path)
    found = {
        role: _find(columns, role, mapping.get(role)) for role in ("time", "latitude", "longitude", "speed", "heading")
    }
    missing = [role for role, name in found.items() if name is None]
    if missing:
        raise RecordingError(f"{path}: GPS columns not found: {', '.join(missing)}")
    names = {role: str(name) for role, name in found.items()}
    speed = _numbers(columns[names["speed"]])
    if names["speed"].lower().endswith("kmh"):
        speed = speed / 3.6
    return {
        "time": _time_seconds(names["time"], _numbers(columns[names["time"]]), mapping.get("time_unit")),
        "latitude": _numbers(columns[names["latitude"]]),
        "longitude": _numbers(columns[names["longitude"]]),
        "speed": speed,
        "heading": _numbers(columns[names["heading"]]) % 360.0,
    }


def _gps_columns(fixes: Mapping[str, Any], time_name: str) -> dict[str, FloatArray]:
    """GPS arrays from the JSON or NPZ layout (same names but for the time)."""
    return {
        "time": np.asarray(fixes[time_name], dtype=np.float64),
        "latitude": np.asarray(fixes["latitude"], dtype=np.float64),
        "longitude": np.asarray(fixes["longitude"], dtype=np.float64),
        "speed": np.asarray(fixes["speed_mps"], dtype=np.float64),
        "heading": np.asarray(fixes["heading_deg"], dtype=np.float64) % 360.0,
    }


def read_recording(
    path: str | Path,
    *,
    gps: str | Path | None = None,
    columns: Mapping[str, Any] | None = None,
    gps_columns: Mapping[str, Any] | None = None,
    name: str | None = None,
    linear_acceleration: bool = False,
) -> Recording:
    """A recording from a CSV (with an optional GPS CSV), a JSON or an NPZ file."""
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"{path}: no such file")
    gps_data: dict[str, FloatArray] | None = None
    if path.suffix == ".json":
        document = json.loads(path.read_text())
        imu = document.get("imu") or {}
        times = np.asarray(imu.get("time_s", []), dtype=np.float64)
        accel = np.asarray(imu.get("accel", []), dtype=np.float64).reshape(-1, 3)
        gyro = np.asarray(imu["gyro"], dtype=np.float64).reshape(-1, 3) if imu.get("gyro") else None
        linear_acceleration = bool(imu.get("linear_acceleration", linear_acceleration))
        if document.get("gps"):
            gps_data = _gps_columns(document["gps"], "time_s")
    elif path.suffix == ".npz":
        with np.load(path) as archive:
            times = np.asarray(archive["imu_time_s"], dtype=np.float64)
            accel = np.asarray(archive["accel"], dtype=np.float64).reshape(-1, 3)
            gyro = np.asarray(archive["gyro"], dtype=np.float64).reshape(-1, 3) if "gyro" in archive else None
            if "linear_acceleration" in archive:
                linear_acceleration = bool(archive["linear_acceleration"])
            if "gps_time_s" in archive:
                gps_data = _gps_columns(archive, "gps_time_s")
    else:
        times, accel, gyro = _read_csv_imu(path, columns or {})
        if gps is not None:
            gps_data = _read_csv_gps(Path(gps), gps_columns or {})
    return _assemble(name or path.stem, times, accel, gyro, gps_data, linear_acceleration)


def _assemble(
    name: str,
    times: FloatArray,
    accel: FloatArray,
    gyro: FloatArray | None,
    gps: dict[str, FloatArray] | None,
    linear_acceleration: bool,
) -> Recording:
    if times.size < 2 or accel.shape != (times.size, 3) or (gyro is not None and gyro.shape != accel.shape):
        raise RecordingError(f"{name}: IMU time and axes must have the same length, at least 2 samples")
    keep = np.isfinite(times) & np.all(np.isfinite(accel), axis=1)
    if gyro is not None:
        keep &= np.all(np.isfinite(gyro), axis=1)
    order = np.argsort(times[keep], kind="stable")
    times, accel = times[keep][order], accel[keep][order]
    gyro = gyro[keep][order] if gyro is not None else None
    # Repeated timestamps (a logger's coarse clock) keep their first sample.
    unique = np.concatenate([[True], np.diff(times) > 0])
    times, accel = times[unique], accel[unique]
    gyro = gyro[unique] if gyro is not None else None
    origin = float(times[0])
    empty = np.zeros(0)
    gps_times, latitude, longitude, speed, heading = empty, empty, empty, empty, empty
    if gps is not None and gps["time"].size:
        usable = np.isfinite(gps["time"]) & np.isfinite(gps["latitude"]) & np.isfinite(gps["speed"])
        fix_order = np.argsort(gps["time"][usable], kind="stable")
        gps_times = gps["time"][usable][fix_order] - origin
        latitude = gps["latitude"][usable][fix_order]
        longitude = gps["longitude"][usable][fix_order]
        speed = np.clip(gps["speed"][usable][fix_order], 0.0, None)
        heading = np.nan_to_num(gps["heading"][usable][fix_order])
    return Recording(
        name=name,
        times_s=times - origin,
        accel=accel,
        gyro=gyro,
        gps_times_s=gps_times,
        latitude=latitude,
        longitude=longitude,
        speed_mps=speed,
        heading_deg=heading,
        linear_acceleration=linear_acceleration,
    )


# The recordings shipped in datasets/real-driving (licences and caveats in its README).
SHARED_RECORDINGS: dict[str, dict[str, Any]] = {
    "auckland-forward": {
        "path": "quat-orient-auckland/accel_2020-10-15-21.csv",
        "gps": "quat-orient-auckland/gps_2020-10-15-21.csv",
    },
    "auckland-backwards": {
        "path": "quat-orient-auckland/accel_2020-10-15-22.csv",
        "gps": "quat-orient-auckland/gps_2020-10-15-22.csv",
    },
    "comma2k19": {
        "path": "comma2k19-example/imu.csv",
        "gps": "comma2k19-example/gnss_ublox.csv",
    },
}


def shared_recording(name: str, root: Path = DATASETS) -> Recording:
    """One of the recordings in datasets/real-driving by its short name (`SHARED_RECORDINGS`)."""
    if name not in SHARED_RECORDINGS:
        raise RecordingError(f"unknown recording {name!r}; shipped: {', '.join(SHARED_RECORDINGS)}")
    entry = SHARED_RECORDINGS[name]
    return read_recording(root / entry["path"], gps=root / entry["gps"], name=name)


def recording_uploads(
    recording: Recording,
    *,
    device_id: str,
    trip_id: str,
    started_at_s: float,
    driver_id: str = "",
    upload_seconds: float = 10.0,
    first_sequence: int = 0,
    firmware_version: str = "replay",
    vehicle_type: str = "",
) -> list[upload_pb2.Upload]:
    """The recording as the uploads a device would send (the last one ends the trip)."""
    if upload_seconds <= 0:
        raise RecordingError("upload_seconds must be > 0")
    rate = recording.sample_rate_hz
    count = max(1, math.ceil((recording.duration_s + 1.0 / max(rate, 1.0)) / upload_seconds - 1e-9))
    uploads: list[upload_pb2.Upload] = []
    for index in range(count):
        begin, end = index * upload_seconds, (index + 1) * upload_seconds
        inside = (recording.times_s >= begin) & (recording.times_s < end)
        offsets_us = np.round((recording.times_s[inside] - begin) * 1e6).astype(np.uint64)
        accel = recording.accel[inside].astype(np.float32)
        imu = upload_pb2.ImuSamples(
            offset_us=offsets_us.tolist(),
            accel_x=accel[:, 0].tolist(),
            accel_y=accel[:, 1].tolist(),
            accel_z=accel[:, 2].tolist(),
        )
        if recording.gyro is not None:
            gyro = recording.gyro[inside].astype(np.float32)
            imu.gyro_x.extend(gyro[:, 0].tolist())
            imu.gyro_y.extend(gyro[:, 1].tolist())
            imu.gyro_z.extend(gyro[:, 2].tolist())
        fixes = (recording.gps_times_s >= begin) & (recording.gps_times_s < end)
        gps = [
            upload_pb2.GpsFix(
                offset_ms=round((float(time) - begin) * 1000.0),
                latitude=float(latitude),
                longitude=float(longitude),
                speed_mps=float(speed),
                heading_deg=float(heading),
                hdop=1.0,
            )
            for time, latitude, longitude, speed, heading in zip(
                recording.gps_times_s[fixes],
                recording.latitude[fixes],
                recording.longitude[fixes],
                recording.speed_mps[fixes],
                recording.heading_deg[fixes],
                strict=True,
            )
        ]
        if not np.any(inside) and not np.any(fixes):
            continue
        sequence = first_sequence + len(uploads)
        uploads.append(
            upload_pb2.Upload(
                upload_id=stable_event_id("replay", device_id, trip_id, sequence),
                device_id=device_id,
                driver_id=driver_id or device_id,
                trip_id=trip_id,
                sequence=sequence,
                trip_end=False,
                firmware_version=firmware_version,
                sample_rate_hz=round(rate),
                sample_rate_exact_hz=round(rate, 3),
                started_at=timestamp_from_seconds(started_at_s + begin),
                imu=imu,
                gps=gps,
                vehicle_type=vehicle_type,
                acceleration_kind=(
                    upload_pb2.ACCELERATION_KIND_LINEAR
                    if recording.linear_acceleration
                    else upload_pb2.ACCELERATION_KIND_GRAVITY_INCLUDED
                ),
                gyroscope=upload_pb2.GYROSCOPE_PRESENT if recording.gyro is not None else upload_pb2.GYROSCOPE_ABSENT,
            )
        )
    if uploads:
        uploads[-1].trip_end = True
    return uploads


def received(upload: upload_pb2.Upload) -> upload_pb2.UploadReceived:
    """The event ingest would publish for an accepted upload (for in-process evaluation)."""
    return upload_pb2.UploadReceived(event_id=stable_event_id("received", upload.upload_id), upload=upload)
