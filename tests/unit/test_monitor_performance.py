"""Performance without labels: confidence calibrated on random-QA labels, a window's expected accuracy and false-alert
rate, and the realised figures beside them."""

from __future__ import annotations

import numpy as np
import pytest

from services.monitor.domain.performance import (
    CONFIDENCE_BINS,
    MIN_CALIBRATION_LABELS,
    Calibration,
    RealisedPerformance,
    confidence_bin,
    expected_performance,
    isotonic,
    risky_call,
)

NORMAL, BRAKING = 1, 2


def test_isotonic_regression_pools_adjacent_violators() -> None:
    assert list(isotonic(np.array([0.1, 0.3, 0.2, 0.4]), np.array([1.0, 1.0, 1.0, 1.0]))) == pytest.approx(
        [0.1, 0.25, 0.25, 0.4]
    )
    # Weighted: the heavier bin pulls the pooled value.
    assert list(isotonic(np.array([0.5, 0.2]), np.array([3.0, 1.0]))) == pytest.approx([0.425, 0.425])
    assert list(isotonic(np.array([0.9, 0.5, 0.1]), np.ones(3))) == pytest.approx([0.5, 0.5, 0.5])


def test_an_overconfident_model_is_calibrated_down_and_a_window_expected_accordingly() -> None:
    random = np.random.default_rng(4)
    calibration = Calibration()
    # The model says 0.9 but is right 60 % of the time; says 0.55 and is right 50 %.
    for _ in range(400):
        calibration.add(0.92, bool(random.random() < 0.6))
        calibration.add(0.55, bool(random.random() < 0.5))
    curve, calibrated = calibration.curve()
    assert calibrated
    assert curve[confidence_bin(0.92)] == pytest.approx(0.6, abs=0.06)
    assert curve[confidence_bin(0.55)] == pytest.approx(0.5, abs=0.06)
    assert all(np.diff(curve) >= -1e-12)  # non-decreasing
    calls, alerts = np.zeros(CONFIDENCE_BINS), np.zeros(CONFIDENCE_BINS)
    calls[confidence_bin(0.92)] = 100
    alerts[confidence_bin(0.92)] = 40
    expected = expected_performance(calls, alerts, calibration)
    assert expected.accuracy == pytest.approx(0.6, abs=0.06)
    assert expected.false_alert_rate == pytest.approx(0.4, abs=0.06)
    assert (expected.alerts, expected.calibrated, expected.calibration_labels) == (40, True, 800)
    # Taken at its word (uncalibrated) the model would promise 92 % accuracy.
    naive = expected_performance(calls, alerts, None)
    assert naive.accuracy == pytest.approx(0.925) and not naive.calibrated


def test_too_few_labels_leave_the_confidence_as_it_is() -> None:
    calibration = Calibration()
    for _ in range(MIN_CALIBRATION_LABELS - 1):
        calibration.add(0.95, False)
    curve, calibrated = calibration.curve()
    assert not calibrated and curve[confidence_bin(0.95)] == pytest.approx(0.975)


def test_realised_figures_are_the_latest_outcomes() -> None:
    realised = RealisedPerformance(size=4)
    for correct, alert in [(False, True), (True, False), (True, True), (False, True), (True, True)]:
        realised.add(correct, alert)
    assert realised.labels == 4
    assert realised.accuracy == pytest.approx(0.75)
    assert realised.false_alert_rate == pytest.approx(1 / 3)
    assert np.isnan(RealisedPerformance().false_alert_rate)


def test_alerts_are_risky_calls_at_or_above_the_threshold() -> None:
    assert risky_call(BRAKING, 0.5) and not risky_call(BRAKING, 0.49) and not risky_call(NORMAL, 0.99)
