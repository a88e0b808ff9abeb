"""The bandit as a rollout policy (`michi/rollouts/bandit.py`: `decide_allocation`, `BanditPolicy`): when a new
allocation is published, that every arm keeps its exploration share, when the bandit ends (promote, roll back, or
keep allocating when the policy does not allow it), and that inference serves the BANDIT plans it leads to, with
more than two arms too."""

from __future__ import annotations

import math

import pytest

from michi.contracts.v1 import inference_pb2, operations_pb2
from michi.rollouts.bandit import (
    ArmRewards,
    BanditPolicy,
    BanditStep,
    bandit_from_rewards,
    decide_allocation,
    rounded_allocation,
)
from services.inference.domain.rollout import arms_of

EVEN = {"2": 0.5, "1": 0.5}
POLICY = BanditPolicy(minimum_share=0.05, allocation_interval_seconds=600, minimum_change=0.02)


def decide(
    candidate: ArmRewards, champion: ArmRewards, *, elapsed: float = 3600.0, policy: BanditPolicy = POLICY
) -> tuple[BanditStep, dict[str, float], tuple[str, ...]]:
    decision = decide_allocation(
        {"2": candidate, "1": champion}, champion="1", current=EVEN, last_allocated_at=0.0, now=elapsed, policy=policy
    )
    return decision.step, decision.shares, decision.reasons


def test_no_labels_keep_the_even_shares() -> None:
    step, shares, reasons = decide(ArmRewards(), ArmRewards())
    assert step is BanditStep.KEEP
    assert math.isclose(shares["2"], 0.5, abs_tol=0.01)
    assert any("shares move by" in reason for reason in reasons)


def test_a_clear_winner_is_allocated_at_most_the_floor_allows() -> None:
    step, shares, _ = decide(ArmRewards(correct=45, labelled=50), ArmRewards(correct=30, labelled=50))
    assert step is BanditStep.ALLOCATE, "P(best) near 1 but only 50 of 200 labels per arm: no end yet"
    assert shares == {"2": 0.95, "1": 0.05}


def test_a_new_allocation_waits_for_the_interval() -> None:
    step, _, reasons = decide(ArmRewards(correct=45, labelled=50), ArmRewards(correct=30, labelled=50), elapsed=599)
    assert step is BanditStep.KEEP
    assert "the next after 600 s" in reasons[-1]


def test_a_small_move_is_not_published() -> None:
    # 0.52 vs 0.50 after 100 labels each: P(best) ~0.6, a move of about 0.1: published...
    step, shares, _ = decide(ArmRewards(correct=52, labelled=100), ArmRewards(correct=50, labelled=100))
    assert step is BanditStep.ALLOCATE and 0.55 < shares["2"] < 0.7
    # ...but not once the served shares are already that close.
    decision = decide_allocation(
        {"2": ArmRewards(52, 100), "1": ArmRewards(50, 100)},
        champion="1",
        current={"2": shares["2"] - 0.01, "1": shares["1"] + 0.01},
        last_allocated_at=0.0,
        now=3600.0,
        policy=POLICY,
    )
    assert decision.step is BanditStep.KEEP


def test_the_best_candidate_with_enough_labels_is_promoted() -> None:
    step, _, reasons = decide(ArmRewards(correct=190, labelled=200), ArmRewards(correct=160, labelled=200))
    assert step is BanditStep.PROMOTE
    assert reasons[0].startswith("2 is the best arm with probability 1.000 >= 0.95")


def test_the_end_needs_the_minimum_labels_on_every_arm() -> None:
    # The candidate is clearly better, but the champion has only 150 of the 200 labels the policy needs.
    step, _, reasons = decide(ArmRewards(correct=950, labelled=1000), ArmRewards(correct=100, labelled=150))
    assert step is BanditStep.ALLOCATE
    assert "1 has 150 of 200 labels" in reasons[0]


def test_the_best_champion_rolls_the_candidate_back() -> None:
    step, _, reasons = decide(ArmRewards(correct=150, labelled=200), ArmRewards(correct=190, labelled=200))
    assert step is BanditStep.ROLL_BACK
    assert "the champion stays" in reasons[0]


@pytest.mark.parametrize(
    ("candidate", "champion", "off"),
    [
        (ArmRewards(190, 200), ArmRewards(160, 200), {"automatic_promotion": False}),
        (ArmRewards(150, 200), ArmRewards(190, 200), {"automatic_rollback": False}),
    ],
)
def test_without_automatic_ends_it_keeps_allocating(
    candidate: ArmRewards, champion: ArmRewards, off: dict[str, bool]
) -> None:
    policy = BanditPolicy(minimum_share=0.05, allocation_interval_seconds=600, minimum_change=0.02, **off)
    step, shares, reasons = decide(candidate, champion, policy=policy)
    assert step is BanditStep.ALLOCATE
    assert min(shares.values()) == 0.05, "the floor keeps exploring"
    assert "is off: a person ends it" in reasons[0]


def test_posteriors_are_the_prior_plus_the_rewards_and_the_evidence_says_so() -> None:
    bandit = bandit_from_rewards({"2": ArmRewards(45, 50), "1": ArmRewards(30, 50)})
    assert (bandit.posteriors["2"].alpha, bandit.posteriors["2"].beta) == (46.0, 6.0)
    assert (bandit.posteriors["1"].alpha, bandit.posteriors["1"].beta) == (31.0, 21.0)
    decision = decide_allocation(
        {"2": ArmRewards(45, 50), "1": ArmRewards(30, 50)},
        champion="1",
        current=EVEN,
        last_allocated_at=0.0,
        now=3600.0,
        policy=POLICY,
    )
    evidence = decision.evidence()
    assert evidence["arms"]["2"]["alpha"] == 46.0 and evidence["arms"]["2"]["labelled"] == 50
    assert evidence["arms"]["2"]["share"] == {"from": 0.5, "to": 0.95}
    assert evidence["best"] == "2" and evidence["step"] == "allocate"
    again = decide_allocation(
        {"2": ArmRewards(45, 50), "1": ArmRewards(30, 50)},
        champion="1",
        current=EVEN,
        last_allocated_at=0.0,
        now=3600.0,
        policy=POLICY,
    )
    assert again.evidence() == evidence, "the same rewards give the same decision in every process"


def test_three_arms_keep_their_floor_and_sum_to_one() -> None:
    decision = decide_allocation(
        {"3": ArmRewards(80, 100), "2": ArmRewards(70, 100), "1": ArmRewards(60, 100)},
        champion="1",
        current={"3": 0.34, "2": 0.33, "1": 0.33},
        last_allocated_at=0.0,
        now=3600.0,
        policy=POLICY,
    )
    assert min(decision.shares.values()) >= 0.05
    assert math.isclose(sum(decision.shares.values()), 1.0, abs_tol=1e-9)
    assert decision.best == "3"


def test_rounded_allocations_still_sum_to_one() -> None:
    shares = rounded_allocation({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert shares == {"a": 0.3333, "b": 0.3333, "c": 0.3334}


def test_inference_serves_bandit_plans_with_three_arms_and_a_shadow() -> None:
    """MICHI_INFERENCE_MAX_ARMS is 4 by default: champion, two treatments and a shadow are served."""
    plan = operations_pb2.RolloutPlan(
        model_name="risk", strategy=operations_pb2.ROLLOUT_STRATEGY_BANDIT, revision=3, rollout_id="ro-risk-3-abc"
    )
    for version, variant, share in (
        ("3", inference_pb2.VARIANT_TREATMENT, 0.6),
        ("2", inference_pb2.VARIANT_TREATMENT, 0.3),
        ("1", inference_pb2.VARIANT_CHAMPION, 0.1),
        ("0", inference_pb2.VARIANT_SHADOW, 0.0),
    ):
        arm = plan.arms.add(variant=variant, traffic_share=share)
        arm.model.name, arm.model.version = "risk", version
    arms = arms_of(plan, max_arms=4)
    assert arms.problems == []
    assert arms.split is not None
    assert [arm.model.version for arm in arms.serving] == ["3", "2", "1"]
    routed = {arms.split.route(f"device-{index}").arm for index in range(2000)}
    assert routed == {"3", "2", "1"}
    # A fifth arm is refused whole, as any plan over the limit.
    extra = plan.arms.add(variant=inference_pb2.VARIANT_TREATMENT, traffic_share=0.0)
    extra.model.name, extra.model.version = "risk", "4"
    assert arms_of(plan, max_arms=4).problems
