"""Vectorised signal helpers shared by calibration, features and the readings of real drives (numpy only)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def moving_average(values: FloatArray, width: int) -> FloatArray:
    """Centred moving average along axis 0 with edge padding (keeps the length).

    Applied twice it is a triangular low-pass; `width` samples set its first null at
    sample_rate / width Hz.
    """
    if width <= 1 or values.shape[0] == 0:
        return values
    pad_before = width // 2
    pad_after = width - 1 - pad_before
    padded = np.pad(values, [(pad_before, pad_after)] + [(0, 0)] * (values.ndim - 1), mode="edge")
    cumulative = np.cumsum(padded, axis=0, dtype=np.float64)
    cumulative = np.concatenate([np.zeros((1, *values.shape[1:])), cumulative], axis=0)
    return np.asarray((cumulative[width:] - cumulative[:-width]) / width, dtype=np.float64)


def low_pass(values: FloatArray, sample_rate_hz: float, cutoff_hz: float) -> FloatArray:
    """Two passes of a boxcar whose first null sits at `cutoff_hz` (road vibration above it is gone)."""
    width = max(1, round(sample_rate_hz / cutoff_hz))
    return moving_average(moving_average(values, width), width)


def unit(vector: FloatArray) -> FloatArray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def angle_between_deg(first: FloatArray, second: FloatArray) -> float:
    first_unit, second_unit = unit(first), unit(second)
    cosine = float(np.clip(np.dot(first_unit, second_unit), -1.0, 1.0))
    return float(np.degrees(np.arccos(cosine)))


def gapless_stretches(times_s: FloatArray, max_gap_s: float) -> list[tuple[int, int]]:
    """(first, end) index ranges of the runs of sorted times no more than `max_gap_s` apart."""
    if times_s.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(times_s) > max_gap_s) + 1
    return list(pairwise([0, *breaks.tolist(), int(times_s.size)]))


def true_runs(mask: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """(first, end) index ranges of the runs of True in `mask`."""
    edges = np.diff(np.concatenate([[0], np.asarray(mask).astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))
