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

class AccelerationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCELERATION_KIND_UNSPECIFIED: _ClassVar[AccelerationKind]
    ACCELERATION_KIND_GRAVITY_INCLUDED: _ClassVar[AccelerationKind]
    ACCELERATION_KIND_LINEAR: _ClassVar[AccelerationKind]

class Gyroscope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GYROSCOPE_UNSPECIFIED: _ClassVar[Gyroscope]
    GYROSCOPE_PRESENT: _ClassVar[Gyroscope]
    GYROSCOPE_ABSENT: _ClassVar[Gyroscope]

class CameraKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAMERA_KIND_UNSPECIFIED: _ClassVar[CameraKind]
    CAMERA_KIND_OUTWARD: _ClassVar[CameraKind]
    CAMERA_KIND_INWARD: _ClassVar[CameraKind]
ACCELERATION_KIND_UNSPECIFIED: AccelerationKind
ACCELERATION_KIND_GRAVITY_INCLUDED: AccelerationKind
ACCELERATION_KIND_LINEAR: AccelerationKind
GYROSCOPE_UNSPECIFIED: Gyroscope
GYROSCOPE_PRESENT: Gyroscope
GYROSCOPE_ABSENT: Gyroscope
CAMERA_KIND_UNSPECIFIED: CameraKind
CAMERA_KIND_OUTWARD: CameraKind
CAMERA_KIND_INWARD: CameraKind

class ImuSamples(_message.Message):
    __slots__ = ("offset_ms", "accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z", "offset_us")
    OFFSET_MS_FIELD_NUMBER: _ClassVar[int]
    ACCEL_X_FIELD_NUMBER: _ClassVar[int]
    ACCEL_Y_FIELD_NUMBER: _ClassVar[int]
    ACCEL_Z_FIELD_NUMBER: _ClassVar[int]
    GYRO_X_FIELD_NUMBER: _ClassVar[int]
    GYRO_Y_FIELD_NUMBER: _ClassVar[int]
    GYRO_Z_FIELD_NUMBER: _ClassVar[int]
    OFFSET_US_FIELD_NUMBER: _ClassVar[int]
    offset_ms: _containers.RepeatedScalarFieldContainer[int]
    accel_x: _containers.RepeatedScalarFieldContainer[float]
    accel_y: _containers.RepeatedScalarFieldContainer[float]
    accel_z: _containers.RepeatedScalarFieldContainer[float]
    gyro_x: _containers.RepeatedScalarFieldContainer[float]
    gyro_y: _containers.RepeatedScalarFieldContainer[float]
    gyro_z: _containers.RepeatedScalarFieldContainer[float]
    offset_us: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, offset_ms: _Optional[_Iterable[int]] = ..., accel_x: _Optional[_Iterable[float]] = ..., accel_y: _Optional[_Iterable[float]] = ..., accel_z: _Optional[_Iterable[float]] = ..., gyro_x: _Optional[_Iterable[float]] = ..., gyro_y: _Optional[_Iterable[float]] = ..., gyro_z: _Optional[_Iterable[float]] = ..., offset_us: _Optional[_Iterable[int]] = ...) -> None: ...

class GpsFix(_message.Message):
    __slots__ = ("offset_ms", "latitude", "longitude", "speed_mps", "heading_deg", "hdop")
    OFFSET_MS_FIELD_NUMBER: _ClassVar[int]
    LATITUDE_FIELD_NUMBER: _ClassVar[int]
    LONGITUDE_FIELD_NUMBER: _ClassVar[int]
    SPEED_MPS_FIELD_NUMBER: _ClassVar[int]
    HEADING_DEG_FIELD_NUMBER: _ClassVar[int]
    HDOP_FIELD_NUMBER: _ClassVar[int]
    offset_ms: int
    latitude: float
    longitude: float
    speed_mps: float
    heading_deg: float
    hdop: float
    def __init__(self, offset_ms: _Optional[int] = ..., latitude: _Optional[float] = ..., longitude: _Optional[float] = ..., speed_mps: _Optional[float] = ..., heading_deg: _Optional[float] = ..., hdop: _Optional[float] = ...) -> None: ...

class Upload(_message.Message):
    __slots__ = ("upload_id", "device_id", "driver_id", "trip_id", "sequence", "trip_end", "firmware_version", "sample_rate_hz", "started_at", "imu", "gps", "media_names", "vehicle_type", "sample_rate_exact_hz", "acceleration_kind", "gyroscope", "edge", "device_calibration")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DRIVER_ID_FIELD_NUMBER: _ClassVar[int]
    TRIP_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TRIP_END_FIELD_NUMBER: _ClassVar[int]
    FIRMWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    IMU_FIELD_NUMBER: _ClassVar[int]
    GPS_FIELD_NUMBER: _ClassVar[int]
    MEDIA_NAMES_FIELD_NUMBER: _ClassVar[int]
    VEHICLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_EXACT_HZ_FIELD_NUMBER: _ClassVar[int]
    ACCELERATION_KIND_FIELD_NUMBER: _ClassVar[int]
    GYROSCOPE_FIELD_NUMBER: _ClassVar[int]
    EDGE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    device_id: str
    driver_id: str
    trip_id: str
    sequence: int
    trip_end: bool
    firmware_version: str
    sample_rate_hz: int
    started_at: _timestamp_pb2.Timestamp
    imu: ImuSamples
    gps: _containers.RepeatedCompositeFieldContainer[GpsFix]
    media_names: _containers.RepeatedScalarFieldContainer[str]
    vehicle_type: str
    sample_rate_exact_hz: float
    acceleration_kind: AccelerationKind
    gyroscope: Gyroscope
    edge: EdgeReport
    device_calibration: DeviceCalibration
    def __init__(self, upload_id: _Optional[str] = ..., device_id: _Optional[str] = ..., driver_id: _Optional[str] = ..., trip_id: _Optional[str] = ..., sequence: _Optional[int] = ..., trip_end: _Optional[bool] = ..., firmware_version: _Optional[str] = ..., sample_rate_hz: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., imu: _Optional[_Union[ImuSamples, _Mapping]] = ..., gps: _Optional[_Iterable[_Union[GpsFix, _Mapping]]] = ..., media_names: _Optional[_Iterable[str]] = ..., vehicle_type: _Optional[str] = ..., sample_rate_exact_hz: _Optional[float] = ..., acceleration_kind: _Optional[_Union[AccelerationKind, str]] = ..., gyroscope: _Optional[_Union[Gyroscope, str]] = ..., edge: _Optional[_Union[EdgeReport, _Mapping]] = ..., device_calibration: _Optional[_Union[DeviceCalibration, _Mapping]] = ...) -> None: ...

class DeviceCalibration(_message.Message):
    __slots__ = ("sums_json",)
    SUMS_JSON_FIELD_NUMBER: _ClassVar[int]
    sums_json: str
    def __init__(self, sums_json: _Optional[str] = ...) -> None: ...

class EdgeModel(_message.Message):
    __slots__ = ("name", "version", "data_version", "bundle_sha256", "precision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_SHA256_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    data_version: str
    bundle_sha256: str
    precision: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., data_version: _Optional[str] = ..., bundle_sha256: _Optional[str] = ..., precision: _Optional[str] = ...) -> None: ...

class EdgeCall(_message.Message):
    __slots__ = ("start_offset_s", "event_type", "probabilities", "packed_features", "imu")
    START_OFFSET_S_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    PACKED_FEATURES_FIELD_NUMBER: _ClassVar[int]
    IMU_FIELD_NUMBER: _ClassVar[int]
    start_offset_s: float
    event_type: _common_pb2.EventType
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    packed_features: bytes
    imu: ImuSamples
    def __init__(self, start_offset_s: _Optional[float] = ..., event_type: _Optional[_Union[_common_pb2.EventType, str]] = ..., probabilities: _Optional[_Iterable[float]] = ..., packed_features: _Optional[bytes] = ..., imu: _Optional[_Union[ImuSamples, _Mapping]] = ...) -> None: ...

class EdgeReport(_message.Message):
    __slots__ = ("model", "calibration", "duration_s", "windows", "windows_per_class", "calls")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_PER_CLASS_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    model: EdgeModel
    calibration: _common_pb2.CalibrationSummary
    duration_s: float
    windows: int
    windows_per_class: _containers.RepeatedScalarFieldContainer[int]
    calls: _containers.RepeatedCompositeFieldContainer[EdgeCall]
    def __init__(self, model: _Optional[_Union[EdgeModel, _Mapping]] = ..., calibration: _Optional[_Union[_common_pb2.CalibrationSummary, _Mapping]] = ..., duration_s: _Optional[float] = ..., windows: _Optional[int] = ..., windows_per_class: _Optional[_Iterable[int]] = ..., calls: _Optional[_Iterable[_Union[EdgeCall, _Mapping]]] = ...) -> None: ...

class UploadReceived(_message.Message):
    __slots__ = ("event_id", "occurred_at", "lineage", "upload", "received_at", "content_sha256", "archive_uri", "missing_sequences")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_URI_FIELD_NUMBER: _ClassVar[int]
    MISSING_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    lineage: _common_pb2.Lineage
    upload: Upload
    received_at: _timestamp_pb2.Timestamp
    content_sha256: str
    archive_uri: str
    missing_sequences: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lineage: _Optional[_Union[_common_pb2.Lineage, _Mapping]] = ..., upload: _Optional[_Union[Upload, _Mapping]] = ..., received_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., content_sha256: _Optional[str] = ..., archive_uri: _Optional[str] = ..., missing_sequences: _Optional[_Iterable[int]] = ...) -> None: ...

class ArchivedUpload(_message.Message):
    __slots__ = ("upload_id", "device_id", "trip_id", "sequence", "started_at", "offset", "length", "content_sha256")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TRIP_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    device_id: str
    trip_id: str
    sequence: int
    started_at: _timestamp_pb2.Timestamp
    offset: int
    length: int
    content_sha256: str
    def __init__(self, upload_id: _Optional[str] = ..., device_id: _Optional[str] = ..., trip_id: _Optional[str] = ..., sequence: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., content_sha256: _Optional[str] = ...) -> None: ...

class ArchiveSegmentIndex(_message.Message):
    __slots__ = ("uploads",)
    UPLOADS_FIELD_NUMBER: _ClassVar[int]
    uploads: _containers.RepeatedCompositeFieldContainer[ArchivedUpload]
    def __init__(self, uploads: _Optional[_Iterable[_Union[ArchivedUpload, _Mapping]]] = ...) -> None: ...

class CameraOptics(_message.Message):
    __slots__ = ("horizontal_fov_deg", "focal_length_x_px", "focal_length_y_px", "principal_point_x_px", "principal_point_y_px", "mount_height_m")
    HORIZONTAL_FOV_DEG_FIELD_NUMBER: _ClassVar[int]
    FOCAL_LENGTH_X_PX_FIELD_NUMBER: _ClassVar[int]
    FOCAL_LENGTH_Y_PX_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_POINT_X_PX_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_POINT_Y_PX_FIELD_NUMBER: _ClassVar[int]
    MOUNT_HEIGHT_M_FIELD_NUMBER: _ClassVar[int]
    horizontal_fov_deg: float
    focal_length_x_px: float
    focal_length_y_px: float
    principal_point_x_px: float
    principal_point_y_px: float
    mount_height_m: float
    def __init__(self, horizontal_fov_deg: _Optional[float] = ..., focal_length_x_px: _Optional[float] = ..., focal_length_y_px: _Optional[float] = ..., principal_point_x_px: _Optional[float] = ..., principal_point_y_px: _Optional[float] = ..., mount_height_m: _Optional[float] = ...) -> None: ...

class MediaReceived(_message.Message):
    __slots__ = ("event_id", "occurred_at", "lineage", "upload_id", "name", "camera", "blob_key", "uri", "sha256", "size_bytes", "content_type", "frame_offsets_ms", "optics")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    BLOB_KEY_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    FRAME_OFFSETS_MS_FIELD_NUMBER: _ClassVar[int]
    OPTICS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    lineage: _common_pb2.Lineage
    upload_id: str
    name: str
    camera: CameraKind
    blob_key: str
    uri: str
    sha256: str
    size_bytes: int
    content_type: str
    frame_offsets_ms: _containers.RepeatedScalarFieldContainer[int]
    optics: CameraOptics
    def __init__(self, event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lineage: _Optional[_Union[_common_pb2.Lineage, _Mapping]] = ..., upload_id: _Optional[str] = ..., name: _Optional[str] = ..., camera: _Optional[_Union[CameraKind, str]] = ..., blob_key: _Optional[str] = ..., uri: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., content_type: _Optional[str] = ..., frame_offsets_ms: _Optional[_Iterable[int]] = ..., optics: _Optional[_Union[CameraOptics, _Mapping]] = ...) -> None: ...
