"""Episodes of a condition: one alert when it has held long enough, one when it ends (pure, no I/O).

    tracker = EpisodeTracker(hold_s=30.0)
    transition = tracker.observe(("memory", "ingest"), active=ratio >= 0.85, now=now)
    if transition is not None:          # FIRING once per episode, then RESOLVED once
        alert.attributes.update(episode_attributes(transition))

A condition is observed now and then under a tuple key. Once it has been observed active continuously for
`hold_s` seconds (every observation since the first active one active), an episode opens: the transition is
`FIRING` and the episode starts when the condition became active. An open episode ends at the first observation
of the condition inactive: the transition is `RESOLVED`. Any other observation changes nothing and returns None.
A key that is not observed keeps its state: a gap in the observations (a service that could not be scraped) is
not evidence either way.

An episode's id is derived from its key and its start (`stable_event_id`), never drawn at random: whoever
observes the same condition from the same moment (the same data read again, a caller that passes event time
rather than wall time as `now`) gets the same episode, hence the same alert ids. The tracker keeps its state in
memory; a caller that keeps the open episodes (the monitor's resource watch keeps them in SQL) `restore`s them after
a restart, so an episode open before it continues (no second firing) and resolves once.

The alert convention of every monitor alert with episodes: `attributes["status"]` is "firing" or "resolved",
`attributes["episode"]` the episode id, and the resolve alert has the firing alert's kind, severity INFO and
the event id `resolved_event_id(kind, episode)` (`firing_event_id` for the firing one).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from michi.contracts import stable_event_id

FIRING = "firing"
RESOLVED = "resolved"

EpisodeKey = tuple[Hashable, ...]


@dataclass(frozen=True)
class Transition:
    """An episode opened (`FIRING`) or ended (`RESOLVED`) at `at`; it started at `started_at`."""

    key: EpisodeKey
    status: str
    episode_id: str
    started_at: float
    at: float

    @property
    def firing(self) -> bool:
        return self.status == FIRING

    @property
    def duration_s(self) -> float:
        """How long the condition had been active when this transition happened."""
        return self.at - self.started_at


@dataclass
class _Condition:
    """A condition observed active: since when (the current run of active observations), and its open episode."""

    active_since: float
    episode_id: str | None = None


def episode_id_of(key: EpisodeKey, started_at: float) -> str:
    """The id of the episode of `key` that started at `started_at` (whole milliseconds, so it prints the same)."""
    return stable_event_id("episode", *key, round(started_at * 1000))


def firing_event_id(kind: str, episode_id: str) -> str:
    return stable_event_id(kind, episode_id, FIRING)


def resolved_event_id(kind: str, episode_id: str) -> str:
    return stable_event_id(kind, episode_id, RESOLVED)


def event_id_of(kind: str, transition: Transition) -> str:
    """The event id of the alert `transition` raises (`firing_event_id` or `resolved_event_id`)."""
    return stable_event_id(kind, transition.episode_id, transition.status)


def episode_attributes(transition: Transition) -> dict[str, str]:
    """The attributes every episode alert carries: status, episode id and when the episode started."""
    return {
        "status": transition.status,
        "episode": transition.episode_id,
        "episode_started_at": f"{transition.started_at:.3f}",
    }


class EpisodeTracker:
    """Conditions by key, each inactive, pending (active for less than `hold_s`) or in an open episode.

    Only active conditions are kept: memory grows with the conditions active at once, not with the keys seen.
    """

    def __init__(self, hold_s: float) -> None:
        if hold_s < 0:
            raise ValueError(f"hold_s must be >= 0, not {hold_s}")
        self.hold_s = hold_s
        self._conditions: dict[EpisodeKey, _Condition] = {}

    def observe(self, key: EpisodeKey, active: bool, now: float) -> Transition | None:
        """Record one observation of the condition `key`; the transition it causes, if any."""
        condition = self._conditions.get(key)
        if not active:
            if condition is None:
                return None
            del self._conditions[key]
            if condition.episode_id is None:
                return None
            return Transition(key, RESOLVED, condition.episode_id, condition.active_since, now)
        if condition is None:
            condition = self._conditions[key] = _Condition(active_since=now)
        if condition.episode_id is not None or now - condition.active_since < self.hold_s:
            return None
        condition.episode_id = episode_id_of(key, condition.active_since)
        return Transition(key, FIRING, condition.episode_id, condition.active_since, now)

    def restore(self, key: EpisodeKey, started_at: float, episode_id: str) -> None:
        """An episode open before a restart (kept by the caller): it stays open until observed inactive."""
        self._conditions[key] = _Condition(active_since=started_at, episode_id=episode_id)

    def open_episode(self, key: EpisodeKey) -> str | None:
        """The id of the episode of `key` open now, or None."""
        condition = self._conditions.get(key)
        return condition.episode_id if condition is not None else None

    def open_keys(self) -> list[EpisodeKey]:
        """The keys with an open episode."""
        return [key for key, condition in self._conditions.items() if condition.episode_id is not None]

    def pending_since(self, key: EpisodeKey) -> float | None:
        """When the condition of `key` became active (pending or in an episode), None while inactive."""
        condition = self._conditions.get(key)
        return condition.active_since if condition is not None else None
