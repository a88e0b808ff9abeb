"""Validation rules for one device upload, as pure functions returning `Violation`s.

The rules read the protobuf `Upload` directly rather than a dataclass copy: an
upload carries thousands of floats, which numpy reads from the repeated fields
in microseconds while a Python loop over them takes the better part of a millisecond.
Each rule returns the violations it found (at most one per field, the first bad
index), so the device gets a precise, machine-readable reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from michi.contracts.v1 import upload_pb2

# Ids become Redis keys and blob paths, so a name made only of dots ("." or "..") is refused too.
ID_PATTERN = re.compile(r"(?!\.+$)[A-Za-z0-9._:-]{1,128}")
# Media names in an upload must be names `PUT /v1/uploads/{upload_id}/media/{name}` accepts.
MEDIA_NAME_PATTERN = re.compile(r"(?!\.+$)[A-Za-z0-9._-]{1,64}")
MAX_ID_LENGTH = 128
MAX_TEXT_LENGTH = 128
MAX_MEDIA_NAMES = 32

REQUIRED_IDS = ("upload_id", "device_id", "trip_id", "driver_id")
IMU_ARRAYS = ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z")
# Up to this many GPS fixes (10 in a 10 s upload at 1 Hz) a plain loop checks them faster than numpy.
FEW_GPS_FIXES = 64


@dataclass(frozen=True)
class Violation:
    """One broken rule: the proto field path (or None), a kebab-case reason, a human detail."""

    field: str | None
    reason: str
    detail: str


@dataclass(frozen=True)
class UploadLimits:
    """The bounds an upload must respect (from `IngestSettings`)."""

    sample_rates_hz: frozenset[int] = frozenset({25, 50, 100})
    max_samples: int = 100 * 60
    max_gps_fixes: int = 10 * 60
    max_future_skew_s: float = 5 * 60
    max_age_s: float = 7 * 24 * 60 * 60
    # Per axis. A vehicle crash peaks around 100 m/s^2; beyond this the sensor is broken.
    max_abs_accel_mps2: float = 160.0
    max_abs_gyro_radps: float = 35.0
    max_speed_mps: float = 90.0
    sample_rates_text: str = field(init=False, default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "sample_rates_text", ", ".join(str(rate) for rate in sorted(self.sample_rates_hz)))


def check_ids(upload: upload_pb2.Upload) -> list[Violation]:
    violations = []
    for name in REQUIRED_IDS:
        value: str = getattr(upload, name)
        if not value:
            violations.append(Violation(name, "required-field-missing", f"{name} is required"))
        elif ID_PATTERN.fullmatch(value) is None:
            violations.append(
                Violation(name, "invalid-id", f"{name} must be 1-{MAX_ID_LENGTH} characters of A-Z a-z 0-9 . _ : -")
            )
    return violations


def check_text_fields(upload: upload_pb2.Upload) -> list[Violation]:
    violations = []
    for name in ("firmware_version", "vehicle_type"):
        if len(getattr(upload, name)) > MAX_TEXT_LENGTH:
            violations.append(Violation(name, "value-too-long", f"{name} exceeds {MAX_TEXT_LENGTH} characters"))
    if len(upload.media_names) > MAX_MEDIA_NAMES:
        violations.append(Violation("media_names", "too-many-media-names", f"at most {MAX_MEDIA_NAMES} media names"))
    for index, name in enumerate(upload.media_names):
        if MEDIA_NAME_PATTERN.fullmatch(name) is None:
            violations.append(
                Violation(f"media_names[{index}]", "invalid-id", "media names are 1-64 characters of A-Z a-z 0-9 . _ -")
            )
            break
    return violations


def check_started_at(upload: upload_pb2.Upload, now_s: float, limits: UploadLimits) -> list[Violation]:
    if not upload.HasField("started_at"):
        return [Violation("started_at", "required-field-missing", "started_at is required")]
    started = upload.started_at.seconds + upload.started_at.nanos / 1e9
    if started > now_s + limits.max_future_skew_s:
        return [
            Violation(
                "started_at",
                "started-at-in-future",
                f"started_at is {started - now_s:.0f} s ahead of the server clock"
                f" (limit {limits.max_future_skew_s:.0f} s)",
            )
        ]
    if started < now_s - limits.max_age_s:
        return [Violation("started_at", "started-at-too-old", f"started_at is older than {limits.max_age_s:.0f} s")]
    return []


def check_sample_rate(upload: upload_pb2.Upload, limits: UploadLimits) -> list[Violation]:
    if upload.sample_rate_hz not in limits.sample_rates_hz:
        return [
            Violation(
                "sample_rate_hz",
                "unsupported-sample-rate",
                f"sample_rate_hz {upload.sample_rate_hz} is not one of {limits.sample_rates_text}",
            )
        ]
    return []


def check_imu(upload: upload_pb2.Upload, limits: UploadLimits) -> list[Violation]:
    """Lengths, count, strictly increasing offsets, finite values and plausible magnitudes."""
    imu = upload.imu
    offsets = imu.offset_ms
    count = len(offsets)
    for name in IMU_ARRAYS:
        length = len(getattr(imu, name))
        if length != count:
            return [
                Violation(
                    f"imu.{name}", "imu-length-mismatch", f"imu.{name} has {length} values, imu.offset_ms has {count}"
                )
            ]
    if count > limits.max_samples:
        return [Violation("imu.offset_ms", "too-many-samples", f"{count} IMU samples, at most {limits.max_samples}")]
    if count == 0:
        return []
    violations = []
    if count > 1:
        steps = np.asarray(offsets, dtype=np.int64)
        increases = steps[1:] > steps[:-1]
        if not increases.all():
            index = int(np.argmin(increases)) + 1
            violations.append(
                Violation(
                    f"imu.offset_ms[{index}]",
                    "offset-not-increasing",
                    f"offset {offsets[index]} ms does not follow {offsets[index - 1]} ms",
                )
            )
    # One row per axis (the fields are float32 already): one reduction per row when all is well.
    # NaN fails the comparison, so a row with one is looked into.
    values = np.array([getattr(imu, name) for name in IMU_ARRAYS], dtype=np.float32)
    bounds = [limits.max_abs_accel_mps2] * 3 + [limits.max_abs_gyro_radps] * 3
    peaks = np.abs(values).max(axis=1)
    for row, (name, limit) in enumerate(zip(IMU_ARRAYS, bounds, strict=True)):
        if peaks[row] <= limit:
            continue
        violation = _check_bounded_floats(f"imu.{name}[{{index}}]", values[row], -limit, limit)
        if violation is not None:
            violations.append(violation)
    return violations


def check_gps(upload: upload_pb2.Upload, limits: UploadLimits) -> list[Violation]:
    fixes = upload.gps
    if len(fixes) > limits.max_gps_fixes:
        return [Violation("gps", "too-many-gps-fixes", f"{len(fixes)} GPS fixes, at most {limits.max_gps_fixes}")]
    if not fixes:
        return []
    bounds = (
        ("latitude", -90.0, 90.0),
        ("longitude", -180.0, 180.0),
        ("speed_mps", 0.0, limits.max_speed_mps),
        ("heading_deg", -360.0, 360.0),
        ("hdop", 0.0, 1000.0),
    )
    if len(fixes) <= FEW_GPS_FIXES and _plausible_fixes(fixes, limits.max_speed_mps):
        return []
    violations: list[Violation] = []
    previous_offset = -1
    for index, fix in enumerate(fixes):
        if fix.offset_ms < previous_offset:
            violations.append(
                Violation(
                    f"gps[{index}].offset_ms",
                    "gps-offset-decreasing",
                    f"offset {fix.offset_ms} ms comes after {previous_offset} ms",
                )
            )
            break
        previous_offset = fix.offset_ms
    # One row per fix, one column per bounded field: two comparisons when all is well (NaN fails both).
    table = np.array(
        [(fix.latitude, fix.longitude, fix.speed_mps, fix.heading_deg, fix.hdop) for fix in fixes], dtype=np.float64
    )
    lows = np.array([low for _, low, _ in bounds])
    highs = np.array([high for _, _, high in bounds])
    if (table >= lows).all() and (table <= highs).all():
        return violations
    for column, (name, low, high) in enumerate(bounds):
        violation = _check_bounded_floats(f"gps[{{index}}].{name}", table[:, column], low, high)
        if violation is not None:
            violations.append(violation)
    return violations


def _plausible_fixes(fixes: Sequence[upload_pb2.GpsFix], max_speed_mps: float) -> bool:
    """True when every fix is in bounds and offsets never decrease (NaN fails every comparison)."""
    previous_offset = -1
    for fix in fixes:
        if not (
            fix.offset_ms >= previous_offset
            and -90.0 <= fix.latitude <= 90.0
            and -180.0 <= fix.longitude <= 180.0
            and 0.0 <= fix.speed_mps <= max_speed_mps
            and -360.0 <= fix.heading_deg <= 360.0
            and 0.0 <= fix.hdop <= 1000.0
        ):
            return False
        previous_offset = fix.offset_ms
    return True


def _check_bounded_floats(
    path_template: str, values: Sequence[float] | np.ndarray, low: float, high: float
) -> Violation | None:
    """The first non-finite or out-of-range value; two vectorised reductions when all is well."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return None
    # NaN makes both comparisons false and inf fails one, so the fast path lets neither through.
    if array.min() >= low and array.max() <= high:
        return None
    finite = np.isfinite(array)
    if not finite.all():
        index = int(np.argmin(finite))
        return Violation(
            path_template.format(index=index), "non-finite-value", f"{array[index]} is not a finite number"
        )
    index = int(np.argmax((array < low) | (array > high)))
    return Violation(
        path_template.format(index=index), "value-out-of-range", f"{array[index]:g} is outside [{low:g}, {high:g}]"
    )


def validate_upload(upload: upload_pb2.Upload, now_s: float, limits: UploadLimits) -> list[Violation]:
    """Every violation of every rule (empty when the upload is acceptable)."""
    return [
        *check_ids(upload),
        *check_text_fields(upload),
        *check_started_at(upload, now_s, limits),
        *check_sample_rate(upload, limits),
        *check_imu(upload, limits),
        *check_gps(upload, limits),
    ]
