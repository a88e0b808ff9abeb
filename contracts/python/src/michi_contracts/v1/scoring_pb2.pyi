import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from michi_contracts.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScoredEventStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCORED_EVENT_STATUS_UNSPECIFIED: _ClassVar[ScoredEventStatus]
    SCORED_EVENT_STATUS_ACTIVE: _ClassVar[ScoredEventStatus]
    SCORED_EVENT_STATUS_OVERTURNED: _ClassVar[ScoredEventStatus]
    SCORED_EVENT_STATUS_ADDED: _ClassVar[ScoredEventStatus]
SCORED_EVENT_STATUS_UNSPECIFIED: ScoredEventStatus
SCORED_EVENT_STATUS_ACTIVE: ScoredEventStatus
SCORED_EVENT_STATUS_OVERTURNED: ScoredEventStatus
SCORED_EVENT_STATUS_ADDED: ScoredEventStatus

class ScoredEvent(_message.Message):
    __slots__ = ("event_id", "occurred_at", "lineage", "detection_event_id", "event_type", "severity", "weight", "points", "status", "reason", "window", "location", "speed_mps", "speed_limit_mps", "confidence")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    DETECTION_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    SPEED_MPS_FIELD_NUMBER: _ClassVar[int]
    SPEED_LIMIT_MPS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    lineage: _common_pb2.Lineage
    detection_event_id: str
    event_type: _common_pb2.EventType
    severity: int
    weight: float
    points: float
    status: ScoredEventStatus
    reason: str
    window: _common_pb2.TimeSpan
    location: _common_pb2.GeoPoint
    speed_mps: float
    speed_limit_mps: float
    confidence: float
    def __init__(self, event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lineage: _Optional[_Union[_common_pb2.Lineage, _Mapping]] = ..., detection_event_id: _Optional[str] = ..., event_type: _Optional[_Union[_common_pb2.EventType, str]] = ..., severity: _Optional[int] = ..., weight: _Optional[float] = ..., points: _Optional[float] = ..., status: _Optional[_Union[ScoredEventStatus, str]] = ..., reason: _Optional[str] = ..., window: _Optional[_Union[_common_pb2.TimeSpan, _Mapping]] = ..., location: _Optional[_Union[_common_pb2.GeoPoint, _Mapping]] = ..., speed_mps: _Optional[float] = ..., speed_limit_mps: _Optional[float] = ..., confidence: _Optional[float] = ...) -> None: ...

class EventCount(_message.Message):
    __slots__ = ("event_type", "count")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    event_type: _common_pb2.EventType
    count: int
    def __init__(self, event_type: _Optional[_Union[_common_pb2.EventType, str]] = ..., count: _Optional[int] = ...) -> None: ...

class TripScore(_message.Message):
    __slots__ = ("event_id", "occurred_at", "lineage", "score", "distance_km", "duration_s", "points", "events_per_100km", "events_per_hour", "event_counts", "revision", "reason", "span", "uploads", "missing_sequences", "missing_sequence_count")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_KM_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PER_100KM_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SPAN_FIELD_NUMBER: _ClassVar[int]
    UPLOADS_FIELD_NUMBER: _ClassVar[int]
    MISSING_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    MISSING_SEQUENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    lineage: _common_pb2.Lineage
    score: float
    distance_km: float
    duration_s: float
    points: float
    events_per_100km: float
    events_per_hour: float
    event_counts: _containers.RepeatedCompositeFieldContainer[EventCount]
    revision: int
    reason: str
    span: _common_pb2.TimeSpan
    uploads: int
    missing_sequences: _containers.RepeatedScalarFieldContainer[int]
    missing_sequence_count: int
    def __init__(self, event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lineage: _Optional[_Union[_common_pb2.Lineage, _Mapping]] = ..., score: _Optional[float] = ..., distance_km: _Optional[float] = ..., duration_s: _Optional[float] = ..., points: _Optional[float] = ..., events_per_100km: _Optional[float] = ..., events_per_hour: _Optional[float] = ..., event_counts: _Optional[_Iterable[_Union[EventCount, _Mapping]]] = ..., revision: _Optional[int] = ..., reason: _Optional[str] = ..., span: _Optional[_Union[_common_pb2.TimeSpan, _Mapping]] = ..., uploads: _Optional[int] = ..., missing_sequences: _Optional[_Iterable[int]] = ..., missing_sequence_count: _Optional[int] = ...) -> None: ...

class DriverScore(_message.Message):
    __slots__ = ("event_id", "occurred_at", "lineage", "score", "trips", "distance_km", "driving_hours", "points", "events_per_100km", "events_per_hour", "event_counts", "revision", "last_trip_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TRIPS_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_KM_FIELD_NUMBER: _ClassVar[int]
    DRIVING_HOURS_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PER_100KM_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    LAST_TRIP_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    lineage: _common_pb2.Lineage
    score: float
    trips: int
    distance_km: float
    driving_hours: float
    points: float
    events_per_100km: float
    events_per_hour: float
    event_counts: _containers.RepeatedCompositeFieldContainer[EventCount]
    revision: int
    last_trip_id: str
    def __init__(self, event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lineage: _Optional[_Union[_common_pb2.Lineage, _Mapping]] = ..., score: _Optional[float] = ..., trips: _Optional[int] = ..., distance_km: _Optional[float] = ..., driving_hours: _Optional[float] = ..., points: _Optional[float] = ..., events_per_100km: _Optional[float] = ..., events_per_hour: _Optional[float] = ..., event_counts: _Optional[_Iterable[_Union[EventCount, _Mapping]]] = ..., revision: _Optional[int] = ..., last_trip_id: _Optional[str] = ...) -> None: ...
