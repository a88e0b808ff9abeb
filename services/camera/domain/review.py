"""A camera detection as the `LabelRequest` that asks people to confirm or overturn it (docs/camera.md, *Review*).

Pure: the Detection the service publishes and the media item it came from in; the request out. Every camera
detection is asked for (reason `LABEL_REASON_CAMERA_REVIEW`, the annotation queue `camera-review`): the pretrained
vision models were never measured on this fleet's cameras, and an inattention episode weighs more than a harsh
brake in the scores, so a person's verdict on each one is worth its cost. The request carries what scoring matches
a label with (the detection's `window_id` in its lineage, its `event_id` as `detection_event_id`), the evidence
frames (`camera`, the detection's `CameraReference`) and the offsets the device declared for the media item, so
annotation finds each evidence frame in a clip the way this service numbered it. Its `event_id` is stable per
detection, so analysing an item again publishes the same request, which annotation deduplicates.
"""

from __future__ import annotations

from michi.contracts import stable_event_id
from michi.contracts.v1 import inference_pb2, labels_pb2, upload_pb2

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
