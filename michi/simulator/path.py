"""A driven path on the road map: straight lines along segments joined by circular turn arcs.

A route is a walk over intersections; the path replaces each corner with an arc of the turn
radius of the minor road, so heading is continuous and curvature is 0 on straights and 1/r in
turns. Constraints are what the driver must respect along it: stop lines and turn speeds.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from michi.roads import ROAD_CLASS_RANK, TURN_RADIUS_M, IntersectionControl, RoadMap, RoadSegment
from michi.roads.network import STOP_LINE_SETBACK_M
from michi.simulator.vehicles import DriverStyle

# Chance a signal is red when the vehicle arrives.
RED_SIGNAL_PROBABILITY = 0.4
STRAIGHT_PREFERENCE = 0.6


@dataclass(frozen=True)
class PathElement:
    start_s: float
    length_m: float
    east: float
    north: float
    # Direction of travel at the element start, radians counter-clockwise from east.
    theta: float
    # 1/radius, positive for a left turn; 0 on straights.
    curvature: float
    limit_mps: float
    segment_id: int


@dataclass
class Constraint:
    """A point on the path the driver must reach at or below `speed_mps` (0: stop and wait)."""

    position_s: float
    speed_mps: float
    kind: str  # "stop" or "turn"
    dwell_s: float = 0.0
    end_s: float = 0.0
    radius_m: float = 0.0
    # A turn that follows a stop at the same intersection (nobody corners hard from standstill).
    after_stop: bool = False


class Path:
    def __init__(self, elements: list[PathElement]) -> None:
        self.elements = elements
        self.start_s = np.array([element.start_s for element in elements])
        self.length_m = np.array([element.length_m for element in elements])
        self.east = np.array([element.east for element in elements])
        self.north = np.array([element.north for element in elements])
        self.theta = np.array([element.theta for element in elements])
        self.curvature = np.array([element.curvature for element in elements])
        self.limit_mps = np.array([element.limit_mps for element in elements])
        self._starts = [element.start_s for element in elements]
        self.total_length_m = elements[-1].start_s + elements[-1].length_m

    def element_index(self, position_s: float) -> int:
        return max(0, min(len(self._starts) - 1, bisect_right(self._starts, position_s) - 1))

    def element_indices(self, positions_s: NDArray[np.float64]) -> NDArray[np.intp]:
        indices = np.searchsorted(self.start_s, positions_s, side="right") - 1
        return np.clip(indices, 0, len(self.elements) - 1)

    def sample(
        self, positions_s: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """(east, north, theta, curvature) at each arc length."""
        indices = self.element_indices(positions_s)
        along = positions_s - self.start_s[indices]
        curvature = self.curvature[indices]
        theta0 = self.theta[indices]
        theta = theta0 + curvature * along
        turning = curvature != 0.0
        safe = np.where(turning, curvature, 1.0)
        east = self.east[indices] + np.where(turning, (np.sin(theta) - np.sin(theta0)) / safe, along * np.cos(theta0))
        north = self.north[indices] + np.where(
            turning, -(np.cos(theta) - np.cos(theta0)) / safe, along * np.sin(theta0)
        )
        return east, north, theta, curvature


def plan_route(
    road_map: RoadMap,
    random: np.random.Generator,
    minimum_length_m: float,
    style: DriverStyle,
    *,
    dwell_scale: float = 1.0,
) -> tuple[Path, list[Constraint], float]:
    """A random drive of at least `minimum_length_m`, its constraints, and where the vehicle starts (s)."""
    node_ids = [node.node_id for node in road_map.intersections]
    current = int(node_ids[int(random.integers(len(node_ids)))])
    options = road_map.neighbors(current)
    next_node, segment = options[int(random.integers(len(options)))]
    walk: list[tuple[int, int, RoadSegment]] = [(current, next_node, segment)]
    length = segment.length_m
    while length < minimum_length_m:
        previous, current, segment = walk[-1]
        choices = [(node, road) for node, road in road_map.neighbors(current) if node != previous]
        straight = [choice for choice in choices if abs(_turn_angle(road_map, previous, current, choice[0])) < 0.2]
        turns = [choice for choice in choices if choice not in straight]
        if straight and (not turns or random.uniform() < STRAIGHT_PREFERENCE):
            chosen = straight[0]
        else:
            chosen = turns[int(random.integers(len(turns)))]
        walk.append((current, chosen[0], chosen[1]))
        length += chosen[1].length_m

    # Tangent length and radius of the arc at the end of each walk step.
    corners: list[tuple[float, float, float]] = []  # (turn angle, radius, tangent)
    for index in range(len(walk) - 1):
        from_node, at_node, segment = walk[index]
        to_node, next_segment = walk[index + 1][1], walk[index + 1][2]
        angle = _turn_angle(road_map, from_node, at_node, to_node)
        if abs(angle) < math.radians(1.0):
            corners.append((0.0, 0.0, 0.0))
            continue
        minor = min(segment.road_class, next_segment.road_class, key=lambda road_class: ROAD_CLASS_RANK[road_class])
        radius = TURN_RADIUS_M[minor]
        corners.append((angle, radius, radius * math.tan(abs(angle) / 2.0)))
    corners.append((0.0, 0.0, 0.0))

    elements: list[PathElement] = []
    constraints: list[Constraint] = []
    position = 0.0
    entry_tangent = 0.0
    for index, (from_node, to_node, segment) in enumerate(walk):
        start_east, start_north = road_map.node_local(from_node)
        end_east, end_north = road_map.node_local(to_node)
        theta = math.atan2(end_north - start_north, end_east - start_east)
        angle, radius, exit_tangent = corners[index]
        line_length = segment.length_m - entry_tangent - exit_tangent
        elements.append(
            PathElement(
                start_s=position,
                length_m=line_length,
                east=start_east + entry_tangent * math.cos(theta),
                north=start_north + entry_tangent * math.sin(theta),
                theta=theta,
                curvature=0.0,
                limit_mps=segment.limit_mps,
                segment_id=segment.segment_id,
            )
        )
        position += line_length
        if index == len(walk) - 1:
            break
        node = road_map.intersection(to_node)
        must_stop = road_map.has_stop_line(segment.segment_id, to_node) and (
            node.control != IntersectionControl.SIGNAL or random.uniform() < RED_SIGNAL_PROBABILITY
        )
        if must_stop:
            dwell = (
                random.uniform(8.0, 35.0) if node.control == IntersectionControl.SIGNAL else random.uniform(1.0, 3.0)
            )
            setback = 2.0 if radius else STOP_LINE_SETBACK_M
            constraints.append(Constraint(position - setback, 0.0, "stop", dwell_s=float(dwell) * dwell_scale))
        if radius:
            next_segment = walk[index + 1][2]
            arc_length = radius * abs(angle)
            elements.append(
                PathElement(
                    start_s=position,
                    length_m=arc_length,
                    east=end_east - exit_tangent * math.cos(theta),
                    north=end_north - exit_tangent * math.sin(theta),
                    theta=theta,
                    curvature=math.copysign(1.0 / radius, angle),
                    limit_mps=min(segment.limit_mps, next_segment.limit_mps),
                    segment_id=next_segment.segment_id,
                )
            )
            constraints.append(
                Constraint(
                    position,
                    math.sqrt(style.turn_lateral * radius),
                    "turn",
                    end_s=position + arc_length,
                    radius_m=radius,
                    after_stop=must_stop,
                )
            )
            position += arc_length
        entry_tangent = exit_tangent

    start_s = min(40.0, 0.3 * elements[0].length_m)
    return Path(elements), constraints, start_s


def _turn_angle(road_map: RoadMap, from_node: int, at_node: int, to_node: int) -> float:
    """Signed heading change at `at_node`, radians, positive turning left."""
    from_east, from_north = road_map.node_local(from_node)
    at_east, at_north = road_map.node_local(at_node)
    to_east, to_north = road_map.node_local(to_node)
    incoming = math.atan2(at_north - from_north, at_east - from_east)
    outgoing = math.atan2(to_north - at_north, to_east - at_east)
    return (outgoing - incoming + math.pi) % (2.0 * math.pi) - math.pi
