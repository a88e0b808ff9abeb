"""The trip state machine: segments and detections in any order, then exactly one closure.

A trip is complete when its trip-end segment arrived, every sequence 0..last is
present, and every detection id the segments list has arrived. Detections and
segments come from two topics that are not ordered relative to each other, so
every transition checks completion. A trip that never completes is closed by a
deadline (`is_overdue`) with its missing sequences reported.

Functions here mutate the `TripState` they are given and return what happened;
they do no I/O, so the adapters decide where state lives and the handlers decide
what to publish. States round-trip through `to_dict`/`from_dict` (JSON-safe).
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from michi.contracts import stable_event_id
from services.scoring.domain import formula

REASON_COMPLETE = "complete"
REASON_CLOSED_INCOMPLETE = "closed-incomplete"

STATUS_ACTIVE = "active"
# Ready for labels (issue #5): an overturned detection keeps its record with this status.
STATUS_OVERTURNED = "overturned"
# Arrived (counts for completion) but does not count against the driver: not a risky type, or a shadow model's.
STATUS_NOT_SCORED = "not-scored"


def scored_event_id(detection_event_id: str, revision: int) -> str:
    """Stable id of the ScoredEvent for one detection at one revision (a replay reproduces it)."""
    return stable_event_id("scored", detection_event_id, revision)


def trip_score_event_id(trip_id: str, revision: int) -> str:
    return stable_event_id("trip-score", trip_id, revision)


@dataclass(frozen=True)
class DetectionFacts:
    """What scoring needs from one Detection."""

    event_id: str
    event_type: int
    peak_value: float
    speed_mps: float
    speed_limit_mps: float
    occurred_at: float
    # False for a shadow model's detection: it is recorded, never counted.
    counts_against_driver: bool = True


@dataclass(frozen=True)
class SegmentFacts:
    """What scoring needs from one TripSegment."""

    event_id: str
    sequence: int
    trip_end: bool
    distance_m: float
    duration_s: float
    detection_event_ids: tuple[str, ...]
    started_at: float
    ended_at: float


@dataclass
class DetectionRecord:
    """One arrived detection and, when it counts, how it was scored (kept for re-scoring by labels)."""

    detection_event_id: str
    event_type: int
    status: str
    severity: int = 0
    weight: float = 0.0
    points: float = 0.0
    revision: int = 1
    occurred_at: float = 0.0
    scored_event_id: str = ""


@dataclass
class SegmentRecord:
    event_id: str
    sequence: int
    trip_end: bool
    distance_m: float
    duration_s: float
    detection_event_ids: list[str]
    started_at: float
    ended_at: float


@dataclass
class TripClosure:
    revision: int
    reason: str
    closed_at: float
    event_id: str
    missing_sequences: list[int]


@dataclass
class TripState:
    trip_id: str
    driver_id: str = ""
    device_id: str = ""
    # Source partition of the trip's messages: state is written to the same changelog partition.
    partition: int = 0
    segments: dict[int, SegmentRecord] = field(default_factory=dict)
    detections: dict[str, DetectionRecord] = field(default_factory=dict)
    trip_end_sequence: int | None = None
    # Processing (wall-clock) times, for the closing deadline.
    trip_end_seen_at: float | None = None
    last_activity_at: float = 0.0
    closure: TripClosure | None = None

    @property
    def closed(self) -> bool:
        return self.closure is not None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["segments"] = {str(sequence): record for sequence, record in data["segments"].items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TripState:
        closure = data.get("closure")
        return cls(
            trip_id=data["trip_id"],
            driver_id=data.get("driver_id", ""),
            device_id=data.get("device_id", ""),
            partition=int(data.get("partition", 0)),
            segments={int(sequence): SegmentRecord(**record) for sequence, record in data.get("segments", {}).items()},
            detections={key: DetectionRecord(**record) for key, record in data.get("detections", {}).items()},
            trip_end_sequence=data.get("trip_end_sequence"),
            trip_end_seen_at=data.get("trip_end_seen_at"),
            last_activity_at=float(data.get("last_activity_at", 0.0)),
            closure=TripClosure(**closure) if closure else None,
        )


class DetectionOutcome(enum.Enum):
    SCORED = "scored"
    NOT_SCORED = "not-scored"
    DUPLICATE = "duplicate"


class SegmentOutcome(enum.Enum):
    ADDED = "added"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Completion:
    complete: bool
    missing_sequences: tuple[int, ...]
    missing_detections: tuple[str, ...]


@dataclass(frozen=True)
class TripSummary:
    """The numbers a TripScore carries."""

    trip_id: str
    revision: int
    reason: str
    event_id: str
    score: float
    distance_km: float
    duration_s: float
    exposure_km: float
    points: float
    events: int
    events_per_100km: float
    events_per_hour: float
    event_counts: dict[int, int]
    started_at: float
    ended_at: float
    uploads: int
    missing_sequences: tuple[int, ...]


def apply_detection(
    state: TripState, facts: DetectionFacts, now: float
) -> tuple[DetectionOutcome, DetectionRecord | None]:
    """Record a detection once; a redelivered one (same event id) changes nothing."""
    if facts.event_id in state.detections:
        return DetectionOutcome.DUPLICATE, None
    state.last_activity_at = max(state.last_activity_at, now)
    if not (facts.counts_against_driver and formula.is_scored_type(facts.event_type)):
        record = DetectionRecord(facts.event_id, facts.event_type, STATUS_NOT_SCORED, occurred_at=facts.occurred_at)
        state.detections[facts.event_id] = record
        return DetectionOutcome.NOT_SCORED, record
    magnitude = formula.event_magnitude(facts.event_type, facts.peak_value, facts.speed_mps, facts.speed_limit_mps)
    severity = formula.severity_for(facts.event_type, magnitude)
    record = DetectionRecord(
        detection_event_id=facts.event_id,
        event_type=facts.event_type,
        status=STATUS_ACTIVE,
        severity=severity,
        weight=formula.weight_for(facts.event_type),
        points=formula.points_for(facts.event_type, severity),
        revision=1,
        occurred_at=facts.occurred_at,
        scored_event_id=scored_event_id(facts.event_id, 1),
    )
    state.detections[facts.event_id] = record
    return DetectionOutcome.SCORED, record


def apply_segment(state: TripState, facts: SegmentFacts, now: float) -> SegmentOutcome:
    """Record a segment once: by event id, and by sequence (one upload is one sequence)."""
    known = state.segments.get(facts.sequence)
    if known is not None:
        return SegmentOutcome.DUPLICATE
    state.segments[facts.sequence] = SegmentRecord(
        event_id=facts.event_id,
        sequence=facts.sequence,
        trip_end=facts.trip_end,
        distance_m=facts.distance_m,
        duration_s=facts.duration_s,
        detection_event_ids=list(facts.detection_event_ids),
        started_at=facts.started_at,
        ended_at=facts.ended_at,
    )
    state.last_activity_at = max(state.last_activity_at, now)
    if facts.trip_end and state.trip_end_sequence is None:
        state.trip_end_sequence = facts.sequence
        state.trip_end_seen_at = now
    return SegmentOutcome.ADDED


def completion(state: TripState) -> Completion:
    last = state.trip_end_sequence
    highest = last if last is not None else max(state.segments, default=-1)
    missing_sequences = tuple(sequence for sequence in range(highest + 1) if sequence not in state.segments)
    listed = [detection_id for record in state.segments.values() for detection_id in record.detection_event_ids]
    missing_detections = tuple(
        sorted({detection_id for detection_id in listed if detection_id not in state.detections})
    )
    complete = last is not None and not missing_sequences and not missing_detections
    return Completion(complete, missing_sequences, missing_detections)


def is_overdue(state: TripState, now: float, *, trip_end_grace_s: float, idle_timeout_s: float) -> bool:
    """Whether an open, incomplete trip should be closed now (a lost upload or a lost detection)."""
    if state.closed:
        return False
    if state.trip_end_seen_at is not None:
        return now - state.trip_end_seen_at >= trip_end_grace_s
    return now - state.last_activity_at >= idle_timeout_s


def close_trip(state: TripState, reason: str, now: float) -> TripSummary:
    """Close the trip at revision 1 and return what its TripScore carries."""
    missing = completion(state).missing_sequences if reason != REASON_COMPLETE else ()
    state.closure = TripClosure(
        revision=1,
        reason=reason,
        closed_at=now,
        event_id=trip_score_event_id(state.trip_id, 1),
        missing_sequences=list(missing),
    )
    return summarize_trip(state)


def summarize_trip(state: TripState) -> TripSummary:
    """The TripScore numbers of a closed trip, from its segments and its active scored events."""
    closure = state.closure
    if closure is None:
        raise ValueError(f"trip {state.trip_id} is not closed")
    distance_km = sum(record.distance_m for record in state.segments.values()) / 1000.0
    duration_s = sum(record.duration_s for record in state.segments.values())
    active = [record for record in state.detections.values() if record.status == STATUS_ACTIVE]
    points = sum(record.points for record in active)
    counts = Counter(record.event_type for record in active)
    exposure = formula.exposure_km(distance_km, duration_s)
    starts = [record.started_at for record in state.segments.values() if record.started_at > 0.0]
    ends = [record.ended_at for record in state.segments.values() if record.ended_at > 0.0]
    times = [record.occurred_at for record in state.detections.values() if record.occurred_at > 0.0]
    return TripSummary(
        trip_id=state.trip_id,
        revision=closure.revision,
        reason=closure.reason,
        event_id=closure.event_id,
        score=formula.score_from_points(points, exposure),
        distance_km=distance_km,
        duration_s=duration_s,
        exposure_km=exposure,
        points=points,
        events=len(active),
        events_per_100km=formula.rate_per_100km(len(active), distance_km),
        events_per_hour=formula.rate_per_hour(len(active), duration_s),
        event_counts=dict(sorted(counts.items())),
        started_at=min(starts or times or [0.0]),
        ended_at=max(ends or times or [0.0]),
        uploads=len(state.segments),
        missing_sequences=tuple(closure.missing_sequences),
    )
