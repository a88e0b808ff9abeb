"""The monitor's ADWIN (`services/monitor/domain/adwin.py`): the same as river's, and the issue's acceptance figures.

- Golden: river's `river.drift.ADWIN` (pinned in constraints.txt, a test-only dependency) and `Adwin` take the same
  seeded Bernoulli and Gaussian streams, with and without change points; they must detect changes at the same
  updates and agree on `width` (exactly) and on `estimation` and the window's variance (within 1e-9) after every
  update.
- Acceptance (issue 17): a Bernoulli error stream at 10 % switching to 15 % after 5,000 labels is detected a median
  of at most 2,000 labels after the step, and a stream without a step raises at most 0.05 false alarms per 5,000
  labels. The measured figures are printed (`pytest -s`).
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
import pytest

from services.monitor.domain.adwin import Adwin


def bernoulli(rng: np.random.Generator, segments: list[tuple[int, float]]) -> list[float]:
    """0.0/1.0 values: for each (length, probability) segment, `length` draws that are 1.0 with that probability."""
    return np.concatenate([rng.random(length) < probability for length, probability in segments]).astype(float).tolist()


def gaussian(rng: np.random.Generator, segments: list[tuple[int, float, float]]) -> list[float]:
    """Normal values: for each (length, mean, standard deviation) segment, `length` draws."""
    return np.concatenate([rng.normal(mean, deviation, length) for length, mean, deviation in segments]).tolist()


# name: (stream, ADWIN's keyword arguments, whether the stream has a change point ADWIN must find).
GOLDEN_STREAMS: dict[str, tuple[list[float], dict[str, Any], bool]] = {
    "bernoulli-steady": (bernoulli(np.random.default_rng(1), [(10_000, 0.10)]), {}, False),
    "bernoulli-step": (bernoulli(np.random.default_rng(2), [(5_000, 0.10), (5_000, 0.15)]), {}, True),
    "bernoulli-steps": (
        bernoulli(np.random.default_rng(3), [(3_000, 0.5), (3_000, 0.1), (3_000, 0.9), (3_000, 0.3)]),
        {},
        True,
    ),
    "gaussian-steady": (gaussian(np.random.default_rng(4), [(10_000, 0.0, 1.0)]), {}, False),
    "gaussian-steps": (
        gaussian(np.random.default_rng(5), [(4_000, 0.0, 1.0), (4_000, 0.5, 1.0), (4_000, -1.0, 3.0)]),
        {},
        True,
    ),
    "gaussian-large-values": (
        gaussian(np.random.default_rng(6), [(3_000, 1_000.0, 50.0), (3_000, 1_010.0, 50.0)]),
        {},
        True,
    ),
    "bernoulli-other-parameters": (
        bernoulli(np.random.default_rng(7), [(1_500, 0.2), (1_500, 0.5)]),
        {"delta": 0.01, "clock": 1, "max_buckets": 3, "min_window_length": 10, "grace_period": 50},
        True,
    ),
}


@pytest.mark.parametrize("name", list(GOLDEN_STREAMS))
def test_adwin_matches_river(name: str) -> None:
    river_drift = pytest.importorskip("river.drift")
    stream, parameters, has_change = GOLDEN_STREAMS[name]
    ours = Adwin(**parameters)
    reference = river_drift.ADWIN(**parameters)
    count = len(stream)
    our_detections, our_widths = np.zeros(count, dtype=bool), np.zeros(count)
    our_estimations, our_variances = np.zeros(count), np.zeros(count)
    river_detections, river_widths = np.zeros(count, dtype=bool), np.zeros(count)
    river_estimations, river_variances = np.zeros(count), np.zeros(count)
    for index, value in enumerate(stream):
        our_detections[index] = ours.update(value)
        our_widths[index] = ours.width
        our_estimations[index] = ours.estimation
        our_variances[index] = ours.variance
        reference.update(value)
        river_detections[index] = reference.drift_detected
        river_widths[index] = reference.width
        river_estimations[index] = reference.estimation
        # river's `variance` is the window's sum of squared deviations.
        river_variances[index] = reference.variance / reference.width

    assert np.flatnonzero(our_detections).tolist() == np.flatnonzero(river_detections).tolist()
    mismatched = np.flatnonzero(our_widths != river_widths)
    assert mismatched.size == 0, f"width differs first at update {mismatched[0]}"
    np.testing.assert_allclose(our_estimations, river_estimations, rtol=0.0, atol=1e-9)
    np.testing.assert_allclose(our_variances, river_variances, rtol=1e-12, atol=1e-9)
    assert ours.drifts == int(our_detections.sum())
    assert ours.total == count
    # A stream with a change point that neither detector flags would make the comparison above empty.
    assert bool(our_detections.any()) == has_change


def test_adwin_restarts_its_window_after_a_change() -> None:
    detector = Adwin()
    values = [0.0] * 1_000 + [1.0] * 100
    detections = [index for index, value in enumerate(values) if detector.update(value)]
    assert detections == [1_023]
    assert detector.drifts == 1
    # The detection cut the window down to the newest values; the next update started a new window.
    assert detector.width == 1_100 - 1_024
    assert detector.estimation == 1.0
    assert detector.variance == 0.0
    assert detector.total == 1_100


def test_adwin_refuses_non_finite_values_and_bad_parameters() -> None:
    with pytest.raises(ValueError, match="finite"):
        Adwin().update(float("nan"))
    with pytest.raises(ValueError, match="delta"):
        Adwin(delta=1.5)
    with pytest.raises(ValueError, match="clock"):
        Adwin(clock=0)


BURN_IN = 5_000
AFTER_STEP = 10_000
STEP_RUNS = 200
STEADY_STREAMS = 40
STEADY_LENGTH = 50_000
BLOCK = 5_000


def test_adwin_acceptance_delay_and_false_alarms() -> None:
    rng = np.random.default_rng(20170)
    delays: list[float] = []
    false_alarms = 0
    for _ in range(STEP_RUNS):
        detector = Adwin()
        stream = bernoulli(rng, [(BURN_IN, 0.10), (AFTER_STEP, 0.15)])
        delay = float("inf")
        for index, value in enumerate(stream):
            if detector.update(value):
                if index < BURN_IN:
                    false_alarms += 1
                else:
                    delay = float(index - BURN_IN + 1)
                    break
        delays.append(delay)
    # The monitor runs one detector per model version for as long as labels come: long steady streams too.
    for _ in range(STEADY_STREAMS):
        detector = Adwin()
        false_alarms += sum(detector.update(value) for value in bernoulli(rng, [(STEADY_LENGTH, 0.10)]))

    median_delay = statistics.median(delays)
    missed = sum(delay == float("inf") for delay in delays)
    steady_labels = STEP_RUNS * BURN_IN + STEADY_STREAMS * STEADY_LENGTH
    false_alarms_per_block = false_alarms / (steady_labels / BLOCK)
    print(
        f"\nADWIN 10 % -> 15 % step after {BURN_IN:,} labels, {STEP_RUNS} runs: median delay {median_delay:,.0f} labels, "
        f"90th percentile {np.percentile(delays, 90):,.0f}, missed within {AFTER_STEP:,}: {missed}; "
        f"{false_alarms} false alarms in {steady_labels:,} labels without a step = "
        f"{false_alarms_per_block:.4f} per {BLOCK:,}"
    )
    assert median_delay <= 2_000
    assert false_alarms_per_block <= 0.05
