"""Turning a request body into an `Upload`: protobuf bytes or the proto3 JSON mapping.

JSON: the IMU arrays are most of an upload (6 floats and one or two times per sample) and
`json_format` converts them one element at a time. When every IMU array is a plain list of
JSON numbers (integers for `offset_ms`; integers or strings of digits for `offset_us`, a uint64
that the proto3 JSON mapping writes as strings) they are moved into the message with one `extend`
each, which applies the same range and type checks; anything else (other numbers as strings,
"NaN" strings, nulls) takes the general `json_format` path, so both give the same message.

Before any conversion, a JSON body is refused (`FieldRefused`, a 422) when it names one field twice
(the same key, or a field under both its names, `uploadId` and `upload_id`: the proto3 JSON parser
would keep the last one) or when a repeated field holds more items than validation would accept:
converting 600,000 GPS fixes one at a time took the event loop seconds.
"""

from __future__ import annotations

import json
import math
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from michi.contracts.v1 import upload_pb2
from services.ingest.domain.validation import EDGE_CLASS_COUNT, EDGE_WINDOW_HOP_S, MAX_MEDIA_NAMES, UploadLimits

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
SUPPORTED_MEDIA_TYPES = (PROTOBUF, JSON)


class UndecodableUpload(ValueError):
    """The body is not an `Upload` in the announced format (400 `undecodable-body`; `field` when known)."""

    status = 400
    reason = "undecodable-body"

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field

    @property
    def detail(self) -> str:
        return str(self)


class FieldRefused(UndecodableUpload):
    """A JSON body refused before it is converted: a field given twice, too many items, an unknown enum name (422)."""

    status = 422

    def __init__(self, reason: str, detail: str, field: str | None) -> None:
        super().__init__(detail, field)
        self.reason = reason


def media_type(content_type: str | None) -> str:
    """`application/json; charset=utf-8` -> `application/json` ('' when absent)."""
    return (content_type or "").partition(";")[0].strip().lower()


def decode_upload(body: bytes, media: str, limits: UploadLimits | None = None) -> upload_pb2.Upload:
    """Decode once; JSON accepts camelCase and snake_case names and ignores unknown fields.

    `limits` bound the repeated fields of a JSON body before they are converted (defaults: `UploadLimits()`).
    """
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
        twice: list[tuple[dict[str, Any], str, str]] = []
        try:
            document = json.loads(body, object_pairs_hook=lambda pairs: _object_noting_repeats(pairs, twice))
        except (ValueError, TypeError, RecursionError) as error:
            raise UndecodableUpload(f"invalid JSON upload: Failed to load JSON: {str(error)[:300]}") from error
        if twice:
            raise _repeated_field(document, *twice[0])
        _check_item_counts(document, limits or DEFAULT_LIMITS)
        _check_shape(document, upload_pb2.Upload.DESCRIPTOR, "")
        try:
            imu_arrays = _plain_imu_arrays(document)
            json_format.ParseDict(document, upload, ignore_unknown_fields=True)
            if imu_arrays:
                for name, values in imu_arrays.items():
                    getattr(upload.imu, name).extend(values)
        # OverflowError: an integer too large for a float (10**400), which Python's json reads exactly.
        except (json_format.ParseError, ValueError, TypeError, OverflowError, RecursionError) as error:
            raise UndecodableUpload(f"invalid JSON upload: {str(error)[:300]}") from error
        return upload
    raise ValueError(f"unsupported media type {media!r}")


DEFAULT_LIMITS = UploadLimits()


def _schema_names(descriptor: Any, json_names: dict[str, str], field_names: dict[str, str], seen: set[str]) -> None:
    """Fill both maps for `descriptor` and the messages in it (each message once)."""
    seen.add(descriptor.full_name)
    for field_descriptor in descriptor.fields:
        json_names[field_descriptor.name] = json_names[field_descriptor.json_name] = field_descriptor.json_name
        field_names[field_descriptor.json_name] = field_descriptor.name
        inner = field_descriptor.message_type
        if inner is not None and inner.full_name not in seen:
            _schema_names(inner, json_names, field_names, seen)


# Both spellings of every field of an Upload and of the messages in it -> its JSON name (the same field
# may not come twice in one object), and each JSON name -> the proto name. A name two messages share
# (offset_ms) has the same JSON name in both.
JSON_NAMES: dict[str, str] = {}
FIELD_NAMES: dict[str, str] = {}
_schema_names(upload_pb2.Upload.DESCRIPTOR, JSON_NAMES, FIELD_NAMES, set())


def _proto_name(key: str) -> str:
    """The proto field name a JSON key spells (the key itself when no field has that name)."""
    return FIELD_NAMES.get(JSON_NAMES.get(key, key), key)


def _object_noting_repeats(
    pairs: list[tuple[str, Any]], twice: list[tuple[dict[str, Any], str, str]]
) -> dict[str, Any]:
    """The JSON object as a dict; a key given twice, or a field under both its names, goes in `twice`."""
    document: dict[str, Any] = {}
    spellings: dict[str, str] = {}
    for key, value in pairs:
        name = JSON_NAMES.get(key, key)
        first = spellings.get(name)
        if first is not None or key in document:
            twice.append((document, first or key, key))
        spellings[name] = key
        document[key] = value
    return document


def _repeated_field(document: dict[str, Any], target: dict[str, Any], first: str, second: str) -> FieldRefused:
    """The refusal naming where in `document` the object `target` gives one field twice."""
    name = _proto_name(second)
    path = _path_to(document, target)
    field = f"{path}.{name}" if path else name
    spelled = f"as {first!r} and {second!r}" if first != second else f"as {first!r} twice"
    return FieldRefused("duplicate-field", f"{field} is given twice ({spelled}); send each field once", field)


def _path_to(document: dict[str, Any], target: dict[str, Any]) -> str | None:
    """The proto path of the JSON object `target` in `document` ('' for the document itself)."""
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        value, path = stack.pop()
        if value is target:
            return path
        if isinstance(value, dict):
            for key, inner in value.items():
                if isinstance(inner, dict | list):
                    name = _proto_name(key)
                    stack.append((inner, f"{path}.{name}" if path else name))
        elif isinstance(value, list):
            for index, inner in enumerate(value):
                if isinstance(inner, dict | list):
                    stack.append((inner, f"{path}[{index}]"))
    return None


def _check_item_counts(document: dict[str, Any], limits: UploadLimits) -> None:
    """Refuse a repeated field with more items than validation accepts, before converting any of them."""
    bounds: list[tuple[Any, str, int, str]] = [
        (_value(document, "gps"), "gps", limits.max_gps_fixes, "too-many-gps-fixes"),
        (_value(document, "media_names"), "media_names", MAX_MEDIA_NAMES, "too-many-media-names"),
    ]
    imu = _value(document, "imu")
    if isinstance(imu, dict):
        for name in _IMU_ARRAYS:
            bounds.append((_value(imu, name), f"imu.{name}", limits.max_samples, "too-many-samples"))
    edge = _value(document, "edge")
    if isinstance(edge, dict):
        calls = _value(edge, "calls")
        most_calls = math.floor(limits.max_upload_duration_s / EDGE_WINDOW_HOP_S)
        bounds.append((calls, "edge.calls", most_calls, "too-many-calls"))
        per_class = _value(edge, "windows_per_class")
        bounds.append((per_class, "edge.windows_per_class", EDGE_CLASS_COUNT, "edge-counts-inconsistent"))
        if isinstance(calls, list) and len(calls) <= most_calls:
            for index, call in enumerate(calls):
                if not isinstance(call, dict):
                    continue  # _check_shape refuses it
                at = f"edge.calls[{index}]"
                bounds.append(
                    (_value(call, "probabilities"), f"{at}.probabilities", EDGE_CLASS_COUNT, "value-out-of-range")
                )
                snippet = _value(call, "imu")
                if isinstance(snippet, dict):
                    for name in _IMU_ARRAYS:
                        bounds.append(
                            (_value(snippet, name), f"{at}.imu.{name}", limits.max_samples, "too-many-samples")
                        )
    for values, path, most, reason in bounds:
        if isinstance(values, list) and len(values) > most:
            raise FieldRefused(reason, f"{path} has {len(values)} items, at most {most}", path)


# Messages whose proto3 JSON form is not an object (a Timestamp is an RFC 3339 string): json_format checks them.
_SCALAR_MESSAGES = {"google.protobuf.Timestamp", "google.protobuf.Duration"}


def _check_shape(document: dict[str, Any], descriptor: Any, path: str) -> None:
    """Messages are JSON objects, repeated fields arrays, enum names known: json_format is lenient there.

    It reads `"imu": "x"` as an object with the unknown key "x" (so an upload without IMU samples)
    and an enum name it does not know as the default value (with ignore_unknown_fields), a guess
    about what the arrays hold. Only objects are walked, never the elements of a number array.
    """
    for key, value in document.items():
        field_descriptor = descriptor.fields_by_name.get(key) or descriptor.fields_by_camelcase_name.get(key)
        if field_descriptor is None or value is None:
            continue  # unknown fields are ignored; null is the default value
        where = f"{path}{field_descriptor.name}"
        if field_descriptor.is_repeated:
            if not isinstance(value, list):
                raise UndecodableUpload(f"{where} must be a JSON array, not {type(value).__name__}", where)
            elements = value
        else:
            elements = [value]
        inner = field_descriptor.message_type
        if inner is not None and inner.full_name not in _SCALAR_MESSAGES:
            for index, element in enumerate(elements):
                at = f"{where}[{index}]" if field_descriptor.is_repeated else where
                if not isinstance(element, dict):
                    raise UndecodableUpload(f"{at} must be a JSON object, not {type(element).__name__}", at)
                _check_shape(element, inner, f"{at}.")
        elif field_descriptor.enum_type is not None:
            known = field_descriptor.enum_type.values_by_name
            for element in elements:
                if isinstance(element, str) and element not in known:
                    raise FieldRefused(
                        "unknown-enum-value", f"{where} {element!r} is not one of {', '.join(known)}", where
                    )


def _value(document: dict[str, Any], name: str) -> Any:
    """The value of field `name` under either of its names (at most one is present by now)."""
    value = document.get(name)
    return document.get(JSON_NAMES[name]) if value is None else value


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
