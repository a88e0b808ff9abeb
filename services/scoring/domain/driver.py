"""A driver's rolling score: exposure-weighted over the trips of the last 30 days.

The window is anchored at the driver's newest trip end (event time, not the
clock), so replaying the same trip scores rebuilds the same driver score. Each
trip is remembered with the revision that was counted: a redelivered trip score
changes nothing, a higher revision (a re-scored trip, issue #5) replaces the old
contribution.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from michi.contracts import stable_event_id
from services.scoring.domain import formula

DAY_S = 86_400.0


def driver_score_event_id(driver_id: str, revision: int) -> str:
    return stable_event_id("driver-score", driver_id, revision)


@dataclass(frozen=True)
class RollingWindow:
    days: float = 30.0
    # Bounds the state of very active drivers; 30 days rarely holds more trips.
    max_trips: int = 200


@dataclass
class TripContribution:
    trip_id: str
    revision: int
    ended_at: float
    distance_km: float
    duration_s: float
    points: float
    event_counts: dict[int, int]

    @property
    def exposure_km(self) -> float:
        return formula.exposure_km(self.distance_km, self.duration_s)


@dataclass
class DriverState:
    driver_id: str
    trips: dict[str, TripContribution] = field(default_factory=dict)
    # Bumped on every counted trip score: the DriverScore revision (and its stable event id).
    revision: int = 0
    last_trip_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for trip in data["trips"].values():
            trip["event_counts"] = {str(event_type): count for event_type, count in trip["event_counts"].items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriverState:
        trips = {}
        for trip_id, trip in data.get("trips", {}).items():
            counts = {int(event_type): int(count) for event_type, count in trip.get("event_counts", {}).items()}
            trips[trip_id] = TripContribution(**{**trip, "event_counts": counts})
        return cls(
            driver_id=data["driver_id"],
            trips=trips,
            revision=int(data.get("revision", 0)),
            last_trip_id=data.get("last_trip_id", ""),
        )


@dataclass(frozen=True)
class DriverSummary:
    driver_id: str
    revision: int
    event_id: str
    score: float
    trips: int
    distance_km: float
    driving_hours: float
    exposure_km: float
    points: float
    events: int
    events_per_100km: float
    events_per_hour: float
    event_counts: dict[int, int]
    last_trip_id: str
    latest_trip_end: float


def apply_trip(state: DriverState, contribution: TripContribution, window: RollingWindow) -> bool:
    """Count one trip score; False when it changes nothing (already counted, or outside the window)."""
    known = state.trips.get(contribution.trip_id)
    if known is not None and known.revision >= contribution.revision:
        return False
    newest = max([trip.ended_at for trip in state.trips.values()] + [contribution.ended_at])
    if contribution.ended_at < newest - window.days * DAY_S:
        return False
    previous = dict(state.trips)
    state.trips[contribution.trip_id] = contribution
    _prune(state, window)
    if contribution.trip_id not in state.trips:
        # Older than every trip the cap keeps: counting it would change nothing.
        state.trips = previous
        return False
    state.revision += 1
    state.last_trip_id = contribution.trip_id
    return True


def _prune(state: DriverState, window: RollingWindow) -> None:
    if not state.trips:
        return
    newest = max(trip.ended_at for trip in state.trips.values())
    kept = [trip for trip in state.trips.values() if trip.ended_at >= newest - window.days * DAY_S]
    kept.sort(key=lambda trip: (trip.ended_at, trip.trip_id), reverse=True)
    state.trips = {trip.trip_id: trip for trip in kept[: window.max_trips]}


def summarize_driver(state: DriverState) -> DriverSummary:
    trips = list(state.trips.values())
    distance_km = sum(trip.distance_km for trip in trips)
    duration_s = sum(trip.duration_s for trip in trips)
    # Exposure-weighted: every trip contributes its (floored) exposure, so many short trips
    # weigh as much driving as they are and no more.
    exposure = sum(trip.exposure_km for trip in trips)
    points = sum(trip.points for trip in trips)
    counts: Counter[int] = Counter()
    for trip in trips:
        counts.update(trip.event_counts)
    events = sum(counts.values())
    return DriverSummary(
        driver_id=state.driver_id,
        revision=state.revision,
        event_id=driver_score_event_id(state.driver_id, state.revision),
        score=formula.score_from_points(points, exposure) if trips else 100.0,
        trips=len(trips),
        distance_km=distance_km,
        driving_hours=duration_s / 3600.0,
        exposure_km=exposure,
        points=points,
        events=events,
        events_per_100km=formula.rate_per_100km(events, distance_km),
        events_per_hour=formula.rate_per_hour(events, duration_s),
        event_counts=dict(sorted(counts.items())),
        last_trip_id=state.last_trip_id,
        latest_trip_end=max((trip.ended_at for trip in trips), default=0.0),
    )
