import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from michi_contracts.v1 import common_pb2 as _common_pb2
from michi_contracts.v1 import upload_pb2 as _upload_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Variant(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VARIANT_UNSPECIFIED: _ClassVar[Variant]
    VARIANT_CHAMPION: _ClassVar[Variant]
    VARIANT_SHADOW: _ClassVar[Variant]
    VARIANT_CANARY: _ClassVar[Variant]
    VARIANT_TREATMENT: _ClassVar[Variant]
    VARIANT_EDGE: _ClassVar[Variant]
VARIANT_UNSPECIFIED: Variant
VARIANT_CHAMPION: Variant
VARIANT_SHADOW: Variant
VARIANT_CANARY: Variant
VARIANT_TREATMENT: Variant
VARIANT_EDGE: Variant

class ClassScore(_message.Message):
    __slots__ = ("event_type", "probability")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    event_type: _common_pb2.EventType
    probability: float
    def __init__(self, event_type: _Optional[_Union[_common_pb2.EventType, str]] = ..., probability: _Optional[float] = ...) -> None: ...

class Detection(_message.Message):
    __slots__ = ("event_id", "occurred_at", "lineage", "event_type", "confidence", "window", "location", "speed_mps", "speed_limit_mps", "peak_value", "variant", "features", "detector", "calibration", "gps_available", "rollout_id", "camera", "hindsight")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    SPEED_MPS_FIELD_NUMBER: _ClassVar[int]
    SPEED_LIMIT_MPS_FIELD_NUMBER: _ClassVar[int]
    PEAK_VALUE_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    GPS_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    HINDSIGHT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    lineage: _common_pb2.Lineage
    event_type: _common_pb2.EventType
    confidence: float
    window: _common_pb2.TimeSpan
    location: _common_pb2.GeoPoint
    speed_mps: float
    speed_limit_mps: float
    peak_value: float
    variant: Variant
    features: _containers.ScalarMap[str, float]
    detector: str
    calibration: _common_pb2.CalibrationSummary
    gps_available: bool
    rollout_id: str
    camera: CameraReference
    hindsight: bool
    def __init__(self, event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lineage: _Optional[_Union[_common_pb2.Lineage, _Mapping]] = ..., event_type: _Optional[_Union[_common_pb2.EventType, str]] = ..., confidence: _Optional[float] = ..., window: _Optional[_Union[_common_pb2.TimeSpan, _Mapping]] = ..., location: _Optional[_Union[_common_pb2.GeoPoint, _Mapping]] = ..., speed_mps: _Optional[float] = ..., speed_limit_mps: _Optional[float] = ..., peak_value: _Optional[float] = ..., variant: _Optional[_Union[Variant, str]] = ..., features: _Optional[_Mapping[str, float]] = ..., detector: _Optional[str] = ..., calibration: _Optional[_Union[_common_pb2.CalibrationSummary, _Mapping]] = ..., gps_available: _Optional[bool] = ..., rollout_id: _Optional[str] = ..., camera: _Optional[_Union[CameraReference, _Mapping]] = ..., hindsight: _Optional[bool] = ...) -> None: ...

class CameraReference(_message.Message):
    __slots__ = ("media_name", "camera", "blob_key", "uri", "frame_offsets_ms", "sha256", "media_event_id", "content_type")
    MEDIA_NAME_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    BLOB_KEY_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    FRAME_OFFSETS_MS_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    MEDIA_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    media_name: str
    camera: _upload_pb2.CameraKind
    blob_key: str
    uri: str
    frame_offsets_ms: _containers.RepeatedScalarFieldContainer[int]
    sha256: str
    media_event_id: str
    content_type: str
    def __init__(self, media_name: _Optional[str] = ..., camera: _Optional[_Union[_upload_pb2.CameraKind, str]] = ..., blob_key: _Optional[str] = ..., uri: _Optional[str] = ..., frame_offsets_ms: _Optional[_Iterable[int]] = ..., sha256: _Optional[str] = ..., media_event_id: _Optional[str] = ..., content_type: _Optional[str] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("event_id", "occurred_at", "lineage", "predicted", "confidence", "scores", "window", "location", "speed_mps", "variant", "features", "sample_rate_hz", "vehicle_type", "firmware_version", "calibration", "gps_available", "sample_rate_exact_hz", "packed_features", "rollout_id")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    SPEED_MPS_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    VEHICLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    FIRMWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    GPS_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_EXACT_HZ_FIELD_NUMBER: _ClassVar[int]
    PACKED_FEATURES_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    lineage: _common_pb2.Lineage
    predicted: _common_pb2.EventType
    confidence: float
    scores: _containers.RepeatedCompositeFieldContainer[ClassScore]
    window: _common_pb2.TimeSpan
    location: _common_pb2.GeoPoint
    speed_mps: float
    variant: Variant
    features: _containers.ScalarMap[str, float]
    sample_rate_hz: int
    vehicle_type: str
    firmware_version: str
    calibration: _common_pb2.CalibrationSummary
    gps_available: bool
    sample_rate_exact_hz: float
    packed_features: bytes
    rollout_id: str
    def __init__(self, event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lineage: _Optional[_Union[_common_pb2.Lineage, _Mapping]] = ..., predicted: _Optional[_Union[_common_pb2.EventType, str]] = ..., confidence: _Optional[float] = ..., scores: _Optional[_Iterable[_Union[ClassScore, _Mapping]]] = ..., window: _Optional[_Union[_common_pb2.TimeSpan, _Mapping]] = ..., location: _Optional[_Union[_common_pb2.GeoPoint, _Mapping]] = ..., speed_mps: _Optional[float] = ..., variant: _Optional[_Union[Variant, str]] = ..., features: _Optional[_Mapping[str, float]] = ..., sample_rate_hz: _Optional[int] = ..., vehicle_type: _Optional[str] = ..., firmware_version: _Optional[str] = ..., calibration: _Optional[_Union[_common_pb2.CalibrationSummary, _Mapping]] = ..., gps_available: _Optional[bool] = ..., sample_rate_exact_hz: _Optional[float] = ..., packed_features: _Optional[bytes] = ..., rollout_id: _Optional[str] = ...) -> None: ...

class TripSegment(_message.Message):
    __slots__ = ("event_id", "occurred_at", "lineage", "sequence", "trip_end", "distance_m", "duration_s", "detection_count", "detection_event_ids", "span", "vehicle_type", "variant")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TRIP_END_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_M_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    DETECTION_COUNT_FIELD_NUMBER: _ClassVar[int]
    DETECTION_EVENT_IDS_FIELD_NUMBER: _ClassVar[int]
    SPAN_FIELD_NUMBER: _ClassVar[int]
    VEHICLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    lineage: _common_pb2.Lineage
    sequence: int
    trip_end: bool
    distance_m: float
    duration_s: float
    detection_count: int
    detection_event_ids: _containers.RepeatedScalarFieldContainer[str]
    span: _common_pb2.TimeSpan
    vehicle_type: str
    variant: Variant
    def __init__(self, event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lineage: _Optional[_Union[_common_pb2.Lineage, _Mapping]] = ..., sequence: _Optional[int] = ..., trip_end: _Optional[bool] = ..., distance_m: _Optional[float] = ..., duration_s: _Optional[float] = ..., detection_count: _Optional[int] = ..., detection_event_ids: _Optional[_Iterable[str]] = ..., span: _Optional[_Union[_common_pb2.TimeSpan, _Mapping]] = ..., vehicle_type: _Optional[str] = ..., variant: _Optional[_Union[Variant, str]] = ...) -> None: ...
