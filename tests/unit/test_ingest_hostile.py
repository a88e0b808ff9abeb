"""A hostile device against ingest's pure door (no servers): every field out of range is a 4xx with a reason.

Invalid protobuf Timestamps (anywhere in an Upload), sequence bounds, sample times beyond the upload
or in the future, tokens with bytes no token has, JSON that names a field twice, holds NaN, strings
or huge numbers where numbers belong, huge arrays, deep nesting or wrong types. The door is
`decode_body` then `check_upload`: whatever the body, only `UploadRefused` comes out of them, and an
upload they let through can be archived and published. Failure isolation in batches is in
`test_ingest_hostile_batches.py`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import duration_pb2, json_format
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from starlette.requests import Request

from michi.archive import upload_day
from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import upload_pb2
from services.ingest.adapters.devices import DeviceRegistry
from services.ingest.domain.decoding import JSON, PROTOBUF
from services.ingest.domain.tokens import InvalidToken, issue_token, verify_signature
from services.ingest.domain.validation import (
    MAX_NANOS,
    MAX_TIMESTAMP_SECONDS,
    MIN_TIMESTAMP_SECONDS,
    UploadLimits,
    _present,
    _well_known_paths,
    duration_problem,
    validate_upload,
)
from services.ingest.entrypoints.http import declared_length
from services.ingest.entrypoints.http_protocol import parser_refusal
from services.ingest.handlers import UploadRefused, check_upload, decode_body
from services.ingest.settings import IngestSettings
from services.ingest.wiring import upload_limits

NOW = 1_800_000_000.0
LIMITS = UploadLimits()
SECRET = b"unit-test-secret"


def make_upload(*, sequence: int = 3, started_at: float = NOW - 20) -> upload_pb2.Upload:
    """A valid 10 s, 50 Hz upload with 10 GPS fixes."""
    upload = upload_pb2.Upload(
        upload_id="upload-1",
        device_id="device-1",
        driver_id="driver-1",
        trip_id="trip-1",
        sequence=sequence,
        sample_rate_hz=50,
        started_at=timestamp_from_seconds(started_at),
    )
    upload.imu.offset_ms.extend(index * 20 for index in range(500))
    for name in ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z"):
        getattr(upload.imu, name).extend([0.1] * 500)
    for second in range(10):
        upload.gps.add(offset_ms=second * 1000, latitude=52.5, longitude=13.4, speed_mps=12.0, hdop=1)
    return upload


def reasons(upload: upload_pb2.Upload, limits: UploadLimits = LIMITS) -> list[tuple[str | None, str]]:
    return [(violation.field, violation.reason) for violation in validate_upload(upload, NOW, limits)]


def refusal(body: bytes, media: str = JSON, limits: UploadLimits = LIMITS) -> tuple[int, str, str | None]:
    """(status, reason, field) the door answers a body sent by device-1 with."""
    with pytest.raises(UploadRefused) as refused:
        upload = decode_body(body, media, limits)
        check_upload(upload, "device-1", NOW, limits)
    return refused.value.status, refused.value.reason, refused.value.field


def valid_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(json_format.MessageToJson(make_upload()))
    return document


# --- protobuf well-known types


@pytest.mark.parametrize(
    ("seconds", "nanos", "field"),
    [
        (int(NOW), 1_500_000_000, "started_at.nanos"),
        (int(NOW), -1, "started_at.nanos"),
        (int(NOW), MAX_NANOS + 1, "started_at.nanos"),
        (int(NOW), -(2**31), "started_at.nanos"),
        (MAX_TIMESTAMP_SECONDS + 1, 0, "started_at.seconds"),
        (MIN_TIMESTAMP_SECONDS - 1, 0, "started_at.seconds"),
        (2**63 - 1, 0, "started_at.seconds"),
        (-(2**63), 0, "started_at.seconds"),
    ],
)
def test_a_timestamp_outside_what_timestamp_holds_is_refused_alone(seconds: int, nanos: int, field: str) -> None:
    upload = make_upload()
    upload.started_at.seconds = seconds
    upload.started_at.nanos = nanos
    # Exactly one violation: the future/too-old rules and the end-of-upload rule do not read an invalid time.
    assert reasons(upload) == [(field, "invalid-timestamp")]
    with pytest.raises(UploadRefused) as refused:
        check_upload(upload, "device-1", NOW, LIMITS)
    assert (refused.value.status, refused.value.reason, refused.value.field) == (422, "invalid-timestamp", field)
    # What made the raw archive fail (and with it every upload of its batch) before this was checked.
    with pytest.raises(ValueError, match="not a valid timestamp"):
        upload_day(upload)


def test_the_edges_of_timestamp_are_valid_timestamps() -> None:
    upload = make_upload()
    upload.started_at.nanos = MAX_NANOS
    assert reasons(upload) == []
    upload.started_at.seconds = MAX_TIMESTAMP_SECONDS  # valid, but far in the future
    assert reasons(upload) == [("started_at", "started-at-in-future")]
    upload.started_at.seconds = MIN_TIMESTAMP_SECONDS
    upload.started_at.nanos = 0
    assert reasons(upload) == [("started_at", "started-at-too-old")]


def test_every_timestamp_and_duration_field_of_a_message_is_found() -> None:
    # Upload has one today; the search follows messages into messages and repeated fields.
    assert [[field.name for field in path] for path in _well_known_paths(upload_pb2.Upload.DESCRIPTOR)] == [
        ["started_at"]
    ]
    paths = _well_known_paths(upload_pb2.UploadReceived.DESCRIPTOR)
    assert [".".join(field.name for field in path) for path in paths] == [
        "occurred_at",
        "upload.started_at",
        "received_at",
    ]
    index = upload_pb2.ArchiveSegmentIndex()
    for seconds in (10, 20):
        index.uploads.add(upload_id=f"u{seconds}").started_at.seconds = seconds
    index.uploads.add(upload_id="no-start")
    [path] = _well_known_paths(upload_pb2.ArchiveSegmentIndex.DESCRIPTOR)
    present = [(name, stamp.seconds) for name, stamp in _present(index, path)]  # type: ignore[attr-defined]
    assert present == [("uploads[0].started_at", 10), ("uploads[1].started_at", 20)]


@pytest.mark.parametrize(
    ("seconds", "nanos", "part"),
    [
        (0, 1_000_000_000, "nanos"),
        (0, -1_000_000_000, "nanos"),
        (315_576_000_001, 0, "seconds"),
        (-315_576_000_001, 0, "seconds"),
        (1, -1, "nanos"),
        (-1, 1, "nanos"),
    ],
)
def test_a_duration_outside_what_duration_holds_is_named(seconds: int, nanos: int, part: str) -> None:
    problem = duration_problem(duration_pb2.Duration(seconds=seconds, nanos=nanos))
    assert problem is not None and problem[0] == part
    for fine in ((0, 0), (-5, -999_999_999), (315_576_000_000, 999_999_999)):
        assert duration_problem(duration_pb2.Duration(seconds=fine[0], nanos=fine[1])) is None


# --- sequence and time bounds


def test_sequence_is_bounded_per_trip() -> None:
    assert reasons(make_upload(sequence=8_640)) == []
    upload = make_upload(sequence=100_000)
    upload.trip_end = True
    assert reasons(upload) == [("sequence", "sequence-too-high")]
    assert reasons(make_upload(sequence=2**64 - 1)) == [("sequence", "sequence-too-high")]
    assert reasons(make_upload(sequence=101), UploadLimits(max_sequence=100)) == [("sequence", "sequence-too-high")]


def test_the_sequence_settings_reach_the_limits_and_the_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MICHI_INGEST_MAX_SEQUENCE", "MICHI_INGEST_MAX_SEQUENCE_GAP"):
        monkeypatch.delenv(name, raising=False)
    defaults = IngestSettings()
    # A day of 10 s uploads; an hour of them.
    assert (defaults.ingest_max_sequence, defaults.ingest_max_sequence_gap) == (8_640, 360)
    assert upload_limits(defaults).max_sequence == 8_640
    monkeypatch.setenv("MICHI_INGEST_MAX_SEQUENCE", "20000")
    monkeypatch.setenv("MICHI_INGEST_MAX_SEQUENCE_GAP", "50")
    configured = IngestSettings()
    assert (configured.ingest_max_sequence, configured.ingest_max_sequence_gap) == (20_000, 50)
    assert upload_limits(configured).max_sequence == 20_000
    monkeypatch.setenv("MICHI_INGEST_MAX_SEQUENCE_GAP", "0")
    with pytest.raises(ValidationError, match="ingest_max_sequence_gap"):
        IngestSettings()


@pytest.mark.parametrize(
    ("array", "last", "field"),
    [
        # 250 s: the longest upload (240 s) and 10 s before its first sample; only the last sample is beyond.
        ("offset_ms", 250_001, "imu.offset_ms[499]"),
        ("offset_us", 250_000_001, "imu.offset_us[499]"),
        # 46 days after started_at: every sample is beyond, the first is named.
        ("offset_ms", 4_000_000_000, "imu.offset_ms[0]"),
        ("offset_us", 4_000_000_000_000, "imu.offset_us[0]"),
    ],
)
def test_imu_times_beyond_the_upload_are_refused(array: str, last: int, field: str) -> None:
    upload = make_upload()
    step = 20 if array == "offset_ms" else 20_000
    upload.imu.ClearField("offset_ms")
    # 10 s of samples ending at `last`: the span is fine, where they lie is not.
    getattr(upload.imu, array).extend(last - (499 - index) * step for index in range(500))
    assert reasons(upload) == [(field, "offset-too-large")]
    upload.imu.ClearField(array)
    getattr(upload.imu, array).extend(last - 1 - (499 - index) * step for index in range(500))
    assert reasons(upload) == ([] if last - 1 <= 250 * 1000 * (step // 20) else [(field, "offset-too-large")])


def test_gps_times_beyond_the_upload_are_refused() -> None:
    upload = make_upload()
    upload.gps[9].offset_ms = 250_001
    assert reasons(upload) == [("gps[9].offset_ms", "offset-too-large")]
    upload.gps[9].offset_ms = 2**32 - 1
    assert reasons(upload) == [("gps[9].offset_ms", "offset-too-large")]
    upload.gps[9].offset_ms = 250_000
    assert reasons(upload) == []


def test_samples_recorded_in_the_future_are_refused() -> None:
    # started_at itself is within the allowed skew (300 s), the last GPS fix is not.
    upload = make_upload(started_at=NOW + 280)
    upload.gps[9].offset_ms = 30_000
    assert reasons(upload) == [("gps[9].offset_ms", "sample-in-future")]
    upload.gps[9].offset_ms = 19_000
    assert reasons(upload) == []
    # An upload without samples has nothing to check beyond started_at.
    empty = make_upload(started_at=NOW + 299)
    empty.ClearField("imu")
    empty.ClearField("gps")
    assert reasons(empty) == []


def test_a_time_span_longer_than_the_count_and_rate_allow_is_refused() -> None:
    # Two samples 200 s apart at 50 Hz: 10,001 expected, at least 4,999 needed.
    upload = make_upload()
    for name in ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z"):
        getattr(upload.imu, name)[:] = [0.1, 0.1]
    upload.imu.offset_ms[:] = [0, 200_000]
    assert reasons(upload) == [("imu.offset_ms", "sample-count-inconsistent-with-rate")]


# --- tokens

TOKEN = issue_token(SECRET, "device-1", token_id="00ff00ff00ff00ff")
PAYLOAD, SIGNATURE = TOKEN.rpartition(".")[::2]


@pytest.mark.parametrize(
    "token",
    [
        f"{PAYLOAD[:-1]}é.{SIGNATURE}",  # non-ASCII in the payload
        f"{PAYLOAD}.{SIGNATURE[:-1]}é",  # non-ASCII in the signature
        f"{PAYLOAD}.{SIGNATURE[:-1]}\u00ff",  # what a 0xff byte in a header reads as (latin-1)
        f"mdt1.\udcff.x.{SIGNATURE}",  # a lone surrogate: not even UTF-8
        "mdt1.\x00.\x00.\x00",
        f"{TOKEN}\n",
        f" {TOKEN}",
        "mdt1.a b.c.d",
        "mdt1..x.y",
        "mdt1.a.b.c.d",
        "mdt1.%%%.x.y",
        f"mdt1.{'A' * 600}.00ff00ff00ff00ff.{SIGNATURE}",
        "Basic dXNlcjpwYXNz",
        "",
    ],
)
def test_tokens_with_characters_no_token_has_are_invalid_not_a_crash(token: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidToken):
        verify_signature(SECRET, token)
    registry = DeviceRegistry.from_url(f"sqlite:///{tmp_path / 'devices.db'}", SECRET)
    registry.create_tables()
    try:
        with pytest.raises(InvalidToken):
            registry.verify(token)
    finally:
        registry.close()


def test_a_genuine_token_still_verifies() -> None:
    assert verify_signature(SECRET, TOKEN) == ("device-1", "00ff00ff00ff00ff")


# --- Content-Length in the app (the server's parser refuses most before; parser_refusal names those)


def request_with(*headers: tuple[bytes, bytes]) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/v1/uploads", "headers": list(headers)})


@pytest.mark.parametrize(
    ("values", "status", "reason"),
    [
        ([b"abc"], 400, "invalid-content-length"),
        ([b"-1"], 400, "invalid-content-length"),
        ([b"+5"], 400, "invalid-content-length"),
        ([b"5, 5"], 400, "invalid-content-length"),
        ([b"5", b"5"], 400, "invalid-content-length"),
        ([b"5", b"6"], 400, "invalid-content-length"),
        ([b"\xb2"], 400, "invalid-content-length"),  # '²' as latin-1: str.isdigit() says yes, int() says no
        ([b""], 400, "invalid-content-length"),
        ([b"9" * 5000], 413, "body-too-large"),  # int() refuses over 4,300 digits
        ([b"2097153"], 413, "body-too-large"),
    ],
)
def test_a_content_length_that_is_not_one_number_is_refused(values: list[bytes], status: int, reason: str) -> None:
    with pytest.raises(UploadRefused) as refused:
        declared_length(request_with(*((b"content-length", value) for value in values)), 2 * 1024 * 1024, reason)
    assert (refused.value.status, refused.value.reason) == (status, reason)
    assert declared_length(request_with((b"content-length", b"2097152")), 2 * 1024 * 1024, "body-too-large") == (
        2 * 1024 * 1024
    )
    assert declared_length(request_with(), 10, "body-too-large") is None


@pytest.mark.parametrize(
    ("problem", "reason"),
    [
        ("Invalid character in Content-Length", "invalid-content-length"),
        ("Duplicate Content-Length", "invalid-content-length"),
        ("Content-Length overflow", "invalid-content-length"),
        ("Invalid method encountered", "malformed-request"),
    ],
)
def test_parser_refusals_are_named(problem: str, reason: str) -> None:
    assert parser_refusal(problem)[0] == reason


# --- hostile JSON


def with_value(path: str, value: Any) -> bytes:
    """A valid upload's JSON with the value at `path` (dots and [index]) replaced."""
    document = valid_document()
    target: Any = document
    parts = path.replace("[", ".").replace("]", "").split(".")
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target[part]
    last = parts[-1]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return json.dumps(document, allow_nan=True).encode()


def test_the_valid_document_passes() -> None:
    upload = decode_body(json.dumps(valid_document()).encode(), JSON, LIMITS)
    check_upload(upload, "device-1", NOW, LIMITS)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # NaN and infinities: the proto3 JSON strings decode (validation names the field), the bare
        # literals Python's json reads (not JSON) do not.
        (with_value("sampleRateExactHz", "NaN"), (422, "non-finite-value", "sample_rate_exact_hz")),
        (with_value("imu.accelY[3]", "Infinity"), (422, "non-finite-value", "imu.accel_y[3]")),
        (with_value("sampleRateExactHz", math.nan), (400, "undecodable-body", None)),
        (with_value("imu.accelY[3]", math.inf), (400, "undecodable-body", None)),
        (with_value("gps[2].latitude", "-Infinity"), (422, "non-finite-value", "gps[2].latitude")),
        (with_value("gps[2].speedMps", "NaN"), (422, "non-finite-value", "gps[2].speed_mps")),
        (with_value("sequence", math.nan), (400, "undecodable-body", None)),
        (with_value("imu.offsetMs[1]", math.inf), (400, "undecodable-body", None)),
        # Strings, booleans, nulls, objects and arrays where numbers belong.
        (with_value("sampleRateHz", "fast"), (400, "undecodable-body", None)),
        (with_value("gps[0].latitude", "north"), (400, "undecodable-body", None)),
        (with_value("imu.accelX[0]", "0x10"), (400, "undecodable-body", None)),
        (with_value("imu.accelX[0]", [1.0]), (400, "undecodable-body", None)),
        (with_value("imu.accelX", {"0": 1.0}), (400, "undecodable-body", "imu.accel_x")),
        (with_value("sequence", {"value": 1}), (400, "undecodable-body", None)),
        (with_value("sequence", -1), (400, "undecodable-body", None)),
        (with_value("sequence", 2**64), (400, "undecodable-body", None)),
        (with_value("sequence", "1e400"), (400, "undecodable-body", None)),
        (with_value("sequence", 1e400), (400, "undecodable-body", None)),
        (with_value("sequence", "100000"), (422, "sequence-too-high", "sequence")),
        # Numbers too large for a double, which Python's json reads exactly (OverflowError in conversion).
        (with_value("imu.accelX[0]", 10**400), (400, "undecodable-body", None)),
        (with_value("gps[0].latitude", -(10**400)), (400, "undecodable-body", None)),
        (with_value("sampleRateExactHz", 10**400), (400, "undecodable-body", None)),
        # Wrong types for messages and lists.
        # (json_format took "imu": "x" for an object with an unknown key: an upload without IMU samples.)
        (with_value("imu", "x"), (400, "undecodable-body", "imu")),
        (with_value("imu", []), (400, "undecodable-body", "imu")),
        (with_value("gps", {}), (400, "undecodable-body", "gps")),
        (with_value("gps[0]", 5), (400, "undecodable-body", "gps[0]")),
        (with_value("mediaNames", "front.jpg"), (400, "undecodable-body", "media_names")),
        (with_value("startedAt", 5), (400, "undecodable-body", None)),
        (with_value("startedAt", {"seconds": 1, "nanos": 1_500_000_000}), (400, "undecodable-body", None)),
        (with_value("startedAt", "10000-01-01T00:00:00Z"), (400, "undecodable-body", None)),
        (with_value("startedAt", "2026-01-01T00:00:00.1234567891Z"), (400, "undecodable-body", None)),
        (with_value("uploadId", None), (422, "required-field-missing", "upload_id")),
        (with_value("uploadId", 5), (400, "undecodable-body", None)),
        (with_value("uploadId", "é"), (422, "invalid-id", "upload_id")),
        (with_value("tripId", "x" * 129), (422, "invalid-id", "trip_id")),
        # (json_format took an enum name it does not know for the default: gravity included.)
        (
            with_value("accelerationKind", "ACCELERATION_KIND_SIDEWAYS"),
            (422, "unknown-enum-value", "acceleration_kind"),
        ),
        (with_value("gyroscope", 99), (422, "unknown-enum-value", "gyroscope")),
        # Huge arrays: refused by count before a single item is converted.
        (with_value("gps", [{}] * 601), (422, "too-many-gps-fixes", "gps")),
        (with_value("gps", [{}] * 600_000), (422, "too-many-gps-fixes", "gps")),
        (with_value("mediaNames", ["a"] * 33), (422, "too-many-media-names", "media_names")),
        (with_value("imu.accelZ", [0.0] * 24_001), (422, "too-many-samples", "imu.accel_z")),
        (with_value("imu.offsetMs", list(range(24_001))), (422, "too-many-samples", "imu.offset_ms")),
        # Deep nesting, in an unknown field and in a known one.
        (b'{"extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", (400, "undecodable-body", None)),
        (with_value("imu.accelX", json.loads("[" * 500 + "]" * 500)), (400, "undecodable-body", None)),
        # The same field twice, under one name or both.
        (b'{"uploadId": "a", "upload_id": "b"}', (422, "duplicate-field", "upload_id")),
        (b'{"deviceId": "device-1", "deviceId": "device-1"}', (422, "duplicate-field", "device_id")),
        (with_value("imu.accel_x", [0.1] * 500), (422, "duplicate-field", "imu.accel_x")),
        (with_value("gps[4].speed_mps", 1.0), (422, "duplicate-field", "gps[4].speed_mps")),
        # Not an object at all.
        (b"[]", (400, "undecodable-body", None)),
        (b"null", (400, "undecodable-body", None)),
        (b'"upload"', (400, "undecodable-body", None)),
        (b"\xff\xfe{}", (400, "undecodable-body", None)),
    ],
)
def test_hostile_json_is_a_4xx_with_a_reason(body: bytes, expected: tuple[int, str, str | None]) -> None:
    assert refusal(body) == expected


def test_a_huge_gps_array_is_refused_before_any_fix_is_converted() -> None:
    # 600,000 empty fixes: converting them one at a time held the event loop for seconds.
    body = with_value("gps", [{}] * 600_000)
    started = time.perf_counter()
    assert refusal(body) == (422, "too-many-gps-fixes", "gps")
    assert time.perf_counter() - started < 1.0


# --- the door never raises anything but UploadRefused (hypothesis)

HOSTILE_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([10**400, -(10**400), 2**64, 2**64 - 1, -1, 0, 2**31, 2**32])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "0x10", "", "é", "\u0000", "12", "-0", "1.5"])
    | st.text(max_size=20)
)
HOSTILE_VALUES = st.recursive(
    HOSTILE_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
FIELD_PATHS = [
    "uploadId",
    "deviceId",
    "tripId",
    "driverId",
    "sequence",
    "tripEnd",
    "firmwareVersion",
    "sampleRateHz",
    "sampleRateExactHz",
    "startedAt",
    "accelerationKind",
    "gyroscope",
    "vehicleType",
    "mediaNames",
    "imu",
    "gps",
    *(f"imu.{name}" for name in ("offsetMs", "offsetUs", "accelX", "accelY", "accelZ", "gyroX", "gyroY", "gyroZ")),
    *(f"imu.{name}[{index}]" for name in ("offsetMs", "accelX", "gyroZ") for index in (0, 7, 499)),
    *(f"gps[{index}].{name}" for index in (0, 9) for name in ("offsetMs", "latitude", "speedMps", "hdop")),
]
TIMESTAMP_STRINGS = st.sampled_from(
    [
        "2027-01-15T08:00:00Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999999Z",
        "2027-01-15T08:00:00+25:00",
        "2027-02-30T08:00:00Z",
        "2027-01-15T08:00:00.1234567891Z",
        "yesterday",
    ]
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def hostile_documents(draw: st.DrawFn) -> bytes:
    """A valid upload's JSON with one to four hostile changes: values, spellings, sizes, nesting."""
    document = valid_document()
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(FIELD_PATHS))
        parts = path.replace("[", ".").replace("]", "").split(".")
        target: Any = document
        for part in parts[:-1]:
            # An earlier change may have replaced what the path goes through: then it leads nowhere.
            if isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            elif isinstance(target, dict):
                target = target.get(part)
            else:
                target = None
        last = parts[-1]
        change = draw(st.sampled_from(["value", "timestamp", "twice", "huge", "nested"]))
        if change == "timestamp":
            value: Any = draw(TIMESTAMP_STRINGS)
        elif change == "huge":
            value = [draw(HOSTILE_SCALARS)] * draw(st.sampled_from([601, 24_001, 30_000]))
        elif change == "nested":
            depth = draw(st.integers(1, 200))
            value = json.loads("[" * depth + "]" * depth)
        else:
            value = draw(HOSTILE_VALUES)
        if isinstance(target, list):
            if last.isdigit() and int(last) < len(target):
                target[int(last)] = value
        elif isinstance(target, dict):
            target[last] = value
            if change == "twice":
                # The other spelling of the same field: snake_case for a camelCase name.
                other = "".join(f"_{letter.lower()}" if letter.isupper() else letter for letter in last)
                if other != last:
                    target[other] = draw(HOSTILE_VALUES)
    return json.dumps(document, allow_nan=True).encode()


def door(body: bytes, media: str) -> upload_pb2.Upload | UploadRefused:
    """The upload the door lets through, or its refusal; anything else raised fails the test."""
    try:
        upload = decode_body(body, media, LIMITS)
        check_upload(upload, "device-1", NOW, LIMITS)
    except UploadRefused as refused:
        assert refused.status in (400, 403, 422), refused
        assert refused.reason and refused.detail
        return refused
    return upload


def can_be_accepted(upload: upload_pb2.Upload) -> None:
    """What ingest does with an upload the door let through, up to Kafka: nothing in it raises."""
    upload_day(upload)
    upload.started_at.ToDatetime()
    upload.SerializeToString(deterministic=True)
    assert 0 <= upload.sequence <= LIMITS.max_sequence


@FUZZ
@given(body=hostile_documents())
@example(body=with_value("startedAt", "2027-01-15T08:00:00.1234567891Z"))
@example(body=with_value("imu.accelX[0]", 10**400))
@example(body=b'{"uploadId": "a", "upload_id": "b"}')
def test_hostile_json_uploads_are_refused_with_reasons_never_with_a_crash(body: bytes) -> None:
    outcome = door(body, JSON)
    if isinstance(outcome, upload_pb2.Upload):
        can_be_accepted(outcome)


@st.composite
def hostile_protobuf_uploads(draw: st.DrawFn) -> upload_pb2.Upload:
    """A valid upload whose well-known types, sequence and sample times take any value the wire can carry."""
    upload = make_upload(sequence=draw(st.integers(0, 2**64 - 1) | st.integers(0, 9_000)))
    upload.trip_end = draw(st.booleans())
    upload.started_at.seconds = draw(st.integers(-(2**63), 2**63 - 1) | st.integers(int(NOW) - 10**6, int(NOW) + 10**3))
    upload.started_at.nanos = draw(st.integers(-(2**31), 2**31 - 1) | st.integers(0, MAX_NANOS))
    if draw(st.booleans()):
        index = draw(st.integers(0, 499))
        upload.imu.offset_ms[index] = draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()):
        upload.gps[draw(st.integers(0, 9))].offset_ms = draw(st.integers(0, 2**32 - 1))
    return upload


@FUZZ
@given(upload=hostile_protobuf_uploads())
def test_hostile_protobuf_uploads_are_refused_with_reasons_never_with_a_crash(upload: upload_pb2.Upload) -> None:
    outcome = door(upload.SerializeToString(), PROTOBUF)
    if isinstance(outcome, upload_pb2.Upload):
        can_be_accepted(outcome)
