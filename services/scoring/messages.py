"""Conversions between the wire (protobuf) and the domain dataclasses."""

from __future__ import annotations

from michi.contracts import timestamp_from_seconds, timestamp_to_seconds
from michi.contracts.v1 import common_pb2, inference_pb2, scoring_pb2
from services.scoring.domain.driver import DriverSummary, TripContribution
from services.scoring.domain.trip import DetectionFacts, DetectionRecord, SegmentFacts, TripState, TripSummary


def detection_facts(detection: inference_pb2.Detection) -> DetectionFacts:
    return DetectionFacts(
        event_id=detection.event_id,
        event_type=int(detection.event_type),
        peak_value=float(detection.peak_value),
        speed_mps=float(detection.speed_mps),
        speed_limit_mps=float(detection.speed_limit_mps),
        occurred_at=timestamp_to_seconds(detection.occurred_at),
        counts_against_driver=detection.variant != inference_pb2.VARIANT_SHADOW,
    )


def segment_facts(segment: inference_pb2.TripSegment) -> SegmentFacts:
    return SegmentFacts(
        event_id=segment.event_id,
        sequence=int(segment.sequence),
        trip_end=segment.trip_end,
        distance_m=max(0.0, float(segment.distance_m)),
        duration_s=max(0.0, float(segment.duration_s)),
        detection_event_ids=tuple(segment.detection_event_ids),
        started_at=timestamp_to_seconds(segment.span.started_at),
        ended_at=timestamp_to_seconds(segment.span.ended_at),
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
