"""A driver's rolling score: exposure-weighted over the trips of the last 30 days.

The window is anchored at the driver's newest trip end (event time, not the
clock), so replaying the same trip scores rebuilds the same driver score. Each
trip is remembered with the revision that was counted: a redelivered trip score
changes nothing, a higher revision (a re-scored trip, issue #5) replaces the old
contribution.

A driver's state is bounded: it keeps the newest trips of the window, at most
`RollingWindow.max_trips` of them and no more than fit `MAX_STATE_BYTES` of JSON
(`limits.py`); an older trip leaves the window exactly like one past the trip count.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from michi.contracts import stable_event_id
from services.scoring.domain import formula
from services.scoring.domain.limits import MAX_STATE_BYTES, json_size

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

    @functools.cached_property
    def encoded_bytes(self) -> int:
        """Bytes of this trip in the driver state's JSON: its id as key, a colon, the contribution, a comma."""
        return json_size(self.trip_id) + json_size(_contribution_dict(self)) + 2


@dataclass
class DriverState:
    driver_id: str
    trips: dict[str, TripContribution] = field(default_factory=dict)
    # Bumped on every counted trip score: the DriverScore revision (and its stable event id).
    revision: int = 0
    last_trip_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "driver_id": self.driver_id,
            "trips": {trip_id: _contribution_dict(trip) for trip_id, trip in self.trips.items()},
            "revision": self.revision,
            "last_trip_id": self.last_trip_id,
        }

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


def _contribution_dict(trip: TripContribution) -> dict[str, Any]:
    data = asdict(trip)
    data["event_counts"] = {str(event_type): count for event_type, count in trip.event_counts.items()}
    return data


def _prune(state: DriverState, window: RollingWindow, max_bytes: int = MAX_STATE_BYTES) -> None:
    """Keep the newest trips of the window: at most `max_trips`, and what fits `max_bytes` of JSON."""
    if not state.trips:
        return
    newest = max(trip.ended_at for trip in state.trips.values())
    kept = [trip for trip in state.trips.values() if trip.ended_at >= newest - window.days * DAY_S]
    kept.sort(key=lambda trip: (trip.ended_at, trip.trip_id), reverse=True)
    # The state without trips, its revision at its widest and the longest trip id as its last trip.
    used = json_size(
        {
            "driver_id": state.driver_id,
            "trips": {},
            "revision": -(2**63),
            "last_trip_id": max((trip.trip_id for trip in kept), key=json_size),
        }
    )
    chosen: dict[str, TripContribution] = {}
    for trip in kept[: window.max_trips]:
        used += trip.encoded_bytes
        if used > max_bytes:
            break
        chosen[trip.trip_id] = trip
    state.trips = chosen


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
