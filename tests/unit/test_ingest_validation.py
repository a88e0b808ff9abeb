"""Each validation rule of ingest, and each of its reasons (pure functions, no servers)."""

from __future__ import annotations

import math
import time

import pytest

from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import upload_pb2
from services.ingest.domain.sequences import missing_sequences
from services.ingest.domain.validation import UploadLimits, Violation, validate_upload

NOW = 1_800_000_000.0
LIMITS = UploadLimits()


def make_upload(samples: int = 500, rate_hz: int = 50, started_at: float = NOW - 20) -> upload_pb2.Upload:
    step_ms = 1000 // rate_hz
    upload = upload_pb2.Upload(
        upload_id="upload-1",
        device_id="device-1",
        driver_id="driver-1",
        trip_id="trip-1",
        sequence=3,
        firmware_version="1.2.3",
        sample_rate_hz=rate_hz,
        started_at=timestamp_from_seconds(started_at),
        vehicle_type="car",
    )
    imu = upload.imu
    imu.offset_ms.extend(index * step_ms for index in range(samples))
    imu.accel_x.extend(0.1 * (index % 7) for index in range(samples))
    imu.accel_y.extend([0.2] * samples)
    imu.accel_z.extend([9.81] * samples)
    imu.gyro_x.extend([0.01] * samples)
    imu.gyro_y.extend([-0.01] * samples)
    imu.gyro_z.extend([0.0] * samples)
    for second in range(samples // rate_hz):
        upload.gps.add(
            offset_ms=second * 1000,
            latitude=52.5 + second * 1e-4,
            longitude=13.4,
            speed_mps=12.0,
            heading_deg=90,
            hdop=1,
        )
    return upload


def reasons(upload: upload_pb2.Upload, limits: UploadLimits = LIMITS) -> list[tuple[str | None, str]]:
    return [(violation.field, violation.reason) for violation in validate_upload(upload, NOW, limits)]


def test_a_valid_upload_has_no_violation() -> None:
    assert validate_upload(make_upload(), NOW, LIMITS) == []


@pytest.mark.parametrize("name", ["upload_id", "device_id", "trip_id", "driver_id"])
def test_required_ids(name: str) -> None:
    upload = make_upload()
    setattr(upload, name, "")
    assert reasons(upload) == [(name, "required-field-missing")]


@pytest.mark.parametrize("value", ["has space", "x" * 129, "slash/inside", "é", ".", "..", "..."])
def test_ids_are_bounded_and_plain(value: str) -> None:
    upload = make_upload()
    upload.trip_id = value
    assert reasons(upload) == [("trip_id", "invalid-id")]


def test_ids_of_128_plain_characters_pass() -> None:
    upload = make_upload()
    upload.trip_id = "a.b_c:d-" + "x" * 120
    assert reasons(upload) == []


def test_started_at_is_required() -> None:
    upload = make_upload()
    upload.ClearField("started_at")
    assert reasons(upload) == [("started_at", "required-field-missing")]


def test_started_at_in_the_future() -> None:
    assert reasons(make_upload(started_at=NOW + 301)) == [("started_at", "started-at-in-future")]
    assert reasons(make_upload(started_at=NOW + 299)) == []


def test_started_at_too_old() -> None:
    assert reasons(make_upload(started_at=NOW - 7 * 86400 - 1)) == [("started_at", "started-at-too-old")]


def test_sample_rate_must_be_supported_and_is_configurable() -> None:
    upload = make_upload(rate_hz=50)
    upload.sample_rate_hz = 30
    assert reasons(upload) == [("sample_rate_hz", "unsupported-sample-rate")]
    assert reasons(upload, UploadLimits(sample_rates_hz=frozenset({30}))) == []


def test_imu_arrays_have_equal_lengths() -> None:
    upload = make_upload()
    upload.imu.gyro_y.append(0.0)
    assert reasons(upload) == [("imu.gyro_y", "imu-length-mismatch")]


def test_offsets_increase_strictly() -> None:
    upload = make_upload()
    upload.imu.offset_ms[10] = upload.imu.offset_ms[9]
    assert reasons(upload) == [("imu.offset_ms[10]", "offset-not-increasing")]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("array", ["accel_x", "accel_z", "gyro_x", "gyro_z"])
def test_non_finite_imu_values(array: str, bad: float) -> None:
    upload = make_upload()
    getattr(upload.imu, array)[42] = bad
    assert reasons(upload) == [(f"imu.{array}[42]", "non-finite-value")]


@pytest.mark.parametrize(("array", "value"), [("accel_y", 161.0), ("accel_x", -161.0), ("gyro_z", 35.5)])
def test_absurd_imu_magnitudes(array: str, value: float) -> None:
    upload = make_upload()
    getattr(upload.imu, array)[7] = value
    assert reasons(upload) == [(f"imu.{array}[7]", "value-out-of-range")]


def test_sample_count_is_bounded() -> None:
    upload = make_upload(samples=6001, rate_hz=100)
    assert reasons(upload) == [("imu.offset_ms", "too-many-samples")]
    assert reasons(make_upload(samples=6000, rate_hz=100)) == []


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("latitude", 90.5, "value-out-of-range"),
        ("longitude", -180.5, "value-out-of-range"),
        ("speed_mps", 90.5, "value-out-of-range"),
        ("speed_mps", math.nan, "non-finite-value"),
        ("latitude", math.inf, "non-finite-value"),
        ("latitude", 1e308, "value-out-of-range"),
    ],
)
def test_gps_values(name: str, value: float, reason: str) -> None:
    upload = make_upload()
    setattr(upload.gps[2], name, value)
    if name == "latitude" and value == 1e308:
        upload.gps[3].latitude = 1e308  # the sum overflows although each value is finite
    assert reasons(upload)[0] == (f"gps[2].{name}", reason)


def test_gps_offsets_do_not_decrease() -> None:
    upload = make_upload()
    upload.gps[3].offset_ms = upload.gps[2].offset_ms  # equal is fine
    assert reasons(upload) == []
    upload.gps[4].offset_ms = 0
    assert reasons(upload) == [("gps[4].offset_ms", "gps-offset-decreasing")]


def test_gps_fix_count_is_bounded() -> None:
    upload = make_upload()
    for _ in range(600):
        upload.gps.add(offset_ms=10_000)
    assert ("gps", "too-many-gps-fixes") in reasons(upload)


@pytest.mark.parametrize("name", ["front:cam.jpg", "x" * 65, "..", "a/b.jpg"])
def test_media_names_must_be_names_a_media_put_accepts(name: str) -> None:
    upload = make_upload()
    upload.media_names.extend(["front.jpg", name])
    assert reasons(upload) == [("media_names[1]", "invalid-id")]


def test_text_fields_are_bounded() -> None:
    upload = make_upload()
    upload.firmware_version = "v" * 129
    upload.media_names.append("front camera.jpg")
    assert reasons(upload) == [("firmware_version", "value-too-long"), ("media_names[0]", "invalid-id")]


def test_every_violation_is_reported_with_detail() -> None:
    upload = make_upload()
    upload.upload_id = ""
    upload.sample_rate_hz = 7
    upload.imu.accel_x[0] = math.nan
    violations = validate_upload(upload, NOW, LIMITS)
    assert [violation.reason for violation in violations] == [
        "required-field-missing",
        "unsupported-sample-rate",
        "non-finite-value",
    ]
    assert all(isinstance(violation, Violation) and violation.detail for violation in violations)


def test_validation_is_fast_enough_for_the_hot_path() -> None:
    upload = make_upload(samples=500)
    started = time.perf_counter()
    for _ in range(200):
        validate_upload(upload, NOW, LIMITS)
    per_upload = (time.perf_counter() - started) / 200
    assert per_upload < 0.002, f"{per_upload * 1e6:.0f} µs per 500-sample upload"


@pytest.mark.parametrize(
    ("last_seen", "sequence", "expected"),
    [(None, 9, []), (3, 4, []), (3, 7, [4, 5, 6]), (8, 5, []), (8, 8, []), (0, 1000, list(range(1, 6)))],
)
def test_missing_sequences(last_seen: int | None, sequence: int, expected: list[int]) -> None:
    assert missing_sequences(last_seen, sequence, limit=5) == expected
