"""What the controller keeps of trip segments, detections, labels, dead letters and alerts (pure: no I/O).

Each `*_seen` function reads one message into a plain record, or says why it is not one of the arms' signals
(`Skipped`). The records are buffered for a batch (`SignalBatch`) and written together at its end, each by its
own id (event id, window id, episode id), so a redelivered message changes nothing
(`services/rollouts/domain/figures.py` says what each one measures).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from michi.contracts import timestamp_to_seconds
from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2, operations_pb2, upload_pb2
from michi.labels.outcomes import Skipped
from services.rollouts.domain.figures import latency_bucket

# What inference names an upload it could not process in its dead letter (services/inference/handlers.py).
INFERENCE_SERVICE = "inference"
PROCESSING_FAILED = "processing-failed"
# The monitor's data-drift alerts (services/monitor/handlers.py: kind, and the episode convention).
DRIFT_ALERT_KIND = "drift"
FIRING, RESOLVED = "firing", "resolved"
# A label with one of these event types overturns the window's detection (as scoring reads it).
NOT_RISKY = frozenset({common_pb2.EVENT_TYPE_NORMAL, common_pb2.EVENT_TYPE_CONFOUNDER})


@dataclass(frozen=True)
class SegmentSeen:
    event_id: str
    device_id: str
    occurred_at_s: float
    distance_m: float
    latency_bucket: int | None


@dataclass(frozen=True)
class DetectionSeen:
    event_id: str
    window_id: str
    model_name: str
    model_version: str
    rollout_id: str
    event_type: int
    occurred_at_s: float


@dataclass(frozen=True)
class WindowLabelSeen:
    window_id: str
    event_type: int
    label_event_id: str


@dataclass(frozen=True)
class ErrorSeen:
    event_id: str
    device_id: str
    occurred_at_s: float
    reason: str


@dataclass(frozen=True)
class DriftSeen:
    episode_id: str
    model_name: str
    model_version: str
    status: str
    at_s: float


@dataclass
class SignalBatch:
    """The signals of one consumer batch, written together at its end."""

    segments: list[SegmentSeen] = field(default_factory=list)
    detections: list[DetectionSeen] = field(default_factory=list)
    labels: list[WindowLabelSeen] = field(default_factory=list)
    errors: list[ErrorSeen] = field(default_factory=list)
    drift: list[DriftSeen] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.segments or self.detections or self.labels or self.errors or self.drift)


def segment_seen(segment: inference_pb2.TripSegment, broker_ms: int | None) -> SegmentSeen | Skipped:
    """A processed upload: its device, end, distance, and the time from its end to inference's segment."""
    if not segment.event_id or not segment.lineage.device_id:
        return Skipped("incomplete-lineage")
    if segment.variant == inference_pb2.VARIANT_EDGE:
        # An events-only upload: the device's bundle decided it, whichever arm the split gives the device.
        return Skipped("decided-on-device")
    ended = timestamp_to_seconds(segment.span.ended_at) if segment.HasField("span") else 0.0
    if ended <= 0:
        ended = timestamp_to_seconds(segment.occurred_at)
    bucket = None
    # A failed upload's segment has no duration (and its end is its start): no latency of the arm's to measure.
    if broker_ms is not None and broker_ms > 0 and ended > 0 and segment.duration_s > 0:
        bucket = latency_bucket(max(broker_ms - ended * 1000.0, 0.0))
    return SegmentSeen(segment.event_id, segment.lineage.device_id, ended, max(float(segment.distance_m), 0.0), bucket)


def detection_seen(detection: inference_pb2.Detection) -> DetectionSeen | Skipped:
    """A detection of a rollout's serving arm (map rules and plans without a rollout id are no arm's)."""
    if not detection.rollout_id:
        return Skipped("no-rollout")
    lineage = detection.lineage
    if not (detection.event_id and lineage.window_id and lineage.model_name and lineage.model_version):
        return Skipped("incomplete-lineage")
    at = timestamp_to_seconds(detection.window.ended_at) if detection.HasField("window") else 0.0
    if at <= 0:
        at = timestamp_to_seconds(detection.occurred_at)
    return DetectionSeen(
        detection.event_id,
        lineage.window_id,
        lineage.model_name,
        lineage.model_version,
        detection.rollout_id,
        int(detection.event_type),
        at,
    )


def window_label_seen(label: labels_pb2.Label) -> WindowLabelSeen | Skipped:
    """What people said of a window (any request reason: a detection's window is rarely a random one)."""
    if not label.event_id or not label.lineage.window_id:
        return Skipped("incomplete-lineage")
    if label.event_type == common_pb2.EVENT_TYPE_UNSPECIFIED:
        return Skipped("no-event-type")
    return WindowLabelSeen(label.lineage.window_id, int(label.event_type), label.event_id)


def error_seen(dead_letter: operations_pb2.DeadLetter, uploads_topic: str) -> ErrorSeen | Skipped:
    """An upload inference could not process: its device (the record key) and the upload's start."""
    if dead_letter.service != INFERENCE_SERVICE or dead_letter.source_topic != uploads_topic:
        return Skipped("not-inference")
    if dead_letter.reason != PROCESSING_FAILED:
        return Skipped("not-processing-failed")
    device = dead_letter.key.decode("utf-8", "replace")
    at = timestamp_to_seconds(dead_letter.occurred_at)
    try:
        received = upload_pb2.UploadReceived.FromString(dead_letter.value)
    except DecodeError:
        received = None
    if received is not None:
        device = received.upload.device_id or device
        started = timestamp_to_seconds(received.upload.started_at)
        at = started if started > 0 else at
    if not device or not dead_letter.event_id:
        return Skipped("incomplete-lineage")
    return ErrorSeen(dead_letter.event_id, device, at, dead_letter.reason)


def drift_seen(alert: operations_pb2.Alert) -> DriftSeen | Skipped:
    """A drift episode of a model version opened (`firing`) or ended (`resolved`), at the alert's time."""
    if alert.kind != DRIFT_ALERT_KIND:
        return Skipped("not-drift")
    status, episode = alert.attributes.get("status", ""), alert.attributes.get("episode", "")
    if status not in (FIRING, RESOLVED) or not episode:
        return Skipped("no-episode")
    if not alert.lineage.model_name or not alert.lineage.model_version:
        return Skipped("incomplete-lineage")
    return DriftSeen(
        episode, alert.lineage.model_name, alert.lineage.model_version, status, timestamp_to_seconds(alert.occurred_at)
    )
