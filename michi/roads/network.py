"""The road network: segments with a road class and posted limit, intersections with stop lines.

`RoadMap.generate(seed)` builds a deterministic grid-like town near a fixed origin (central
Tokyo): straight roads on a slightly rotated, irregularly spaced grid, each road line with one
class (residential 30 km/h, urban 50, arterial 60, expressway 80 or 100). Where roads of
different rank cross, the minor road has stop lines; equal residential roads make all-way
stops, equal urban or arterial roads make signals, and two expressways make an interchange.

`speed_limit_at` is on the hot path of inference (one call per GPS fix), so it looks segments
up through a uniform grid of cells, each holding the few straight pieces within reach.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np

from michi.roads.projection import LocalProjection

MAP_FORMAT = "michi.roads.v1"
DEFAULT_SEED = 20260101
DEFAULT_ORIGIN_LATITUDE = 35.68
DEFAULT_ORIGIN_LONGITUDE = 139.76
# A fix further than this from every road is off-road (car parks, GPS outliers).
MATCH_RADIUS_M = 30.0
# How much a heading mismatch costs, in metres, when choosing between nearby segments.
HEADING_PENALTY_M = 30.0
INDEX_CELL_M = 50.0
STOP_LINE_SETBACK_M = 8.0


class RoadClass(StrEnum):
    RESIDENTIAL = "residential"
    URBAN = "urban"
    ARTERIAL = "arterial"
    EXPRESSWAY = "expressway"


ROAD_CLASS_RANK: dict[RoadClass, int] = {
    RoadClass.RESIDENTIAL: 0,
    RoadClass.URBAN: 1,
    RoadClass.ARTERIAL: 2,
    RoadClass.EXPRESSWAY: 3,
}
# Radius of the kerb-to-kerb arc a car drives when turning off a road of this class.
TURN_RADIUS_M: dict[RoadClass, float] = {
    RoadClass.RESIDENTIAL: 9.0,
    RoadClass.URBAN: 12.0,
    RoadClass.ARTERIAL: 15.0,
    RoadClass.EXPRESSWAY: 22.0,
}


class IntersectionControl(StrEnum):
    STOP = "stop"  # the minor road stops, the major road has priority
    ALL_WAY_STOP = "all_way_stop"
    SIGNAL = "signal"
    INTERCHANGE = "interchange"  # grade separated, nobody stops


@dataclass(frozen=True)
class SpeedZone:
    """The posted limit that applies on one segment."""

    segment_id: int
    road_class: RoadClass
    limit_mps: float

    @property
    def limit_kmh(self) -> float:
        return self.limit_mps * 3.6


@dataclass(frozen=True)
class Intersection:
    node_id: int
    latitude: float
    longitude: float
    control: IntersectionControl


@dataclass(frozen=True)
class StopLine:
    """Where a vehicle arriving at `node_id` along `segment_id` stops when it must."""

    segment_id: int
    node_id: int
    latitude: float
    longitude: float


@dataclass(frozen=True)
class RoadSegment:
    """A stretch of one road between two intersections, as a polyline of (latitude, longitude)."""

    segment_id: int
    road_name: str
    road_class: RoadClass
    limit_mps: float
    start_node: int
    end_node: int
    points: tuple[tuple[float, float], ...]
    length_m: float

    @property
    def zone(self) -> SpeedZone:
        return SpeedZone(segment_id=self.segment_id, road_class=self.road_class, limit_mps=self.limit_mps)


# (start east, start north, delta east, delta north, 1/length², zone, unit east, unit north)
_Piece = tuple[float, float, float, float, float, SpeedZone, float, float]


class RoadMap:
    """A road network with speed zones; immutable once built."""

    _default: ClassVar[RoadMap | None] = None

    def __init__(
        self,
        *,
        seed: int,
        origin_latitude: float,
        origin_longitude: float,
        intersections: list[Intersection],
        segments: list[RoadSegment],
        stop_lines: list[StopLine],
    ) -> None:
        self.seed = seed
        self.projection = LocalProjection(origin_latitude, origin_longitude)
        self.intersections = list(intersections)
        self.segments = list(segments)
        self.stop_lines = list(stop_lines)
        self._intersection_by_id = {node.node_id: node for node in self.intersections}
        self._segment_by_id = {segment.segment_id: segment for segment in self.segments}
        self._zones = {segment.segment_id: segment.zone for segment in self.segments}
        self._stop_line_keys = {(line.segment_id, line.node_id) for line in self.stop_lines}
        self._neighbors: dict[int, list[tuple[int, RoadSegment]]] = {node.node_id: [] for node in self.intersections}
        for segment in self.segments:
            self._neighbors[segment.start_node].append((segment.end_node, segment))
            self._neighbors[segment.end_node].append((segment.start_node, segment))
        self._build_index()

    # ------------------------------------------------------------------ construction

    @classmethod
    def default(cls) -> RoadMap:
        """The map every Michi process shares: fixed seed and origin, built once per process."""
        if cls._default is None:
            cls._default = cls.generate(DEFAULT_SEED)
        return cls._default

    @classmethod
    def generate(
        cls,
        seed: int,
        *,
        origin_latitude: float = DEFAULT_ORIGIN_LATITUDE,
        origin_longitude: float = DEFAULT_ORIGIN_LONGITUDE,
        line_count: int = 12,
    ) -> RoadMap:
        """A town of `line_count` east-west by `line_count` north-south roads, drawn from `seed`."""
        random = np.random.default_rng(seed)
        projection = LocalProjection(origin_latitude, origin_longitude)
        rotation = math.radians(float(random.uniform(-25.0, 25.0)))
        row_positions = _line_positions(random, line_count)
        column_positions = _line_positions(random, line_count)
        row_classes = _line_classes(line_count)
        column_classes = _line_classes(line_count)
        row_limits = [_limit_kmh(road_class, expressway_kmh=80.0) / 3.6 for road_class in row_classes]
        column_limits = [_limit_kmh(road_class, expressway_kmh=100.0) / 3.6 for road_class in column_classes]
        cosine, sine = math.cos(rotation), math.sin(rotation)

        def node_id(row: int, column: int) -> int:
            return row * line_count + column

        local: dict[int, tuple[float, float]] = {}
        intersections: list[Intersection] = []
        for row in range(line_count):
            for column in range(line_count):
                grid_x, grid_y = column_positions[column], row_positions[row]
                east, north = grid_x * cosine - grid_y * sine, grid_x * sine + grid_y * cosine
                local[node_id(row, column)] = (east, north)
                latitude, longitude = projection.to_geographic(east, north)
                control = _control(row_classes[row], column_classes[column])
                intersections.append(Intersection(node_id(row, column), latitude, longitude, control))

        segments: list[RoadSegment] = []
        for row in range(line_count):
            for column in range(line_count - 1):
                segments.append(
                    _segment(
                        len(segments),
                        f"East-West {row + 1}",
                        row_classes[row],
                        row_limits[row],
                        node_id(row, column),
                        node_id(row, column + 1),
                        local,
                        projection,
                    )
                )
        for column in range(line_count):
            for row in range(line_count - 1):
                segments.append(
                    _segment(
                        len(segments),
                        f"North-South {column + 1}",
                        column_classes[column],
                        column_limits[column],
                        node_id(row, column),
                        node_id(row + 1, column),
                        local,
                        projection,
                    )
                )

        stop_lines = _stop_lines(intersections, segments, local, projection)
        return cls(
            seed=seed,
            origin_latitude=origin_latitude,
            origin_longitude=origin_longitude,
            intersections=intersections,
            segments=segments,
            stop_lines=stop_lines,
        )

    # ------------------------------------------------------------------ queries

    def speed_limit_at(self, latitude: float, longitude: float, heading_deg: float | None = None) -> float | None:
        """The posted limit in m/s of the nearest segment within 30 m, or None off-road.

        With a heading (degrees clockwise from north), a segment that runs the way the vehicle
        drives wins over a crossing one at an intersection.
        """
        zone = self.zone_at(latitude, longitude, heading_deg)
        return None if zone is None else zone.limit_mps

    def zone_at(self, latitude: float, longitude: float, heading_deg: float | None = None) -> SpeedZone | None:
        projection = self.projection
        east = (longitude - projection.origin_longitude) * self._metres_per_degree_longitude
        north = (latitude - projection.origin_latitude) * self._metres_per_degree_latitude
        column = math.floor((east - self._index_east) / INDEX_CELL_M)
        row = math.floor((north - self._index_north) / INDEX_CELL_M)
        if column < 0 or row < 0 or column >= self._index_columns or row >= self._index_rows:
            return None
        pieces = self._cells[row * self._index_columns + column]
        if not pieces:
            return None
        if heading_deg is not None:
            heading = math.radians(heading_deg)
            heading_east, heading_north = math.sin(heading), math.cos(heading)
        best: SpeedZone | None = None
        best_score = math.inf
        radius_squared = MATCH_RADIUS_M * MATCH_RADIUS_M
        for start_east, start_north, delta_east, delta_north, inverse, zone, unit_east, unit_north in pieces:
            fraction = ((east - start_east) * delta_east + (north - start_north) * delta_north) * inverse
            if fraction < 0.0:
                fraction = 0.0
            elif fraction > 1.0:
                fraction = 1.0
            offset_east = start_east + fraction * delta_east - east
            offset_north = start_north + fraction * delta_north - north
            distance_squared = offset_east * offset_east + offset_north * offset_north
            if distance_squared > radius_squared:
                continue
            score = math.sqrt(distance_squared)
            if heading_deg is not None:
                score += HEADING_PENALTY_M * (1.0 - abs(unit_east * heading_east + unit_north * heading_north))
            if score < best_score:
                best_score = score
                best = zone
        return best

    def intersection(self, node_id: int) -> Intersection:
        return self._intersection_by_id[node_id]

    def segment(self, segment_id: int) -> RoadSegment:
        return self._segment_by_id[segment_id]

    def neighbors(self, node_id: int) -> list[tuple[int, RoadSegment]]:
        """(next node, segment) for every road leaving `node_id`."""
        return self._neighbors[node_id]

    def has_stop_line(self, segment_id: int, node_id: int) -> bool:
        """Whether a vehicle arriving at `node_id` along `segment_id` meets a stop line."""
        return (segment_id, node_id) in self._stop_line_keys

    def node_local_geographic(self, node_id: int) -> tuple[float, float]:
        """(latitude, longitude) of an intersection."""
        node = self._intersection_by_id[node_id]
        return node.latitude, node.longitude

    def node_local(self, node_id: int) -> tuple[float, float]:
        """(metres east, metres north) of an intersection from the map origin."""
        node = self._intersection_by_id[node_id]
        return self.projection.to_local(node.latitude, node.longitude)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(south, west, north, east) in degrees."""
        latitudes = [node.latitude for node in self.intersections]
        longitudes = [node.longitude for node in self.intersections]
        return min(latitudes), min(longitudes), max(latitudes), max(longitudes)

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MAP_FORMAT,
            "seed": self.seed,
            "origin": {
                "latitude": self.projection.origin_latitude,
                "longitude": self.projection.origin_longitude,
            },
            "intersections": [
                {
                    "node_id": node.node_id,
                    "latitude": node.latitude,
                    "longitude": node.longitude,
                    "control": node.control.value,
                }
                for node in self.intersections
            ],
            "segments": [
                {
                    "segment_id": segment.segment_id,
                    "road_name": segment.road_name,
                    "road_class": segment.road_class.value,
                    "limit_mps": segment.limit_mps,
                    "limit_kmh": round(segment.limit_mps * 3.6, 3),
                    "start_node": segment.start_node,
                    "end_node": segment.end_node,
                    "points": [[latitude, longitude] for latitude, longitude in segment.points],
                    "length_m": segment.length_m,
                }
                for segment in self.segments
            ],
            "stop_lines": [
                {
                    "segment_id": line.segment_id,
                    "node_id": line.node_id,
                    "latitude": line.latitude,
                    "longitude": line.longitude,
                }
                for line in self.stop_lines
            ],
        }

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> RoadMap:
        document = json.loads(text)
        if document.get("format") != MAP_FORMAT:
            raise ValueError(f"not a Michi road map (format {document.get('format')!r}, expected {MAP_FORMAT!r})")
        return cls(
            seed=int(document["seed"]),
            origin_latitude=float(document["origin"]["latitude"]),
            origin_longitude=float(document["origin"]["longitude"]),
            intersections=[
                Intersection(
                    node_id=int(item["node_id"]),
                    latitude=float(item["latitude"]),
                    longitude=float(item["longitude"]),
                    control=IntersectionControl(item["control"]),
                )
                for item in document["intersections"]
            ],
            segments=[
                RoadSegment(
                    segment_id=int(item["segment_id"]),
                    road_name=str(item["road_name"]),
                    road_class=RoadClass(item["road_class"]),
                    limit_mps=float(item["limit_mps"]),
                    start_node=int(item["start_node"]),
                    end_node=int(item["end_node"]),
                    points=tuple((float(point[0]), float(point[1])) for point in item["points"]),
                    length_m=float(item["length_m"]),
                )
                for item in document["segments"]
            ],
            stop_lines=[
                StopLine(
                    segment_id=int(item["segment_id"]),
                    node_id=int(item["node_id"]),
                    latitude=float(item["latitude"]),
                    longitude=float(item["longitude"]),
                )
                for item in document["stop_lines"]
            ],
        )

    # ------------------------------------------------------------------ spatial index

    def _build_index(self) -> None:
        projection = self.projection
        self._metres_per_degree_latitude = projection.metres_per_degree_latitude
        self._metres_per_degree_longitude = projection.metres_per_degree_longitude
        pieces: list[_Piece] = []
        for segment in self.segments:
            local = [projection.to_local(latitude, longitude) for latitude, longitude in segment.points]
            for (start_east, start_north), (end_east, end_north) in itertools.pairwise(local):
                delta_east, delta_north = end_east - start_east, end_north - start_north
                length_squared = delta_east * delta_east + delta_north * delta_north
                if length_squared <= 0.0:
                    continue
                length = math.sqrt(length_squared)
                pieces.append(
                    (
                        start_east,
                        start_north,
                        delta_east,
                        delta_north,
                        1.0 / length_squared,
                        self._zones[segment.segment_id],
                        delta_east / length,
                        delta_north / length,
                    )
                )
        if not pieces:
            self._index_east = self._index_north = 0.0
            self._index_columns = self._index_rows = 0
            self._cells: list[tuple[_Piece, ...]] = []
            return
        margin = MATCH_RADIUS_M + INDEX_CELL_M
        easts = [value for piece in pieces for value in (piece[0], piece[0] + piece[2])]
        norths = [value for piece in pieces for value in (piece[1], piece[1] + piece[3])]
        self._index_east = min(easts) - margin
        self._index_north = min(norths) - margin
        self._index_columns = math.ceil((max(easts) + margin - self._index_east) / INDEX_CELL_M)
        self._index_rows = math.ceil((max(norths) + margin - self._index_north) / INDEX_CELL_M)
        buckets: list[list[_Piece]] = [[] for _ in range(self._index_columns * self._index_rows)]
        for piece in pieces:
            self._add_to_cells(piece, buckets)
        self._cells = [tuple(bucket) for bucket in buckets]

    def _add_to_cells(self, piece: _Piece, buckets: list[list[_Piece]]) -> None:
        start_east, start_north, delta_east, delta_north = piece[0], piece[1], piece[2], piece[3]
        west = min(start_east, start_east + delta_east) - MATCH_RADIUS_M
        east = max(start_east, start_east + delta_east) + MATCH_RADIUS_M
        south = min(start_north, start_north + delta_north) - MATCH_RADIUS_M
        north = max(start_north, start_north + delta_north) + MATCH_RADIUS_M
        first_column = math.floor((west - self._index_east) / INDEX_CELL_M)
        last_column = math.floor((east - self._index_east) / INDEX_CELL_M)
        first_row = math.floor((south - self._index_north) / INDEX_CELL_M)
        last_row = math.floor((north - self._index_north) / INDEX_CELL_M)
        # A cell holds the piece only if the piece passes within the match radius of the cell.
        reach = MATCH_RADIUS_M + INDEX_CELL_M * math.sqrt(0.5)
        length_squared = delta_east * delta_east + delta_north * delta_north
        for row in range(first_row, last_row + 1):
            for column in range(first_column, last_column + 1):
                centre_east = self._index_east + (column + 0.5) * INDEX_CELL_M
                centre_north = self._index_north + (row + 0.5) * INDEX_CELL_M
                fraction = ((centre_east - start_east) * delta_east + (centre_north - start_north) * delta_north) / (
                    length_squared
                )
                fraction = min(1.0, max(0.0, fraction))
                distance = math.hypot(
                    start_east + fraction * delta_east - centre_east,
                    start_north + fraction * delta_north - centre_north,
                )
                if distance <= reach:
                    buckets[row * self._index_columns + column].append(piece)


def _line_positions(random: np.random.Generator, line_count: int) -> list[float]:
    spacings = random.uniform(240.0, 400.0, size=line_count - 1)
    positions = np.concatenate([[0.0], np.cumsum(spacings)])
    positions -= positions[-1] / 2.0
    return [float(position) for position in positions]


def _line_classes(line_count: int) -> list[RoadClass]:
    """One expressway through the middle, arterials every fourth line, urban and residential between."""
    classes: list[RoadClass] = []
    middle = line_count // 2
    for index in range(line_count):
        if index == middle:
            classes.append(RoadClass.EXPRESSWAY)
        elif index % 4 == 1:
            classes.append(RoadClass.ARTERIAL)
        elif index % 2 == 1:
            classes.append(RoadClass.URBAN)
        else:
            classes.append(RoadClass.RESIDENTIAL)
    return classes


def _limit_kmh(road_class: RoadClass, *, expressway_kmh: float) -> float:
    return {
        RoadClass.RESIDENTIAL: 30.0,
        RoadClass.URBAN: 50.0,
        RoadClass.ARTERIAL: 60.0,
        RoadClass.EXPRESSWAY: expressway_kmh,
    }[road_class]


def _control(first: RoadClass, second: RoadClass) -> IntersectionControl:
    if first != second:
        return IntersectionControl.STOP
    if first == RoadClass.RESIDENTIAL:
        return IntersectionControl.ALL_WAY_STOP
    if first == RoadClass.EXPRESSWAY:
        return IntersectionControl.INTERCHANGE
    return IntersectionControl.SIGNAL


def _segment(
    segment_id: int,
    road_name: str,
    road_class: RoadClass,
    limit_mps: float,
    start_node: int,
    end_node: int,
    local: dict[int, tuple[float, float]],
    projection: LocalProjection,
) -> RoadSegment:
    (start_east, start_north), (end_east, end_north) = local[start_node], local[end_node]
    # Intermediate vertices every ~100 m keep the polyline honest for consumers that draw it.
    length = math.hypot(end_east - start_east, end_north - start_north)
    steps = max(1, round(length / 100.0))
    points = tuple(
        projection.to_geographic(
            start_east + (end_east - start_east) * step / steps, start_north + (end_north - start_north) * step / steps
        )
        for step in range(steps + 1)
    )
    return RoadSegment(
        segment_id=segment_id,
        road_name=road_name,
        road_class=road_class,
        limit_mps=limit_mps,
        start_node=start_node,
        end_node=end_node,
        points=points,
        length_m=length,
    )


def _stop_lines(
    intersections: list[Intersection],
    segments: list[RoadSegment],
    local: dict[int, tuple[float, float]],
    projection: LocalProjection,
) -> list[StopLine]:
    by_node: dict[int, list[RoadSegment]] = {node.node_id: [] for node in intersections}
    for segment in segments:
        by_node[segment.start_node].append(segment)
        by_node[segment.end_node].append(segment)
    lines: list[StopLine] = []
    for node in intersections:
        approaches = by_node[node.node_id]
        top_rank = max(ROAD_CLASS_RANK[segment.road_class] for segment in approaches)
        for segment in approaches:
            if node.control == IntersectionControl.INTERCHANGE:
                continue
            if node.control == IntersectionControl.STOP and ROAD_CLASS_RANK[segment.road_class] == top_rank:
                continue
            other = segment.start_node if segment.end_node == node.node_id else segment.end_node
            (node_east, node_north), (other_east, other_north) = local[node.node_id], local[other]
            length = math.hypot(other_east - node_east, other_north - node_north)
            fraction = STOP_LINE_SETBACK_M / length
            latitude, longitude = projection.to_geographic(
                node_east + (other_east - node_east) * fraction, node_north + (other_north - node_north) * fraction
            )
            lines.append(StopLine(segment.segment_id, node.node_id, latitude, longitude))
    return lines
