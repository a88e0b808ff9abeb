"""The road under one trip: how rough it is, where its joints and cracks are, and how it climbs and falls.

Everything is a function of the distance driven along the path, so a vehicle meets the same rough patch,
joint or hill whenever it passes there, at whatever speed:

* **roughness**: road vibration (`michi.simulator.vibration.road_rms`) times a log-normal factor per
  `ROUGHNESS_CELL_M` of road (mean square 1): the Auckland phone's per-second vibration spreads threefold
  between its 10th and 90th percentiles at one speed, which speed alone does not explain;
* **joints**: expansion joints, cracks and patches, a Poisson process along the road, each hit by both
  axles: the short spikes that give real vertical acceleration its heavy tails (kurtosis 6-9 on the
  Auckland phone, 20 on comma2k19's highway, 3 for Gaussian vibration);
* **grade**: a sum of sinusoids in distance (hills of `GRADE_WAVELENGTHS_M`), whose gravity shows on the
  longitudinal axis (Auckland's Ayr Street: 11 %, about 1.1 m/s²) and whose change is a pitch rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

ROUGHNESS_CELL_M = 30.0
# Standard deviation of the natural logarithm of the roughness factor.
ROUGHNESS_SPREAD = 0.45
# Joints per kilometre, the median of their peak vertical acceleration at the body (m/s²) and the spread of
# its logarithm (heavy-tailed: most joints are cracks, a few are harsh expansion joints).
JOINTS_PER_KM = 30.0
JOINT_MEDIAN_MPS2 = 0.6
JOINT_SPREAD = 0.9
# Harder hits are potholes, injected as confounders with their ground truth (from 5 m/s² x harshness).
JOINT_MAX_MPS2 = 3.0
# Hills: this many sinusoids with wavelengths log-uniform between these (m), amplitude growing with wavelength.
GRADE_COMPONENTS = 8
GRADE_WAVELENGTHS_M = (40.0, 1500.0)


@dataclass(frozen=True)
class RoadSurface:
    roughness: FloatArray  # one factor per cell
    joint_positions_m: FloatArray  # sorted, along the path
    joint_amplitudes_mps2: FloatArray
    grade_wavenumbers: FloatArray  # radians per metre
    grade_amplitudes: FloatArray  # radians
    grade_phases: FloatArray
    start_m: float

    @classmethod
    def draw(cls, random: np.random.Generator, start_m: float, length_m: float, grade_std: float) -> RoadSurface:
        """The road from path position `start_m` for `length_m` metres; grade with standard deviation `grade_std`."""
        cells = max(1, math.ceil(length_m / ROUGHNESS_CELL_M) + 1)
        # exp(s z - s^2) (s the spread) has mean square 1: roughness spreads vibration without changing its average power.
        roughness = np.exp(ROUGHNESS_SPREAD * random.standard_normal(cells) - ROUGHNESS_SPREAD**2)
        joints = int(random.poisson(JOINTS_PER_KM * length_m / 1000.0))
        positions = np.sort(random.uniform(start_m, start_m + length_m, joints))
        amplitudes = np.minimum(
            JOINT_MEDIAN_MPS2 * np.exp(JOINT_SPREAD * random.standard_normal(joints)), JOINT_MAX_MPS2
        )
        low, high = GRADE_WAVELENGTHS_M
        wavelengths = np.exp(random.uniform(math.log(low), math.log(high), GRADE_COMPONENTS))
        weights = np.sqrt(wavelengths)
        # A sinusoid of amplitude A has variance A²/2: scale so the sum has standard deviation grade_std.
        amplitudes_grade = weights / math.sqrt(float(np.sum(weights**2)) / 2.0) * grade_std
        phases = random.uniform(0.0, 2.0 * math.pi, GRADE_COMPONENTS)
        return cls(
            roughness=roughness,
            joint_positions_m=positions,
            joint_amplitudes_mps2=amplitudes,
            grade_wavenumbers=2.0 * math.pi / wavelengths,
            grade_amplitudes=amplitudes_grade,
            grade_phases=phases,
            start_m=start_m,
        )

    def roughness_at(self, positions_m: FloatArray) -> FloatArray:
        cells = np.clip(((positions_m - self.start_m) // ROUGHNESS_CELL_M).astype(np.int64), 0, self.roughness.size - 1)
        return np.asarray(self.roughness[cells], dtype=np.float64)

    def grade_at(self, positions_m: FloatArray) -> FloatArray:
        """Road pitch in radians (positive uphill) at each position."""
        angles = np.outer(positions_m, self.grade_wavenumbers) + self.grade_phases
        return np.asarray(np.sin(angles) @ self.grade_amplitudes, dtype=np.float64)

    def grade_slope_at(self, positions_m: FloatArray) -> FloatArray:
        """How fast the pitch changes with distance (radians per metre)."""
        angles = np.outer(positions_m, self.grade_wavenumbers) + self.grade_phases
        return np.asarray(np.cos(angles) @ (self.grade_amplitudes * self.grade_wavenumbers), dtype=np.float64)
