import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from michi.contracts.v1 import common_pb2 as _common_pb2
from michi.contracts.v1 import inference_pb2 as _inference_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LabelReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LABEL_REASON_UNSPECIFIED: _ClassVar[LabelReason]
    LABEL_REASON_UNCERTAIN: _ClassVar[LabelReason]
    LABEL_REASON_SHADOW_DISAGREEMENT: _ClassVar[LabelReason]
    LABEL_REASON_DRIFT_SAMPLE: _ClassVar[LabelReason]
    LABEL_REASON_RANDOM_QA: _ClassVar[LabelReason]
    LABEL_REASON_GOLD: _ClassVar[LabelReason]
    LABEL_REASON_CAMERA_REVIEW: _ClassVar[LabelReason]

class LabelSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LABEL_SOURCE_UNSPECIFIED: _ClassVar[LabelSource]
    LABEL_SOURCE_SIMULATOR: _ClassVar[LabelSource]
    LABEL_SOURCE_CONSENSUS: _ClassVar[LabelSource]
    LABEL_SOURCE_GOLD: _ClassVar[LabelSource]
    LABEL_SOURCE_ADJUDICATION: _ClassVar[LabelSource]
LABEL_REASON_UNSPECIFIED: LabelReason
LABEL_REASON_UNCERTAIN: LabelReason
LABEL_REASON_SHADOW_DISAGREEMENT: LabelReason
LABEL_REASON_DRIFT_SAMPLE: LabelReason
LABEL_REASON_RANDOM_QA: LabelReason
LABEL_REASON_GOLD: LabelReason
LABEL_REASON_CAMERA_REVIEW: LabelReason
LABEL_SOURCE_UNSPECIFIED: LabelSource
LABEL_SOURCE_SIMULATOR: LabelSource
LABEL_SOURCE_CONSENSUS: LabelSource
LABEL_SOURCE_GOLD: LabelSource
LABEL_SOURCE_ADJUDICATION: LabelSource

class LabelRequest(_message.Message):
    __slots__ = ("event_id", "occurred_at", "lineage", "reason", "priority", "suggested", "confidence", "window", "alternative", "detection_event_id", "known_answer", "camera", "media_frame_offsets_ms")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    ALTERNATIVE_FIELD_NUMBER: _ClassVar[int]
    DETECTION_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    KNOWN_ANSWER_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FRAME_OFFSETS_MS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    lineage: _common_pb2.Lineage
    reason: LabelReason
    priority: int
    suggested: _common_pb2.EventType
    confidence: float
    window: _common_pb2.TimeSpan
    alternative: _common_pb2.EventType
    detection_event_id: str
    known_answer: _common_pb2.EventType
    camera: _inference_pb2.CameraReference
    media_frame_offsets_ms: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lineage: _Optional[_Union[_common_pb2.Lineage, _Mapping]] = ..., reason: _Optional[_Union[LabelReason, str]] = ..., priority: _Optional[int] = ..., suggested: _Optional[_Union[_common_pb2.EventType, str]] = ..., confidence: _Optional[float] = ..., window: _Optional[_Union[_common_pb2.TimeSpan, _Mapping]] = ..., alternative: _Optional[_Union[_common_pb2.EventType, str]] = ..., detection_event_id: _Optional[str] = ..., known_answer: _Optional[_Union[_common_pb2.EventType, str]] = ..., camera: _Optional[_Union[_inference_pb2.CameraReference, _Mapping]] = ..., media_frame_offsets_ms: _Optional[_Iterable[int]] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("event_id", "occurred_at", "lineage", "event_type", "source", "annotators", "agreement", "gold_checked", "detection_event_id", "window", "location", "votes", "adjudicator", "min_gold_accuracy", "request_reasons")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ANNOTATORS_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    GOLD_CHECKED_FIELD_NUMBER: _ClassVar[int]
    DETECTION_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    VOTES_FIELD_NUMBER: _ClassVar[int]
    ADJUDICATOR_FIELD_NUMBER: _ClassVar[int]
    MIN_GOLD_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_REASONS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    lineage: _common_pb2.Lineage
    event_type: _common_pb2.EventType
    source: LabelSource
    annotators: _containers.RepeatedScalarFieldContainer[str]
    agreement: float
    gold_checked: bool
    detection_event_id: str
    window: _common_pb2.TimeSpan
    location: _common_pb2.GeoPoint
    votes: _containers.RepeatedCompositeFieldContainer[LabelVote]
    adjudicator: str
    min_gold_accuracy: float
    request_reasons: _containers.RepeatedScalarFieldContainer[LabelReason]
    def __init__(self, event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lineage: _Optional[_Union[_common_pb2.Lineage, _Mapping]] = ..., event_type: _Optional[_Union[_common_pb2.EventType, str]] = ..., source: _Optional[_Union[LabelSource, str]] = ..., annotators: _Optional[_Iterable[str]] = ..., agreement: _Optional[float] = ..., gold_checked: _Optional[bool] = ..., detection_event_id: _Optional[str] = ..., window: _Optional[_Union[_common_pb2.TimeSpan, _Mapping]] = ..., location: _Optional[_Union[_common_pb2.GeoPoint, _Mapping]] = ..., votes: _Optional[_Iterable[_Union[LabelVote, _Mapping]]] = ..., adjudicator: _Optional[str] = ..., min_gold_accuracy: _Optional[float] = ..., request_reasons: _Optional[_Iterable[_Union[LabelReason, str]]] = ...) -> None: ...

class LabelVote(_message.Message):
    __slots__ = ("annotator", "event_type", "weight", "gold_accuracy", "gold_answers", "voted_at")
    ANNOTATOR_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    GOLD_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    GOLD_ANSWERS_FIELD_NUMBER: _ClassVar[int]
    VOTED_AT_FIELD_NUMBER: _ClassVar[int]
    annotator: str
    event_type: _common_pb2.EventType
    weight: float
    gold_accuracy: float
    gold_answers: int
    voted_at: _timestamp_pb2.Timestamp
    def __init__(self, annotator: _Optional[str] = ..., event_type: _Optional[_Union[_common_pb2.EventType, str]] = ..., weight: _Optional[float] = ..., gold_accuracy: _Optional[float] = ..., gold_answers: _Optional[int] = ..., voted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
