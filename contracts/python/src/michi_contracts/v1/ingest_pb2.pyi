from michi_contracts.v1 import upload_pb2 as _upload_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UploadOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UPLOAD_OUTCOME_UNSPECIFIED: _ClassVar[UploadOutcome]
    UPLOAD_OUTCOME_ACCEPTED: _ClassVar[UploadOutcome]
    UPLOAD_OUTCOME_DUPLICATE: _ClassVar[UploadOutcome]
    UPLOAD_OUTCOME_REJECTED: _ClassVar[UploadOutcome]
UPLOAD_OUTCOME_UNSPECIFIED: UploadOutcome
UPLOAD_OUTCOME_ACCEPTED: UploadOutcome
UPLOAD_OUTCOME_DUPLICATE: UploadOutcome
UPLOAD_OUTCOME_REJECTED: UploadOutcome

class UploadAck(_message.Message):
    __slots__ = ("upload_id", "outcome", "event_id", "reason", "detail")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    outcome: UploadOutcome
    event_id: str
    reason: str
    detail: str
    def __init__(self, upload_id: _Optional[str] = ..., outcome: _Optional[_Union[UploadOutcome, str]] = ..., event_id: _Optional[str] = ..., reason: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...
