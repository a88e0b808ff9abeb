"""A flat local projection around a fixed origin: geographic degrees to metres east/north and back.

The road map spans a few kilometres, so an equirectangular projection is accurate to
centimetres there and costs two multiplications per point, which keeps map look-ups fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class LocalProjection:
    """Metres east (x) and north (y) of an origin, for points within a few tens of kilometres."""

    origin_latitude: float
    origin_longitude: float

    @property
    def metres_per_degree_latitude(self) -> float:
        return EARTH_RADIUS_M * math.pi / 180.0

    @property
    def metres_per_degree_longitude(self) -> float:
        return self.metres_per_degree_latitude * math.cos(math.radians(self.origin_latitude))

    def to_local(self, latitude: float, longitude: float) -> tuple[float, float]:
        return (
            (longitude - self.origin_longitude) * self.metres_per_degree_longitude,
            (latitude - self.origin_latitude) * self.metres_per_degree_latitude,
        )

    def to_geographic(self, east_m: float, north_m: float) -> tuple[float, float]:
        return (
            self.origin_latitude + north_m / self.metres_per_degree_latitude,
            self.origin_longitude + east_m / self.metres_per_degree_longitude,
        )

    def to_geographic_arrays(
        self, east_m: NDArray[np.float64], north_m: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return (
            self.origin_latitude + north_m / self.metres_per_degree_latitude,
            self.origin_longitude + east_m / self.metres_per_degree_longitude,
        )
