"""The road map with speed zones, shared by the fleet simulator and the inference service.

from michi.roads import RoadMap
road_map = RoadMap.default()
road_map.speed_limit_at(35.68, 139.76, heading_deg=90.0)  # m/s, or None off-road
"""

from michi.roads.network import (
    DEFAULT_SEED,
    MATCH_RADIUS_M,
    ROAD_CLASS_RANK,
    TURN_RADIUS_M,
    Intersection,
    IntersectionControl,
    RoadClass,
    RoadMap,
    RoadSegment,
    SpeedZone,
    StopLine,
)
from michi.roads.projection import LocalProjection

__all__ = [
    "DEFAULT_SEED",
    "MATCH_RADIUS_M",
    "ROAD_CLASS_RANK",
    "TURN_RADIUS_M",
    "Intersection",
    "IntersectionControl",
    "LocalProjection",
    "RoadClass",
    "RoadMap",
    "RoadSegment",
    "SpeedZone",
    "StopLine",
]
