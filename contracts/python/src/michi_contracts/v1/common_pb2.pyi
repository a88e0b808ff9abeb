import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_NORMAL: _ClassVar[EventType]
    EVENT_TYPE_HARSH_BRAKING: _ClassVar[EventType]
    EVENT_TYPE_HARSH_ACCELERATION: _ClassVar[EventType]
    EVENT_TYPE_HARSH_CORNERING: _ClassVar[EventType]
    EVENT_TYPE_SPEEDING: _ClassVar[EventType]
    EVENT_TYPE_CONFOUNDER: _ClassVar[EventType]
    EVENT_TYPE_DISTRACTION: _ClassVar[EventType]
    EVENT_TYPE_DROWSINESS: _ClassVar[EventType]
    EVENT_TYPE_TAILGATING: _ClassVar[EventType]

class CalibrationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALIBRATION_STATE_UNSPECIFIED: _ClassVar[CalibrationState]
    CALIBRATION_STATE_UNCALIBRATED: _ClassVar[CalibrationState]
    CALIBRATION_STATE_GRAVITY_ONLY: _ClassVar[CalibrationState]
    CALIBRATION_STATE_CALIBRATED: _ClassVar[CalibrationState]
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_NORMAL: EventType
EVENT_TYPE_HARSH_BRAKING: EventType
EVENT_TYPE_HARSH_ACCELERATION: EventType
EVENT_TYPE_HARSH_CORNERING: EventType
EVENT_TYPE_SPEEDING: EventType
EVENT_TYPE_CONFOUNDER: EventType
EVENT_TYPE_DISTRACTION: EventType
EVENT_TYPE_DROWSINESS: EventType
EVENT_TYPE_TAILGATING: EventType
CALIBRATION_STATE_UNSPECIFIED: CalibrationState
CALIBRATION_STATE_UNCALIBRATED: CalibrationState
CALIBRATION_STATE_GRAVITY_ONLY: CalibrationState
CALIBRATION_STATE_CALIBRATED: CalibrationState

class Lineage(_message.Message):
    __slots__ = ("upload_id", "window_id", "trip_id", "device_id", "driver_id", "model_name", "model_version", "data_version", "trace_id")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ID_FIELD_NUMBER: _ClassVar[int]
    TRIP_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DRIVER_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    window_id: str
    trip_id: str
    device_id: str
    driver_id: str
    model_name: str
    model_version: str
    data_version: str
    trace_id: str
    def __init__(self, upload_id: _Optional[str] = ..., window_id: _Optional[str] = ..., trip_id: _Optional[str] = ..., device_id: _Optional[str] = ..., driver_id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., data_version: _Optional[str] = ..., trace_id: _Optional[str] = ...) -> None: ...

class GeoPoint(_message.Message):
    __slots__ = ("latitude", "longitude")
    LATITUDE_FIELD_NUMBER: _ClassVar[int]
    LONGITUDE_FIELD_NUMBER: _ClassVar[int]
    latitude: float
    longitude: float
    def __init__(self, latitude: _Optional[float] = ..., longitude: _Optional[float] = ...) -> None: ...

class TimeSpan(_message.Message):
    __slots__ = ("started_at", "ended_at")
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    def __init__(self, started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CalibrationSummary(_message.Message):
    __slots__ = ("state", "gravity_confidence", "forward_confidence", "forward_method")
    STATE_FIELD_NUMBER: _ClassVar[int]
    GRAVITY_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    FORWARD_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    FORWARD_METHOD_FIELD_NUMBER: _ClassVar[int]
    state: CalibrationState
    gravity_confidence: float
    forward_confidence: float
    forward_method: str
    def __init__(self, state: _Optional[_Union[CalibrationState, str]] = ..., gravity_confidence: _Optional[float] = ..., forward_confidence: _Optional[float] = ..., forward_method: _Optional[str] = ...) -> None: ...
