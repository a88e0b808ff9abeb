"""Turning a request body into an `Upload`: protobuf bytes or the proto3 JSON mapping.

JSON: the IMU arrays are most of an upload (6 floats and one or two times per sample) and
`json_format` converts them one element at a time. When every IMU array is a plain list of
JSON numbers (integers for `offset_ms`; integers or strings of digits for `offset_us`, a uint64
that the proto3 JSON mapping writes as strings) they are moved into the message with one `extend`
each, which applies the same range and type checks; anything else (other numbers as strings,
"NaN" strings, nulls) takes the general `json_format` path, so both give the same message.
"""

from __future__ import annotations

import json
import math
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from michi.contracts.v1 import upload_pb2

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
SUPPORTED_MEDIA_TYPES = (PROTOBUF, JSON)


class UndecodableUpload(ValueError):
    """The body is not an `Upload` in the announced format."""


def media_type(content_type: str | None) -> str:
    """`application/json; charset=utf-8` -> `application/json` ('' when absent)."""
    return (content_type or "").partition(";")[0].strip().lower()


def decode_upload(body: bytes, media: str) -> upload_pb2.Upload:
    """Decode once; JSON accepts camelCase and snake_case names and ignores unknown fields."""
    upload = upload_pb2.Upload()
    if not body:
        raise UndecodableUpload("empty body")
    if media == PROTOBUF:
        try:
            upload.ParseFromString(body)
        except (DecodeError, RuntimeWarning, ValueError) as error:
            raise UndecodableUpload(f"invalid protobuf: {error}") from error
        return upload
    if media == JSON:
        # json_format quietly accepts a top-level array as an empty message.
        if not body.lstrip().startswith(b"{"):
            raise UndecodableUpload("a JSON upload must be an object")
        try:
            document = json.loads(body, object_pairs_hook=_refuse_duplicate_keys)
        except (ValueError, TypeError, RecursionError) as error:
            raise UndecodableUpload(f"invalid JSON upload: Failed to load JSON: {str(error)[:300]}") from error
        try:
            imu_arrays = _plain_imu_arrays(document)
            json_format.ParseDict(document, upload, ignore_unknown_fields=True)
            if imu_arrays:
                for name, values in imu_arrays.items():
                    getattr(upload.imu, name).extend(values)
        except (json_format.ParseError, ValueError, TypeError, RecursionError) as error:
            raise UndecodableUpload(f"invalid JSON upload: {str(error)[:300]}") from error
        return upload
    raise ValueError(f"unsupported media type {media!r}")


FLOAT32_MAX = 3.4028234663852886e38
# Each IMU array's JSON name and what the fast path takes in it: JSON integers ("integer"), JSON
# integers or strings of ASCII digits ("uint64": MessageToJson writes 64-bit integers as strings),
# or JSON numbers ("float").
_IMU_ARRAYS = {
    "offset_ms": ("offsetMs", "integer"),
    "offset_us": ("offsetUs", "uint64"),
    "accel_x": ("accelX", "float"),
    "accel_y": ("accelY", "float"),
    "accel_z": ("accelZ", "float"),
    "gyro_x": ("gyroX", "float"),
    "gyro_y": ("gyroY", "float"),
    "gyro_z": ("gyroZ", "float"),
}


def _plain_imu_arrays(document: dict[str, Any]) -> dict[str, list[Any]]:
    """Take the IMU arrays out of `document` when all are plain numbers (else leave it whole)."""
    imu = document.get("imu")
    if not isinstance(imu, dict) or len(imu) == 0:
        return {}
    taken: dict[str, list[Any]] = {}
    for field_name, (json_name, kind) in _IMU_ARRAYS.items():
        present = [key for key in (field_name, json_name) if key in imu]
        if len(present) > 1:
            return {}  # both spellings: let json_format report it
        if not present:
            continue
        values = imu[present[0]]
        if not isinstance(values, list) or not _all_numbers(values, kind):
            return {}
        if kind == "uint64":
            # int() of a string of ASCII digits is what json_format makes of it.
            values = [int(value) for value in values]
        taken[present[0]] = values
    if len(taken) != len(imu):
        return {}  # unknown keys in imu: the general path decides
    document["imu"] = {}
    return {_field_of(key): values for key, values in taken.items()}


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise ValueError(f"duplicate key {key!r}")
        document[key] = value
    return document


def _field_of(key: str) -> str:
    for field_name, (json_name, _kind) in _IMU_ARRAYS.items():
        if key in (field_name, json_name):
            return field_name
    raise KeyError(key)


def _all_numbers(values: list[Any], kind: str) -> bool:
    if kind == "integer":
        return all(type(value) is int for value in values)
    if kind == "uint64":
        return all(
            type(value) is int or (type(value) is str and value.isascii() and value.isdigit()) for value in values
        )
    if not all(type(value) is float or type(value) is int for value in values):
        return False
    # NaN, infinities and values beyond float32 are json_format's to refuse or convert.
    return not values or (math.isfinite(sum(values)) and min(values) >= -FLOAT32_MAX and max(values) <= FLOAT32_MAX)
