"""Data drift of one feature: a live window's histogram against the model's reference histogram.

Pure numpy over histograms, O(bins) per comparison: no raw rows are ever held. A histogram is counts on
fixed equal-width edges (the reference profile's, `services/trainer/domain/profile.py`) plus an underflow
and an overflow count, and the smallest and largest value seen; inside each bin (and across the open-ended
under- and overflow, between the extreme and the nearest edge) values are taken as spread evenly. So each
histogram is a piecewise-linear cumulative distribution, and every metric below is computed from those:

- `psi`: the Population Stability Index with Evidently's recipe (`get_binned_data` of its PSI stattest):
  both histograms re-binned to Sturges bins over the combined range (`numpy.histogram_bin_edges(...,
  "sturges")` of reference and current together: ceil(log2(n) + 1) equal bins, n the rows of both), each
  turned into shares, empty bins filled (see `fill_empty`), PSI = sum((p_ref - p_cur) * ln(p_ref / p_cur)).
  A feature whose reference has at most `CATEGORICAL_MAX_VALUES` non-empty bins (gps_available, the sample
  rate) is compared on those bins instead, as Evidently compares a column with that few distinct values.
- `jensen_shannon`: the Jensen-Shannon distance (natural log, as `scipy.spatial.distance.jensenshannon` and
  Evidently's stattest) of the same re-binned shares, without the filling.
- `wasserstein`: the Wasserstein-1 distance between the two distributions, integrated exactly over the
  piecewise-linear CDFs, divided by the reference's standard deviation (Evidently's `wasserstein` stattest).
- `kolmogorov_smirnov`: the largest distance between the two CDFs, and its asymptotic p-value.

A window with fewer rows than a minimum (`MIN_ROWS` by default) reports `INSUFFICIENT_DATA`, never drift:
with no drift at all, PSI >= 0.1 fires in three of four 100-row windows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

# The documented minimum of rows a window needs before any of its figures are judged.
MIN_ROWS = 1000
# Evidently (0.7) compares a numerical column with at most this many distinct values as categories (measured:
# `benchmarks/monitor.py` against Evidently 0.7.23, a feature of 28 values is binned as a number).
CATEGORICAL_MAX_VALUES = 20
# Share given to an empty bin (Evidently: 1e-4, or the smallest non-empty share / 1e6 when that is smaller).
EMPTY_SHARE = 1e-4

OK = "ok"
DRIFT = "drift"
INSUFFICIENT_DATA = "insufficient-data"
# Bins of the histograms shown to people (`display_shares`).
DISPLAY_BINS = 30


@dataclass(frozen=True)
class Histogram:
    """`counts` has len(edges) + 1 entries: below edges[0], each bin, beyond edges[-1]; `low`/`high` the extremes."""

    edges: np.ndarray
    counts: np.ndarray
    low: float
    high: float

    @cached_property
    def total(self) -> float:
        return float(self.counts.sum())

    def cdf_knots(self) -> tuple[np.ndarray, np.ndarray]:
        """The knots (x, cumulative count) of the piecewise-linear CDF, x non-decreasing (computed once: every
        figure of a window asks for them, and a reference histogram serves every window of its model)."""
        return self._knots

    @cached_property
    def _knots(self) -> tuple[np.ndarray, np.ndarray]:
        """`cdf_knots`, computed.

        Nothing lies below `low` or above `high`: the bins holding the extremes are cut there, and the
        under- and overflow spread between the extreme and the nearest edge. The cut above is one float past
        `high`, so a largest value that lies on an edge stays in the bin above that edge, where numpy.histogram
        counted it (cut at `high` itself, that bin would shrink to the edge and its mass be read below it).
        """
        low, high = min(self.low, float(self.edges[0])), max(self.high, float(self.edges[-1]))
        if self.total > 0 and self.high >= self.low:
            low, high = self.low, float(np.nextafter(self.high, np.inf))
        x = np.clip(np.concatenate(([low], self.edges, [high])), low, high)
        y = np.concatenate(([0.0], np.cumsum(self.counts.astype(np.float64))))
        return x, y


def cumulative(histogram: Histogram, at: np.ndarray) -> np.ndarray:
    """The histogram's cumulative count at each of `at`."""
    x, y = histogram.cdf_knots()
    return np.interp(at, x, y)


def rebin(histogram: Histogram, edges: np.ndarray) -> np.ndarray:
    """Counts on `edges` (which span every value), each bin's mass split by overlap."""
    return np.diff(cumulative(histogram, edges))


def on_grid(histogram: Histogram, edges: np.ndarray) -> np.ndarray:
    """Counts below `edges[0]`, in each bin of `edges`, and beyond `edges[-1]` (exact when the bins align)."""
    at = cumulative(histogram, edges)
    return np.concatenate(([at[0]], np.diff(at), [histogram.total - at[-1]]))


def sturges_edges(low: float, high: float, rows: int) -> np.ndarray:
    """`numpy.histogram_bin_edges(values, "sturges")` of `rows` values from `low` to `high`, without the values."""
    if not high > low:
        low, high = low - 0.5, high + 0.5
        return np.linspace(low, high, 2)
    width = (high - low) / (math.log2(rows) + 1.0)
    bins = max(1, math.ceil((high - low) / width))
    return np.linspace(low, high, bins + 1)


def display_shares(reference: Histogram, current: Histogram, bins: int = DISPLAY_BINS) -> dict[str, list[float]]:
    """Reference and current shares on `bins` equal bins over their combined range, for people to compare
    (the monitor page's histograms): `edges` (bins + 1), `reference` and `current` (bins each, summing to 1)."""
    low, high = min(reference.low, current.low), max(reference.high, current.high)
    if not (math.isfinite(low) and math.isfinite(high)) or reference.total <= 0 or current.total <= 0:
        return {"edges": [], "reference": [], "current": []}
    if not high > low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    return {
        "edges": [round(edge, 6) for edge in edges.tolist()],
        "reference": [round(share, 6) for share in (rebin(reference, edges) / reference.total).tolist()],
        "current": [round(share, 6) for share in (rebin(current, edges) / current.total).tolist()],
    }


def fill_empty(shares: np.ndarray) -> np.ndarray:
    """Evidently's filling of empty bins: 1e-4, or the smallest non-empty share / 1e6 if that is <= 1e-4.

    1e-4 is what a bin of one row in 10,000 weighs; the smaller fill only when real bins are that light keeps
    an empty bin lighter than any real one. Either way a bin that empties out adds a large, finite term.
    """
    shares = shares.copy()
    nonzero = shares[shares > 0]
    if nonzero.size == 0:
        return shares
    smallest = float(nonzero.min())
    shares[shares == 0] = smallest / 1e6 if smallest <= EMPTY_SHARE else EMPTY_SHARE
    return shares


def categorical(reference: Histogram) -> bool:
    return int(np.count_nonzero(reference.counts)) <= CATEGORICAL_MAX_VALUES


def binned_shares(reference: Histogram, current: Histogram) -> tuple[np.ndarray, np.ndarray]:
    """Reference and current shares on the bins Evidently would use (before filling empty ones)."""
    if categorical(reference):
        # Each of the reference's bins (and its under- and overflow) is one category, where either has values.
        current_counts = on_grid(current, reference.edges)
        used = (reference.counts > 0) | (current_counts > 0)
        return reference.counts[used] / reference.total, current_counts[used] / current.total
    edges = sturges_edges(
        min(reference.low, current.low), max(reference.high, current.high), int(reference.total + current.total)
    )
    return rebin(reference, edges) / reference.total, rebin(current, edges) / current.total


def psi(reference: Histogram, current: Histogram) -> float:
    return stability_index(*binned_shares(reference, current))


def jensen_shannon(reference: Histogram, current: Histogram) -> float:
    return jensen_shannon_distance(*binned_shares(reference, current))


def stability_index(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI of two share vectors on the same bins, empty bins filled as Evidently fills them (`fill_empty`)."""
    reference, current = fill_empty(reference), fill_empty(current)
    return float(np.sum((reference - current) * np.log(reference / current)))


def jensen_shannon_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """The Jensen-Shannon distance (natural log, as SciPy's) of two count or share vectors on the same bins."""
    p, q = reference / reference.sum(), current / current.sum()
    m = (p + q) / 2.0

    def relative_entropy(a: np.ndarray) -> float:
        used = a > 0
        return float(np.sum(a[used] * np.log(a[used] / m[used])))

    return math.sqrt(max(0.0, (relative_entropy(p) + relative_entropy(q)) / 2.0))


def _union(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """`numpy.union1d` of two sorted arrays: a stable sort of the two runs merges them in linear time."""
    merged = np.concatenate((first, second))
    merged.sort(kind="stable")
    distinct = np.empty(merged.size, dtype=bool)
    distinct[:1] = True
    np.not_equal(merged[1:], merged[:-1], out=distinct[1:])
    return merged[distinct]


def _cdf_difference(reference: Histogram, current: Histogram) -> tuple[np.ndarray, np.ndarray]:
    """The union of both CDFs' knots and the difference of the two normalised CDFs there."""
    knots = _union(reference.cdf_knots()[0], current.cdf_knots()[0])
    difference = cumulative(reference, knots) / reference.total - cumulative(current, knots) / current.total
    return knots, difference


def wasserstein(
    reference: Histogram,
    current: Histogram,
    reference_std: float,
    cdf: tuple[np.ndarray, np.ndarray] | None = None,
) -> float:
    """The Wasserstein-1 distance divided by the reference's standard deviation (unscaled when that is 0). `cdf`:
    `_cdf_difference` of the two, when the caller has it already."""
    knots, difference = _cdf_difference(reference, current) if cdf is None else cdf
    widths = np.diff(knots)
    left, right = difference[:-1], difference[1:]
    magnitude = np.abs(left) + np.abs(right)
    # Between two knots the difference is linear: the area of |d|, split where it crosses zero (few segments).
    area = magnitude / 2.0
    crossing = np.flatnonzero(~(left * right >= 0))
    if crossing.size:
        ends = magnitude[crossing]
        area[crossing] = np.divide(
            left[crossing] ** 2 + right[crossing] ** 2, 2.0 * ends, out=np.zeros_like(ends), where=ends > 0
        )
    area *= widths
    distance = float(area.sum())
    return distance / reference_std if reference_std > 0 else distance


def kolmogorov_smirnov(
    reference: Histogram, current: Histogram, cdf: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[float, float]:
    """The KS statistic of the binned distributions and its asymptotic two-sample p-value (`cdf`: as `wasserstein`)."""
    _, difference = _cdf_difference(reference, current) if cdf is None else cdf
    statistic = float(np.max(np.abs(difference)))
    n, m = reference.total, current.total
    effective = math.sqrt(n * m / (n + m))
    return statistic, kolmogorov_p_value((effective + 0.12 + 0.11 / effective) * statistic)


def kolmogorov_p_value(scaled: float) -> float:
    """P(K > scaled) of the Kolmogorov distribution (Stephens' small-sample correction applied by the caller)."""
    if scaled < 0.2:
        return 1.0
    # The first 100 terms added in order, stopping once a term is under half a unit in the last place of the sum:
    # the terms shrink, so none after it could change the sum.
    total = 0.0
    for k in range(1, 101):
        term = (-1) ** (k - 1) * math.exp(-2.0 * k * k * scaled * scaled)
        if abs(term) < math.ulp(total) / 2.0:
            break
        total += term
    return float(min(1.0, max(0.0, 2.0 * total)))


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    status: str
    rows: int
    psi: float = math.nan
    jensen_shannon: float = math.nan
    wasserstein: float = math.nan
    ks_statistic: float = math.nan
    ks_p_value: float = math.nan


def feature_drift(
    feature: str,
    reference: Histogram,
    current: Histogram,
    *,
    reference_std: float,
    psi_threshold: float,
    min_rows: int = MIN_ROWS,
) -> FeatureDrift:
    """Every figure of one feature, and whether its PSI crossed `psi_threshold` (never under `min_rows`)."""
    rows = int(current.total)
    if rows < min_rows or reference.total <= 0:
        return FeatureDrift(feature, INSUFFICIENT_DATA, rows)
    shares = binned_shares(reference, current)  # PSI and Jensen-Shannon both read them
    index = stability_index(*shares)
    cdf = _cdf_difference(reference, current)  # KS and Wasserstein both read it
    statistic, p_value = kolmogorov_smirnov(reference, current, cdf)
    return FeatureDrift(
        feature,
        DRIFT if index >= psi_threshold else OK,
        rows,
        psi=index,
        jensen_shannon=jensen_shannon_distance(*shares),
        wasserstein=wasserstein(reference, current, reference_std, cdf),
        ks_statistic=statistic,
        ks_p_value=p_value,
    )


# A fleet's mix of vehicle types drifts when a chi-square test on its devices says so at this level.
MIX_P_VALUE = 1e-3


def chi_square_p_value(statistic: float, degrees: int) -> float:
    """P(X >= statistic) for X chi-square with `degrees` degrees of freedom: the regularized upper incomplete gamma
    function Q(degrees / 2, statistic / 2), by its series below a + 1 and its continued fraction above (as SciPy's
    `chi2.sf`, to 1e-10 relative, `tests/unit/test_monitor_traffic_profile.py`)."""
    if degrees <= 0 or statistic <= 0:
        return 1.0
    a, x = degrees / 2.0, statistic / 2.0
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:  # P(a, x) by its series; Q = 1 - P
        term = total = 1.0 / a
        shape = a
        for _ in range(1000):
            shape += 1.0
            term *= x / shape
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    # Q(a, x) by Lentz's continued fraction.
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    fraction = d
    for index in range(1, 1000):
        step = -index * (index - a)
        b += 2.0
        d = step * d + b
        d = tiny if abs(d) < tiny else d
        c = b + step / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        fraction *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return min(1.0, math.exp(log_prefix) * fraction)


def mix_drift(
    feature: str,
    devices: Mapping[str, int],
    shares: Mapping[str, float],
    *,
    min_devices: int,
    rows: int | None = None,
    min_rows: int = MIN_ROWS,
) -> FeatureDrift:
    """Whether a window's devices per value (of the values in `shares`, the traffic's share of devices per value)
    are a draw from the traffic's mix: a chi-square goodness-of-fit test on devices, not rows (a device's rows are
    one draw), drift when its p-value is under `MIX_P_VALUE`. PSI and Jensen-Shannon of the device shares give the
    size; `ks_p_value` holds the chi-square's p-value. Insufficient data under `min_devices` devices, and (given the
    window's `rows`) under `min_rows` rows, like every other figure of the window."""
    values = sorted(shares)
    observed = np.array([float(devices.get(value, 0)) for value in values])
    total = float(observed.sum())
    if total < min_devices or len(values) < 2 or (rows is not None and rows < min_rows):
        return FeatureDrift(feature, INSUFFICIENT_DATA, int(total))
    expected_shares = np.array([float(shares[value]) for value in values])
    expected_shares = expected_shares / expected_shares.sum()
    expected = total * expected_shares
    statistic = float(np.sum((observed - expected) ** 2 / np.maximum(expected, 1e-12)))
    p_value = chi_square_p_value(statistic, len(values) - 1)
    return FeatureDrift(
        feature,
        DRIFT if p_value < MIX_P_VALUE else OK,
        int(total),
        psi=stability_index(expected_shares, observed / total),
        jensen_shannon=jensen_shannon_distance(expected_shares, observed / total),
        ks_statistic=statistic,
        ks_p_value=p_value,
    )
