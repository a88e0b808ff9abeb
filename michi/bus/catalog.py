"""The topic catalog: every topic Michi uses, declared once.

Services import the specs from here; nobody spells a topic name anywhere else.
The prefix (`MICHI_TOPIC_PREFIX`, default `michi.`) is prepended at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from michi.contracts.v1 import inference_pb2, labels_pb2, operations_pb2, scoring_pb2, upload_pb2

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name (without prefix), key, value type, partitions and retention."""

    base_name: str
    key: str
    value_type: type[Message]
    partitions: int
    retention_ms: int | None
    compacted: bool = False
    description: str = ""

    def name(self, prefix: str = "michi.") -> str:
        return f"{prefix}{self.base_name}"

    @property
    def schema(self) -> str:
        """The fully qualified proto message name carried in the `schema` header."""
        return self.value_type.DESCRIPTOR.full_name

    def config(self) -> dict[str, str]:
        settings: dict[str, str] = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if self.retention_ms is not None:
            settings["retention.ms"] = str(self.retention_ms)
        if self.compacted:
            settings["min.cleanable.dirty.ratio"] = "0.1"
            settings["segment.ms"] = str(DAY_MS)
        return settings


UPLOADS = TopicSpec(
    "uploads.v1", "device_id", upload_pb2.UploadReceived, 6, 7 * DAY_MS, description="accepted device uploads"
)
DETECTIONS = TopicSpec(
    "detections.v1", "trip_id", inference_pb2.Detection, 6, 30 * DAY_MS, description="risky windows (4w2v)"
)
PREDICTIONS = TopicSpec(
    "predictions.v1", "device_id", inference_pb2.Prediction, 6, 30 * DAY_MS, description="every analysed window"
)
TRIP_SEGMENTS = TopicSpec(
    "trip-segments.v1",
    "trip_id",
    inference_pb2.TripSegment,
    6,
    30 * DAY_MS,
    description="exposure and detection count per processed upload",
)
LABEL_REQUESTS = TopicSpec(
    "label-requests.v1", "window_id", labels_pb2.LabelRequest, 3, 30 * DAY_MS, description="windows for people to label"
)
# retention.ms -1: people's labels are kept forever (None would leave the broker's default, 7 days).
LABELS = TopicSpec("labels.v1", "window_id", labels_pb2.Label, 3, -1, description="consensus labels (kept forever)")
SCORED_EVENTS = TopicSpec(
    "scored-events.v1",
    "driver_id",
    scoring_pb2.ScoredEvent,
    6,
    90 * DAY_MS,
    description="detections as they count against drivers",
)
TRIP_SCORES = TopicSpec(
    "trip-scores.v1", "trip_id", scoring_pb2.TripScore, 6, 90 * DAY_MS, description="0-100 score of each finished trip"
)
DRIVER_SCORES = TopicSpec(
    "driver-scores.v1",
    "driver_id",
    scoring_pb2.DriverScore,
    6,
    None,
    compacted=True,
    description="rolling driver scores",
)
MODEL_ROLLOUTS = TopicSpec(
    "model-rollouts.v1",
    "model_name",
    operations_pb2.RolloutPlan,
    1,
    None,
    compacted=True,
    description="active rollout plan per model",
)
ALERTS = TopicSpec(
    "alerts.v1", "kind", operations_pb2.Alert, 1, 30 * DAY_MS, description="drift, cost, lag and retrain alerts"
)
DEAD_LETTERS = TopicSpec(
    "dead-letters.v1",
    "original key",
    operations_pb2.DeadLetter,
    1,
    30 * DAY_MS,
    description="messages a consumer could not process",
)
MEDIA = TopicSpec(
    "media.v1",
    "device_id",
    upload_pb2.MediaReceived,
    6,
    30 * DAY_MS,
    description="camera media stored by ingest",
)

CATALOG: tuple[TopicSpec, ...] = (
    UPLOADS,
    DETECTIONS,
    PREDICTIONS,
    TRIP_SEGMENTS,
    LABEL_REQUESTS,
    LABELS,
    SCORED_EVENTS,
    TRIP_SCORES,
    DRIVER_SCORES,
    MODEL_ROLLOUTS,
    ALERTS,
    DEAD_LETTERS,
    MEDIA,
)


def spec_for_schema(schema: str) -> TopicSpec | None:
    return next((spec for spec in CATALOG if spec.schema == schema), None)
