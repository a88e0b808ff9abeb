"""A camera detection as the `LabelRequest` that asks people to confirm or overturn it (docs/camera.md, *Review*).

Pure: the Detection the service publishes and the media item it came from in; whether it is asked for and the
request out. By default every camera detection is asked for (reason `LABEL_REASON_CAMERA_REVIEW`, the annotation
queue `camera-review`): the pretrained vision models were never measured on this fleet's cameras, and an
inattention episode weighs more than a harsh brake in the scores, so a person's verdict on each one is worth its
cost. A fleet that produces more than its annotators can review sets a share (`ReviewSampling`): a detection is
asked for when a hash of its event id falls under its event type's share, so analysing an item again (a
redelivery, a crash before the item was settled) makes the same choice for the same detection, and detections
less confident than a floor are asked for whatever the share. The request carries what scoring matches
a label with (the detection's `window_id` in its lineage, its `event_id` as `detection_event_id`), the evidence
frames (`camera`, the detection's `CameraReference`) and the offsets the device declared for the media item, so
annotation finds each evidence frame in a clip the way this service numbered it. Its `event_id` is stable per
detection, so analysing an item again publishes the same request, which annotation deduplicates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from michi.contracts import stable_event_id
from michi.contracts.v1 import inference_pb2, labels_pb2, upload_pb2
from services.camera.domain.detections import EVENT_TYPES

# Less confident detections are served first (annotation orders by priority, then age): 100 at confidence 0,
# 50 at confidence 1, so camera reviews sit between the other queues' usual priorities either way.
BASE_PRIORITY = 50


def review_priority(confidence: float) -> int:
    return BASE_PRIORITY + round(BASE_PRIORITY * (1.0 - min(max(float(confidence), 0.0), 1.0)))


def review_request(detection: inference_pb2.Detection, media: upload_pb2.MediaReceived) -> labels_pb2.LabelRequest:
    """The request for people to review one camera detection (keyed by its window_id on label-requests)."""
    request = labels_pb2.LabelRequest(
        event_id=stable_event_id("camera-review", detection.event_id),
        reason=labels_pb2.LABEL_REASON_CAMERA_REVIEW,
        priority=review_priority(detection.confidence),
        suggested=detection.event_type,
        confidence=detection.confidence,
        detection_event_id=detection.event_id,
        media_frame_offsets_ms=list(media.frame_offsets_ms),
    )
    request.occurred_at.CopyFrom(detection.occurred_at)
    request.lineage.CopyFrom(detection.lineage)
    request.window.CopyFrom(detection.window)
    request.camera.CopyFrom(detection.camera)
    return request


# The sample point's salt: the choice is independent of any other use of the event id's digest.
_SAMPLE_SALT = b"michi-camera-review-sample\x00"
_KIND_OF_EVENT_TYPE: dict[int, str] = {int(event_type): kind for kind, event_type in EVENT_TYPES.items()}


def review_sample_point(detection_event_id: str) -> float:
    """Where a detection falls in [0, 1): the first 64 bits of sha256(salt + event id), the same on every replica,
    restart and redelivery."""
    digest = hashlib.sha256(_SAMPLE_SALT + detection_event_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True)
class ReviewSampling:
    """Which camera detections people are asked to review (docs/camera.md, *Review*; the camera settings
    `MICHI_CAMERA_REVIEW_SHARE`, `_SHARE_BY_EVENT_TYPE`, `_BELOW_CONFIDENCE`)."""

    # The share of detections asked for, 0 to 1 (1: every one, the default).
    share: float = 1.0
    # Overrides of `share` by event type name (`distraction`, `drowsiness`, `tailgating`).
    share_by_event_type: Mapping[str, float] = field(default_factory=dict)
    # Detections less confident than this are asked for whatever the share (0: none is forced).
    always_below_confidence: float = 0.0

    def share_of(self, event_type: int) -> float:
        kind = _KIND_OF_EVENT_TYPE.get(event_type)
        return self.share_by_event_type.get(kind, self.share) if kind is not None else self.share

    def asks_for(self, detection: inference_pb2.Detection) -> bool:
        """Whether this detection goes to review: a pure function of its event id, type and confidence."""
        if detection.confidence < self.always_below_confidence:
            return True
        return review_sample_point(detection.event_id) < self.share_of(detection.event_type)
