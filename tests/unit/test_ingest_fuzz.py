"""Property-based tests (hypothesis) of the path every request body takes: decode, then validate.

Whatever arrives — arbitrary bytes, arbitrary JSON, well-formed uploads with extreme values — the
only exception allowed out is `UndecodableUpload` (a 400); validation never raises, it returns
`Violation`s (a 422). Request signatures: a signature verifies for exactly the request it signed.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from michi.contracts.v1 import upload_pb2
from services.ingest.domain.decoding import JSON, PROTOBUF, UndecodableUpload, decode_upload
from services.ingest.domain.signing import (
    SignatureRejected,
    parse_signing_headers,
    sign_request,
    verify_request,
)
from services.ingest.domain.validation import UploadLimits, Violation, validate_upload

LIMITS = UploadLimits()
# Fixed once: a strategy must not depend on the clock (hypothesis replays draws).
NOW_S = int(time.time())
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Each example builds a whole upload: fewer of them keep this unit test in seconds.
FUZZ_UPLOADS = settings(FUZZ, max_examples=80)
UINT32 = st.integers(0, 2**32 - 1)
UINT64 = st.integers(0, 2**64 - 1) | st.integers(0, 10**8)
INT64 = st.integers(-(2**63), 2**63 - 1)
FLOAT32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
FLOAT64 = st.floats(allow_nan=True, allow_infinity=True)
TEXT = st.text(max_size=200)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)
UPLOAD_JSON_NAMES = [
    "uploadId",
    "device_id",
    "driverId",
    "tripId",
    "sequence",
    "tripEnd",
    "firmwareVersion",
    "sampleRateHz",
    "startedAt",
    "imu",
    "gps",
    "mediaNames",
    "vehicleType",
    "sampleRateExactHz",
    "accelerationKind",
    "gyroscope",
]


def decode_and_validate(body: bytes, media: str) -> list[Violation] | None:
    """None when the body is refused as undecodable; the violations otherwise (never raises anything else)."""
    try:
        upload = decode_upload(body, media)
    except UndecodableUpload:
        return None
    violations = validate_upload(upload, time.time(), LIMITS)
    assert all(isinstance(violation, Violation) for violation in violations)
    return violations


@FUZZ
@given(body=st.binary(max_size=2048), media=st.sampled_from([PROTOBUF, JSON]))
@example(body=b"\x0a\xff\xff\xff\xff\x0f", media=PROTOBUF)  # a length beyond the body
@example(body=b"{" * 5000, media=JSON)
@example(body=b'{"imu": {"offsetMs": [-1]}}', media=JSON)
def test_arbitrary_bytes_never_raise_anything_but_undecodable(body: bytes, media: str) -> None:
    decode_and_validate(body, media)


@FUZZ
@given(document=json_values)
def test_arbitrary_json_never_raises_anything_but_undecodable(document: Any) -> None:
    decode_and_validate(json.dumps(document).encode(), JSON)


@FUZZ
@given(document=st.dictionaries(st.sampled_from(UPLOAD_JSON_NAMES), json_values, max_size=8))
@example(document={"startedAt": "9999-12-31T23:59:59Z", "sampleRateHz": 4294967295})
@example(document={"startedAt": "0001-01-01T00:00:00Z", "sequence": "18446744073709551615"})
@example(document={"imu": {"accelX": ["NaN", "Infinity", "-Infinity"], "offsetMs": [0]}})
def test_upload_shaped_json_with_any_values_never_raises(document: dict[str, Any]) -> None:
    decode_and_validate(json.dumps(document).encode(), JSON)


@st.composite
def extreme_uploads(draw: st.DrawFn) -> upload_pb2.Upload:
    """Structurally valid uploads whose every field may take an extreme value."""
    upload = upload_pb2.Upload(
        upload_id=draw(TEXT),
        device_id=draw(TEXT),
        driver_id=draw(TEXT),
        trip_id=draw(TEXT),
        sequence=draw(st.integers(0, 2**64 - 1)),
        trip_end=draw(st.booleans()),
        firmware_version=draw(TEXT),
        sample_rate_hz=draw(st.sampled_from([0, 25, 50, 100, 2**32 - 1]) | UINT32),
        sample_rate_exact_hz=draw(st.sampled_from([0.0, 16.7, 400.0]) | FLOAT64),
        # Open enums: numbers no version of the contract names arrive too.
        acceleration_kind=draw(st.integers(-(2**31), 2**31 - 1) | st.integers(0, 3)),  # type: ignore[arg-type]
        gyroscope=draw(st.integers(-(2**31), 2**31 - 1) | st.integers(0, 3)),  # type: ignore[arg-type]
        vehicle_type=draw(TEXT),
    )
    if draw(st.booleans()):
        upload.started_at.seconds = draw(INT64 | st.integers(NOW_S - 10**6, NOW_S + 10**6))
        upload.started_at.nanos = draw(st.integers(-(2**31), 2**31 - 1))
    samples = draw(st.integers(0, 32))
    upload.imu.offset_ms.extend(draw(st.lists(UINT32, min_size=samples, max_size=samples)))
    if draw(st.booleans()):
        # Microsecond times, increasing or not, sometimes next to no millisecond ones.
        length = samples if draw(st.integers(0, 3)) else draw(st.integers(0, 32))
        upload.imu.offset_us.extend(draw(st.lists(UINT64, min_size=length, max_size=length)))
        if draw(st.booleans()):
            upload.imu.ClearField("offset_ms")
    for name in ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z"):
        # Mostly the same length as the offsets (so value checks run), sometimes not.
        length = samples if draw(st.integers(0, 9)) else draw(st.integers(0, 32))
        getattr(upload.imu, name).extend(draw(st.lists(FLOAT32, min_size=length, max_size=length)))
    for _ in range(draw(st.integers(0, 8))):
        upload.gps.add(
            offset_ms=draw(UINT32),
            latitude=draw(FLOAT64),
            longitude=draw(FLOAT64),
            speed_mps=draw(FLOAT32),
            heading_deg=draw(FLOAT32),
            hdop=draw(FLOAT32),
        )
    upload.media_names.extend(draw(st.lists(st.text(max_size=8), max_size=34)))
    return upload


@FUZZ_UPLOADS
@given(upload=extreme_uploads())
def test_extreme_uploads_are_refused_with_reasons_never_with_a_crash(upload: upload_pb2.Upload) -> None:
    violations = decode_and_validate(upload.SerializeToString(), PROTOBUF)
    assert violations is not None  # a serialized Upload always decodes
    for violation in violations:
        assert violation.reason and violation.detail
    try:
        document = json_format.MessageToJson(upload)
    except (ValueError, json_format.Error):
        return  # e.g. a Timestamp outside years 1-9999 has no JSON form: nothing a device could send
    decode_and_validate(document.encode(), JSON)


def test_unsupported_media_type_is_a_programming_error_not_a_refusal() -> None:
    # The HTTP door answers 415 before decoding; decode_upload itself refuses other types loudly.
    with pytest.raises(ValueError, match="unsupported media type"):
        decode_upload(b"{}", "text/plain")


# --- request signatures

NONCES = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", min_size=1, max_size=64)


@FUZZ
@given(body=st.binary(max_size=512), tampered=st.binary(max_size=512), nonce=NONCES, token=st.text(min_size=1))
def test_a_signature_verifies_for_its_request_only(body: bytes, tampered: bytes, nonce: str, token: str) -> None:
    now = int(time.time())
    signature = sign_request(token, now, nonce, "POST", "/v1/uploads", body)
    signed = parse_signing_headers(str(now), nonce, signature)
    assert signed is not None
    verify_request(signed, token, "POST", "/v1/uploads", body, now)
    for other_body, other_path, other_token in (
        (tampered, "/v1/uploads", token),
        (body, "/v1/uploads/x", token),
        (body, "/v1/uploads", token + "x"),
    ):
        if (other_body, other_path, other_token) == (body, "/v1/uploads", token):
            continue
        with pytest.raises(SignatureRejected) as rejected:
            verify_request(signed, other_token, "POST", other_path, other_body, now)
        assert rejected.value.reason == "bad-signature"


@pytest.mark.parametrize(("skew_s", "reason"), [(-301, "stale-signature"), (301, "stale-signature"), (299, None)])
def test_the_signing_window(skew_s: int, reason: str | None) -> None:
    now = int(time.time())
    stamp = now + skew_s
    signed = parse_signing_headers(str(stamp), "nonce-1", sign_request("token", stamp, "nonce-1", "POST", "/p", b""))
    assert signed is not None
    if reason is None:
        verify_request(signed, "token", "POST", "/p", b"", now)
        return
    with pytest.raises(SignatureRejected) as rejected:
        verify_request(signed, "token", "POST", "/p", b"", now)
    assert rejected.value.reason == reason


@FUZZ
@given(
    timestamp=st.none() | st.text(max_size=20),
    nonce=st.none() | st.text(max_size=80),
    signature=st.none() | st.text(max_size=80),
)
def test_arbitrary_signing_headers_are_unsigned_or_well_formed_or_refused(
    timestamp: str | None, nonce: str | None, signature: str | None
) -> None:
    try:
        signed = parse_signing_headers(timestamp, nonce, signature)
    except SignatureRejected as rejection:
        assert rejection.reason == "bad-signature"
        return
    if signed is None:
        assert (timestamp, nonce, signature) == (None, None, None)
    else:
        assert 1 <= len(signed.nonce) <= 64 and len(signed.signature) == 64
