"""A camera detection's evidence frames as the review page shows them, pure.

A camera review request (`LabelRequest.camera`, docs/camera.md *Review*) names one media item and the capture
times of its evidence frames (ms from the upload's start). The page shows at most `MAX_EVIDENCE_FRAMES` of them,
spread evenly over the episode (its first and last frame always among them), and asks for each by its index in
that list, so a reviewer can only ever see frames a request they may see refers to.

A clip's frames are numbered the way the camera service numbered them (`michi.vision.images.clip_frame_offset`,
which both use): every frame's declared offset when the device declared one per frame, else its container
timestamp counted from the first declared offset.
"""

from __future__ import annotations

from michi.contracts.v1 import labels_pb2
from services.annotation.domain.labels import CAMERA, MOTION

MAX_EVIDENCE_FRAMES = 16


def task_kind(request: labels_pb2.LabelRequest) -> str:
    """`camera` for a camera detection's review (the request names its media item), else `motion`."""
    return CAMERA if request.HasField("camera") and request.camera.media_name else MOTION


def evidence_offsets(request: labels_pb2.LabelRequest, limit: int = MAX_EVIDENCE_FRAMES) -> list[int]:
    """The evidence frames the page shows, in time order: all of them up to `limit`, else `limit` spread evenly
    (the first and the last included)."""
    if task_kind(request) != CAMERA:
        return []
    offsets = sorted({int(offset) for offset in request.camera.frame_offsets_ms})
    if len(offsets) <= limit:
        return offsets
    if limit == 1:
        return offsets[:1]
    step = (len(offsets) - 1) / (limit - 1)
    return [offsets[round(position * step)] for position in range(limit)]


def scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The picture's size with its longer side at most `max_side`, both even (what the JPEG encoder takes)."""
    scale = min(1.0, max_side / max(width, height, 1))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)
