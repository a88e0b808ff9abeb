"""Speeding against the map: GPS speed over the posted limit by more than 10 km/h for ≥ 5 s.

One detection per episode, emitted when the episode ends (speed back under the margin, a gap
in the fixes, or the trip's last upload), so its peak is the episode's true peak. The open
episode lives in the device state, so an episode spanning uploads is still one detection.

A speeding detection's lineage names the rule (`RULE_NAME`, `RULE_VERSION`) and, as its data
version, the road map the limits came from (`road_map_version`: a hash of the map's content), so
a detection made against an older map can be told from one made against a corrected map.
"""

from __future__ import annotations

import contextlib
import hashlib
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from michi.windows.signals import FloatArray

SPEEDING_MARGIN_MPS = 10.0 / 3.6
SPEEDING_MIN_SECONDS = 5.0
# Fixes further apart than this break an episode.
MAX_FIX_GAP_SECONDS = 2.5
# Each over-limit fix stands for this much time (fixes arrive at 1 Hz).
FIX_SECONDS = 1.0
RULE_NAME = "map:speed-limit"
RULE_VERSION = "speed-limit-1"


class SpeedLimits(Protocol):
    def speed_limit_at(self, latitude: float, longitude: float, heading_deg: float | None = None) -> float | None: ...


# Maps are immutable once built and hashing one takes milliseconds: once per map object.
_MAP_VERSIONS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def road_map_version(road_map: SpeedLimits | None) -> str:
    """The data version of speeding detections: "map-" + sha256 of the map's JSON (24 hex digits).

    "" when there is no map, or when the map cannot describe its content (`to_json`), so no
    version is claimed that would not change with the map.
    """
    if road_map is None:
        return ""
    try:
        return _MAP_VERSIONS[road_map]
    except (KeyError, TypeError):  # TypeError: a map that cannot be weakly referenced or hashed
        pass
    describe = getattr(road_map, "to_json", None)
    if describe is None:
        return ""
    version = "map-" + hashlib.sha256(str(describe()).encode()).hexdigest()[:24]
    with contextlib.suppress(TypeError):
        _MAP_VERSIONS[road_map] = version
    return version


@dataclass
class SpeedingEpisode:
    trip_id: str
    window_id: str
    start_s: float
    last_over_s: float
    peak_excess_mps: float
    speed_limit_mps: float
    speed_mps: float
    latitude: float
    longitude: float

    @property
    def sustained_s(self) -> float:
        return self.last_over_s - self.start_s + FIX_SECONDS

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpeedingEpisode:
        return cls(**data)


def speed_limits_of(
    road_map: SpeedLimits, latitude: FloatArray, longitude: FloatArray, heading: FloatArray
) -> FloatArray:
    """Posted limit per fix (NaN off the map)."""
    limits = [
        road_map.speed_limit_at(float(lat), float(lon), float(head))
        for lat, lon, head in zip(latitude, longitude, heading, strict=True)
    ]
    return np.array([np.nan if limit is None else limit for limit in limits], dtype=np.float64)


def track_speeding(
    *,
    trip_id: str,
    trip_end: bool,
    fix_times_s: FloatArray,
    speed_mps: FloatArray,
    limits_mps: FloatArray,
    latitude: FloatArray,
    longitude: FloatArray,
    fix_window_ids: list[str],
    open_episode: SpeedingEpisode | None,
) -> tuple[list[SpeedingEpisode], SpeedingEpisode | None]:
    """Episodes that ended in this upload (sustained ones only) and the one still open."""
    finished: list[SpeedingEpisode] = []
    episode = open_episode
    if episode is not None and episode.trip_id != trip_id:
        # The trip ended without its last upload: the episode cannot be counted in any segment.
        episode = None

    def close() -> None:
        nonlocal episode
        if episode is not None and episode.sustained_s >= SPEEDING_MIN_SECONDS:
            finished.append(episode)
        episode = None

    excess = speed_mps - limits_mps
    over = np.isfinite(excess) & (excess > SPEEDING_MARGIN_MPS)
    for position in range(fix_times_s.size):
        now = float(fix_times_s[position])
        if episode is not None and now - episode.last_over_s > MAX_FIX_GAP_SECONDS:
            close()
        if not over[position]:
            close()
            continue
        value = float(excess[position])
        if episode is None:
            episode = SpeedingEpisode(
                trip_id=trip_id,
                window_id=fix_window_ids[position],
                start_s=now,
                last_over_s=now,
                peak_excess_mps=value,
                speed_limit_mps=float(limits_mps[position]),
                speed_mps=float(speed_mps[position]),
                latitude=float(latitude[position]),
                longitude=float(longitude[position]),
            )
            continue
        episode.last_over_s = now
        if value > episode.peak_excess_mps:
            episode.peak_excess_mps = value
            episode.speed_limit_mps = float(limits_mps[position])
            episode.speed_mps = float(speed_mps[position])
            episode.latitude = float(latitude[position])
            episode.longitude = float(longitude[position])
    if trip_end:
        close()
    return finished, episode
