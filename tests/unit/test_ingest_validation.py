"""Each validation rule of ingest, and each of its reasons (pure functions, no servers)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from google.protobuf import json_format
from pydantic import ValidationError

from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import upload_pb2
from services.ingest.domain.sequences import missing_sequences
from services.ingest.domain.validation import UploadLimits, Violation, imu_sample_count, validate_upload
from services.ingest.settings import IngestSettings
from services.ingest.wiring import upload_limits

NOW = 1_800_000_000.0
LIMITS = UploadLimits()
# The rates a device may send by default, whole and fractional, from the lowest to the highest.
RATES_IN_RANGE = [10, 16.7, 25, 50, 51, 100, 104, 200, 400]


def make_upload(
    samples: int = 500,
    rate_hz: float = 50,
    started_at: float = NOW - 20,
    *,
    times: str = "offset_ms",
    jitter: float = 0.0,
    seed: int = 0,
) -> upload_pb2.Upload:
    """`samples` IMU samples at `rate_hz`, each time off the grid by up to `jitter` of a period.

    `times`: "offset_ms", "offset_us" or "both". A fractional rate goes in `sample_rate_exact_hz`,
    rounded in `sample_rate_hz`.
    """
    upload = upload_pb2.Upload(
        upload_id="upload-1",
        device_id="device-1",
        driver_id="driver-1",
        trip_id="trip-1",
        sequence=3,
        firmware_version="1.2.3",
        sample_rate_hz=round(rate_hz),
        started_at=timestamp_from_seconds(started_at),
        vehicle_type="car",
    )
    if rate_hz != round(rate_hz):
        upload.sample_rate_exact_hz = rate_hz
    offsets = np.arange(samples) + np.random.default_rng(seed).uniform(-jitter, jitter, samples)
    times_us = np.round(offsets * 1e6 / rate_hz).astype(np.int64) + 100_000  # the first sample 0.1 s in
    imu = upload.imu
    if times in ("offset_us", "both"):
        imu.offset_us.extend(times_us.tolist())
    if times in ("offset_ms", "both"):
        imu.offset_ms.extend(np.round(times_us / 1000).astype(np.int64).tolist())
    imu.accel_x.extend(0.1 * (index % 7) for index in range(samples))
    imu.accel_y.extend([0.2] * samples)
    imu.accel_z.extend([9.81] * samples)
    imu.gyro_x.extend([0.01] * samples)
    imu.gyro_y.extend([-0.01] * samples)
    imu.gyro_z.extend([0.0] * samples)
    for second in range(min(int(samples / rate_hz), 600)):
        upload.gps.add(
            offset_ms=second * 1000,
            latitude=52.5 + second * 1e-4,
            longitude=13.4,
            speed_mps=12.0,
            heading_deg=90,
            hdop=1,
        )
    return upload


def keep_samples(upload: upload_pb2.Upload, indices: list[int]) -> upload_pb2.Upload:
    """A copy of `upload` holding only the IMU samples at `indices` (the others dropped on the device)."""
    copy = upload_pb2.Upload()
    copy.CopyFrom(upload)
    for name in ("offset_ms", "offset_us", "accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z"):
        values = list(getattr(upload.imu, name))
        if values:
            copy.imu.ClearField(name)
            getattr(copy.imu, name).extend(values[index] for index in indices)
    return copy


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
    # The last sample (10.08 s in) must not be in the future either: a device sends what it recorded.
    assert reasons(make_upload(started_at=NOW + 289)) == []
    assert reasons(make_upload(started_at=NOW + 299)) == [("imu.offset_ms[499]", "sample-in-future")]


def test_started_at_too_old() -> None:
    assert reasons(make_upload(started_at=NOW - 7 * 86400 - 1)) == [("started_at", "started-at-too-old")]


@pytest.mark.parametrize("times", ["offset_ms", "offset_us", "both"])
@pytest.mark.parametrize("rate_hz", RATES_IN_RANGE)
def test_any_rate_in_range_is_accepted_with_jittery_timestamps(rate_hz: float, times: str) -> None:
    # 10 s of samples, each up to 5 % of a period off the grid.
    upload = make_upload(round(10 * rate_hz), rate_hz, times=times, jitter=0.05, seed=round(rate_hz * 10))
    assert reasons(upload) == []


def test_a_fractional_rate_goes_in_sample_rate_exact_hz() -> None:
    upload = make_upload(167, 16.7, times="offset_us")
    assert (upload.sample_rate_hz, upload.sample_rate_exact_hz) == (17, 16.7)
    assert reasons(upload) == []
    upload.sample_rate_hz = 0  # the whole rate may be left out
    assert reasons(upload) == []


@pytest.mark.parametrize(
    ("whole_hz", "exact_hz", "expected"),
    [
        (9, 0.0, [("sample_rate_hz", "unsupported-sample-rate")]),
        (401, 0.0, [("sample_rate_hz", "unsupported-sample-rate")]),
        (0, 0.0, [("sample_rate_hz", "unsupported-sample-rate")]),
        (9, 9.4, [("sample_rate_exact_hz", "unsupported-sample-rate")]),
        (400, 400.4, [("sample_rate_exact_hz", "unsupported-sample-rate")]),
        (0, math.nan, [("sample_rate_exact_hz", "non-finite-value")]),
        (50, math.nan, [("sample_rate_exact_hz", "non-finite-value")]),
        (400, math.inf, [("sample_rate_exact_hz", "non-finite-value")]),
        (50, -50.0, [("sample_rate_exact_hz", "unsupported-sample-rate")]),
        (10, 10.0, []),
        (0, 10.0, []),
        (10, 10.4, []),
    ],
)
def test_rates_outside_the_range_or_not_numbers_are_refused(
    whole_hz: int, exact_hz: float, expected: list[tuple[str, str]]
) -> None:
    # 10 s at 10 Hz: a refused rate is the only violation (the count is not checked against it).
    upload = make_upload(100, 10)
    upload.sample_rate_hz, upload.sample_rate_exact_hz = whole_hz, exact_hz
    assert reasons(upload) == expected


def test_the_rate_range_is_configurable() -> None:
    slow, fast = make_upload(90, 9), make_upload(8000, 800)
    assert reasons(slow) == [("sample_rate_hz", "unsupported-sample-rate")]
    assert reasons(fast) == [("sample_rate_hz", "unsupported-sample-rate")]
    wide = UploadLimits(min_sample_rate_hz=1, max_sample_rate_hz=1000)
    assert reasons(slow, wide) == []
    assert reasons(fast, wide) == []


@pytest.mark.parametrize(
    ("whole_hz", "accepted"), [(17, True), (16, True), (0, True), (18, False), (15, False), (50, False)]
)
def test_sample_rate_hz_is_the_exact_rate_rounded_or_zero(whole_hz: int, accepted: bool) -> None:
    upload = make_upload(167, 16.7)
    upload.sample_rate_hz = whole_hz
    assert reasons(upload) == ([] if accepted else [("sample_rate_hz", "sample-rate-mismatch")])


def test_an_allow_list_of_whole_rates_narrows_the_range() -> None:
    allowed = UploadLimits(sample_rates_hz=frozenset({25, 50, 100}))
    assert reasons(make_upload(500, 50), allowed) == []
    exact_whole = make_upload(500, 50)
    exact_whole.sample_rate_exact_hz = 50.0
    assert reasons(exact_whole, allowed) == []
    assert reasons(make_upload(510, 51), allowed) == [("sample_rate_hz", "unsupported-sample-rate")]
    assert reasons(make_upload(167, 16.7), allowed) == [("sample_rate_exact_hz", "unsupported-sample-rate")]
    [violation] = validate_upload(make_upload(510, 51), NOW, allowed)
    assert violation.detail == "sample_rate_hz 51 Hz is not one of the rates this ingest accepts: 25, 50, 100"


def test_settings_give_the_limits_and_the_old_variable_stays_an_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "MICHI_INGEST_SAMPLE_RATES_HZ",
        "MICHI_INGEST_MIN_SAMPLE_RATE_HZ",
        "MICHI_INGEST_MAX_SAMPLE_RATE_HZ",
        "MICHI_INGEST_MAX_SAMPLES",
        "MICHI_INGEST_MAX_UPLOAD_DURATION_S",
    ):
        monkeypatch.delenv(name, raising=False)
    defaults = upload_limits(IngestSettings())
    assert (defaults.min_sample_rate_hz, defaults.max_sample_rate_hz, defaults.sample_rates_hz) == (10, 400, set())
    # 240 s (what 6,000 samples at 25 Hz always allowed); 24,000 samples (400 Hz x 60 s).
    assert (defaults.max_upload_duration_s, defaults.max_samples) == (240, 24_000)

    monkeypatch.setenv("MICHI_INGEST_SAMPLE_RATES_HZ", "[25, 50, 100]")
    monkeypatch.setenv("MICHI_INGEST_MAX_SAMPLE_RATE_HZ", "200")
    monkeypatch.setenv("MICHI_INGEST_MAX_UPLOAD_DURATION_S", "60")
    configured = upload_limits(IngestSettings())
    assert (configured.sample_rates_hz, configured.max_samples) == ({25, 50, 100}, 12_000)
    assert reasons(make_upload(510, 51), configured) == [("sample_rate_hz", "unsupported-sample-rate")]
    monkeypatch.setenv("MICHI_INGEST_MAX_SAMPLES", "6000")
    assert upload_limits(IngestSettings()).max_samples == 6000

    # A listed rate outside the range, or an empty range, stops the service at start.
    monkeypatch.setenv("MICHI_INGEST_SAMPLE_RATES_HZ", "[25, 500]")
    with pytest.raises(ValidationError, match="ingest_sample_rates_hz"):
        IngestSettings()
    monkeypatch.setenv("MICHI_INGEST_SAMPLE_RATES_HZ", "[]")
    monkeypatch.setenv("MICHI_INGEST_MIN_SAMPLE_RATE_HZ", "300")
    with pytest.raises(ValidationError, match="ingest_max_sample_rate_hz"):
        IngestSettings()


def test_the_longest_upload_fits_the_body_limit() -> None:
    body_limit = IngestSettings().ingest_max_body_bytes
    longest = make_upload(24_000, 400, started_at=NOW - 120, times="both")
    assert reasons(longest) == []
    assert longest.ByteSize() < body_limit / 2
    ten_seconds = make_upload(4_000, 400, times="both")
    assert len(json_format.MessageToJson(ten_seconds)) < body_limit / 2


def test_imu_arrays_have_equal_lengths() -> None:
    upload = make_upload()
    upload.imu.gyro_y.append(0.0)
    assert reasons(upload) == [("imu.gyro_y", "imu-length-mismatch")]


def test_offsets_increase_strictly() -> None:
    upload = make_upload()
    upload.imu.offset_ms[10] = upload.imu.offset_ms[9]
    assert reasons(upload) == [("imu.offset_ms[10]", "offset-not-increasing")]


def test_microsecond_times_are_the_sample_times() -> None:
    upload = make_upload(times="offset_us")
    assert not upload.imu.offset_ms and imu_sample_count(upload.imu) == 500
    assert reasons(upload) == []
    upload.imu.offset_us[10] = upload.imu.offset_us[9]
    assert reasons(upload) == [("imu.offset_us[10]", "offset-not-increasing")]
    shorter = make_upload(times="offset_us")
    del shorter.imu.offset_us[-1]
    assert reasons(shorter) == [("imu.accel_x", "imu-length-mismatch")]


def test_millisecond_times_next_to_microsecond_ones_have_every_sample_and_agree() -> None:
    upload = make_upload(times="both")
    assert reasons(upload) == []
    truncated = make_upload(times="both")
    truncated.imu.offset_ms[:] = [offset // 1000 for offset in truncated.imu.offset_us]
    assert reasons(truncated) == []
    del truncated.imu.offset_ms[-1]
    assert reasons(truncated) == [("imu.offset_ms", "imu-length-mismatch")]
    disagreeing = make_upload(times="both")
    disagreeing.imu.offset_ms[42] += 2
    assert reasons(disagreeing) == [("imu.offset_ms[42]", "imu-offsets-disagree")]


def test_microsecond_times_stay_within_what_milliseconds_can_say() -> None:
    upload = make_upload(2, 50, times="offset_us")
    upload.imu.offset_us[:] = [2**32 * 1000, 2**32 * 1000 + 20_000]
    assert reasons(upload) == [("imu.offset_us[0]", "value-out-of-range")]
    upload.imu.offset_us[:] = [2**64 - 20_001, 2**64 - 1]
    assert reasons(upload) == [("imu.offset_us[0]", "value-out-of-range")]


@pytest.mark.parametrize("gyroscope", [upload_pb2.GYROSCOPE_ABSENT, upload_pb2.GYROSCOPE_PRESENT])
def test_gyro_arrays_may_be_empty_only_without_a_gyroscope(gyroscope: int) -> None:
    upload = make_upload(times="offset_us")
    upload.gyroscope = gyroscope  # type: ignore[assignment]
    assert reasons(upload) == []  # full arrays are fine either way
    for name in ("gyro_x", "gyro_y", "gyro_z"):
        upload.imu.ClearField(name)
    expected = [] if gyroscope == upload_pb2.GYROSCOPE_ABSENT else [("imu.gyro_x", "imu-length-mismatch")]
    assert reasons(upload) == expected


def test_without_a_gyroscope_the_gyro_arrays_are_all_empty_or_all_full() -> None:
    upload = make_upload()
    upload.gyroscope = upload_pb2.GYROSCOPE_ABSENT
    upload.imu.ClearField("gyro_x")
    assert reasons(upload) == [("imu.gyro_x", "imu-length-mismatch")]


def test_an_unstated_gyroscope_is_present() -> None:
    upload = make_upload()
    upload.imu.ClearField("gyro_y")
    [violation] = validate_upload(upload, NOW, LIMITS)
    assert (violation.field, violation.reason) == ("imu.gyro_y", "imu-length-mismatch")
    assert "GYROSCOPE_ABSENT" in violation.detail


def test_known_acceleration_kinds_pass_and_unknown_enum_numbers_are_refused() -> None:
    upload = make_upload()
    for kind in (
        upload_pb2.ACCELERATION_KIND_UNSPECIFIED,
        upload_pb2.ACCELERATION_KIND_GRAVITY_INCLUDED,
        upload_pb2.ACCELERATION_KIND_LINEAR,
    ):
        upload.acceleration_kind = kind
        assert reasons(upload) == []
    # Proto3 keeps numbers a newer device may send; ingest does not guess what they mean.
    decoded = upload_pb2.Upload.FromString(
        upload_pb2.Upload(acceleration_kind=7, gyroscope=9).SerializeToString()  # type: ignore[arg-type]
    )
    upload.acceleration_kind, upload.gyroscope = decoded.acceleration_kind, decoded.gyroscope
    assert reasons(upload) == [("acceleration_kind", "unknown-enum-value"), ("gyroscope", "unknown-enum-value")]


@pytest.mark.parametrize(("declared_hz", "accepted"), [(40, True), (39, False), (100, True), (101, False)])
def test_the_sample_count_fits_the_declared_rate(declared_hz: int, accepted: bool) -> None:
    # 500 samples at 50 Hz: declared 40 Hz is 25 % more than it allows (the limit), 39 Hz more than that;
    # declared 100 Hz is half of them missing (the limit), 101 Hz more than half.
    upload = make_upload(500, 50)
    upload.sample_rate_hz = declared_hz
    expected = [] if accepted else [("imu.offset_ms", "sample-count-inconsistent-with-rate")]
    assert reasons(upload) == expected


def test_dropped_samples_are_tolerated_up_to_half() -> None:
    upload = make_upload(500, 50, times="offset_us", jitter=0.05)
    # About 500 expected over the span: at least 0.5 x 500 - 2 = 248 must remain.
    assert reasons(keep_samples(upload, [*range(0, 496, 2), 499])) == []  # 249
    assert reasons(keep_samples(upload, [*range(0, 490, 2), 499])) == [
        ("imu.offset_us", "sample-count-inconsistent-with-rate")
    ]  # 246


def test_too_many_samples_for_the_rate_names_the_bound() -> None:
    upload = make_upload(500, 50)
    upload.sample_rate_hz = 25
    [violation] = validate_upload(upload, NOW, LIMITS)
    assert violation.reason == "sample-count-inconsistent-with-rate"
    assert violation.detail == ("500 IMU samples over 9.98 s where about 250 are expected, at most 315 at 25 Hz")


def test_one_upload_spans_at_most_the_configured_duration() -> None:
    minute = UploadLimits(max_upload_duration_s=60)
    assert reasons(make_upload(1500, 25, started_at=NOW - 100), minute) == []  # 59.96 s
    too_long = make_upload(1527, 25, started_at=NOW - 100)  # 61.04 s
    assert reasons(too_long, minute) == [("imu.offset_ms", "upload-too-long")]
    # The default keeps what 6,000 samples at 25 Hz always allowed: 240 s.
    assert reasons(too_long) == []
    assert reasons(make_upload(6000, 25, started_at=NOW - 300)) == []


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
    upload = make_upload(samples=24_001, rate_hz=400, times="offset_us")
    assert reasons(upload) == [("imu.offset_us", "too-many-samples")]
    assert reasons(make_upload(samples=24_000, rate_hz=400)) == []
    assert reasons(make_upload(samples=6001, rate_hz=100), UploadLimits(max_samples=6000)) == [
        ("imu.offset_ms", "too-many-samples")
    ]


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


@pytest.mark.parametrize(
    "value",
    [
        "1.0\x00",  # NUL
        "\x1b[31mred",  # a terminal escape
        "line\nbreak",
        "tab\there",
        "\x7f",  # DEL
        "\x85next-line",  # C1 control
        "abc\u202egpj",  # right-to-left override (format)
        "zero\u200bwidth",  # zero-width space (format)
        "para\u2029graph",  # paragraph separator
        "no\u00a0break",  # a separator other than the space
        "private\ue000use",
        "lone\ud800surrogate",
    ],
)
@pytest.mark.parametrize("name", ["firmware_version", "vehicle_type"])
def test_text_fields_hold_printable_characters_only(name: str, value: str) -> None:
    upload = make_upload()
    try:
        setattr(upload, name, value)
    except ValueError:  # protobuf refuses to hold a lone surrogate at all: nothing to check
        return
    violations = validate_upload(upload, NOW, LIMITS)
    assert [(violation.field, violation.reason) for violation in violations] == [(name, "invalid-text")]
    # The detail names the code point, never the character (it may be an escape sequence or invisible).
    assert violations[0].detail.startswith(f"{name} character ")
    assert violations[0].detail.isprintable()


@pytest.mark.parametrize("value", ["", "1.2.3-rc.4+build.7", "Kleintransporter 3,5 t", "軽自動車", "x" * 128])
def test_printable_text_within_the_bound_passes(value: str) -> None:
    upload = make_upload()
    upload.firmware_version = value
    upload.vehicle_type = value
    assert reasons(upload) == []


def test_every_string_of_an_upload_is_an_id_a_media_name_or_bounded_printable_text() -> None:
    """A string field added to `Upload` later is checked too: none is left unvalidated."""
    from google.protobuf.descriptor import FieldDescriptor

    from services.ingest.domain.validation import (
        DOCUMENT_FIELDS,
        EDGE_IDS,
        EDGE_TEXT_FIELDS,
        REQUIRED_IDS,
        TEXT_FIELDS,
    )

    def strings(descriptor: object, prefix: str = "") -> list[str]:
        found = []
        for field in descriptor.fields:  # type: ignore[attr-defined]
            if field.type == FieldDescriptor.TYPE_STRING:
                found.append(prefix + field.name)
            elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.full_name.startswith("michi."):
                found.extend(strings(field.message_type, f"{prefix}{field.name}."))
        return found

    assert sorted(strings(upload_pb2.Upload.DESCRIPTOR)) == sorted(
        [*REQUIRED_IDS, *TEXT_FIELDS, "media_names", *EDGE_IDS, *EDGE_TEXT_FIELDS, *DOCUMENT_FIELDS]
    )
    assert set(TEXT_FIELDS) >= {"firmware_version", "vehicle_type"}
    for name in TEXT_FIELDS:
        upload = make_upload()
        setattr(upload, name, "bad\x00")
        assert reasons(upload) == [(name, "invalid-text")]
        setattr(upload, name, "x" * 129)
        assert reasons(upload) == [(name, "value-too-long")]


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


@pytest.mark.parametrize("times", ["offset_ms", "both"])
def test_validation_is_fast_enough_for_the_hot_path(times: str) -> None:
    upload = make_upload(samples=500, times=times)
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
