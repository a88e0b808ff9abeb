"""Conversions between the wire (protobuf) and the domain dataclasses."""

from __future__ import annotations

import math
from collections.abc import Iterable

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from michi.contracts import timestamp_from_seconds, timestamp_to_seconds
from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2, scoring_pb2
from services.scoring.domain.driver import DriverSummary, TripContribution
from services.scoring.domain.limits import MAX_ID_LENGTH
from services.scoring.domain.trip import (
    CHANGE_ACTIVE,
    CHANGE_ADDED,
    CHANGE_OVERTURNED,
    DetectionFacts,
    DetectionRecord,
    EventChange,
    LabelFacts,
    SegmentFacts,
    TripInput,
    TripState,
    TripSummary,
)

# Event types a label may carry (UNSPECIFIED, or a number this version does not know, is refused).
LABEL_EVENT_TYPES = frozenset(
    value for value in common_pb2.EventType.values() if value != common_pb2.EVENT_TYPE_UNSPECIFIED
)
EVENT_TYPES = frozenset(common_pb2.EventType.values())
LINEAGE_FIELDS = tuple(descriptor.name for descriptor in common_pb2.Lineage.DESCRIPTOR.fields)
# What a google.protobuf.Timestamp holds (years 1 to 9999): the times scoring keeps go back into Timestamps.
EARLIEST_TIME_S = -62_135_596_800.0
LATEST_TIME_S = 253_402_300_799.0
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


def trip_input_facts(message: Message) -> TripInput:
    """What scoring needs from a detection, a segment or a label (the three inputs of a trip)."""
    if isinstance(message, inference_pb2.Detection):
        return detection_facts(message)
    if isinstance(message, inference_pb2.TripSegment):
        return segment_facts(message)
    if isinstance(message, labels_pb2.Label):
        return label_facts(message)
    raise TypeError(f"scoring cannot apply {type(message).__name__} to a trip")


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


def _too_long(named: Iterable[tuple[str, str]]) -> str | None:
    """The first id longer than scoring keeps ids (`MAX_ID_LENGTH`), said for the dead letter."""
    for name, value in named:
        if len(value) > MAX_ID_LENGTH:
            return f"{name} has {len(value)} characters; scoring keeps ids of at most {MAX_ID_LENGTH}"
    return None


def _bad_time(named: Iterable[tuple[str, Timestamp]]) -> str | None:
    """The first time a Timestamp cannot hold once scoring converts it back (it would fail every retry)."""
    for name, stamp in named:
        if not EARLIEST_TIME_S <= timestamp_to_seconds(stamp) < LATEST_TIME_S:
            return f"{name} ({stamp.seconds} s, {stamp.nanos} ns) is outside the years 1 to 9999"
    return None


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
    # A verdict keeps the label's ids, its whole lineage and its times.
    return _too_long(
        [
            ("event_id", label.event_id),
            ("window id", label.lineage.window_id or window_key),
            ("detection_event_id", label.detection_event_id),
            *((f"lineage.{name}", getattr(label.lineage, name)) for name in LINEAGE_FIELDS),
        ]
    ) or _bad_time(
        [
            ("occurred_at", label.occurred_at),
            ("window.started_at", label.window.started_at),
            ("window.ended_at", label.window.ended_at),
        ]
    )


def trip_input_problem(message: Message, trip_id: str) -> str | None:
    """Why scoring cannot apply a detection, segment or label to trip `trip_id` (dead letters), or None."""
    if not trip_id:
        return "message without lineage.trip_id or key"
    if isinstance(message, labels_pb2.Label):
        return label_problem(message)
    lineage: common_pb2.Lineage = message.lineage  # type: ignore[attr-defined]
    kind = type(message).__name__.lower()
    if not message.event_id:  # type: ignore[attr-defined]
        return f"{kind} without event_id"
    if not lineage.device_id:
        return f"{kind} without lineage.device_id: scoring cannot tell whose trip it is"
    if isinstance(message, inference_pb2.Detection) and int(message.event_type) not in LABEL_EVENT_TYPES:
        return f"detection event_type {int(message.event_type)} is not a known event type"
    named = [
        ("trip id", trip_id),
        ("event_id", message.event_id),  # type: ignore[attr-defined]
        ("lineage.driver_id", lineage.driver_id),
        ("lineage.device_id", lineage.device_id),
    ]
    if isinstance(message, inference_pb2.TripSegment):
        named.extend(("detection_event_ids", detection_id) for detection_id in message.detection_event_ids)
        times = [("span.started_at", message.span.started_at), ("span.ended_at", message.span.ended_at)]
    else:
        times = [("occurred_at", message.occurred_at)]  # type: ignore[attr-defined]
    return _too_long(named) or _bad_time(times)


def trip_score_problem(score: scoring_pb2.TripScore, driver_id: str) -> str | None:
    """Why the driver roll-up cannot count a trip score (dead letters), or None."""
    if not score.lineage.trip_id:
        return "trip score without lineage.trip_id"
    if not driver_id:
        return "trip score without a driver (lineage.driver_id or the message key)"
    problem = _too_long([("lineage.trip_id", score.lineage.trip_id), ("driver id", driver_id)]) or _bad_time(
        [("occurred_at", score.occurred_at), ("span.ended_at", score.span.ended_at)]
    )
    if problem is not None:
        return problem
    unknown = sorted({int(count.event_type) for count in score.event_counts} - EVENT_TYPES)
    if unknown:
        return f"event_counts has event types {unknown[:5]} this version does not know"
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
        location=detection.location if detection.HasField("location") else None,
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
        missing_sequence_count=summary.missing_count,
    )


def trip_contribution(score: scoring_pb2.TripScore) -> TripContribution:
    ended_at = timestamp_to_seconds(score.span.ended_at) or timestamp_to_seconds(score.occurred_at)
    return TripContribution(
        trip_id=score.lineage.trip_id,
        revision=int(score.revision) or 1,
        ended_at=ended_at,
        distance_km=max(0.0, _finite(float(score.distance_km))),
        duration_s=max(0.0, _finite(float(score.duration_s))),
        points=max(0.0, _finite(float(score.points))),
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
