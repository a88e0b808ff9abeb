"""A model's reference profile as the monitor reads it, and live values binned on its edges.

The profile (`reference_profile.json` next to the model, written by `services/trainer/domain/profile.py`)
holds per input feature equal-width `edges`, `counts` (underflow, bins, overflow), `count`, `min`, `max`
and `std`. `reference-profile-2` has 1,000 bins between the minimum and the maximum, its last bin closed;
`reference-profile-1` (models trained before it) has 20 bins between the 0.5 % and 99.5 % quantiles with
the overflow at or above the last edge: readable, and `low_resolution` (its PSI can miss a batch tool's by
up to 0.4, so the monitor reports its figures but raises no alert on them unless told to).

A traffic profile (`source` `traffic`) also holds cohorts' counts on the same edges (`cohorts`: a cohort's
window is judged against its own part of the traffic, `features_of`) and the values of each cohort dimension
the traffic had (`population`: the rows of a window from values it never had are a figure of their own). A
traffic profile of calibrated windows only (`rows: calibrated`) is compared with live rows read with a calibrated
mount only: how many uncalibrated rows a fleet has depends on how new its devices are, not on its roads.

`FeatureGrid` bins a row of every feature at once: equal-width bins make a bin's index arithmetic, so one
row costs O(features), whatever the number of bins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from michi.registry.layout import REFERENCE_PROFILE_VERSION
from michi.windows.features import FEATURE_INDEX
from services.monitor.domain.drift import Histogram

CURRENT_VERSION = REFERENCE_PROFILE_VERSION
# Below this many bins per feature a profile is low-resolution (the measurement: 100 bins miss by 0.4).
HIGH_RESOLUTION_BINS = 1000


class ProfileError(ValueError):
    """A reference profile that cannot be read."""


@dataclass(frozen=True)
class ReferenceFeature:
    name: str
    histogram: Histogram
    std: float


@dataclass(frozen=True)
class ReferenceProfile:
    version: str
    data_version: str
    features: tuple[ReferenceFeature, ...]
    # The last bin holds values equal to the last edge (profile 2); else they are overflow (profile 1).
    last_bin_closed: bool
    # What it describes: "traffic" (served traffic) or "training" (a model's training windows).
    source: str = "training"
    # Per cohort (`vehicle:van`, ...), its features in the order of `features`, on the same edges.
    cohorts: Mapping[str, tuple[ReferenceFeature, ...]] = field(default_factory=dict)
    # Per cohort dimension (`vehicle`, `rate`, `firmware`), the values the traffic had.
    population: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Only windows read with a calibrated mount were profiled (`rows: calibrated`): live rows are judged alike.
    calibrated_only: bool = False
    # Per cohort dimension (`vehicle`), each value's share of the traffic's devices: the fleet mix it drove.
    mix: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def features_of(self, cohort: str) -> tuple[ReferenceFeature, ...]:
        """The reference of a cohort's windows: its own part of the traffic, or the whole (cohort `all`, a cohort
        the traffic does not characterise)."""
        return self.cohorts.get(cohort, self.features)

    def mixed(self, dimension: str, rows: Mapping[str, int]) -> tuple[ReferenceFeature, ...]:
        """The traffic re-weighted to a window's mix of `dimension` values (value -> the window's rows of it).

        Each value the traffic characterises weighs its share of the window with its own part; the window's other
        rows weigh with the whole's shares. So a fleet of other proportions (a small fleet's draw of vehicles) is
        compared with traffic of its own proportions: what drifts is how each kind of vehicle is driven, not how
        many of each there are. The whole itself when no value has a part (or no profile of traffic).
        """
        total = float(sum(rows.values()))
        parts = [(self.cohorts.get(f"{dimension}:{value}"), float(count)) for value, count in rows.items() if count]
        if total <= 0 or not any(part is not None for part, _ in parts):
            return self.features
        mixed = []
        for position, feature in enumerate(self.features):
            shares = np.zeros_like(feature.histogram.counts, dtype=np.float64)
            low, high = math.inf, -math.inf
            for part, count in parts:
                source = (part[position] if part is not None else feature).histogram
                shares += (count / total) * source.counts / source.total
                low, high = min(low, source.low), max(high, source.high)
            # As many rows as the whole: the figures' sample sizes (KS) stay the traffic's.
            histogram = Histogram(feature.histogram.edges, shares * feature.histogram.total, low, high)
            mixed.append(ReferenceFeature(feature.name, histogram, feature.std))
        return tuple(mixed)

    @property
    def low_resolution(self) -> bool:
        return self.version != CURRENT_VERSION or any(
            len(feature.histogram.edges) - 1 < HIGH_RESOLUTION_BINS for feature in self.features
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features)


def read_profile(document: Mapping[str, Any]) -> ReferenceProfile:
    """The profile's input features (its `features` section; signal channels are not in a `Prediction`)."""
    try:
        version = str(document["version"])
        features = []
        for name, entry in sorted(document["features"].items()):
            edges = np.asarray(entry["edges"], dtype=np.float64)
            counts = np.asarray(entry["counts"], dtype=np.float64)
            if len(edges) < 2:  # no finite value in the training data: nothing to compare against
                continue
            if len(counts) != len(edges) + 1 or not np.all(np.diff(edges) > 0):
                raise ProfileError(f"feature {name!r}: {len(edges)} edges and {len(counts)} counts")
            low = float(entry.get("min", edges[0]))
            high = float(entry.get("max", edges[-1]))
            std = float(entry.get("std", 0.0))
            features.append(ReferenceFeature(str(name), Histogram(edges, counts, low, high), std))
    except (KeyError, TypeError, AttributeError) as error:
        raise ProfileError(f"not a reference profile: {type(error).__name__}: {error}") from error
    if not features:
        raise ProfileError("the profile has no feature with a histogram")
    try:
        cohorts = {
            str(cohort): _cohort_features(features, part["features"])
            for cohort, part in sorted(document.get("cohorts", {}).items())
        }
        population = {
            str(dimension): frozenset(str(value) for value in values)
            for dimension, values in document.get("population", {}).items()
        }
        mix = {
            str(dimension): {str(value): float(share) for value, share in shares.items()}
            for dimension, shares in document.get("mix", {}).items()
        }
    except (KeyError, TypeError, AttributeError) as error:
        raise ProfileError(f"unreadable cohorts: {type(error).__name__}: {error}") from error
    return ReferenceProfile(
        version=version,
        data_version=str(document.get("data_version", "")),
        features=tuple(features),
        last_bin_closed=version != "reference-profile-1",
        source=str(document.get("source", "training")),
        cohorts=cohorts,
        population=population,
        calibrated_only=document.get("rows") == "calibrated",
        mix=mix,
    )


def _cohort_features(whole: Sequence[ReferenceFeature], entries: Mapping[str, Any]) -> tuple[ReferenceFeature, ...]:
    """A cohort's features on the whole's edges; a feature it lacks (or that is empty) falls back to the whole's."""
    features = []
    for feature in whole:
        entry: Mapping[str, Any] = entries.get(feature.name) or {}
        counts = np.asarray(entry.get("counts", []), dtype=np.float64)
        if counts.size != feature.histogram.counts.size or counts.sum() <= 0:
            features.append(feature)
            continue
        low = float(entry.get("min", feature.histogram.low))
        high = float(entry.get("max", feature.histogram.high))
        histogram = Histogram(feature.histogram.edges, counts, low, high)
        features.append(ReferenceFeature(feature.name, histogram, float(entry.get("std", feature.std))))
    return tuple(features)


# Live bins per bin of the profile: the live window's binning error is what limits the figures' accuracy
# (its rows are few), the reference's is negligible (its rows are many).
LIVE_SUBDIVISIONS = 4


class FeatureGrid:
    """Bins rows of the profile's features on its edges, each bin cut in `subdivisions`, extended by a training
    range of such bins on each side.

    Live values outside the training range are common under drift; the extension keeps their shape (one
    training range below and one above) instead of an open-ended bucket. Row i of a window's `counts`:
    column 0 below the extension, then `3 * bins` bins (extension, the profile's own bins, extension), then
    the last column beyond the extension.

    A value's column is found in two steps, both vectorised over a batch of rows: arithmetic on the equal-width
    grid gives it to within one column, then one comparison with each neighbouring edge of `table` settles it.
    `table` holds every column's edges, the profile's own among them bit for bit, so a value on a profile edge
    (a constant feature such as gps_available sits exactly on one) is counted in the bin numpy.histogram
    counted it in, and the profile's closed last bin keeps its maximum as numpy's does.
    """

    def __init__(self, profile: ReferenceProfile, subdivisions: int = LIVE_SUBDIVISIONS) -> None:
        self.names = profile.names
        self.bins = subdivisions * np.array(
            [len(feature.histogram.edges) - 1 for feature in profile.features], dtype=np.int64
        )
        self.lows = np.array([feature.histogram.edges[0] for feature in profile.features])
        self.highs = np.array([feature.histogram.edges[-1] for feature in profile.features])
        self.widths = (self.highs - self.lows) / self.bins
        self.last_bin_closed = profile.last_bin_closed
        self.columns = int(3 * self.bins.max(initial=0)) + 2
        self.rows = np.arange(len(self.names))
        self.subdivisions = subdivisions
        # The profile's own edges per feature (padded with +inf).
        self.reference_bins = np.array([len(feature.histogram.edges) - 1 for feature in profile.features])
        self.reference_edges = np.full((len(self.names), int(self.reference_bins.max(initial=0)) + 1), np.inf)
        for position, feature in enumerate(profile.features):
            self.reference_edges[position, : len(feature.histogram.edges)] = feature.histogram.edges
        # Per feature, column c holds [table[c], table[c + 1]): -inf, the live edges (`live_edges`), +inf, padded
        # with +inf to the widest feature. A value on the profile's maximum counts in the last bin when it is
        # closed: the edge the next column starts at is the next float above it.
        self.table = np.full((len(self.names), self.columns + 1), np.inf)
        # Where a column's index is arithmetic: the start of the lower extension, and columns per unit.
        self.origins = self.lows - self.bins * self.widths
        self.inverses = 1.0 / self.widths
        self.last_columns = (3 * self.bins + 1).astype(np.float64)
        # Features whose edges are not equal-width enough for the arithmetic (never from the trainer): binned by
        # search instead.
        self.irregular: list[int] = []
        for position in range(len(self.names)):
            edges = self.live_edges(position)
            bins = int(self.bins[position])
            if self.last_bin_closed:
                edges[2 * bins] = np.nextafter(edges[2 * bins], np.inf)
            self.table[position, 0] = -np.inf
            self.table[position, 1 : edges.size + 1] = edges
            arithmetic = self.origins[position] + np.arange(edges.size) * self.widths[position]
            if not np.all(np.abs(edges - arithmetic) <= 0.25 * self.widths[position]):
                self.irregular.append(position)
        # Slot of (feature, column) in a window's flattened counts; `self.unused` collects what is not counted.
        self.offsets = self.rows * self.columns
        self.unused = len(self.names) * self.columns
        self._lower = self.table[:, :-1].ravel()
        self._upper = self.table[:, 1:].ravel()
        # Positions of the grid's features in `FEATURE_NAMES` (what `Prediction.packed_features` packs), -1: none.
        self.packed_positions = np.array([FEATURE_INDEX.get(name, -1) for name in self.names], dtype=np.int64)
        self._edges: dict[int, np.ndarray] = {}
        self.in_packed_order = bool(np.array_equal(self.packed_positions, self.rows))

    def live_edges(self, position: int) -> np.ndarray:
        """Feature `position`'s `3 * bins + 1` live edges: the lower extension's, the profile's own bins cut in
        `subdivisions` (the profile's edges bit for bit), its maximum, the upper extension's."""
        bins = int(self.bins[position])
        width = float(self.widths[position])
        reference = self.reference_edges[position, : int(self.reference_bins[position]) + 1]
        steps = np.arange(self.subdivisions) / self.subdivisions
        inside = (reference[:-1, np.newaxis] + np.diff(reference)[:, np.newaxis] * steps).ravel()
        below = self.lows[position] + np.arange(-bins, 0) * width
        above = self.highs[position] + np.arange(1, bins + 1) * width
        return np.concatenate((below, inside, reference[-1:], above))

    def values_of(self, features: Mapping[str, float]) -> np.ndarray:
        """The row of a prediction's feature map in grid order (NaN where it lacks a feature)."""
        return np.array([features.get(name, math.nan) for name in self.names], dtype=np.float64)

    def values_of_packed(self, rows: np.ndarray) -> np.ndarray:
        """Rows in `FEATURE_NAMES` order (`unpack_features`) in grid order, NaN where a row lacks a feature."""
        width = rows.shape[1]
        if self.in_packed_order and width == len(self.names):
            return rows
        present = (self.packed_positions >= 0) & (self.packed_positions < width)
        if present.all():
            # `take` keeps the rows C-ordered (`rows[:, positions]` would not): every later step runs along them.
            return rows.take(self.packed_positions, axis=1)
        values = np.full((rows.shape[0], len(self.names)), np.nan)
        values[:, present] = rows[:, self.packed_positions[present]]
        return values

    def slots_of(self, values: np.ndarray) -> np.ndarray:
        """Each value's slot in a window's flattened `counts` (`feature * columns + column`), `self.unused`
        where it is not finite. `values`: one row (features,) or a batch (rows, features)."""
        position = np.subtract(values, self.origins)
        np.multiply(position, self.inverses, out=position)
        np.fmax(position, -1.0, out=position)  # NaN becomes -1 too: unused below, whatever its column
        np.fmin(position, self.last_columns - 1.0, out=position)
        slots = position.astype(np.int64)
        slots += self.offsets + 1
        slots -= values < self._lower.take(slots)
        slots += values >= self._upper.take(slots)
        for feature in self.irregular:
            column = np.searchsorted(self.table[feature], values[..., feature], side="right") - 1
            slots[..., feature] = self.offsets[feature] + np.clip(column, 0, self.columns - 1)
        finite = np.isfinite(values)
        if not finite.all():
            slots[~finite] = self.unused
        return slots

    def columns_of(self, values: np.ndarray) -> np.ndarray:
        """Each value's column in a window's `counts` (-1 where it is not finite)."""
        slots = self.slots_of(values)
        return np.where(slots == self.unused, -1, slots - self.offsets)

    def histogram(self, position: int, counts: np.ndarray, low: float, high: float) -> Histogram:
        """Feature `position`'s live histogram from a window's counts row and extremes.

        Cut to the columns between its extremes: of a window's 3 x bins columns most lie beyond its values (the
        extensions, the profile's range it does not reach), and every figure reads the histogram as knots of its
        CDF clipped to [low, high], where those columns' edges are repeats of the extremes with the same
        cumulative count. Left out, the figures are the same bit for bit and cost what the values span."""
        bins = int(self.bins[position])
        edges = self._edges_of(position)
        counts = counts[: 3 * bins + 2]
        if high >= low and math.isfinite(low) and math.isfinite(high):
            used = np.flatnonzero(counts)
            if used.size:
                # Edge i bounds column i (below it) and column i + 1 (above it). Kept: from the last edge at or
                # below `low` and below the first column used, to the first edge at or above the cut above
                # `high` (`Histogram.cdf_knots`) and above the last column used.
                below = int(np.searchsorted(edges, low, side="right")) - 1
                above = int(np.searchsorted(edges, np.nextafter(high, np.inf), side="left"))
                first = max(0, min(below, int(used[0]) - 1))
                last = min(edges.size - 1, max(above, int(used[-1])))
                if first > 0 or last < edges.size - 1:
                    return Histogram(edges[first : last + 1], counts[first : last + 2].astype(np.float64), low, high)
        return Histogram(edges, counts.astype(np.float64), low, high)

    def _edges_of(self, position: int) -> np.ndarray:
        """`live_edges`, computed once per feature (every closing window asks), read-only."""
        cached = self._edges.get(position)
        if cached is None:
            cached = self._edges[position] = self.live_edges(position)
            cached.flags.writeable = False
        return cached


def bin_values(grid: FeatureGrid, rows: Sequence[np.ndarray]) -> np.ndarray:
    """Counts of many rows at once (tests, benchmarks): shape (features, columns)."""
    counts = np.zeros((len(grid.names), grid.columns), dtype=np.int64)
    for values in rows:
        column = grid.columns_of(values)
        used = column >= 0
        np.add.at(counts, (grid.rows[used], column[used]), 1)
    return counts
