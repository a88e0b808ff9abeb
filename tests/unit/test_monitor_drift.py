"""Golden fixtures of the monitor's drift figures (`services/monitor/domain/drift.py`).

Each figure is computed by the monitor from histograms only: the reference as the trainer saves it
(`services/trainer/domain/profile.py`, 1,000 bins) and the live window binned on its edges. The expected values
come from the raw samples that built those histograms: SciPy's `ks_2samp`, `jensenshannon` and
`wasserstein_distance`, and Evidently's PSI recipe written out below (Evidently itself pins pandas < 3 and cannot
be installed next to Michi). Tolerances:

- PSI within 0.005 of Evidently's (the issue's acceptance figure for 1,000 bins; over 40 seeds of each case
  the worst was 0.0022) where Evidently's is below 1; above 1 (a window far outside the training range) only
  above 1 too, see the test;
- Jensen-Shannon distance within 0.005 of SciPy's on Evidently's Sturges shares of the raw samples;
- Wasserstein / reference std within 0.01 (relative 2 %) of SciPy's on the raw samples;
- KS statistic within 0.005 of `ks_2samp`'s (binning moves the CDF by at most one bin's mass, ~0.1 %).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp, wasserstein_distance

from services.monitor.domain.drift import (
    DRIFT,
    INSUFFICIENT_DATA,
    OK,
    feature_drift,
    jensen_shannon,
    kolmogorov_smirnov,
    psi,
    wasserstein,
)
from services.monitor.domain.profiles import FeatureGrid, bin_values, read_profile
from services.trainer.domain.profile import histogram

REFERENCE_ROWS = 50_000
WINDOW_ROWS = 2_000


def evidently_shares(reference: np.ndarray, current: np.ndarray, *, fill: bool) -> tuple[np.ndarray, np.ndarray]:
    """Evidently's `get_binned_data` for a numerical column with more than 20 distinct values."""
    edges = np.histogram_bin_edges(np.concatenate([reference, current]), bins="sturges")
    reference_shares = np.histogram(reference, edges)[0] / len(reference)
    current_shares = np.histogram(current, edges)[0] / len(current)
    if fill:
        for shares in (reference_shares, current_shares):
            smallest = shares[shares != 0].min()
            np.place(shares, shares == 0, smallest / 10**6 if smallest <= 0.0001 else 0.0001)
    return reference_shares, current_shares


def evidently_psi(reference: np.ndarray, current: np.ndarray) -> float:
    reference_shares, current_shares = evidently_shares(reference, current, fill=True)
    return float(np.sum((reference_shares - current_shares) * np.log(reference_shares / current_shares)))


def histograms(reference: np.ndarray, current: np.ndarray):  # type: ignore[no-untyped-def]
    """The reference as the trainer profiles it and the window as the monitor bins it."""
    profile = read_profile({"version": "reference-profile-2", "features": {"x": histogram(reference)}})
    grid = FeatureGrid(profile)
    counts = np.zeros(grid.columns)
    np.add.at(counts, grid.columns_of(current[:, None].astype(np.float64)).ravel(), 1)
    live = grid.histogram(0, counts, float(current.min()), float(current.max()))
    return profile.features[0].histogram, live, profile.features[0].std


def _samples(name: str, rows: int, random: np.random.Generator) -> np.ndarray:
    if name == "normal":
        return random.normal(0.0, 1.0, rows)
    if name == "shifted":
        return random.normal(0.6, 1.0, rows)
    if name == "scaled":  # a firmware scaling its accelerometer by 1.3
        return random.normal(0.0, 1.3, rows)
    if name == "skewed":
        return random.lognormal(0.0, 0.7, rows)
    if name == "skewed-shifted":
        return random.lognormal(0.3, 0.7, rows)
    if name == "wider":  # values far outside the reference's range (its overflow)
        return random.normal(1.5, 2.0, rows)
    raise AssertionError(name)


CASES = [
    ("normal", "normal"),
    ("normal", "shifted"),
    ("normal", "scaled"),
    ("normal", "wider"),
    ("skewed", "skewed"),
    ("skewed", "skewed-shifted"),
]


@pytest.mark.parametrize(("reference_kind", "current_kind"), CASES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_figures_match_evidently_and_scipy_on_the_raw_samples(
    reference_kind: str, current_kind: str, seed: int
) -> None:
    random = np.random.default_rng(seed)
    reference = _samples(reference_kind, REFERENCE_ROWS, random)
    current = _samples(current_kind, WINDOW_ROWS, random)
    reference_histogram, live, reference_std = histograms(reference, current)

    expected_psi = evidently_psi(reference, current)
    if expected_psi < 1.0:
        assert psi(reference_histogram, live) == pytest.approx(expected_psi, abs=0.005)
    else:
        # Far beyond any threshold Evidently's own figure jumps by up to ~1 with whether a single reference row
        # falls into a far bin (filled 1e-4 when empty): the same verdict is what can be asked for there.
        assert psi(reference_histogram, live) > 1.0
    expected_js = jensenshannon(*evidently_shares(reference, current, fill=False))
    assert jensen_shannon(reference_histogram, live) == pytest.approx(expected_js, abs=0.005)
    expected_wasserstein = wasserstein_distance(reference, current) / np.std(reference)
    assert wasserstein(reference_histogram, live, reference_std) == pytest.approx(
        expected_wasserstein, abs=0.01, rel=0.02
    )
    statistic, p_value = kolmogorov_smirnov(reference_histogram, live)
    expected = ks_2samp(reference, current)
    assert statistic == pytest.approx(expected.statistic, abs=0.005)
    # The p-value is the asymptotic one: same verdict at 5 %, close where it matters.
    assert (p_value < 0.05) == (expected.pvalue < 0.05) or abs(p_value - expected.pvalue) < 0.02


def test_a_shift_is_drift_and_no_shift_is_not() -> None:
    random = np.random.default_rng(7)
    reference = random.normal(0.0, 1.0, REFERENCE_ROWS)
    same, _, std = histograms(reference, random.normal(0.0, 1.0, WINDOW_ROWS))
    _, live_same, _ = histograms(reference, random.normal(0.0, 1.0, WINDOW_ROWS))
    _, live_shifted, _ = histograms(reference, random.normal(1.0, 1.0, WINDOW_ROWS))
    quiet = feature_drift("x", same, live_same, reference_std=std, psi_threshold=0.2)
    loud = feature_drift("x", same, live_shifted, reference_std=std, psi_threshold=0.2)
    assert quiet.status == OK and quiet.psi < 0.05
    assert loud.status == DRIFT and loud.psi > 0.5


def test_a_window_under_the_minimum_reports_insufficient_data_never_drift() -> None:
    random = np.random.default_rng(8)
    reference = random.normal(0.0, 1.0, REFERENCE_ROWS)
    reference_histogram, live, std = histograms(reference, random.normal(3.0, 1.0, 999))
    result = feature_drift("x", reference_histogram, live, reference_std=std, psi_threshold=0.2, min_rows=1000)
    assert result.status == INSUFFICIENT_DATA and result.rows == 999
    assert math.isnan(result.psi)


def test_a_few_valued_feature_is_compared_as_categories() -> None:
    """gps_available (0/1): Evidently compares a column of <= 20 distinct values per value, without Sturges."""
    random = np.random.default_rng(9)
    reference = (random.random(REFERENCE_ROWS) < 0.9).astype(np.float64)
    current = (random.random(WINDOW_ROWS) < 0.6).astype(np.float64)
    reference_histogram, live, _ = histograms(reference, current)
    shares_reference = np.array([np.mean(reference == 0), np.mean(reference == 1)])
    shares_current = np.array([np.mean(current == 0), np.mean(current == 1)])
    expected = float(np.sum((shares_reference - shares_current) * np.log(shares_reference / shares_current)))
    assert psi(reference_histogram, live) == pytest.approx(expected, abs=1e-9)


def test_a_low_resolution_profile_is_read_and_marked() -> None:
    old = {
        "version": "reference-profile-1",
        "features": {
            "x": {"edges": list(np.linspace(-2.5, 2.5, 21)), "counts": [5] + [45] * 20 + [5], "count": 910, "std": 1.0}
        },
    }
    profile = read_profile(old)
    assert profile.low_resolution and not profile.last_bin_closed
    grid = FeatureGrid(profile)
    # Profile 1: a value on the last edge is overflow; profile 2: the last bin holds it.
    assert grid.columns_of(np.array([2.5, 2.4999]))[0:2].tolist() == [161, 160]
    new = read_profile({"version": "reference-profile-2", "features": {"x": histogram(np.linspace(0, 1, 5000))}})
    assert not new.low_resolution
    grid = FeatureGrid(new)
    assert grid.columns_of(np.array([0.0, 1.0, 1.0 + 1e-9, -1e-9, 5.0, -5.0, math.nan])).tolist() == [
        4001,  # the first of the profile's bins (4 live bins each)
        8000,  # the last, closed
        8001,  # just beyond: the extension above
        4000,  # just below: the extension below
        12001,  # beyond the extension
        0,
        -1,
    ]


def test_a_constant_training_feature_on_a_profile_edge_shows_no_drift_when_it_stays_constant() -> None:
    """gps_available is 1 in every training window: its profile puts 1.0 exactly on an edge (0.5..1.5), and live
    1.0s must fall in the same bin as the reference's, whatever the division's last bit says."""
    profile = read_profile(
        {
            "version": "reference-profile-2",
            "data_version": "ds",
            "features": {"gps_available": histogram(np.ones(5000)), "flag": histogram(np.full(5000, 3.0))},
        }
    )
    grid = FeatureGrid(profile)
    counts = bin_values(grid, [grid.values_of({"gps_available": 1.0, "flag": 3.0})] * 2000)
    for position, feature in enumerate(profile.features):
        current = grid.histogram(position, counts[position], feature.histogram.low, feature.histogram.high)
        result = feature_drift(feature.name, feature.histogram, current, reference_std=0.0, psi_threshold=0.2)
        assert result.psi < 1e-6, (feature.name, result.psi)


def test_a_constant_training_feature_that_changes_in_part_has_evidentlys_figure() -> None:
    """GPS lost on 10 % of the windows of a fleet whose training windows all had it: the live window's largest value
    lies on the profile edge (1.0) and stays in the reference's bin; PSI per value as Evidently computes it."""
    profile = read_profile(
        {
            "version": "reference-profile-2",
            "data_version": "ds",
            "features": {"gps_available": histogram(np.ones(9000))},
        }
    )
    grid = FeatureGrid(profile)
    counts = bin_values(grid, [grid.values_of({"gps_available": 0.0 if i % 10 == 0 else 1.0}) for i in range(2000)])
    current = grid.histogram(0, counts[0], 0.0, 1.0)
    result = feature_drift(
        "gps_available", profile.features[0].histogram, current, reference_std=0.0, psi_threshold=0.2
    )
    # Reference {0: empty, filled with 1e-4; 1: 1.0}, current {0: 0.1, 1: 0.9}.
    expected = (1e-4 - 0.1) * math.log(1e-4 / 0.1) + (1.0 - 0.9) * math.log(1.0 / 0.9)
    assert result.psi == pytest.approx(expected, abs=1e-3)
