"""Request bodies: media types, protobuf and JSON (camelCase and snake_case) decoding."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format

from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import upload_pb2
from services.ingest.domain.decoding import JSON, PROTOBUF, UndecodableUpload, decode_upload, media_type


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
        {"offsetMs": [0], "offset_ms": [0]},
        {"offsetMs": [0], "temperature": [20.5]},
        {},
    ],
)
def test_json_fast_path_gives_what_json_format_gives(imu: dict[str, object]) -> None:
    document = json.loads(json_format.MessageToJson(sample()))
    document["imu"] = imu
    body = json.dumps(document).encode()
    assert _fast_path(body) == _general_path(body)


def test_json_duplicate_keys_are_refused() -> None:
    with pytest.raises(UndecodableUpload, match="duplicate key"):
        decode_upload(b'{"uploadId": "a", "uploadId": "b"}', JSON)
