"""The trip state machine: segments, detections and labels in any order, one closure, then corrections.

A trip is complete when its trip-end segment arrived, every sequence 0..last is
present, and every detection id the segments list has arrived. Detections and
segments come from two topics that are not ordered relative to each other, so
every transition checks completion. A trip that never completes is closed by a
deadline (`is_overdue`) with its missing sequences reported.

What one trip holds is bounded (`limits.py`): a segment is folded into the trip's
totals as it arrives (the received sequences as ranges, `sequences.py`; the detection
ids it lists and that have not arrived, `awaited_detections`), so the state grows with
the detections, verdicts and gaps of a trip, never with its uploads or with the size
of a sequence number; `completion()` is O(ranges).

Labels (human verdicts on one window) decide which events count: the newest
label of each window is its verdict. What counts against the driver is always
recomputed from the detections and the verdicts (`counted_events`), so a
redelivered label, a second label with the same verdict, or a reversal changes
the counted set by exactly what the verdicts say, never twice. A closed trip
stays correctable: when a label, a late detection or a late segment changes
what it counts, it is re-scored with the next revision (`rescore_trip`).

A closed trip keeps only what corrections need: segment totals, its detection
records and its verdicts.

Functions here mutate the `TripState` they are given and return what happened;
they do no I/O, so the adapters decide where state lives and the handlers decide
what to publish. States round-trip through `to_dict`/`from_dict` (JSON-safe);
`from_dict` also reads the states earlier versions wrote (every segment kept, missing
and absent sequences as lists of numbers).
"""

from __future__ import annotations

import enum
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from michi.contracts import stable_event_id
from services.scoring.domain import formula, sequences
from services.scoring.domain.limits import MAX_LABEL_IDS_PER_WINDOW, MAX_MISSING_SEQUENCES_LISTED

REASON_COMPLETE = "complete"
REASON_CLOSED_INCOMPLETE = "closed-incomplete"
# An input would have taken the trip's state over one of its bounds (`limits.py`): closed with what it holds.
REASON_CLOSED_AT_LIMIT = "closed-at-limit"
# Reasons of re-scored trips (revision 2 and later); label reasons carry the label's event id.
REASON_LATE_DETECTION = "late-detection"
REASON_LATE_SEGMENT = "late-segment"
REASON_LABEL_OVERTURNED = "label-overturned"
REASON_LABEL_ADDED = "label-added"
REASON_LABEL_CORRECTED = "label-corrected"
# A later label reversed an overturning: the detection counts again.
REASON_LABEL_CONFIRMED = "label-confirmed"

STATUS_ACTIVE = "active"
# Arrived (counts for completion) but does not count against the driver: not a risky type, or a shadow model's.
STATUS_NOT_SCORED = "not-scored"

# What a change of the counted events is published as (`ScoredEvent.status`).
CHANGE_ACTIVE = "active"  # a detection counts again (a later label reversed its overturning)
CHANGE_OVERTURNED = "overturned"  # no longer counts
CHANGE_ADDED = "added"  # an event only a label reported (missed, or the corrected type of a detection)


def scored_event_id(detection_event_id: str, revision: int) -> str:
    """Stable id of the ScoredEvent for one detection at one revision (a replay reproduces it)."""
    return stable_event_id("scored", detection_event_id, revision)


def trip_score_event_id(trip_id: str, revision: int) -> str:
    return stable_event_id("trip-score", trip_id, revision)


def added_event_key(window_id: str, detection_event_id: str, event_type: int) -> str:
    """Identity of an event a label reports: per corrected detection, or per window for a missed event."""
    if detection_event_id:
        return stable_event_id("scored", "corrected", detection_event_id, event_type)
    return stable_event_id("scored", "added", window_id, event_type)


def change_event_id(event_key: str, status: str, label_event_id: str) -> str:
    """Stable id of the ScoredEvent that records one change of one event, caused by one label."""
    return stable_event_id("scored", event_key, status, label_event_id)


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


@dataclass(frozen=True)
class LabelFacts:
    """What scoring needs from one Label (a human verdict on one window)."""

    event_id: str
    window_id: str
    event_type: int
    # The detection the label confirms or overturns; empty for an event the detector missed.
    detection_event_id: str
    labelled_at: float
    agreement: float = 0.0
    # Kept to publish the ScoredEvents the verdict causes, possibly long after the label arrived.
    lineage: tuple[tuple[str, str], ...] = ()
    window_started_at: float = 0.0
    window_ended_at: float = 0.0
    latitude: float = 0.0
    longitude: float = 0.0


# What a trip is made of: every message a trip agent hands over is one of these.
TripInput = DetectionFacts | SegmentFacts | LabelFacts


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
    # What the detector measured: a label correcting the type re-reads it against the new type's bands.
    peak_value: float = 0.0
    speed_mps: float = 0.0
    speed_limit_mps: float = 0.0


@dataclass
class SegmentTotals:
    """A trip's segments as they arrive: totals, and which sequences arrived (to recognise redeliveries and gaps)."""

    uploads: int = 0
    distance_m: float = 0.0
    duration_s: float = 0.0
    started_at: float = 0.0  # 0: unknown
    ended_at: float = 0.0
    # The received sequences as sorted, disjoint inclusive ranges [first, last] (`sequences.py`).
    received: sequences.Ranges = field(default_factory=list)

    @property
    def highest_sequence(self) -> int:
        return sequences.highest(self.received)

    def knows(self, sequence: int) -> bool:
        return sequences.contains(self.received, sequence)

    def add(self, facts: SegmentFacts) -> None:
        sequences.add(self.received, facts.sequence)
        self.uploads += 1
        # Kept finite: the changelog's JSON has no infinity (it would come back as null).
        self.distance_m = min(self.distance_m + facts.distance_m, sys.float_info.max)
        self.duration_s = min(self.duration_s + facts.duration_s, sys.float_info.max)
        if facts.started_at > 0.0:
            self.started_at = min(self.started_at, facts.started_at) if self.started_at > 0.0 else facts.started_at
        self.ended_at = max(self.ended_at, facts.ended_at)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentTotals:
        if "received" in data:
            received = [[int(first), int(last)] for first, last in data["received"]]
        else:  # written by an earlier version: the highest sequence and the ones below it that never arrived
            received = sequences.without(data.get("absent_sequences", []), int(data.get("highest_sequence", -1)))
        return cls(
            uploads=int(data.get("uploads", 0)),
            distance_m=float(data.get("distance_m", 0.0)),
            duration_s=float(data.get("duration_s", 0.0)),
            started_at=float(data.get("started_at", 0.0)),
            ended_at=float(data.get("ended_at", 0.0)),
            received=received,
        )


def _fold_segments(segments: dict[str, dict[str, Any]], detections: dict[str, Any]) -> tuple[SegmentTotals, list[str]]:
    """Totals and awaited detection ids of the segments an earlier version kept one by one."""
    totals = SegmentTotals()
    awaited: dict[str, None] = {}
    for _, record in sorted(segments.items(), key=lambda item: int(item[0])):
        totals.add(
            SegmentFacts(
                event_id=record.get("event_id", ""),
                sequence=int(record["sequence"]),
                trip_end=bool(record.get("trip_end", False)),
                distance_m=float(record.get("distance_m", 0.0)),
                duration_s=float(record.get("duration_s", 0.0)),
                detection_event_ids=(),
                started_at=float(record.get("started_at", 0.0)),
                ended_at=float(record.get("ended_at", 0.0)),
            )
        )
        for detection_id in record.get("detection_event_ids", []):
            if detection_id not in detections:
                awaited[detection_id] = None
    return totals, list(awaited)


@dataclass
class LabelVerdict:
    """The label that currently decides one window (the newest one), and every label id seen for the window."""

    window_id: str
    label_event_id: str
    event_type: int
    detection_event_id: str
    labelled_at: float
    # Arrival order within the trip (ties of `labelled_at` between windows of one detection).
    sequence: int
    # Processing time: a label waiting for a trip that never comes is dropped after the retention.
    received_at: float
    agreement: float = 0.0
    lineage: dict[str, str] = field(default_factory=dict)
    window_started_at: float = 0.0
    window_ended_at: float = 0.0
    latitude: float = 0.0
    longitude: float = 0.0
    seen_label_ids: list[str] = field(default_factory=list)


@dataclass
class TripClosure:
    revision: int
    reason: str
    closed_at: float
    event_id: str
    # The sequences up to this one that had not arrived when the trip closed are its missing sequences
    # (until they arrive): the trip-end sequence, or the highest received without one.
    missing_through: int = -1

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TripClosure:
        if "missing_through" in data:
            through = int(data["missing_through"])
        else:  # written by an earlier version as the list itself: the same set, as long as the segments agree
            through = max((int(sequence) for sequence in data.get("missing_sequences", [])), default=-1)
        return cls(
            revision=int(data["revision"]),
            reason=data["reason"],
            closed_at=float(data["closed_at"]),
            event_id=data["event_id"],
            missing_through=through,
        )


@dataclass
class TripState:
    trip_id: str
    driver_id: str = ""
    device_id: str = ""
    # Source partition of the trip's messages: state is written to the same changelog partition.
    partition: int = 0
    detections: dict[str, DetectionRecord] = field(default_factory=dict)
    trip_end_sequence: int | None = None
    # Processing (wall-clock) times, for the closing deadline.
    trip_end_seen_at: float | None = None
    last_activity_at: float = 0.0
    closure: TripClosure | None = None
    # The segments received so far (None before the first one): totals and received sequences.
    totals: SegmentTotals | None = None
    # Detection ids the segments listed that have not arrived yet (completion waits for them); emptied at closing.
    awaited_detections: list[str] = field(default_factory=list)
    verdicts: dict[str, LabelVerdict] = field(default_factory=dict)
    labels_applied: int = 0

    @property
    def closed(self) -> bool:
        return self.closure is not None

    def to_dict(self) -> dict[str, Any]:
        """What `dataclasses.asdict` gives, built directly (it runs for every state written, and it is 5x faster)."""
        totals = self.totals
        closure = self.closure
        return {
            "trip_id": self.trip_id,
            "driver_id": self.driver_id,
            "device_id": self.device_id,
            "partition": self.partition,
            "detections": {key: dict(vars(record)) for key, record in self.detections.items()},
            "trip_end_sequence": self.trip_end_sequence,
            "trip_end_seen_at": self.trip_end_seen_at,
            "last_activity_at": self.last_activity_at,
            "closure": dict(vars(closure)) if closure is not None else None,
            "totals": {**vars(totals), "received": [list(pair) for pair in totals.received]} if totals else None,
            "awaited_detections": list(self.awaited_detections),
            "verdicts": {
                key: {**vars(verdict), "lineage": dict(verdict.lineage), "seen_label_ids": list(verdict.seen_label_ids)}
                for key, verdict in self.verdicts.items()
            },
            "labels_applied": self.labels_applied,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TripState:
        closure = data.get("closure")
        detections = {key: DetectionRecord(**record) for key, record in data.get("detections", {}).items()}
        totals = SegmentTotals.from_dict(data["totals"]) if data.get("totals") else None
        awaited = list(data.get("awaited_detections", []))
        if data.get("segments"):  # written by an earlier version, which kept every segment until the trip closed
            totals, awaited = _fold_segments(data["segments"], detections)
        trip_end_sequence = data.get("trip_end_sequence")
        return cls(
            trip_id=data["trip_id"],
            driver_id=data.get("driver_id", ""),
            device_id=data.get("device_id", ""),
            partition=int(data.get("partition", 0)),
            detections=detections,
            trip_end_sequence=int(trip_end_sequence) if trip_end_sequence is not None else None,
            trip_end_seen_at=data.get("trip_end_seen_at"),
            last_activity_at=float(data.get("last_activity_at", 0.0)),
            closure=TripClosure.from_dict(closure) if closure else None,
            totals=totals,
            awaited_detections=awaited if not closure else [],
            verdicts={key: LabelVerdict(**verdict) for key, verdict in data.get("verdicts", {}).items()},
            labels_applied=int(data.get("labels_applied", 0)),
        )


class DetectionOutcome(enum.Enum):
    SCORED = "scored"
    NOT_SCORED = "not-scored"
    DUPLICATE = "duplicate"


class SegmentOutcome(enum.Enum):
    ADDED = "added"
    DUPLICATE = "duplicate"


class LabelOutcome(enum.Enum):
    APPLIED = "applied"
    # Older than the window's current verdict (by the label's own time): remembered, changes nothing.
    STALE = "stale"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Completion:
    complete: bool
    # Sequences 0..last that have not arrived, as inclusive ranges.
    missing_ranges: tuple[sequences.Gap, ...]
    missing_detections: tuple[str, ...]

    @property
    def missing_sequences(self) -> tuple[int, ...]:
        """The lowest missing sequences, at most `MAX_MISSING_SEQUENCES_LISTED` of them."""
        return tuple(sequences.first_numbers(self.missing_ranges, MAX_MISSING_SEQUENCES_LISTED))

    @property
    def missing_count(self) -> int:
        return sequences.count(self.missing_ranges)


@dataclass(frozen=True)
class CountedEvent:
    """One event as it counts against the driver now."""

    # Stable identity: the detection's ScoredEvent id, or `added_event_key` for an event a label reported.
    key: str
    added: bool
    detection_event_id: str
    window_id: str
    event_type: int
    severity: int
    weight: float
    points: float
    occurred_at: float


@dataclass(frozen=True)
class EventChange:
    """A change of the counted events, published as one ScoredEvent."""

    event: CountedEvent
    status: str
    event_id: str
    # What the causing label did to the trip: REASON_LABEL_OVERTURNED, _ADDED or _CORRECTED.
    kind: str
    reason: str
    verdict: LabelVerdict | None


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
    # The lowest missing sequences (at most `MAX_MISSING_SEQUENCES_LISTED`), and how many are missing.
    missing_sequences: tuple[int, ...]
    missing_count: int = 0


def has_trip_data(state: TripState) -> bool:
    """False for a state that only holds labels waiting for their trip."""
    return bool(state.detections or state.totals is not None)


def is_duplicate(state: TripState, facts: TripInput) -> bool:
    """Whether the input was applied before: a detection by id, a segment by sequence, a label by id."""
    if isinstance(facts, DetectionFacts):
        return facts.event_id in state.detections
    if isinstance(facts, SegmentFacts):
        return segment_totals(state).knows(facts.sequence)
    verdict = state.verdicts.get(facts.window_id)
    return verdict is not None and facts.event_id in verdict.seen_label_ids


def apply_detection(
    state: TripState, facts: DetectionFacts, now: float
) -> tuple[DetectionOutcome, DetectionRecord | None]:
    """Record a detection once; a redelivered one (same event id) changes nothing."""
    if facts.event_id in state.detections:
        return DetectionOutcome.DUPLICATE, None
    state.last_activity_at = max(state.last_activity_at, now)
    if facts.event_id in state.awaited_detections:
        state.awaited_detections.remove(facts.event_id)
    if not (facts.counts_against_driver and formula.is_scored_type(facts.event_type)):
        record = DetectionRecord(
            facts.event_id,
            facts.event_type,
            STATUS_NOT_SCORED,
            occurred_at=facts.occurred_at,
            peak_value=facts.peak_value,
            speed_mps=facts.speed_mps,
            speed_limit_mps=facts.speed_limit_mps,
        )
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
        peak_value=facts.peak_value,
        speed_mps=facts.speed_mps,
        speed_limit_mps=facts.speed_limit_mps,
    )
    state.detections[facts.event_id] = record
    return DetectionOutcome.SCORED, record


def apply_segment(state: TripState, facts: SegmentFacts, now: float) -> SegmentOutcome:
    """Record a segment once, by sequence (one upload is one sequence), into the trip's totals.

    While the trip is open, the detection ids it lists that have not arrived are awaited; after
    closing, a late segment only changes the totals (and fills a gap of the missing sequences).
    """
    totals = state.totals if state.totals is not None else SegmentTotals()
    if totals.knows(facts.sequence):
        return SegmentOutcome.DUPLICATE
    totals.add(facts)
    state.totals = totals
    state.last_activity_at = max(state.last_activity_at, now)
    if state.closed:
        return SegmentOutcome.ADDED
    awaited = set(state.awaited_detections)
    for detection_id in facts.detection_event_ids:
        if detection_id not in state.detections and detection_id not in awaited:
            state.awaited_detections.append(detection_id)
            awaited.add(detection_id)
    if facts.trip_end and state.trip_end_sequence is None:
        state.trip_end_sequence = facts.sequence
        state.trip_end_seen_at = now
    return SegmentOutcome.ADDED


def apply_label(state: TripState, facts: LabelFacts, now: float) -> LabelOutcome:
    """Make a label its window's verdict, once; an older label (by its own time) does not replace a newer one."""
    current = state.verdicts.get(facts.window_id)
    if current is not None and facts.event_id in current.seen_label_ids:
        return LabelOutcome.DUPLICATE
    if current is not None and facts.labelled_at < current.labelled_at:
        current.seen_label_ids = _remember(current.seen_label_ids, facts.event_id)
        return LabelOutcome.STALE
    state.labels_applied += 1
    state.verdicts[facts.window_id] = LabelVerdict(
        window_id=facts.window_id,
        label_event_id=facts.event_id,
        event_type=facts.event_type,
        detection_event_id=facts.detection_event_id,
        labelled_at=facts.labelled_at,
        sequence=state.labels_applied,
        received_at=now,
        agreement=facts.agreement,
        lineage=dict(facts.lineage),
        window_started_at=facts.window_started_at,
        window_ended_at=facts.window_ended_at,
        latitude=facts.latitude,
        longitude=facts.longitude,
        seen_label_ids=_remember(current.seen_label_ids if current else [], facts.event_id),
    )
    return LabelOutcome.APPLIED


def _remember(seen: list[str], label_event_id: str) -> list[str]:
    return [*seen, label_event_id][-MAX_LABEL_IDS_PER_WINDOW:]


def label_is_pending(state: TripState, verdict: LabelVerdict) -> bool:
    """Whether a verdict waits for its trip or for the detection it judges."""
    if not has_trip_data(state):
        return True
    return bool(verdict.detection_event_id) and verdict.detection_event_id not in state.detections


def _verdicts_by_detection(state: TripState) -> dict[str, LabelVerdict]:
    """The deciding verdict of each judged detection: the newest label of the windows that name it."""
    deciding: dict[str, LabelVerdict] = {}
    for verdict in sorted(state.verdicts.values(), key=lambda verdict: (verdict.labelled_at, verdict.sequence)):
        if verdict.detection_event_id:
            deciding[verdict.detection_event_id] = verdict
    return deciding


def detected_event(record: DetectionRecord, window_id: str = "") -> CountedEvent:
    return CountedEvent(
        key=record.scored_event_id,
        added=False,
        detection_event_id=record.detection_event_id,
        window_id=window_id,
        event_type=record.event_type,
        severity=record.severity,
        weight=record.weight,
        points=record.points,
        occurred_at=record.occurred_at,
    )


def _added_event(verdict: LabelVerdict, record: DetectionRecord | None) -> CountedEvent:
    if record is None:
        severity = 1  # nothing was measured: an event only a person saw counts as mild
        occurred_at = verdict.window_started_at or verdict.labelled_at
    else:
        severity = formula.relabelled_severity(
            record.event_type, verdict.event_type, record.peak_value, record.speed_mps, record.speed_limit_mps
        )
        occurred_at = record.occurred_at
    detection_event_id = record.detection_event_id if record is not None else ""
    return CountedEvent(
        key=added_event_key(verdict.window_id, detection_event_id, verdict.event_type),
        added=True,
        detection_event_id=detection_event_id,
        window_id=verdict.window_id,
        event_type=verdict.event_type,
        severity=severity,
        weight=formula.weight_for(verdict.event_type),
        points=formula.points_for(verdict.event_type, severity),
        occurred_at=occurred_at,
    )


def counted_events(state: TripState, *, without_verdict_on: str = "") -> dict[str, CountedEvent]:
    """What counts against the driver now, from the detections and the verdicts.

    A detection the detector scored counts unless a verdict overturns it (a non-risky label)
    or corrects its type (the corrected event counts instead). A risky verdict on a detection
    that does not count (a confounder, a shadow model's) or on no detection at all (a missed
    event) adds an event. A verdict on a detection that has not arrived waits. `without_verdict_on`
    ignores the verdict on one detection (what the detection alone would count).
    """
    if not has_trip_data(state):
        return {}
    deciding = _verdicts_by_detection(state)
    events: dict[str, CountedEvent] = {}
    for record in state.detections.values():
        verdict = deciding.get(record.detection_event_id)
        if record.detection_event_id == without_verdict_on:
            verdict = None
        scored = record.status == STATUS_ACTIVE
        if verdict is None or (scored and verdict.event_type == record.event_type):
            if scored:
                events[record.scored_event_id] = detected_event(record, verdict.window_id if verdict else "")
            continue
        if formula.is_scored_type(verdict.event_type):
            event = _added_event(verdict, record)
            events[event.key] = event
    for verdict in state.verdicts.values():
        if not verdict.detection_event_id and formula.is_scored_type(verdict.event_type):
            event = _added_event(verdict, None)
            events[event.key] = event
    return events


def _deciding_verdict(state: TripState, event: CountedEvent) -> LabelVerdict | None:
    if event.added and not event.detection_event_id:
        return state.verdicts.get(event.window_id)
    return _verdicts_by_detection(state).get(event.detection_event_id)


def label_reason(kind: str, label_event_id: str) -> str:
    return f"{kind}:{label_event_id}"


def event_changes(
    state: TripState, before: dict[str, CountedEvent], after: dict[str, CountedEvent]
) -> list[EventChange]:
    """The ScoredEvents that take a reader from `before` to `after`, each with the label that caused it.

    Per label, the reason says what it did: overturned (events stop counting), added (events
    start counting), confirmed (detections it had overturned count again), corrected (both
    directions: a type changed, or a reversal between types).
    """
    staged: list[tuple[CountedEvent, str, LabelVerdict | None]] = []
    for key in sorted(before.keys() - after.keys()):
        event = before[key]
        staged.append((event, CHANGE_OVERTURNED, _deciding_verdict(state, event)))
    for key in sorted(after.keys() - before.keys()):
        event = after[key]
        staged.append((event, CHANGE_ADDED if event.added else CHANGE_ACTIVE, _deciding_verdict(state, event)))
    statuses: dict[str, set[str]] = {}
    for _, status, verdict in staged:
        label = verdict.label_event_id if verdict is not None else ""
        statuses.setdefault(label, set()).add(status)
    changes = []
    for event, status, verdict in staged:
        label = verdict.label_event_id if verdict is not None else ""
        kind = _correction_kind(statuses[label])
        changes.append(
            EventChange(
                event=event,
                status=status,
                event_id=change_event_id(event.key, status, label),
                kind=kind,
                reason=label_reason(kind, label),
                verdict=verdict,
            )
        )
    return changes


def _correction_kind(statuses: set[str]) -> str:
    if statuses == {CHANGE_OVERTURNED}:
        return REASON_LABEL_OVERTURNED
    if statuses == {CHANGE_ACTIVE}:
        return REASON_LABEL_CONFIRMED
    if CHANGE_OVERTURNED in statuses:
        return REASON_LABEL_CORRECTED
    return REASON_LABEL_ADDED


def _missing_through(state: TripState) -> int:
    """The last sequence a trip should have: its trip-end sequence, or the highest received without one."""
    if state.trip_end_sequence is not None:
        return state.trip_end_sequence
    return segment_totals(state).highest_sequence


def completion(state: TripState) -> Completion:
    """Whether the trip is complete, and what it misses: O(received ranges + awaited detections)."""
    missing_ranges = tuple(sequences.gaps(segment_totals(state).received, _missing_through(state)))
    missing_detections = tuple(sorted(set(state.awaited_detections)))
    complete = state.trip_end_sequence is not None and not missing_ranges and not missing_detections
    return Completion(complete, missing_ranges, missing_detections)


def missing_ranges(state: TripState) -> list[sequences.Gap]:
    """A closed trip's missing sequences as ranges: those not arrived up to the closure's last sequence."""
    through = state.closure.missing_through if state.closure is not None else -1
    return sequences.gaps(segment_totals(state).received, through)


def is_overdue(state: TripState, now: float, *, trip_end_grace_s: float, idle_timeout_s: float) -> bool:
    """Whether an open, incomplete trip should be closed now (a lost upload or a lost detection)."""
    if state.closed or not has_trip_data(state):
        return False
    if state.trip_end_seen_at is not None:
        return now - state.trip_end_seen_at >= trip_end_grace_s
    return now - state.last_activity_at >= idle_timeout_s


def is_expired(state: TripState, now: float, *, retention_s: float) -> bool:
    """Whether a closed trip (or labels that never met their trip) is past the correction period."""
    if state.closure is not None:
        return now - state.closure.closed_at >= retention_s
    if not has_trip_data(state) and state.verdicts:
        return now - max(verdict.received_at for verdict in state.verdicts.values()) >= retention_s
    return False


def segment_totals(state: TripState) -> SegmentTotals:
    """The totals of the trip's segments (empty before the first one)."""
    return state.totals if state.totals is not None else SegmentTotals()


def close_trip(state: TripState, reason: str, now: float) -> TripSummary:
    """Close the trip at revision 1 and return what its TripScore carries.

    The closed trip keeps what corrections need: its totals (created empty for a trip without
    segments), detections and verdicts; it no longer waits for detections its segments listed.
    """
    state.closure = TripClosure(
        revision=1,
        reason=reason,
        closed_at=now,
        event_id=trip_score_event_id(state.trip_id, 1),
        missing_through=_missing_through(state),
    )
    state.totals = segment_totals(state)
    state.awaited_detections = []
    return summarize_trip(state)


def trip_fingerprint(state: TripState) -> tuple[object, ...]:
    """What a TripScore's numbers depend on: equal fingerprints, equal scores (no new revision)."""
    totals = segment_totals(state)
    events = sorted((key, event.event_type, event.points) for key, event in counted_events(state).items())
    missing = tuple(missing_ranges(state))
    return (
        tuple(events),
        totals.uploads,
        totals.distance_m,
        totals.duration_s,
        totals.started_at,
        totals.ended_at,
        missing,
    )


def rescore_trip(state: TripState, reason: str) -> TripSummary:
    """Publishable summary of a closed trip whose counted events or totals changed: the next revision."""
    closure = state.closure
    if closure is None:
        raise ValueError(f"trip {state.trip_id} is not closed")
    closure.revision += 1
    closure.reason = reason
    closure.event_id = trip_score_event_id(state.trip_id, closure.revision)
    return summarize_trip(state)


def summarize_trip(state: TripState) -> TripSummary:
    """The TripScore numbers of a closed trip, from its segment totals and what counts now."""
    closure = state.closure
    if closure is None:
        raise ValueError(f"trip {state.trip_id} is not closed")
    totals = segment_totals(state)
    distance_km = totals.distance_m / 1000.0
    duration_s = totals.duration_s
    active = list(counted_events(state).values())
    points = sum(event.points for event in active)
    counts = Counter(event.event_type for event in active)
    exposure = formula.exposure_km(distance_km, duration_s)
    times = [record.occurred_at for record in state.detections.values() if record.occurred_at > 0.0]
    missing = missing_ranges(state)
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
        started_at=totals.started_at or min(times or [0.0]),
        ended_at=totals.ended_at or max(times or [0.0]),
        uploads=totals.uploads,
        missing_sequences=tuple(sequences.first_numbers(missing, MAX_MISSING_SEQUENCES_LISTED)),
        missing_count=sequences.count(missing),
    )
