"""Flattening `Prediction` and `Detection` protobufs into warehouse rows (the 4w2v columns).

One Arrow schema, `WAREHOUSE_SCHEMA`, serves both kinds so they can be queried together:
when (occurred_at, window), who (device, driver, trip, upload, window ids), where (latitude,
longitude, speed), what (event type, confidence, class probabilities, features), model version,
data version and variant, plus the Kafka coordinates each row was read from. Columns a kind does
not carry are null (a detection has no class probabilities; a prediction no speed limit).

Enum values are stored as short lower-case names: `EVENT_TYPE_HARSH_BRAKING` becomes
`harsh_braking`, `VARIANT_SHADOW` becomes `shadow`. For a prediction, `event_type` holds the
predicted class.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from google.protobuf.timestamp_pb2 import Timestamp

from michi.contracts.v1 import common_pb2, inference_pb2

PREDICTION = "prediction"
DETECTION = "detection"

# Every class but "unspecified", in enum order: the fields of the `probabilities` struct.
CLASS_NAMES: tuple[str, ...] = tuple(
    name.removeprefix("EVENT_TYPE_").lower()
    for name, number in common_pb2.EventType.items()
    if number != common_pb2.EVENT_TYPE_UNSPECIFIED
)

TIMESTAMP = pa.timestamp("us", tz="UTC")

WAREHOUSE_SCHEMA = pa.schema(
    [
        pa.field("record_kind", pa.string(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("occurred_at", TIMESTAMP),
        pa.field("window_started_at", TIMESTAMP),
        pa.field("window_ended_at", TIMESTAMP),
        pa.field("device_id", pa.string()),
        pa.field("driver_id", pa.string()),
        pa.field("trip_id", pa.string()),
        pa.field("upload_id", pa.string()),
        pa.field("window_id", pa.string()),
        pa.field("trace_id", pa.string()),
        pa.field("latitude", pa.float64()),
        pa.field("longitude", pa.float64()),
        pa.field("event_type", pa.string()),
        pa.field("confidence", pa.float32()),
        pa.field("probabilities", pa.struct([pa.field(name, pa.float32()) for name in CLASS_NAMES])),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("data_version", pa.string()),
        pa.field("variant", pa.string()),
        # The rollout whose split routed the window (`RolloutPlan.rollout_id`); null when none.
        pa.field("rollout_id", pa.string()),
        pa.field("speed_mps", pa.float32()),
        pa.field("speed_limit_mps", pa.float32()),
        pa.field("peak_value", pa.float32()),
        pa.field("detector", pa.string()),
        pa.field("sample_rate_hz", pa.int32()),
        pa.field("vehicle_type", pa.string()),
        pa.field("firmware_version", pa.string()),
        pa.field("features", pa.map_(pa.string(), pa.float32())),
        # The mount calibration the record was made with, and whether GPS covered the window.
        pa.field("calibration_state", pa.string()),
        pa.field("gravity_confidence", pa.float32()),
        pa.field("forward_confidence", pa.float32()),
        pa.field("forward_method", pa.string()),
        pa.field("gps_available", pa.bool_()),
        pa.field("sample_rate_exact_hz", pa.float32()),
        # A detection decided in hindsight (`Detection.hindsight`); null for a prediction.
        pa.field("hindsight", pa.bool_()),
        pa.field("kafka_topic", pa.string()),
        pa.field("kafka_partition", pa.int32()),
        pa.field("kafka_offset", pa.int64()),
    ]
)

Row = dict[str, Any]


def event_type_name(value: int) -> str:
    return str(common_pb2.EventType.Name(value)).removeprefix("EVENT_TYPE_").lower()


def variant_name(value: int) -> str:
    return str(inference_pb2.Variant.Name(value)).removeprefix("VARIANT_").lower()


def _moment(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _window(message: inference_pb2.Prediction | inference_pb2.Detection) -> tuple[datetime | None, datetime | None]:
    if not message.HasField("window"):
        return None, None
    window = message.window
    started = _moment(window.started_at) if window.HasField("started_at") else None
    ended = _moment(window.ended_at) if window.HasField("ended_at") else None
    return started, ended


def _calibration(message: inference_pb2.Prediction | inference_pb2.Detection) -> Row:
    """Calibration columns; empty for records written before they existed (or by map rules)."""
    if not message.HasField("calibration"):
        return {
            "calibration_state": None,
            "gravity_confidence": None,
            "forward_confidence": None,
            "forward_method": None,
            "gps_available": None,
        }
    calibration = message.calibration
    return {
        "calibration_state": str(common_pb2.CalibrationState.Name(calibration.state))
        .removeprefix("CALIBRATION_STATE_")
        .lower()
        .replace("_", "-"),
        "gravity_confidence": calibration.gravity_confidence,
        "forward_confidence": calibration.forward_confidence,
        "forward_method": calibration.forward_method,
        "gps_available": message.gps_available,
    }


def _shared(
    kind: str,
    message: inference_pb2.Prediction | inference_pb2.Detection,
    location: common_pb2.GeoPoint | None,
    topic: str,
    partition: int,
    offset: int,
) -> Row:
    lineage = message.lineage
    started, ended = _window(message)
    return {
        "record_kind": kind,
        "event_id": message.event_id,
        "occurred_at": _moment(message.occurred_at),
        "window_started_at": started,
        "window_ended_at": ended,
        "device_id": lineage.device_id,
        "driver_id": lineage.driver_id,
        "trip_id": lineage.trip_id,
        "upload_id": lineage.upload_id,
        "window_id": lineage.window_id,
        "trace_id": lineage.trace_id,
        "latitude": location.latitude if location is not None else None,
        "longitude": location.longitude if location is not None else None,
        "confidence": message.confidence,
        "model_name": lineage.model_name,
        "model_version": lineage.model_version,
        "data_version": lineage.data_version,
        "variant": variant_name(message.variant),
        "rollout_id": message.rollout_id or None,
        "speed_mps": message.speed_mps,
        "features": sorted(message.features.items()),
        **_calibration(message),
        "kafka_topic": topic,
        "kafka_partition": partition,
        "kafka_offset": offset,
    }


def prediction_row(message: inference_pb2.Prediction, *, topic: str = "", partition: int = 0, offset: int = 0) -> Row:
    """The warehouse row of one prediction read at `topic[partition]@offset`."""
    location = message.location if message.HasField("location") else None
    row = _shared(PREDICTION, message, location, topic, partition, offset)
    probabilities = {name: 0.0 for name in CLASS_NAMES}
    for score in message.scores:
        if score.event_type != common_pb2.EVENT_TYPE_UNSPECIFIED:
            probabilities[event_type_name(score.event_type)] = score.probability
    row.update(
        event_type=event_type_name(message.predicted),
        probabilities=probabilities if message.scores else None,
        speed_limit_mps=None,
        peak_value=None,
        detector=None,
        sample_rate_hz=message.sample_rate_hz,
        sample_rate_exact_hz=message.sample_rate_exact_hz or None,
        hindsight=None,
        vehicle_type=message.vehicle_type,
        firmware_version=message.firmware_version,
    )
    return row


def detection_row(message: inference_pb2.Detection, *, topic: str = "", partition: int = 0, offset: int = 0) -> Row:
    """The warehouse row of one detection read at `topic[partition]@offset`."""
    location = message.location if message.HasField("location") else None
    row = _shared(DETECTION, message, location, topic, partition, offset)
    row.update(
        event_type=event_type_name(message.event_type),
        probabilities=None,
        speed_limit_mps=message.speed_limit_mps,
        peak_value=message.peak_value,
        detector=message.detector,
        sample_rate_hz=None,
        sample_rate_exact_hz=None,
        hindsight=message.hindsight,
        vehicle_type=None,
        firmware_version=None,
    )
    return row


def rows_to_table(rows: list[Row]) -> pa.Table:
    """An Arrow table of rows in `WAREHOUSE_SCHEMA`."""
    return pa.Table.from_pylist(rows, schema=WAREHOUSE_SCHEMA)
