"""Conversions between the wire (protobuf) and the domain dataclasses."""

from __future__ import annotations

import math

from michi.contracts import timestamp_from_seconds, timestamp_to_seconds
from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2, scoring_pb2
from services.scoring.domain.driver import DriverSummary, TripContribution
from services.scoring.domain.trip import (
    CHANGE_ACTIVE,
    CHANGE_ADDED,
    CHANGE_OVERTURNED,
    DetectionFacts,
    DetectionRecord,
    EventChange,
    LabelFacts,
    SegmentFacts,
    TripState,
    TripSummary,
)

# Event types a label may carry (UNSPECIFIED, or a number this version does not know, is refused).
LABEL_EVENT_TYPES = frozenset(
    value for value in common_pb2.EventType.values() if value != common_pb2.EVENT_TYPE_UNSPECIFIED
)
LINEAGE_FIELDS = tuple(descriptor.name for descriptor in common_pb2.Lineage.DESCRIPTOR.fields)
CHANGE_STATUSES = {
    CHANGE_ACTIVE: scoring_pb2.SCORED_EVENT_STATUS_ACTIVE,
    CHANGE_OVERTURNED: scoring_pb2.SCORED_EVENT_STATUS_OVERTURNED,
    CHANGE_ADDED: scoring_pb2.SCORED_EVENT_STATUS_ADDED,
}


def _finite(value: float) -> float:
    """A float the JSON state can hold: the changelog codec turns NaN and infinities into null."""
    return value if math.isfinite(value) else 0.0


def detection_facts(detection: inference_pb2.Detection) -> DetectionFacts:
    return DetectionFacts(
        event_id=detection.event_id,
        event_type=int(detection.event_type),
        peak_value=_finite(float(detection.peak_value)),
        speed_mps=_finite(float(detection.speed_mps)),
        speed_limit_mps=_finite(float(detection.speed_limit_mps)),
        occurred_at=timestamp_to_seconds(detection.occurred_at),
        counts_against_driver=detection.variant != inference_pb2.VARIANT_SHADOW,
    )


def segment_facts(segment: inference_pb2.TripSegment) -> SegmentFacts:
    return SegmentFacts(
        event_id=segment.event_id,
        sequence=int(segment.sequence),
        trip_end=segment.trip_end,
        distance_m=max(0.0, _finite(float(segment.distance_m))),
        duration_s=max(0.0, _finite(float(segment.duration_s))),
        detection_event_ids=tuple(segment.detection_event_ids),
        started_at=timestamp_to_seconds(segment.span.started_at),
        ended_at=timestamp_to_seconds(segment.span.ended_at),
    )


def label_problem(label: labels_pb2.Label, window_key: str = "") -> str | None:
    """Why scoring cannot use a label (it goes to dead letters), or None. `window_key`: the labels topic's key."""
    if not label.event_id:
        return "label without event_id"
    if not label.lineage.trip_id:
        return "label without lineage.trip_id: scoring cannot tell which trip it corrects"
    if not (label.lineage.window_id or window_key):
        return "label without a window id (lineage.window_id or the message key)"
    if int(label.event_type) not in LABEL_EVENT_TYPES:
        return f"label event_type {int(label.event_type)} is not a known event type"
    return None


def routed_label(label: labels_pb2.Label, window_key: str) -> labels_pb2.Label:
    """The label as scoring re-keys it by trip: the window id always in its lineage."""
    if label.lineage.window_id:
        return label
    routed = labels_pb2.Label()
    routed.CopyFrom(label)
    routed.lineage.window_id = window_key
    return routed


def label_facts(label: labels_pb2.Label) -> LabelFacts:
    lineage = tuple((name, value) for name in LINEAGE_FIELDS if (value := getattr(label.lineage, name)))
    return LabelFacts(
        event_id=label.event_id,
        window_id=label.lineage.window_id,
        event_type=int(label.event_type),
        detection_event_id=label.detection_event_id,
        labelled_at=timestamp_to_seconds(label.occurred_at),
        agreement=_finite(float(label.agreement)),
        lineage=lineage,
        window_started_at=timestamp_to_seconds(label.window.started_at),
        window_ended_at=timestamp_to_seconds(label.window.ended_at),
        latitude=_finite(float(label.location.latitude)),
        longitude=_finite(float(label.location.longitude)),
    )


def scored_event(detection: inference_pb2.Detection, record: DetectionRecord) -> scoring_pb2.ScoredEvent:
    return scoring_pb2.ScoredEvent(
        event_id=record.scored_event_id,
        occurred_at=detection.occurred_at,
        lineage=detection.lineage,
        detection_event_id=record.detection_event_id,
        event_type=detection.event_type,
        severity=record.severity,
        weight=record.weight,
        points=record.points,
        status=scoring_pb2.SCORED_EVENT_STATUS_ACTIVE,
        reason="detected",
        window=detection.window,
        location=detection.location,
        speed_mps=detection.speed_mps,
        speed_limit_mps=detection.speed_limit_mps,
        confidence=detection.confidence,
    )


def changed_scored_event(state: TripState, change: EventChange) -> scoring_pb2.ScoredEvent:
    """The ScoredEvent of one change a label caused (overturned, added, or counting again)."""
    verdict = change.verdict
    event = change.event
    lineage = common_pb2.Lineage(**(verdict.lineage if verdict is not None else {}))
    lineage.trip_id = state.trip_id
    lineage.driver_id = state.driver_id or lineage.driver_id
    lineage.device_id = state.device_id or lineage.device_id
    message = scoring_pb2.ScoredEvent(
        event_id=change.event_id,
        occurred_at=timestamp_from_seconds(event.occurred_at),
        lineage=lineage,
        detection_event_id=event.detection_event_id,
        event_type=event.event_type,  # type: ignore[arg-type]
        severity=event.severity,
        weight=event.weight,
        points=event.points,
        status=CHANGE_STATUSES[change.status],
        reason=change.reason,
    )
    if verdict is not None:
        # For a record a label caused, confidence is the annotators' agreement.
        message.confidence = verdict.agreement
        if verdict.window_started_at or verdict.window_ended_at:
            message.window.started_at.CopyFrom(timestamp_from_seconds(verdict.window_started_at))
            message.window.ended_at.CopyFrom(timestamp_from_seconds(verdict.window_ended_at))
        if verdict.latitude or verdict.longitude:
            message.location.latitude = verdict.latitude
            message.location.longitude = verdict.longitude
    return message


def _event_counts(counts: dict[int, int]) -> list[scoring_pb2.EventCount]:
    return [scoring_pb2.EventCount(event_type=event_type, count=count) for event_type, count in sorted(counts.items())]  # type: ignore[arg-type]


def trip_score(state: TripState, summary: TripSummary) -> scoring_pb2.TripScore:
    return scoring_pb2.TripScore(
        event_id=summary.event_id,
        occurred_at=timestamp_from_seconds(summary.ended_at),
        lineage=common_pb2.Lineage(trip_id=state.trip_id, driver_id=state.driver_id, device_id=state.device_id),
        score=summary.score,
        distance_km=summary.distance_km,
        duration_s=summary.duration_s,
        points=summary.points,
        events_per_100km=summary.events_per_100km,
        events_per_hour=summary.events_per_hour,
        event_counts=_event_counts(summary.event_counts),
        revision=summary.revision,
        reason=summary.reason,
        span=common_pb2.TimeSpan(
            started_at=timestamp_from_seconds(summary.started_at), ended_at=timestamp_from_seconds(summary.ended_at)
        ),
        uploads=summary.uploads,
        missing_sequences=list(summary.missing_sequences),
    )


def trip_contribution(score: scoring_pb2.TripScore) -> TripContribution:
    ended_at = timestamp_to_seconds(score.span.ended_at) or timestamp_to_seconds(score.occurred_at)
    return TripContribution(
        trip_id=score.lineage.trip_id,
        revision=int(score.revision) or 1,
        ended_at=ended_at,
        distance_km=max(0.0, float(score.distance_km)),
        duration_s=max(0.0, float(score.duration_s)),
        points=max(0.0, float(score.points)),
        event_counts={int(count.event_type): int(count.count) for count in score.event_counts},
    )


def driver_score(summary: DriverSummary) -> scoring_pb2.DriverScore:
    return scoring_pb2.DriverScore(
        event_id=summary.event_id,
        occurred_at=timestamp_from_seconds(summary.latest_trip_end),
        lineage=common_pb2.Lineage(driver_id=summary.driver_id, trip_id=summary.last_trip_id),
        score=summary.score,
        trips=summary.trips,
        distance_km=summary.distance_km,
        driving_hours=summary.driving_hours,
        points=summary.points,
        events_per_100km=summary.events_per_100km,
        events_per_hour=summary.events_per_hour,
        event_counts=_event_counts(summary.event_counts),
        revision=summary.revision,
        last_trip_id=summary.last_trip_id,
    )
