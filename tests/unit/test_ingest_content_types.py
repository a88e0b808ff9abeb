"""Request bodies: media types, protobuf and JSON (camelCase and snake_case) decoding."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format

from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import upload_pb2
from services.ingest.domain.decoding import JSON, PROTOBUF, FieldRefused, UndecodableUpload, decode_upload, media_type


def sample() -> upload_pb2.Upload:
    upload = upload_pb2.Upload(upload_id="u-1", device_id="d-1", trip_id="t-1", driver_id="r-1", sample_rate_hz=50)
    upload.started_at.CopyFrom(timestamp_from_seconds(1_800_000_000.5))
    upload.imu.offset_ms.extend([0, 20])
    upload.imu.accel_x.extend([0.5, 0.25])
    upload.gps.add(offset_ms=0, latitude=52.5, speed_mps=3.5)
    return upload


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("application/json", JSON),
        ("Application/JSON; charset=utf-8", JSON),
        ("application/x-protobuf", PROTOBUF),
        ("application/x-protobuf; messageType=michi.v1.Upload", PROTOBUF),
        ("text/plain", "text/plain"),
        (None, ""),
    ],
)
def test_media_type(header: str | None, expected: str) -> None:
    assert media_type(header) == expected


def test_protobuf_round_trip() -> None:
    assert decode_upload(sample().SerializeToString(), PROTOBUF) == sample()


def test_json_camel_case_and_snake_case_decode_alike() -> None:
    camel = json_format.MessageToJson(sample())
    snake = json_format.MessageToJson(sample(), preserving_proto_field_name=True)
    assert "uploadId" in camel and "upload_id" in snake
    assert decode_upload(camel.encode(), JSON) == sample()
    assert decode_upload(snake.encode(), JSON) == sample()


def sample_with_new_fields() -> upload_pb2.Upload:
    """A 16.7 Hz device without a gyroscope, timing its samples in microseconds."""
    upload = upload_pb2.Upload(
        upload_id="u-2",
        device_id="d-1",
        trip_id="t-1",
        driver_id="r-1",
        sample_rate_hz=17,
        sample_rate_exact_hz=16.7,
        acceleration_kind=upload_pb2.ACCELERATION_KIND_LINEAR,
        gyroscope=upload_pb2.GYROSCOPE_ABSENT,
    )
    upload.started_at.CopyFrom(timestamp_from_seconds(1_800_000_000.5))
    upload.imu.offset_us.extend([0, 59_880, 119_760])
    upload.imu.accel_x.extend([0.5, 0.25, 0.125])
    upload.imu.accel_y.extend([0.0, 0.0, 0.0])
    upload.imu.accel_z.extend([0.0, 0.0, 0.0])
    return upload


def test_json_carries_the_rate_the_sensor_kinds_and_microsecond_times() -> None:
    camel = json_format.MessageToJson(sample_with_new_fields())
    snake = json_format.MessageToJson(sample_with_new_fields(), preserving_proto_field_name=True)
    for name in ("sampleRateExactHz", "accelerationKind", "gyroscope", "offsetUs"):
        assert name in camel
    assert "sample_rate_exact_hz" in snake and "offset_us" in snake
    assert decode_upload(camel.encode(), JSON) == sample_with_new_fields()
    assert decode_upload(snake.encode(), JSON) == sample_with_new_fields()
    # Hand-written JSON: offsetUs as numbers, enums as numbers.
    document = json.loads(camel)
    document["imu"]["offsetUs"] = [0, 59_880, 119_760]
    document["accelerationKind"], document["gyroscope"] = 2, 2
    assert decode_upload(json.dumps(document).encode(), JSON) == sample_with_new_fields()


def test_json_ignores_unknown_fields() -> None:
    document = json.loads(json_format.MessageToJson(sample()))
    document["fieldFromNewerFirmware"] = 1
    assert decode_upload(json.dumps(document).encode(), JSON) == sample()


def test_json_nan_decodes_so_validation_can_name_the_field() -> None:
    document = json.loads(json_format.MessageToJson(sample()))
    document["imu"]["accelX"] = ["NaN", 1.0]
    upload = decode_upload(json.dumps(document).encode(), JSON)
    assert upload.imu.accel_x[0] != upload.imu.accel_x[0]


@pytest.mark.parametrize(
    ("body", "media"),
    [
        (b"", PROTOBUF),
        (b"\xff\xff\xff\xff", PROTOBUF),
        (b"\x0a\x05ab", PROTOBUF),  # truncated string field
        (b"{", JSON),
        (b"[]", JSON),
        (b'{"sampleRateHz": "fast"}', JSON),
        (b"\xff", JSON),
    ],
)
def test_undecodable_bodies(body: bytes, media: str) -> None:
    with pytest.raises(UndecodableUpload):
        decode_upload(body, media)


def _general_path(body: bytes) -> upload_pb2.Upload | str:
    try:
        return json_format.Parse(body, upload_pb2.Upload(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError):
        return "refused"


def _fast_path(body: bytes) -> upload_pb2.Upload | str:
    try:
        return decode_upload(body, JSON)
    except UndecodableUpload:
        return "refused"


@pytest.mark.parametrize(
    "imu",
    [
        {"offsetMs": [0, 20], "accelX": [0.5, 1], "gyroZ": [-0.25, 3.5e-3]},
        {"offset_ms": [0, 20], "accel_x": [0.5, 0.25]},
        {"offsetMs": ["0", "20"], "accelX": ["0.5", "NaN"]},  # strings: the general path
        {"offsetMs": [0, 20.0]},  # an integral float for an integer field
        {"offsetMs": [0, 20.5]},
        {"offsetMs": [0, -1]},
        {"offsetMs": [0, 2**32]},
        {"offsetMs": [0, True]},
        {"accelX": [1e39]},  # beyond float32: infinity on both paths
        {"accelX": [0.5, None]},
        {"accelX": 0.5},
        {"offsetMs": [0], "temperature": [20.5]},
        {},
        {"offsetUs": [0, 59_880], "accelX": [0.5, 0.25]},
        {"offsetUs": ["0", "59880"], "offset_ms": [0, 60]},  # the proto3 JSON form of uint64
        {"offset_us": ["00012", 2**64 - 1]},
        {"offsetUs": ["1_000"]},  # what int() takes but the fast path leaves to json_format
        {"offsetUs": ["+5", "1e3", "1.0", "١٢"]},
        {"offsetUs": [" 5"]},
        {"offsetUs": ["-1"]},
        {"offsetUs": [-1]},
        {"offsetUs": [2**64]},
        {"offsetUs": [str(2**64)]},
        {"offsetUs": [1.0]},
        {"offsetUs": [True]},
        {"offsetUs": ["0x10"]},
    ],
)
def test_json_fast_path_gives_what_json_format_gives(imu: dict[str, object]) -> None:
    document = json.loads(json_format.MessageToJson(sample()))
    document["imu"] = imu
    body = json.dumps(document).encode()
    assert _fast_path(body) == _general_path(body)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"uploadId": "a", "uploadId": "b"}', "upload_id"),
        (b'{"uploadId": "a", "upload_id": "b"}', "upload_id"),
        (b'{"imu": {"offsetMs": [0], "offset_ms": [0]}}', "imu.offset_ms"),
        (b'{"imu": {"offsetUs": [0], "offset_us": [0]}}', "imu.offset_us"),
        (b'{"gps": [{}, {"speedMps": 1, "speed_mps": 2}]}', "gps[1].speed_mps"),
    ],
)
def test_json_fields_given_twice_are_refused(body: bytes, field: str) -> None:
    # json_format keeps the last of them: which one the device meant is unknowable, so neither is taken.
    with pytest.raises(FieldRefused) as refused:
        decode_upload(body, JSON)
    assert (refused.value.status, refused.value.reason, refused.value.field) == (422, "duplicate-field", field)
