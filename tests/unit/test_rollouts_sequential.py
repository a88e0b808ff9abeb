"""The always-valid A/B test (`michi/rollouts/sequential.py`): error rate under peeking, power, golden values.

- Null (A/A, both arms 0.90): 1,000 seeded experiments, each read after every batch of labels (30 and 50 looks),
  reject at most alpha = 5 % of the time; the naive fixed-horizon z-test read at the same looks rejects far more
  (which shows the simulation bites). Also with a 10/90 split, and for the rate (false alerts per km) variant.
- Power: 0.90 vs 0.85 is detected in at least 85 % of 1,000 experiments within 1,500 labels per arm.
- Golden: log Lambda for 900/1000 vs 850/1000 equals the closed form computed by hand and the mixture integral
  computed numerically with SciPy.
The measured figures are printed (`pytest -s`).
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import integrate, stats

from michi.rollouts.sequential import (
    ArmTally,
    Decision,
    OutcomeKind,
    SequentialTest,
    confidence_radius,
    log_likelihood_ratio,
)

ALPHA = 0.05
THRESHOLD = math.log(1.0 / ALPHA)


def simulate_counts(
    generator: np.random.Generator,
    *,
    control_rate: float,
    candidate_rate: float,
    experiments: int,
    looks: int,
    labels_per_look: int,
    candidate_share: float = 0.5,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Cumulative (control correct, control labels, candidate correct, candidate labels) at every look."""
    candidate_per_look = round(2 * labels_per_look * candidate_share)
    control_per_look = 2 * labels_per_look - candidate_per_look
    control = np.cumsum(generator.binomial(control_per_look, control_rate, size=(experiments, looks)), axis=1)
    candidate = np.cumsum(generator.binomial(candidate_per_look, candidate_rate, size=(experiments, looks)), axis=1)
    look_numbers = np.arange(1, looks + 1)
    return control, control_per_look * look_numbers, candidate, candidate_per_look * look_numbers


def naive_z_rejections(
    control: NDArray[np.int64],
    control_n: NDArray[np.int64],
    candidate: NDArray[np.int64],
    candidate_n: NDArray[np.int64],
) -> NDArray[np.bool_]:
    """Whether the fixed-horizon two-proportion z-test (pooled) rejects at any look: the peeking mistake."""
    pooled = (control + candidate) / (control_n + candidate_n)
    error = np.sqrt(pooled * (1 - pooled) * (1 / control_n + 1 / candidate_n))
    z = np.abs(candidate / candidate_n - control / control_n) / np.where(error > 0, error, np.inf)
    rejected: NDArray[np.bool_] = (z >= stats.norm.ppf(1 - ALPHA / 2)).any(axis=1)
    return rejected


@pytest.mark.parametrize(
    ("looks", "labels_per_look", "candidate_share", "seed"),
    [(30, 50, 0.5, 11), (50, 40, 0.5, 12), (50, 40, 0.1, 13)],
    ids=["30-looks", "50-looks", "50-looks-10-percent-canary"],
)
def test_peeking_after_every_batch_keeps_the_false_positive_rate_at_alpha(
    looks: int, labels_per_look: int, candidate_share: float, seed: int
) -> None:
    counts = simulate_counts(
        np.random.default_rng(seed),
        control_rate=0.9,
        candidate_rate=0.9,
        experiments=1000,
        looks=looks,
        labels_per_look=labels_per_look,
        candidate_share=candidate_share,
    )
    sequential = (log_likelihood_ratio(*counts, tau_squared=0.0025) >= THRESHOLD).any(axis=1).mean()
    naive = naive_z_rejections(*counts).mean()
    print(f"A/A, {looks} looks, candidate share {candidate_share}: mSPRT {sequential:.3f}, naive z-test {naive:.3f}")
    assert sequential <= ALPHA
    assert naive >= 0.2  # the same data, read naively, is wrong four times as often


def test_power_to_detect_five_points_within_1500_labels_per_arm() -> None:
    looks, labels_per_look = 50, 30
    counts = simulate_counts(
        np.random.default_rng(21),
        control_rate=0.90,
        candidate_rate=0.85,
        experiments=1000,
        looks=looks,
        labels_per_look=labels_per_look,
    )
    crossed = log_likelihood_ratio(*counts, tau_squared=0.0025) >= THRESHOLD
    detected = crossed.any(axis=1)
    labels_at_detection = (crossed.argmax(axis=1)[detected] + 1) * labels_per_look
    power = detected.mean()
    median_labels = float(np.median(labels_at_detection))
    print(f"0.90 vs 0.85: power {power:.3f} within {looks * labels_per_look} labels per arm, median {median_labels:g}")
    assert power >= 0.85
    # Every detection says the candidate is worse (the sign of the difference at the crossing).
    control, control_n, candidate, candidate_n = counts
    first = crossed.argmax(axis=1)
    rows = np.flatnonzero(detected)
    differences = (
        candidate[rows, first[rows]] / candidate_n[first[rows]] - control[rows, first[rows]] / control_n[first[rows]]
    )
    assert (differences < 0).mean() >= 0.999


def test_rate_variant_keeps_alpha_for_false_alerts_per_km() -> None:
    generator = np.random.default_rng(31)
    experiments, looks, km_per_look = 1000, 50, 200.0
    rate = 0.02  # false alerts per km: 20 per 1,000 km on both arms
    control = np.cumsum(generator.poisson(rate * km_per_look, size=(experiments, looks)), axis=1)
    candidate = np.cumsum(generator.poisson(rate * km_per_look, size=(experiments, looks)), axis=1)
    exposure = km_per_look * np.arange(1, looks + 1)
    log_ratio = log_likelihood_ratio(
        control, exposure, candidate, exposure, kind=OutcomeKind.RATE, tau_squared=0.01**2, minimum_trials_per_arm=500
    )
    rejected = (log_ratio >= THRESHOLD).any(axis=1).mean()
    doubled = np.cumsum(generator.poisson(2 * rate * km_per_look, size=(experiments, looks)), axis=1)
    log_ratio_doubled = log_likelihood_ratio(
        control, exposure, doubled, exposure, kind=OutcomeKind.RATE, tau_squared=0.01**2, minimum_trials_per_arm=500
    )
    power = (log_ratio_doubled >= THRESHOLD).any(axis=1).mean()
    print(
        f"false alerts per km, 50 looks: null rejections {rejected:.3f}; doubled rate detected {power:.3f} in 10,000 km"
    )
    assert rejected <= ALPHA
    assert power >= 0.9


def test_golden_value_against_the_hand_formula_and_the_mixture_integral() -> None:
    # 900 of 1,000 correct on the champion, 850 of 1,000 on the candidate, tau^2 = 0.0025.
    log_ratio = float(log_likelihood_ratio(900, 1000, 850, 1000, tau_squared=0.0025))
    smoothed_control, smoothed_candidate = 900.5 / 1001, 850.5 / 1001
    variance = smoothed_control * (1 - smoothed_control) / 1000 + smoothed_candidate * (1 - smoothed_candidate) / 1000
    difference, tau_squared = -0.05, 0.0025
    by_hand = 0.5 * math.log(variance / (variance + tau_squared)) + difference**2 * tau_squared / (
        2 * variance * (variance + tau_squared)
    )

    def integrand(theta: float) -> float:
        # Likelihood ratio of theta against 0 for the observed difference, weighted by the N(0, tau^2) prior.
        deviation = math.sqrt(variance)
        ratio = stats.norm.pdf(difference, theta, deviation) / stats.norm.pdf(difference, 0.0, deviation)
        return float(ratio * stats.norm.pdf(theta, 0.0, math.sqrt(tau_squared)))

    mixture, _ = integrate.quad(integrand, -0.5, 0.5, points=[difference], epsabs=0.0)
    assert log_ratio == pytest.approx(by_hand, rel=1e-12)
    assert log_ratio == pytest.approx(math.log(mixture), rel=1e-9)
    assert log_ratio == pytest.approx(4.010928973741, abs=1e-9)  # Lambda = 55.2, p = 0.0181

    test = SequentialTest()
    test.add("control", successes=900, trials=1000)
    test.add("candidate", successes=850, trials=1000)
    evidence = test.look()
    assert evidence.p_value == pytest.approx(math.exp(-4.010928973741), rel=1e-9)
    assert evidence.decision is Decision.CANDIDATE_WORSE
    radius = confidence_radius(variance, tau_squared, ALPHA)
    assert evidence.interval == pytest.approx((-0.05 - radius, -0.05 + radius))
    assert evidence.interval[1] < 0  # rejecting "no difference" is the interval excluding 0
    assert "candidate-worse" in evidence.describe()


def test_the_p_value_never_rises_and_the_decision_stays_once_taken() -> None:
    generator = np.random.default_rng(41)
    test = SequentialTest()
    p_values = []
    for _ in range(80):
        test.add("control", successes=int(generator.binomial(50, 0.90)), trials=50)
        test.add("candidate", successes=int(generator.binomial(50, 0.84)), trials=50)
        p_values.append(test.look().p_value)
    assert all(later <= earlier for earlier, later in itertools.pairwise(p_values))
    assert test.decision is Decision.CANDIDATE_WORSE
    decided = test.decided_at_look
    assert decided is not None
    for _ in range(20):  # a good stretch for the candidate later does not undo the decision
        test.add("candidate", successes=50, trials=50)
        test.add("control", successes=40, trials=50)
        assert test.look().decision is Decision.CANDIDATE_WORSE
    assert test.decided_at_look == decided


def test_too_little_data_is_no_evidence() -> None:
    test = SequentialTest(minimum_trials_per_arm=100)
    test.add("control", successes=99, trials=99)
    test.add("candidate", successes=0, trials=99)
    evidence = test.look()
    assert (evidence.p_value, evidence.log_likelihood_ratio, evidence.difference) == (1.0, 0.0, None)
    assert evidence.decision is Decision.CONTINUE
    assert evidence.interval == (-math.inf, math.inf)


def test_state_round_trips_through_json_and_resumes_identically() -> None:
    generator = np.random.default_rng(51)
    batches = [(int(generator.binomial(40, 0.9)), int(generator.binomial(40, 0.88))) for _ in range(60)]
    uninterrupted = SequentialTest()
    restored = SequentialTest()
    before = SequentialTest().to_dict()
    assert SequentialTest.from_dict(json.loads(json.dumps(before))).to_dict() == before  # infinite ends survive
    for index, (control, candidate) in enumerate(batches):
        for test in (uninterrupted, restored):
            test.add("control", successes=control, trials=40)
            test.add("candidate", successes=candidate, trials=40)
        expected = uninterrupted.look()
        assert restored.look() == expected
        if index % 7 == 3:
            restored = SequentialTest.from_dict(json.loads(json.dumps(restored.to_dict())))
    assert restored.to_dict() == uninterrupted.to_dict()


def test_the_class_and_the_vectorised_form_agree() -> None:
    generator = np.random.default_rng(61)
    for _ in range(50):
        control_n, candidate_n = int(generator.integers(100, 5000)), int(generator.integers(100, 5000))
        control, candidate = int(generator.binomial(control_n, 0.9)), int(generator.binomial(candidate_n, 0.87))
        test = SequentialTest(tau_squared=0.001, null_difference=-0.01)
        test.add("control", successes=control, trials=control_n)
        test.add("candidate", successes=candidate, trials=candidate_n)
        vectorised = log_likelihood_ratio(
            control, control_n, candidate, candidate_n, tau_squared=0.001, null_difference=-0.01
        )
        assert test.look().log_likelihood_ratio == pytest.approx(float(vectorised), rel=1e-12)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"tau_squared": 0.0}, "tau_squared"),
        ({"tau_squared": math.inf}, "tau_squared"),
        ({"minimum_trials_per_arm": 0}, "minimum_trials_per_arm"),
    ],
)
def test_invalid_parameters_are_refused(arguments: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SequentialTest(**arguments)  # type: ignore[arg-type]


def test_invalid_outcomes_are_refused() -> None:
    test = SequentialTest()
    with pytest.raises(ValueError, match="unknown arm"):
        test.add("treatment", successes=1, trials=1)
    with pytest.raises(ValueError, match="cannot exceed"):
        test.add("control", successes=3, trials=2)
    with pytest.raises(ValueError, match="non-negative"):
        test.add("control", successes=-1, trials=2)
    assert test.control == ArmTally()  # nothing was applied
