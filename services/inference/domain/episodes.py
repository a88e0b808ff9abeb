"""Merge risky windows into one detection per event, across overlapping windows and uploads.

Windows overlap (2 s long, hop 1 s), so one 1.5 s brake is seen by two or three windows. Windows
of the same risky type whose spans are no more than `MERGE_GAP_SECONDS` (one window's length) apart
belong to one episode, which yields one detection whose id comes from the episode's first window: a
brake whose deceleration dips for a second or two between two pulses is one manoeuvre, as hindsight
judges it too (`services.inference.handlers`). The open episode is kept in the device state, so a brake
cut by an upload boundary stays one detection (emitted with the upload where it began).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from michi.windows.features import WINDOW_SECONDS

# Two risky windows of one type this close (seconds between one's end and the next's start): one manoeuvre.
MERGE_GAP_SECONDS = WINDOW_SECONDS


@dataclass
class OpenEpisode:
    """The last risky episode of a device, as far as it is known."""

    trip_id: str
    event_type: int
    end_s: float
    detection_event_id: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpenEpisode:
        return cls(**data)


@dataclass
class Episode:
    """One merged run of risky windows found while processing an upload."""

    event_type: int
    detection_event_id: str
    # Index of the windows (in this upload) that belong to it.
    window_positions: list[int] = field(default_factory=list)
    # False when the episode began in an earlier upload (its detection was emitted there).
    new: bool = True
    end_s: float = 0.0


def merge_windows(
    *,
    trip_id: str,
    starts_s: list[float],
    ends_s: list[float],
    risky_types: Sequence[int | None],
    first_window_ids: list[str],
    detection_id: Any,
    open_episode: OpenEpisode | None,
) -> tuple[list[Episode], OpenEpisode | None]:
    """Group this upload's risky windows (absolute times, in order) into episodes.

    `risky_types[i]` is the risky event type of window i or None; `detection_id(window_id,
    event_type)` makes the id of a new episode's detection.
    """
    episodes: list[Episode] = []
    current: Episode | None = None
    carried = open_episode if open_episode is not None and open_episode.trip_id == trip_id else None
    for position, event_type in enumerate(risky_types):
        if event_type is None:
            continue
        start, end = starts_s[position], ends_s[position]
        if current is not None and current.event_type == event_type and start <= current.end_s + MERGE_GAP_SECONDS:
            current.window_positions.append(position)
            current.end_s = max(current.end_s, end)
            continue
        if (
            current is None
            and carried is not None
            and carried.event_type == event_type
            and start <= carried.end_s + MERGE_GAP_SECONDS
        ):
            current = Episode(event_type, carried.detection_event_id, [position], new=False, end_s=end)
            episodes.append(current)
            continue
        current = Episode(
            event_type, detection_id(first_window_ids[position], event_type), [position], new=True, end_s=end
        )
        episodes.append(current)
    if current is not None:
        return episodes, OpenEpisode(trip_id, current.event_type, current.end_s, current.detection_event_id)
    return episodes, carried
