"""What inference does with a batch of uploads: the pure pipeline both the agent and benchmarks call.

    outcome = process_uploads(uploads, states, pipeline)

`uploads` are decoded `UploadReceived` messages in partition order, `states` maps device_id to
its `DeviceState` (updated in place), `pipeline` holds the detector and the road map. The
outcome lists, per upload, the protobufs to publish — predictions, detections, label requests
and exactly one trip segment — and nothing here does I/O, so the same input always gives the
same ids and counts.

Three phases so ONNX Runtime sees the whole batch at once: (1) calibrate and extract features
per upload (per device in order), (2) one `session.run` over every window of the batch,
(3) decide, merge and track speeding per upload (per device in order).

Degenerate uploads (no usable IMU: too few samples, arrays of unequal length, offsets not
increasing, non-finite values) are skipped with a reason — no windows, but still their
`TripSegment`, so scoring can close the trip. An upload without GPS is analysed, but its
windows cannot be corroborated so they never become detections (uncertain ones are sent to
people). An upload whose processing raises is reported as failed (the agent dead-letters it)
and still gets its segment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

import numpy as np

from michi.contracts import stable_event_id, timestamp_from_seconds, timestamp_to_seconds
from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2, upload_pb2
from michi.windows.calibration import Calibration, CalibrationSums, update_calibration
from michi.windows.features import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    SIGNAL_CHANNELS,
    SIGNAL_STEPS,
    UploadWindows,
    empty_windows,
    extract_windows,
    window_id,
)
from michi.windows.model_spec import CLASS_EVENT_TYPES, DECISION_THRESHOLD, RISKY_EVENT_TYPES
from michi.windows.upload import UploadData, upload_from_proto
from services.inference.domain.episodes import merge_windows
from services.inference.domain.speeding import (
    RULE_NAME,
    RULE_VERSION,
    SpeedingEpisode,
    SpeedLimits,
    speed_limits_of,
    track_speeding,
)
from services.inference.domain.state import DeviceState

logger = logging.getLogger(__name__)

RISKY_COLUMNS = [index for index, event_type in enumerate(CLASS_EVENT_TYPES) if event_type in RISKY_EVENT_TYPES]
PEAK_FEATURE = {
    common_pb2.EVENT_TYPE_HARSH_BRAKING: ("longitudinal_min_mps2", -1.0),
    common_pb2.EVENT_TYPE_HARSH_ACCELERATION: ("longitudinal_max_mps2", 1.0),
    common_pb2.EVENT_TYPE_HARSH_CORNERING: ("lateral_abs_max_mps2", 1.0),
}


class Detector(Protocol):
    model_name: str
    model_version: str
    data_version: str

    def predict(self, features: np.ndarray, signals: np.ndarray) -> np.ndarray:
        """Class probabilities [N, 5] for features [N, F] and signals [N, C, T] (float32, same N)."""
        ...


@dataclass(frozen=True)
class InferencePipeline:
    detector: Detector
    road_map: SpeedLimits | None
    # Windows whose best risky probability is within this of the threshold go to people.
    uncertainty_band: float = 0.15
    variant: inference_pb2.Variant = inference_pb2.VARIANT_CHAMPION


@dataclass
class UploadOutcome:
    upload_id: str
    device_id: str
    trip_id: str
    predictions: list[inference_pb2.Prediction] = field(default_factory=list)
    detections: list[inference_pb2.Detection] = field(default_factory=list)
    label_requests: list[labels_pb2.LabelRequest] = field(default_factory=list)
    segment: inference_pb2.TripSegment = field(default_factory=inference_pb2.TripSegment)
    skipped_reason: str | None = None
    failure: str | None = None
    replayed: bool = False
    calibration_confidence: float | None = None
    orientation_changed: bool = False


@dataclass
class BatchOutcome:
    uploads: list[UploadOutcome]
    window_count: int
    onnx_seconds: float


@dataclass
class _Pending:
    received: upload_pb2.UploadReceived
    data: UploadData | None
    replay: bool
    calibration_after: CalibrationSums | None
    calibration: Calibration | None
    windows: UploadWindows
    skipped_reason: str | None
    failure: str | None = None
    first_row: int = 0


def process_uploads(
    uploads: Sequence[upload_pb2.UploadReceived], states: MutableMapping[str, DeviceState], pipeline: InferencePipeline
) -> BatchOutcome:
    """Analyse a batch of uploads (in partition order); `states` is updated in place."""
    pending = [_prepare(received, states, chain) for chain in [_CalibrationChain()] for received in uploads]
    rows = 0
    for item in pending:
        item.first_row = rows
        rows += item.windows.count
    matrix = (
        np.concatenate([item.windows.features for item in pending], axis=0)
        if rows
        else np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    )
    signals = (
        np.concatenate([item.windows.signals for item in pending], axis=0)
        if rows
        else np.zeros((0, len(SIGNAL_CHANNELS), SIGNAL_STEPS), dtype=np.float32)
    )
    began = time.perf_counter()
    probabilities = (
        pipeline.detector.predict(matrix, signals) if rows else np.zeros((0, len(CLASS_EVENT_TYPES)), dtype=np.float32)
    )
    onnx_seconds = time.perf_counter() - began if rows else 0.0
    outcomes = []
    for item in pending:
        scores = probabilities[item.first_row : item.first_row + item.windows.count]
        try:
            outcomes.append(_decide(item, scores, states, pipeline))
        except Exception as error:  # one bad upload must not stop the batch
            logger.exception("upload decision failed", extra={"upload_id": item.received.upload.upload_id})
            outcomes.append(_failed(item, f"{type(error).__name__}: {error}", pipeline))
    return BatchOutcome(outcomes, rows, onnx_seconds)


class _CalibrationChain:
    """Calibration sums per device as phase 1 walks the batch (mirrors what phase 3 will store)."""

    def __init__(self) -> None:
        self.current: dict[str, CalibrationSums] = {}
        self.before: dict[str, dict[str, CalibrationSums]] = {}


def _prepare(
    received: upload_pb2.UploadReceived, states: MutableMapping[str, DeviceState], chain: _CalibrationChain
) -> _Pending:
    upload = received.upload
    try:
        data = upload_from_proto(received)
    except Exception as error:
        return _Pending(
            received, None, False, None, None, empty_windows(), None, failure=f"{type(error).__name__}: {error}"
        )
    device = data.device_id
    stored = states.get(device) or DeviceState()
    seen = chain.before.setdefault(device, {})
    replay = True
    if upload.upload_id in seen:
        calibration_before = seen[upload.upload_id]
    elif (earlier := stored.state_before(upload.upload_id)) is not None:
        calibration_before = earlier.calibration
    else:
        replay = False
        calibration_before = chain.current.get(device, stored.calibration)
        seen[upload.upload_id] = calibration_before
    reason = data.degenerate_reason()
    if reason is not None:
        return _Pending(received, data, replay, calibration_before, None, empty_windows(), reason)
    try:
        calibration_after, calibration = update_calibration(calibration_before, data)
        windows = extract_windows(data, calibration)
    except Exception as error:
        logger.exception("feature extraction failed", extra={"upload_id": upload.upload_id})
        return _Pending(
            received,
            data,
            replay,
            calibration_before,
            None,
            empty_windows(),
            None,
            failure=f"{type(error).__name__}: {error}",
        )
    if not replay:
        chain.current[device] = calibration_after
    return _Pending(received, data, replay, calibration_after, calibration, windows, None)


def _lineage(
    data: UploadData, window_id: str, model_name: str, model_version: str, data_version: str
) -> common_pb2.Lineage:
    return common_pb2.Lineage(
        upload_id=data.upload_id,
        window_id=window_id,
        trip_id=data.trip_id,
        device_id=data.device_id,
        driver_id=data.driver_id,
        model_name=model_name,
        model_version=model_version,
        data_version=data_version,
        trace_id=data.trace_id,
    )


def _span(start_s: float, end_s: float) -> common_pb2.TimeSpan:
    return common_pb2.TimeSpan(started_at=timestamp_from_seconds(start_s), ended_at=timestamp_from_seconds(end_s))


def _decide(
    item: _Pending, scores: np.ndarray, states: MutableMapping[str, DeviceState], pipeline: InferencePipeline
) -> UploadOutcome:
    data = item.data
    if data is None or item.failure is not None:
        return _failed(item, item.failure or "undecodable upload", pipeline)
    stored = states.get(data.device_id) or DeviceState()
    replayed_from = stored.state_before(data.upload_id)
    working = replayed_from if replayed_from is not None else stored
    snapshot = working.core()
    detector = pipeline.detector
    outcome = UploadOutcome(
        data.upload_id, data.device_id, data.trip_id, skipped_reason=item.skipped_reason, replayed=item.replay
    )
    if item.calibration is not None:
        outcome.calibration_confidence = item.calibration.confidence
        outcome.orientation_changed = item.calibration.orientation_changed

    windows = item.windows
    origin = data.started_at_s
    window_ids = [window_id(data.upload_id, float(start)) for start in windows.starts_s]
    absolute_starts = [origin + float(start) for start in windows.starts_s]
    absolute_ends = [origin + float(end) for end in windows.ends_s]
    best = np.argmax(scores, axis=1) if windows.count else np.zeros(0, dtype=np.int64)
    risky_types: list[common_pb2.EventType | None] = []
    for position in range(windows.count):
        column = int(best[position])
        event_type = CLASS_EVENT_TYPES[column]
        risky = event_type in RISKY_EVENT_TYPES and float(scores[position, column]) >= DECISION_THRESHOLD
        risky_types.append(event_type if risky else None)

    def detection_id(first_window_id: str, event_type: int) -> str:
        return stable_event_id("detection", first_window_id, event_type, detector.model_version)

    episodes, working.open_episode = merge_windows(
        trip_id=data.trip_id,
        starts_s=absolute_starts,
        ends_s=absolute_ends,
        risky_types=risky_types,
        first_window_ids=window_ids,
        detection_id=detection_id,
        open_episode=working.open_episode,
    )
    detection_of_window: dict[int, str] = {}
    for episode in episodes:
        for position in episode.window_positions:
            detection_of_window[position] = episode.detection_event_id
        if episode.new:
            outcome.detections.append(
                _model_detection(
                    data,
                    episode.event_type,
                    episode.detection_event_id,
                    episode.window_positions,
                    windows,
                    scores,
                    window_ids,
                    absolute_starts,
                    absolute_ends,
                    pipeline,
                )
            )

    feature_maps = [dict(zip(FEATURE_NAMES, (float(value) for value in row), strict=True)) for row in windows.features]
    for position in range(windows.count):
        column = int(best[position])
        lineage = _lineage(
            data, window_ids[position], detector.model_name, detector.model_version, detector.data_version
        )
        window_span = _span(absolute_starts[position], absolute_ends[position])
        outcome.predictions.append(
            inference_pb2.Prediction(
                event_id=stable_event_id("prediction", window_ids[position], detector.model_version, pipeline.variant),
                occurred_at=timestamp_from_seconds(absolute_ends[position]),
                lineage=lineage,
                predicted=CLASS_EVENT_TYPES[column],
                confidence=float(scores[position, column]),
                scores=[
                    inference_pb2.ClassScore(event_type=event_type, probability=float(scores[position, index]))
                    for index, event_type in enumerate(CLASS_EVENT_TYPES)
                ],
                window=window_span,
                location=common_pb2.GeoPoint(
                    latitude=float(windows.latitude[position]), longitude=float(windows.longitude[position])
                ),
                speed_mps=float(windows.speed_mps[position]),
                variant=pipeline.variant,
                features=feature_maps[position],
                sample_rate_hz=round(data.sample_rate_hz),
                vehicle_type=data.vehicle_type,
                firmware_version=data.firmware_version,
            )
        )
        risky_column = RISKY_COLUMNS[int(np.argmax(scores[position, RISKY_COLUMNS]))]
        risky_probability = float(scores[position, risky_column])
        if abs(risky_probability - DECISION_THRESHOLD) <= pipeline.uncertainty_band:
            outcome.label_requests.append(
                labels_pb2.LabelRequest(
                    event_id=stable_event_id(
                        "label-request", window_ids[position], detector.model_version, "uncertain"
                    ),
                    occurred_at=timestamp_from_seconds(absolute_ends[position]),
                    lineage=lineage,
                    reason=labels_pb2.LABEL_REASON_UNCERTAIN,
                    # Closest to the threshold first.
                    priority=round(
                        100 * (1.0 - abs(risky_probability - DECISION_THRESHOLD) / max(pipeline.uncertainty_band, 1e-6))
                    ),
                    suggested=CLASS_EVENT_TYPES[risky_column],
                    confidence=risky_probability,
                    window=window_span,
                    detection_event_id=detection_of_window.get(position, ""),
                )
            )

    if pipeline.road_map is not None and data.gps_times_s.size:
        limits = speed_limits_of(pipeline.road_map, data.latitude, data.longitude, data.heading_deg)
        fix_ids = [stable_event_id(data.upload_id, "gps", index) for index in range(data.gps_times_s.size)]
        finished, working.speeding = track_speeding(
            trip_id=data.trip_id,
            trip_end=data.trip_end,
            fix_times_s=origin + data.gps_times_s,
            speed_mps=data.speed_mps,
            limits_mps=limits,
            latitude=data.latitude,
            longitude=data.longitude,
            fix_window_ids=fix_ids,
            open_episode=working.speeding,
        )
        outcome.detections.extend(_speeding_detection(data, episode) for episode in finished)
    elif data.trip_end and working.speeding is not None:
        finished, working.speeding = track_speeding(
            trip_id=data.trip_id,
            trip_end=True,
            fix_times_s=np.zeros(0),
            speed_mps=np.zeros(0),
            limits_mps=np.zeros(0),
            latitude=np.zeros(0),
            longitude=np.zeros(0),
            fix_window_ids=[],
            open_episode=working.speeding,
        )
        outcome.detections.extend(_speeding_detection(data, episode) for episode in finished)

    outcome.segment = _segment(data, outcome.detections)
    if replayed_from is None:
        if item.calibration_after is not None:
            working.calibration = item.calibration_after
        working.remember(data.upload_id, snapshot)
        states[data.device_id] = working
    return outcome


def _model_detection(
    data: UploadData,
    event_type: int,
    event_id: str,
    positions: list[int],
    windows: UploadWindows,
    scores: np.ndarray,
    window_ids: list[str],
    starts: list[float],
    ends: list[float],
    pipeline: InferencePipeline,
) -> inference_pb2.Detection:
    kind = cast(common_pb2.EventType, event_type)
    column = CLASS_EVENT_TYPES.index(kind)
    feature_name, sign = PEAK_FEATURE[kind]
    peak_values = [sign * float(windows.features[position, FEATURE_INDEX[feature_name]]) for position in positions]
    peak_position = positions[int(np.argmax(peak_values))]
    detector = pipeline.detector
    return inference_pb2.Detection(
        event_id=event_id,
        occurred_at=timestamp_from_seconds(starts[positions[0]]),
        lineage=_lineage(
            data, window_ids[positions[0]], detector.model_name, detector.model_version, detector.data_version
        ),
        event_type=kind,
        confidence=max(float(scores[position, column]) for position in positions),
        window=_span(starts[positions[0]], max(ends[position] for position in positions)),
        location=common_pb2.GeoPoint(
            latitude=float(windows.latitude[peak_position]), longitude=float(windows.longitude[peak_position])
        ),
        speed_mps=float(windows.speed_mps[peak_position]),
        peak_value=max(peak_values),
        variant=pipeline.variant,
        features=dict(zip(FEATURE_NAMES, (float(value) for value in windows.features[peak_position]), strict=True)),
        detector=f"onnx:{detector.model_version}",
    )


def _speeding_detection(data: UploadData, episode: SpeedingEpisode) -> inference_pb2.Detection:
    event_type = common_pb2.EVENT_TYPE_SPEEDING
    return inference_pb2.Detection(
        event_id=stable_event_id("detection", episode.window_id, event_type, RULE_VERSION),
        occurred_at=timestamp_from_seconds(episode.start_s),
        lineage=_lineage(data, episode.window_id, RULE_NAME, RULE_VERSION, ""),
        event_type=event_type,
        confidence=1.0,
        window=_span(episode.start_s, episode.last_over_s),
        location=common_pb2.GeoPoint(latitude=episode.latitude, longitude=episode.longitude),
        speed_mps=episode.speed_mps,
        speed_limit_mps=episode.speed_limit_mps,
        peak_value=episode.peak_excess_mps,
        variant=inference_pb2.VARIANT_CHAMPION,
        features={"sustained_s": float(episode.sustained_s), "peak_excess_mps": float(episode.peak_excess_mps)},
        detector=RULE_NAME,
    )


def _distance_m(data: UploadData) -> float:
    """Distance from GPS speed (integrated), robust to position noise while stopped."""
    if data.gps_times_s.size == 0:
        return 0.0
    if data.gps_times_s.size == 1:
        return float(data.speed_mps[0]) * data.duration_s
    times, speeds = data.gps_times_s, np.clip(data.speed_mps, 0.0, None)
    inside = float(np.sum((speeds[1:] + speeds[:-1]) / 2.0 * np.diff(times)))
    # The upload covers a little before the first fix and after the last one.
    edges = float(speeds[0]) * max(float(times[0]), 0.0) + float(speeds[-1]) * max(
        data.duration_s - float(times[-1]), 0.0
    )
    return inside + edges


def _segment(data: UploadData, detections: list[inference_pb2.Detection]) -> inference_pb2.TripSegment:
    duration = data.duration_s
    return inference_pb2.TripSegment(
        event_id=stable_event_id("trip-segment", data.upload_id),
        occurred_at=timestamp_from_seconds(data.started_at_s + duration),
        lineage=common_pb2.Lineage(
            upload_id=data.upload_id,
            trip_id=data.trip_id,
            device_id=data.device_id,
            driver_id=data.driver_id,
            trace_id=data.trace_id,
        ),
        sequence=data.sequence,
        trip_end=data.trip_end,
        distance_m=_distance_m(data),
        duration_s=duration,
        detection_count=len(detections),
        detection_event_ids=[detection.event_id for detection in detections],
        span=_span(data.started_at_s, data.started_at_s + duration),
        vehicle_type=data.vehicle_type,
    )


def _failed(item: _Pending, reason: str, pipeline: InferencePipeline) -> UploadOutcome:
    """A segment with no detections for an upload that could not be processed (scoring can still close the trip)."""
    upload = item.received.upload
    started = timestamp_to_seconds(upload.started_at)
    segment = inference_pb2.TripSegment(
        event_id=stable_event_id("trip-segment", upload.upload_id),
        occurred_at=timestamp_from_seconds(started),
        lineage=common_pb2.Lineage(
            upload_id=upload.upload_id,
            trip_id=upload.trip_id,
            device_id=upload.device_id,
            driver_id=upload.driver_id,
            trace_id=item.received.lineage.trace_id,
        ),
        sequence=upload.sequence,
        trip_end=upload.trip_end,
        detection_count=0,
        span=_span(started, started),
        vehicle_type=upload.vehicle_type,
    )
    return UploadOutcome(upload.upload_id, upload.device_id, upload.trip_id, segment=segment, failure=reason)
