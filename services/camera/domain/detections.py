"""A camera event as the `Detection` the camera service publishes on `michi.detections.v1` (keyed by trip_id).

Pure: the event (stream times, epoch ms), the upload and the media item it came from, and the model lineage in;
the Detection out. Its `event_id` is stable per (upload, media item, episode), so analysing the same item again
from the same state publishes the same ids. `peak_value` is the measure scoring's severity bands read
(docs/scoring.md): distraction, the seconds the head stayed turned away; drowsiness, the largest PERCLOS;
tailgating, the smallest time headway; the analysis's own peak and figures are in `features`.
"""

from __future__ import annotations

import math

from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import common_pb2, inference_pb2, upload_pb2
from services.camera.domain.join import UploadFacts, detection_event_id, window_id

EVENT_TYPES: dict[str, common_pb2.EventType] = {
    "distraction": common_pb2.EVENT_TYPE_DISTRACTION,
    "drowsiness": common_pb2.EVENT_TYPE_DROWSINESS,
    "tailgating": common_pb2.EVENT_TYPE_TAILGATING,
}
MAX_FEATURES = 32


def scored_measure(kind: str, peak_value: float, started_ms: int, ended_ms: int) -> float:
    """What `Detection.peak_value` carries for scoring: seconds turned away, PERCLOS, or headway seconds."""
    if kind == "distraction":
        return max(0.0, (ended_ms - started_ms) / 1000.0)
    return peak_value


def camera_detection(
    *,
    kind: str,
    started_ms: int,
    ended_ms: int,
    confidence: float,
    peak_value: float,
    evidence_ms: tuple[int, ...],
    figures: dict[str, float],
    upload: UploadFacts,
    media: upload_pb2.MediaReceived,
    model_name: str,
    model_version: str,
    data_version: str,
) -> inference_pb2.Detection:
    """The Detection of one camera event (times in stream ms: epoch milliseconds)."""
    relative_started = started_ms - upload.started_at_ms
    speed = upload.speed_at(started_ms)
    position = upload.position_at(started_ms)
    features = {name: float(value) for name, value in sorted(figures.items()) if math.isfinite(value)}
    features["peak_value"] = float(peak_value)
    detection = inference_pb2.Detection(
        event_id=detection_event_id(upload.upload_id, media.name, media.sha256, kind, relative_started),
        occurred_at=timestamp_from_seconds(started_ms / 1000.0),
        lineage=common_pb2.Lineage(
            upload_id=upload.upload_id,
            window_id=window_id(upload.upload_id, media.name, kind, relative_started),
            trip_id=upload.trip_id,
            device_id=upload.device_id,
            driver_id=upload.driver_id,
            model_name=model_name,
            model_version=model_version,
            data_version=data_version,
            trace_id=upload.trace_id or media.lineage.trace_id,
        ),
        event_type=EVENT_TYPES[kind],
        confidence=float(confidence),
        window=common_pb2.TimeSpan(
            started_at=timestamp_from_seconds(started_ms / 1000.0),
            ended_at=timestamp_from_seconds(ended_ms / 1000.0),
        ),
        speed_mps=float(speed) if speed is not None else 0.0,
        peak_value=float(scored_measure(kind, peak_value, started_ms, ended_ms)),
        variant=inference_pb2.VARIANT_CHAMPION,
        features=dict(list(features.items())[:MAX_FEATURES]),
        detector=f"camera:{model_name}",
        gps_available=speed is not None,
        camera=inference_pb2.CameraReference(
            media_name=media.name,
            camera=media.camera,
            blob_key=media.blob_key,
            uri=media.uri,
            frame_offsets_ms=[max(0, offset - upload.started_at_ms) for offset in evidence_ms],
            sha256=media.sha256,
            media_event_id=media.event_id,
            content_type=media.content_type,
        ),
    )
    if position is not None:
        detection.location.CopyFrom(common_pb2.GeoPoint(latitude=position[0], longitude=position[1]))
    return detection
