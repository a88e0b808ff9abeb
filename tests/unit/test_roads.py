"""Unit tests of the road map: speed zones, look-ups, determinism and the JSON round trip.

Run: python -m pytest tests/unit/test_roadmap.py -q
"""

from __future__ import annotations

import math

import pytest

from michi.roads import (
    DEFAULT_SEED,
    ROAD_CLASS_RANK,
    IntersectionControl,
    RoadClass,
    RoadMap,
    SpeedZone,
)


@pytest.fixture(scope="module")
def road_map() -> RoadMap:
    return RoadMap.default()


def _offset(road_map: RoadMap, latitude: float, longitude: float, east_m: float, north_m: float) -> tuple[float, float]:
    east, north = road_map.projection.to_local(latitude, longitude)
    return road_map.projection.to_geographic(east + east_m, north + north_m)


def _bearing(road_map: RoadMap, start: tuple[float, float], end: tuple[float, float]) -> float:
    start_east, start_north = road_map.projection.to_local(*start)
    end_east, end_north = road_map.projection.to_local(*end)
    return math.degrees(math.atan2(end_east - start_east, end_north - start_north)) % 360.0


def test_every_posted_limit_of_the_design_is_on_the_default_map(road_map: RoadMap) -> None:
    limits_kmh = {round(segment.limit_mps * 3.6) for segment in road_map.segments}
    assert limits_kmh == {30, 50, 60, 80, 100}
    assert {segment.road_class for segment in road_map.segments} == set(RoadClass)


def test_speed_limit_at_returns_the_zone_limit_on_the_road_and_none_off_road(road_map: RoadMap) -> None:
    for segment in road_map.segments[::7]:
        start, end = segment.points[0], segment.points[-1]
        middle = ((start[0] + end[0]) / 2.0, (start[1] + end[1]) / 2.0)
        heading = _bearing(road_map, start, end)
        assert road_map.speed_limit_at(*middle) == segment.limit_mps
        assert road_map.speed_limit_at(*middle, heading_deg=heading) == segment.limit_mps
        # A GPS fix 12 m to the side of the road still matches it.
        side = math.radians(heading + 90.0)
        beside = _offset(road_map, *middle, 12.0 * math.sin(side), 12.0 * math.cos(side))
        assert road_map.speed_limit_at(*beside) == segment.limit_mps
        # Between parallel roads (at least 240 m apart), 60 m away is off-road.
        away = _offset(road_map, *middle, 60.0 * math.sin(side), 60.0 * math.cos(side))
        assert road_map.speed_limit_at(*away) is None
    south, west, _, _ = road_map.bounds
    assert road_map.speed_limit_at(south - 0.01, west - 0.01) is None
    assert road_map.speed_limit_at(0.0, 0.0) is None


def test_heading_picks_the_road_being_driven_at_an_intersection(road_map: RoadMap) -> None:
    checked = 0
    for node in road_map.intersections:
        neighbors = road_map.neighbors(node.node_id)
        limits = {segment.limit_mps for _, segment in neighbors}
        if len(limits) < 2:
            continue
        for other, segment in neighbors:
            heading = _bearing(road_map, road_map.node_local_geographic(other), (node.latitude, node.longitude))
            assert road_map.speed_limit_at(node.latitude, node.longitude, heading_deg=heading) == segment.limit_mps
            checked += 1
    assert checked > 20


def test_zone_at_describes_the_segment(road_map: RoadMap) -> None:
    segment = next(segment for segment in road_map.segments if segment.road_class == RoadClass.ARTERIAL)
    latitude, longitude = segment.points[1]
    zone = road_map.zone_at(latitude, longitude)
    assert zone == SpeedZone(segment_id=segment.segment_id, road_class=RoadClass.ARTERIAL, limit_mps=60.0 / 3.6)
    assert zone is not None and round(zone.limit_kmh) == 60


def test_minor_roads_stop_and_major_roads_have_priority(road_map: RoadMap) -> None:
    stop_nodes = [node for node in road_map.intersections if node.control == IntersectionControl.STOP]
    assert stop_nodes
    for node in stop_nodes:
        neighbors = road_map.neighbors(node.node_id)
        top = max(ROAD_CLASS_RANK[segment.road_class] for _, segment in neighbors)
        for _, segment in neighbors:
            is_minor = ROAD_CLASS_RANK[segment.road_class] < top
            assert road_map.has_stop_line(segment.segment_id, node.node_id) == is_minor
    for node in road_map.intersections:
        if node.control == IntersectionControl.INTERCHANGE:
            for _, segment in road_map.neighbors(node.node_id):
                assert not road_map.has_stop_line(segment.segment_id, node.node_id)


def test_generation_is_deterministic_and_default_is_cached() -> None:
    assert RoadMap.default() is RoadMap.default()
    assert RoadMap.generate(DEFAULT_SEED).to_json() == RoadMap.default().to_json()
    assert RoadMap.generate(5).to_json() == RoadMap.generate(5).to_json()
    assert RoadMap.generate(5).to_json() != RoadMap.generate(6).to_json()


def test_json_round_trip_keeps_geometry_and_answers(road_map: RoadMap) -> None:
    text = road_map.to_json()
    restored = RoadMap.from_json(text)
    assert restored.to_json() == text
    for segment in road_map.segments[::11]:
        latitude, longitude = segment.points[0]
        probe = _offset(road_map, latitude, longitude, 7.0, -5.0)
        assert restored.zone_at(*probe) == road_map.zone_at(*probe)
    with pytest.raises(ValueError, match="format"):
        RoadMap.from_json('{"format": "something-else"}')
