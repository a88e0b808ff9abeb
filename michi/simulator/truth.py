"""Ground truth of a simulation: every injected event and every trip, as written to JSON lines.

Each line has `"record": "event"` or `"record": "trip"`. Times are absolute epoch seconds.
Detection quality is scored against this file: recall of events with `risky: true`, and false
detections per simulated minute (detections that match no risky event).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from michi.contracts import timestamp_to_seconds
from michi.contracts.v1 import common_pb2

EVENT_TYPE_BY_KIND: dict[str, int] = {
    "harsh_braking": common_pb2.EVENT_TYPE_HARSH_BRAKING,
    "harsh_acceleration": common_pb2.EVENT_TYPE_HARSH_ACCELERATION,
    "harsh_cornering": common_pb2.EVENT_TYPE_HARSH_CORNERING,
    "speeding": common_pb2.EVENT_TYPE_SPEEDING,
    "pothole": common_pb2.EVENT_TYPE_CONFOUNDER,
    "speed_bump": common_pb2.EVENT_TYPE_CONFOUNDER,
    "mount_moved": common_pb2.EVENT_TYPE_CONFOUNDER,
}


@dataclass(frozen=True)
class GroundTruthEvent:
    event_id: str
    kind: str
    risky: bool
    # Name of the `michi.v1.EventType` value this kind maps to.
    event_type: str
    device_id: str
    driver_id: str
    trip_id: str
    vehicle_type: str
    upload_ids: tuple[str, ...]
    started_at: float
    ended_at: float
    latitude: float
    longitude: float
    # m/s² for the harsh kinds and confounders (vehicle frame), km/h over the limit for speeding.
    peak_magnitude: float
    magnitude_unit: str
    speed_mps: float
    detail: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["upload_ids"] = list(self.upload_ids)
        return {"record": "event", **record}


@dataclass(frozen=True)
class TripTruth:
    trip_id: str
    device_id: str
    driver_id: str
    vehicle_type: str
    firmware_version: str
    sample_rate_hz: float
    started_at: float
    ended_at: float
    duration_s: float
    distance_km: float
    upload_count: int
    scenario: str | None
    risky_event_count: int
    confounder_count: int

    def to_dict(self) -> dict[str, Any]:
        return {"record": "trip", **asdict(self)}


def write_ground_truth_lines(path: str | Path, trips: list[TripTruth], events: list[GroundTruthEvent]) -> None:
    lines = [json.dumps(trip.to_dict(), sort_keys=True) for trip in trips]
    lines += [json.dumps(event.to_dict(), sort_keys=True) for event in events]
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def read_ground_truth_lines(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(trips, events) as dictionaries, for scoring scripts and tests."""
    trips: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        (trips if record.get("record") == "trip" else events).append(record)
    return trips, events


# Slack on both sides of a window when matching it to an event: 1 Hz GPS and 1 s window edges.
MATCH_TOLERANCE_S = 1.5


@dataclass(frozen=True)
class DetectionJudgement:
    """Detections judged against ground truth: which events were found, and how many detections matched none."""

    found_event_ids: frozenset[str]
    false_detections: int

    def recall(self, events: list[GroundTruthEvent]) -> float:
        return sum(1 for event in events if event.event_id in self.found_event_ids) / max(len(events), 1)


def judge_detections(
    detections: list[Any], events: list[GroundTruthEvent], tolerance_s: float = MATCH_TOLERANCE_S
) -> DetectionJudgement:
    """Match `michi.v1.Detection`s to risky ground-truth events.

    A detection matches an event of the same type on the same device whose span overlaps the
    detection's window widened by `tolerance_s`; a detection matching no risky event is false.
    """
    risky = [event for event in events if event.risky]
    found: set[str] = set()
    false_detections = 0
    for detection in detections:
        start = timestamp_to_seconds(detection.window.started_at)
        end = timestamp_to_seconds(detection.window.ended_at)
        matches = [
            event.event_id
            for event in risky
            if event.device_id == detection.lineage.device_id
            and common_pb2.EventType.Value(event.event_type) == detection.event_type
            and event.started_at - tolerance_s <= end
            and start <= event.ended_at + tolerance_s
        ]
        if matches:
            found.update(matches)
        else:
            false_detections += 1
    return DetectionJudgement(frozenset(found), false_detections)
