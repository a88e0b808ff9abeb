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

`FeatureGrid` bins a batch of rows of every feature at once: equal-width bins make a bin's index arithmetic, so
one value costs a few arithmetic steps and one look-up of an edge, whatever the number of bins, in one compiled
pass that also counts it (`binning_kernel`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from michi.registry.layout import REFERENCE_PROFILE_VERSION
from michi.windows.features import FEATURE_INDEX
from services.monitor.domain import binning_kernel
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
# A feature whose live edges lie further than this from the equal-width line (in columns, the arithmetic's own
# rounding included) is binned by search: the arithmetic's nearest edge must be the value's nearest edge (`binning_kernel`).
REGULAR_TOLERANCE = 0.25


class FeatureGrid:
    """Bins rows of the profile's features on its edges, each bin cut in `subdivisions`, extended by a training
    range of such bins on each side.

    Live values outside the training range are common under drift; the extension keeps their shape (one
    training range below and one above) instead of an open-ended bucket. Row i of a window's `counts`:
    column 0 below the extension, then `3 * bins` bins (extension, the profile's own bins, extension), then
    the last column beyond the extension.

    A value's column is found in two steps, compiled (`ColumnBinning`, `binning_kernel`): arithmetic
    on the equal-width grid gives the live edge nearest to it (every edge lies within `REGULAR_TOLERANCE` of a
    column of the line, so the value lies between that edge's two neighbours), then one comparison with that
    edge of `table` says on which side of it the value lies. `table` holds every column's edges, the profile's
    own among them bit for bit, so a value on a profile edge (a constant feature such as gps_available sits
    exactly on one) is counted in the bin numpy.histogram counted it in, and the profile's closed last bin
    keeps its maximum as numpy's does. Features whose edges are not that regular (never the trainer's) are
    binned by a binary search of the same table.
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
        # Features whose edges are not equal-width enough for the arithmetic (never from the trainer): binned by
        # search instead.
        self.irregular: list[int] = []
        # Per feature, whether float32 arithmetic finds its values' nearest edges too (`binning_kernel`).
        self.single_precision = np.zeros(len(self.names), dtype=bool)
        for position in range(len(self.names)):
            edges = self.live_edges(position)
            bins = int(self.bins[position])
            if self.last_bin_closed:
                edges[2 * bins] = np.nextafter(edges[2 * bins], np.inf)
            self.table[position, 0] = -np.inf
            self.table[position, 1 : edges.size + 1] = edges
            if not self._regular(position, edges, np.float64):
                self.irregular.append(position)
            self.single_precision[position] = self._regular(position, edges, np.float32)
        # Slot of (feature, column) in a window's flattened counts; `self.unused` collects what is not counted.
        self.offsets = self.rows * self.columns
        self.unused = len(self.names) * self.columns
        # Live edge k of feature f at f * columns + k (the lower edge of the column after it, at that column's slot),
        # and past them one +inf for the columns of no feature (slot `unused`).
        self.flat_edges = np.append(self.table[:, 1:].ravel(), np.inf)
        # The same edges rounded up to float32: for a float32 value v, v >= edge exactly when v >= the rounded edge
        # (no float32 lies between an edge and its rounding up).
        self.flat_edges_single = self.flat_edges.astype(np.float32)
        below = self.flat_edges_single.astype(np.float64) < self.flat_edges
        self.flat_edges_single[below] = np.nextafter(self.flat_edges_single[below], np.float32(np.inf))
        self._binnings: dict[int | None, ColumnBinning] = {}
        # Positions of the grid's features in `FEATURE_NAMES` (what `Prediction.packed_features` packs), -1: none.
        self.packed_positions = np.array([FEATURE_INDEX.get(name, -1) for name in self.names], dtype=np.int64)
        self._edges: dict[int, np.ndarray] = {}
        self.in_packed_order = bool(np.array_equal(self.packed_positions, self.rows))
        # Packed columns the grid reads: the rest of a longer row is never binned (`RowBatch`), so a producer's
        # widths make at most this many binnings.
        self.packed_columns = int(self.packed_positions.max(initial=-1)) + 1

    def _regular(self, position: int, edges: np.ndarray, precision: type[np.floating[Any]]) -> bool:
        """Whether feature `position`'s live `edges` lie within `REGULAR_TOLERANCE` columns of the equal-width line,
        the rounding of the arithmetic that finds a value's nearest edge (`binning_kernel`) in `precision`
        included."""
        width, origin = float(self.widths[position]), float(self.origins[position])
        limit = float(np.finfo(precision).max)
        if not (math.isfinite(width) and width > 0 and abs(float(self.inverses[position])) < limit):
            return False
        arithmetic = origin + np.arange(edges.size) * width
        drift = float(np.max(np.abs(edges - arithmetic))) / width
        # value x inverse width - shift, the shift holding the feature's slot offset: each rounding is within half
        # a unit in the last place of numbers up to value / width (on the grid), origin / width and the offset.
        largest = 3.0 * max(abs(origin), abs(float(edges[-1]))) / width + 2.0 * self.columns * len(self.names) + 2.0
        return largest < limit and drift + largest * float(np.finfo(precision).eps) <= REGULAR_TOLERANCE

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

    def binning(self, width: int | None = None) -> ColumnBinning:
        """How to bin rows of `width` values in `FEATURE_NAMES` order (what `packed_features` packs), or (None) rows
        in the grid's order (`values_of`)."""
        binning = self._binnings.get(width)
        if binning is None:
            if width is None:
                features = self.rows
            else:
                features = np.full(width, -1, dtype=np.int64)
                present = (self.packed_positions >= 0) & (self.packed_positions < width)
                features[self.packed_positions[present]] = self.rows[present]
            binning = self._binnings[width] = ColumnBinning(self, features)
        return binning

    def slots_of(self, values: np.ndarray) -> np.ndarray:
        """Each value's slot in a window's flattened `counts` (`feature * columns + column`), `self.unused`
        where it is not finite. `values`: one row (features,) or a batch (rows, features), in grid order."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1:  # a row, or (a grid of one feature) that feature's values
            return self.binning().slots(values.reshape(-1, len(self.names))).reshape(values.shape)
        return self.binning().slots(values)

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


# What `ColumnBinning.count` hands the kernel for the slots it does not write.
_NO_SLOTS = np.zeros((0, 0), dtype=np.int64)


class ColumnBinning:
    """Bins rows of a batch whose columns are a grid's features in some order (`FeatureGrid.binning`): column j
    holds feature `features[j]` (-1: none of the grid's, never counted).

    The binning itself is compiled (`binning_kernel`): per value, position = value x inverse width - shift,
    clamped to its feature's edges and truncated, is the slot of the column below the value's nearest live edge;
    one more if the value is at or above that edge (one look-up in the grid's edges). Float32 rows
    (`packed_features`) are binned in float32 when every feature's edges allow (`FeatureGrid.single_precision`:
    the trainer's do), without a float64 copy: the comparison with an edge rounded up to float32 is exact for a
    float32 value. Irregular features are searched in the grid's `table`.
    """

    def __init__(self, grid: FeatureGrid, features: np.ndarray) -> None:
        self.grid = grid
        self.features = features
        self.width = int(features.size)
        present = features >= 0
        # Per grid feature, its column (-1: the rows have none).
        self.columns = np.full(len(grid.names), -1, dtype=np.int64)
        self.columns[features[present]] = np.flatnonzero(present)
        self.complete = bool((self.columns >= 0).all())
        # Per column, the irregular feature it holds (binned by search), else -1.
        searched = np.full(self.width, -1, dtype=np.int64)
        for feature in grid.irregular:
            if self.columns[feature] >= 0:
                searched[self.columns[feature]] = feature
        regular = present & (searched < 0)
        of = np.where(present, features, 0)
        offsets = np.where(present, grid.offsets[of], grid.unused).astype(np.float64)
        # value x scale - shift = (value - origin) / width + 0.5 + offset: the nearest edge's position + 0.5. A
        # column of no feature (or an irregular one, binned by search) gets its offset whatever its value.
        scales = np.where(regular, grid.inverses[of], 0.0)
        shifts = np.where(regular, grid.origins[of] * grid.inverses[of], 0.0) - 0.5 - offsets
        highest = np.where(present, offsets + 3.0 * grid.bins[of], offsets)
        table, feature_offsets = grid.table, grid.offsets.astype(np.int64)
        self._constants: dict[type[np.floating[Any]], tuple[Any, ...]] = {
            np.float64: (
                searched,
                scales,
                shifts,
                offsets,
                highest,
                grid.flat_edges,
                table,
                feature_offsets,
                grid.unused,
            )
        }
        if bool(np.all(grid.single_precision[of] | ~regular)):
            single = tuple(constant.astype(np.float32) for constant in (scales, shifts, offsets, highest))
            self._constants[np.float32] = (
                searched,
                *single,
                grid.flat_edges_single,
                table,
                feature_offsets,
                grid.unused,
            )

    def _prepared(self, values: np.ndarray) -> tuple[np.ndarray, tuple[Any, ...]]:
        """`values` as the kernel bins them (C-ordered, float32 when its edges allow, else float64) and the
        constants of that precision."""
        precision = np.float32 if values.dtype == np.float32 and np.float32 in self._constants else np.float64
        return np.ascontiguousarray(values, dtype=precision), self._constants[precision]

    def slots(self, values: np.ndarray) -> np.ndarray:
        """Each value's slot in a window's flattened `counts`, `grid.unused` where it is not finite or its column no
        feature; `values` (rows, width), float32 or float64."""
        values, constants = self._prepared(values)
        slots = np.empty(values.shape, dtype=np.int64)
        rows = np.arange(values.shape[0])
        binning_kernel.bin_rows(values, rows, *constants, np.zeros(0, dtype=np.int64), slots)
        return slots

    def count(self, values: np.ndarray, rows: np.ndarray | None, counts: np.ndarray) -> None:
        """Add 1 to a window's flattened `counts` (int64, `grid.unused` + 1 long) at the slot of every value of
        `values` (rows, width) at `rows` (indexes, None: all), binned and counted in one pass."""
        values, constants = self._prepared(values)
        if rows is None:
            rows = np.arange(values.shape[0])
        binning_kernel.bin_rows(values, np.asarray(rows, dtype=np.int64), *constants, counts, _NO_SLOTS)

    def extremes(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per grid feature, the smallest and largest finite value of `values` (rows, width) (NaN where none)."""
        lows, highs = column_extremes(values)
        if self.complete:
            return lows[self.columns], highs[self.columns]
        present = self.columns >= 0
        features = len(self.grid.names)
        grid_lows, grid_highs = np.full(features, np.nan), np.full(features, np.nan)
        grid_lows[present], grid_highs[present] = lows[self.columns[present]], highs[self.columns[present]]
        return grid_lows, grid_highs

    def in_grid_order(self, array: np.ndarray, missing: float) -> np.ndarray:
        """Rows of this binning's columns (values or slots) in the grid's columns, `missing` where they have none."""
        if self.complete and self.width == len(self.grid.names):
            return array.take(self.columns, axis=1)
        present = self.columns >= 0
        result = np.full((array.shape[0], len(self.grid.names)), missing, dtype=array.dtype)
        result[:, present] = array[:, self.columns[present]]
        return result


# Rows folded into this many per step of `column_extremes` (numpy reduces along the first axis of a C-ordered
# array one row at a time: fewer, longer rows make it ~5x faster).
_FOLD = 20


def _reduce_rows(function: np.ufunc, values: np.ndarray) -> np.ndarray:
    count, width = values.shape
    whole = count - count % _FOLD
    if whole == 0:
        return function.reduce(values, axis=0)  # type: ignore[no-any-return]
    folded = function.reduce(values[:whole].reshape(whole // _FOLD, _FOLD * width), axis=0).reshape(_FOLD, width)
    if whole < count:
        folded = np.concatenate((folded, values[whole:]))
    return function.reduce(folded, axis=0)  # type: ignore[no-any-return]


def column_extremes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of `values` (rows, columns; C-ordered), its smallest and largest finite value (NaN where it has
    none)."""
    if values.shape[0] == 0:
        return np.full(values.shape[1], np.nan), np.full(values.shape[1], np.nan)
    lows, highs = _reduce_rows(np.minimum, values), _reduce_rows(np.maximum, values)
    # A NaN carries through minimum and maximum, an infinity is one of them: finite extremes mean finite values
    # (their sum is not finite if either is not, or, rarely, if it overflows: then the values are looked at).
    if np.isfinite(np.add(lows, highs)).all():
        return lows, highs
    finite = np.where(np.isfinite(values), values, np.nan)
    return _reduce_rows(np.fmin, finite), _reduce_rows(np.fmax, finite)


def bin_values(grid: FeatureGrid, rows: Sequence[np.ndarray]) -> np.ndarray:
    """Counts of many rows at once (tests, benchmarks): shape (features, columns)."""
    counts = np.zeros((len(grid.names), grid.columns), dtype=np.int64)
    for values in rows:
        column = grid.columns_of(values)
        used = column >= 0
        np.add.at(counts, (grid.rows[used], column[used]), 1)
    return counts
