"""The Thompson-sampling bandit with delayed label rewards (`michi/rollouts/bandit.py`).

The issue's acceptance: arms of true accuracy 0.90 and 0.85, rewarded by labels that arrive three plan revisions
late and are sometimes delivered twice; after 20,000 labels the better arm gets at least 80 % of traffic, and a
run killed in the middle (state saved as JSON, the in-flight labels delivered again after the restart) ends
exactly where the uninterrupted run ends. Beyond it: the floor, idempotency, bounded state, and the
probability of being best against an exact integral.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import integrate, stats

from michi.rollouts.bandit import RewardOutcome, ThompsonBandit, floor_shares

TRUE_ACCURACY = {"champion": 0.85, "candidate": 0.90}
LABELS_PER_REVISION = 500
DELAY_REVISIONS = 3
HOUR = 3600.0


def run_delayed_feedback(
    seed: int,
    *,
    total_labels: int,
    restart_at_revision: int | None = None,
    accuracy: dict[str, float] = TRUE_ACCURACY,
) -> tuple[ThompsonBandit, list[dict[str, float]], dict[RewardOutcome, int]]:
    """Simulate plan revisions: traffic split by the bandit's shares, labels arriving DELAY_REVISIONS later.

    Every revision also redelivers a tenth of the previous delivery (at-least-once delivery). With
    `restart_at_revision`, the bandit is saved to JSON there, dropped, restored, and the last delivery comes again.
    """
    generator = np.random.default_rng(seed)
    bandit = ThompsonBandit(list(accuracy), minimum_share=0.05)
    arms = list(accuracy)
    pending: list[list[tuple[str, str, bool, float]]] = []
    previous_delivery: list[tuple[str, str, bool, float]] = []
    allocations: list[dict[str, float]] = []
    outcomes = dict.fromkeys(RewardOutcome, 0)
    revision = 0
    while sum(posterior.alpha + posterior.beta - 2 for posterior in bandit.posteriors.values()) < total_labels:
        shares = bandit.allocation()
        allocations.append(shares)
        served = generator.choice(len(arms), size=LABELS_PER_REVISION, p=[shares[arm] for arm in arms])
        rewards = []
        for index, arm_index in enumerate(served):
            arm = arms[int(arm_index)]
            correct = bool(generator.random() < accuracy[arm])
            rewards.append((f"label-{revision}-{index}", arm, correct, revision * HOUR + index))
        pending.append(rewards)
        delivery: list[tuple[str, str, bool, float]] = []
        if len(pending) > DELAY_REVISIONS:
            delivery = pending.pop(0)
        replayed = previous_delivery[: len(previous_delivery) // 10]
        for outcome, count in bandit.record_rewards([*replayed, *delivery]).items():
            outcomes[outcome] += count
        if revision == restart_at_revision:
            saved = json.dumps(bandit.to_dict())
            bandit = ThompsonBandit.from_dict(json.loads(saved))  # kill -9: only the saved state survives
            for outcome, count in bandit.record_rewards(delivery).items():  # redelivered after the restart
                outcomes[outcome] += count
        previous_delivery = delivery
        revision += 1
    return bandit, allocations, outcomes


def test_the_better_arm_gets_most_traffic_after_20k_delayed_labels_even_across_a_restart() -> None:
    bandit, allocations, outcomes = run_delayed_feedback(7, total_labels=20_000)
    final = bandit.allocation()
    first_80 = next(revision for revision, shares in enumerate(allocations) if shares["candidate"] >= 0.8)
    labels_by_then = max(first_80 - DELAY_REVISIONS, 0) * LABELS_PER_REVISION
    print(f"after 20k delayed labels: {final}; candidate >= 80 % from revision {first_80} ({labels_by_then} labels)")
    assert final["candidate"] >= 0.80
    assert outcomes[RewardOutcome.DUPLICATE] > 0  # the redeliveries happened, and were ignored
    labels_counted = sum(posterior.alpha + posterior.beta - 2 for posterior in bandit.posteriors.values())
    assert labels_counted == outcomes[RewardOutcome.APPLIED]

    restarted, restarted_allocations, restarted_outcomes = run_delayed_feedback(
        7, total_labels=20_000, restart_at_revision=len(allocations) // 2
    )
    assert restarted_allocations == allocations
    assert restarted.to_dict() == bandit.to_dict()
    assert restarted_outcomes[RewardOutcome.APPLIED] == outcomes[RewardOutcome.APPLIED]
    assert restarted_outcomes[RewardOutcome.DUPLICATE] > outcomes[RewardOutcome.DUPLICATE]


THREE_ARMS = {"champion": 0.85, "candidate": 0.90, "challenger": 0.80}


def test_three_arms_converge_to_the_best_each_keeping_its_floor_and_resume_exactly_after_a_restart() -> None:
    """Arms of true accuracy 0.90, 0.85 and 0.80, the same delayed and redelivered labels: the best arm ends with at
    least 80 % of the traffic (at most 90 %: two floors of 5 %), every arm keeps its 5 % at every revision, and a run
    saved to JSON and restored in the middle publishes exactly the same allocations and ends in the same state."""
    bandit, allocations, outcomes = run_delayed_feedback(18, total_labels=20_000, accuracy=THREE_ARMS)
    final = bandit.allocation()
    first_80 = next(revision for revision, shares in enumerate(allocations) if shares["candidate"] >= 0.8)
    print(f"3 arms after 20k delayed labels: {final}; the best >= 80 % from revision {first_80} of {len(allocations)}")
    assert final["candidate"] >= 0.80
    assert all(shares["candidate"] >= 0.80 for shares in allocations[len(allocations) // 2 :])
    assert all(min(shares.values()) >= 0.05 - 1e-12 for shares in allocations), "every arm keeps its floor"
    assert all(math.isclose(sum(shares.values()), 1.0) for shares in allocations)
    assert outcomes[RewardOutcome.DUPLICATE] > 0
    labels_counted = sum(posterior.alpha + posterior.beta - 2 for posterior in bandit.posteriors.values())
    assert labels_counted == outcomes[RewardOutcome.APPLIED]
    # The worst arm is explored to the end, at its floor: its posterior still learns.
    assert bandit.posteriors["challenger"].alpha + bandit.posteriors["challenger"].beta - 2 > 0.04 * 20_000 / 2

    restarted, restarted_allocations, restarted_outcomes = run_delayed_feedback(
        18, total_labels=20_000, restart_at_revision=len(allocations) // 2, accuracy=THREE_ARMS
    )
    assert restarted_allocations == allocations
    assert restarted.to_dict() == bandit.to_dict()
    assert restarted_outcomes[RewardOutcome.APPLIED] == outcomes[RewardOutcome.APPLIED]


def test_a_reward_counts_once() -> None:
    bandit = ThompsonBandit(["champion", "candidate"])
    assert bandit.record_reward("label-1", "candidate", correct=True, labelled_at=10.0) is RewardOutcome.APPLIED
    assert bandit.record_reward("label-1", "candidate", correct=True, labelled_at=10.0) is RewardOutcome.DUPLICATE
    # The id decides, not the content: a second delivery saying something else is still the same label event.
    assert bandit.record_reward("label-1", "champion", correct=False, labelled_at=10.0) is RewardOutcome.DUPLICATE
    assert bandit.record_reward("label-2", "treatment", correct=True, labelled_at=11.0) is RewardOutcome.UNKNOWN_ARM
    assert (bandit.posteriors["candidate"].alpha, bandit.posteriors["candidate"].beta) == (2.0, 1.0)
    assert (bandit.posteriors["champion"].alpha, bandit.posteriors["champion"].beta) == (1.0, 1.0)


def test_reward_ids_are_kept_for_the_retention_and_older_rewards_are_refused() -> None:
    day = 24 * HOUR
    bandit = ThompsonBandit(["champion", "candidate"], reward_id_retention_seconds=7 * day)
    for index in range(30 * 24):  # one label an hour for 30 days
        bandit.record_reward(f"label-{index}", "champion", correct=True, labelled_at=index * HOUR)
    newest = (30 * 24 - 1) * HOUR
    # Bounded: at most the retention plus one compaction step (1/16 of it) of ids.
    assert len(bandit.applied_rewards) <= 7 * 24 * (1 + 1 / 16) + 1
    assert min(bandit.applied_rewards.values()) >= newest - 7 * day * (1 + 1 / 16)
    # A replay of a label older than the horizon is refused, whether or not its id is still held.
    assert bandit.record_reward("label-0", "champion", correct=True, labelled_at=0.0) is RewardOutcome.TOO_OLD
    assert bandit.record_reward("late-new", "champion", correct=True, labelled_at=newest - 8 * day) is (
        RewardOutcome.TOO_OLD
    )
    assert bandit.record_reward(f"label-{30 * 24 - 5}", "champion", correct=True, labelled_at=newest - 4 * HOUR) is (
        RewardOutcome.DUPLICATE
    )
    assert bandit.posteriors["champion"].alpha == 1 + 30 * 24
    saved = bandit.to_dict()
    assert min(saved["applied_rewards"].values()) >= newest - 7 * day  # compacted before saving


def test_probability_best_matches_the_exact_integral() -> None:
    bandit = ThompsonBandit(["champion", "candidate"])
    bandit.posteriors["champion"].alpha, bandit.posteriors["champion"].beta = 91.0, 11.0
    bandit.posteriors["candidate"].alpha, bandit.posteriors["candidate"].beta = 86.0, 16.0

    def density_times_cdf(x: float) -> float:
        return float(stats.beta.pdf(x, 91, 11) * stats.beta.cdf(x, 86, 16))

    exact, _ = integrate.quad(density_times_cdf, 0.0, 1.0)
    estimated = bandit.probability_best(draws=40_000)
    print(f"P(champion best): exact {exact:.4f}, Monte Carlo {estimated['champion']:.4f}")
    assert estimated["champion"] == pytest.approx(exact, abs=0.01)
    assert math.fsum(estimated.values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("probabilities", "floor", "expected"),
    [
        ({"a": 0.98, "b": 0.02, "c": 0.0}, 0.05, {"a": 0.90, "b": 0.05, "c": 0.05}),
        ({"a": 0.6, "b": 0.36, "c": 0.04}, 0.1, {"a": 0.5625, "b": 0.3375, "c": 0.1}),
        ({"a": 0.5, "b": 0.5}, 0.05, {"a": 0.5, "b": 0.5}),
        ({"a": 1.0, "b": 0.0}, 0.5, {"a": 0.5, "b": 0.5}),
        ({"a": 0.0, "b": 0.0}, 0.1, {"a": 0.5, "b": 0.5}),
    ],
)
def test_floor_shares_by_hand(probabilities: dict[str, float], floor: float, expected: dict[str, float]) -> None:
    assert floor_shares(probabilities, floor) == pytest.approx(expected)


def test_the_floor_holds_and_shares_sum_to_one_for_any_posterior() -> None:
    generator = np.random.default_rng(3)
    for _ in range(200):
        arms = int(generator.integers(2, 6))
        floor = float(generator.uniform(0.0, 1.0 / arms))
        bandit = ThompsonBandit([f"arm-{index}" for index in range(arms)], minimum_share=floor)
        for posterior in bandit.posteriors.values():
            posterior.alpha, posterior.beta = (float(value) for value in generator.integers(1, 3000, size=2))
        shares = bandit.allocation(draws=2_000)
        assert math.fsum(shares.values()) == pytest.approx(1.0, abs=1e-12)
        assert min(shares.values()) >= floor - 1e-12
    with pytest.raises(ValueError, match="cannot hold"):
        floor_shares({"a": 0.5, "b": 0.3, "c": 0.2}, 0.4)


def test_state_round_trips_with_identical_allocations() -> None:
    bandit = ThompsonBandit(["champion", "candidate", "challenger"], prior_alpha=2.0, prior_beta=1.0, minimum_share=0.1)
    generator = np.random.default_rng(5)
    for index in range(3000):
        arm = ["champion", "candidate", "challenger"][index % 3]
        bandit.record_reward(f"label-{index}", arm, correct=bool(generator.random() < 0.88), labelled_at=float(index))
    restored = ThompsonBandit.from_dict(json.loads(json.dumps(bandit.to_dict())))
    assert restored.to_dict() == bandit.to_dict()
    assert restored.allocation() == bandit.allocation()
    assert restored.allocation(seed=99) == bandit.allocation(seed=99)
    assert restored.record_reward("label-2999", "challenger", correct=True, labelled_at=2999.0) is (
        RewardOutcome.DUPLICATE
    )


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ThompsonBandit(["only"]), "at least two arms"),
        (lambda: ThompsonBandit(["a", "a"]), "unique"),
        (lambda: ThompsonBandit(["a", "b"], prior_alpha=0.0), "prior"),
        (lambda: ThompsonBandit(["a", "b", "c"], minimum_share=0.4), "cannot hold"),
        (lambda: ThompsonBandit(["a", "b"], reward_id_retention_seconds=0.0), "retention"),
    ],
)
def test_invalid_bandits_are_refused(build: Callable[[], ThompsonBandit], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()
