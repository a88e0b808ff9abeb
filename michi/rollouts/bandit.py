"""A Thompson-sampling bandit rewarded by human labels that arrive hours later (pure: no I/O).

    bandit = ThompsonBandit(["champion", "candidate"], minimum_share=0.05)
    bandit.record_reward("label-evt-91", "candidate", correct=True, labelled_at=1_700_000_000.0)  # APPLIED
    bandit.record_reward("label-evt-91", "candidate", correct=True, labelled_at=1_700_000_000.0)  # DUPLICATE
    shares = bandit.allocation()                 # {"champion": 0.33, "candidate": 0.67}: the next plan's shares
    state = bandit.to_dict()                     # JSON-safe; ThompsonBandit.from_dict(state) resumes exactly

Each arm holds a Beta(alpha, beta) posterior of its accuracy (the share of its labelled windows a person agrees
with), from the prior Beta(1, 1) (uniform: no arm favoured) unless told otherwise: a correct label adds 1 to
alpha, a wrong one 1 to beta. The allocation is the probability that each arm is the best (Thompson sampling
applied to a whole plan revision instead of one request), estimated from `draws` joint samples of the
posteriors with a seeded generator, then floored: every arm keeps at least `minimum_share` of traffic, so a
weak start is corrected by later labels instead of starving the arm, and the shares still sum to 1.

Rewards are delayed and delivered at least once (a label event may come again after a restart or a
rebalance). Each reward carries the id of its label event; the bandit keeps the ids it applied and
ignores one it has seen (`DUPLICATE`), so the posterior never counts a label twice. The ids are kept for
`reward_id_retention_seconds` (7 days by default) of label time behind the newest label seen: older ids
are dropped from the state (in batches, as label time advances by a sixteenth of the retention, and
always before `to_dict`), and a reward older than that horizon is refused (`TOO_OLD`) because it can no
longer be told apart from a replay. The state stays bounded by the label rate times the retention, and
the posterior, the applied ids and the horizon are all in `to_dict`, so a restart resumes with neither a
lost nor a double-counted label.

The default seed of `allocation` is derived from the posterior itself, so the same state gives the same
shares in every process (a restored bandit publishes exactly the plan the lost one would have).
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_PRIOR_ALPHA = 1.0
DEFAULT_PRIOR_BETA = 1.0
DEFAULT_MINIMUM_SHARE = 0.05
DEFAULT_DRAWS = 20_000
DEFAULT_REWARD_ID_RETENTION_SECONDS = 7 * 24 * 3600.0


class RewardOutcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    TOO_OLD = "too-old"
    UNKNOWN_ARM = "unknown-arm"


@dataclass
class BetaPosterior:
    """Beta(alpha, beta) over one arm's accuracy."""

    alpha: float
    beta: float

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


def floor_shares(probabilities: Mapping[str, float], minimum_share: float) -> dict[str, float]:
    """Shares proportional to `probabilities`, each at least `minimum_share`, summing to 1.

    Arms below the floor get exactly the floor; the rest of the mass goes to the others in proportion to their
    probabilities, repeated until no arm falls below (water-filling). Needs `minimum_share * arms <= 1`.
    """
    names = list(probabilities)
    if not names:
        return {}
    if minimum_share * len(names) > 1.0 + 1e-12:
        raise ValueError(f"a minimum share of {minimum_share:g} cannot hold for {len(names)} arms")
    floored: set[str] = set()
    while True:
        free = [name for name in names if name not in floored]
        mass = 1.0 - minimum_share * len(floored)
        weight = math.fsum(max(probabilities[name], 0.0) for name in free)
        shares = {name: minimum_share for name in floored}
        for name in free:
            shares[name] = mass * max(probabilities[name], 0.0) / weight if weight > 0 else mass / len(free)
        newly = {name for name in free if shares[name] < minimum_share}
        if not newly:
            return {name: shares[name] for name in names}
        floored |= newly


class ThompsonBandit:
    """Beta posteriors per arm, idempotent delayed rewards, and floored probability-of-best allocations."""

    def __init__(
        self,
        arms: Sequence[str],
        *,
        prior_alpha: float = DEFAULT_PRIOR_ALPHA,
        prior_beta: float = DEFAULT_PRIOR_BETA,
        minimum_share: float = DEFAULT_MINIMUM_SHARE,
        reward_id_retention_seconds: float = DEFAULT_REWARD_ID_RETENTION_SECONDS,
    ) -> None:
        problems = []
        if len(arms) < 2:
            problems.append("a bandit needs at least two arms")
        if len(set(arms)) != len(arms) or any(not name for name in arms):
            problems.append("arm names must be non-empty and unique")
        if not (prior_alpha > 0 and prior_beta > 0):
            problems.append("the prior's alpha and beta must be positive")
        if not minimum_share >= 0.0 or minimum_share * max(len(arms), 1) > 1.0:
            problems.append(f"a minimum share of {minimum_share!r} cannot hold for {len(arms)} arms")
        if not reward_id_retention_seconds > 0:
            problems.append("the reward id retention must be positive")
        if problems:
            raise ValueError("; ".join(problems))
        self.arms: tuple[str, ...] = tuple(arms)
        self.prior = BetaPosterior(prior_alpha, prior_beta)
        self.minimum_share = minimum_share
        self.reward_id_retention_seconds = reward_id_retention_seconds
        self.posteriors: dict[str, BetaPosterior] = {name: BetaPosterior(prior_alpha, prior_beta) for name in arms}
        # Reward id -> label time, for ids at or after the horizon.
        self.applied_rewards: dict[str, float] = {}
        self.newest_labelled_at: float | None = None
        # Label time of the last compaction: compacting once per 1/16 of the retention keeps it amortised O(1).
        self._compacted_at = -math.inf

    @property
    def horizon(self) -> float | None:
        """Label time before which rewards are refused (their ids may already be forgotten)."""
        if self.newest_labelled_at is None:
            return None
        return self.newest_labelled_at - self.reward_id_retention_seconds

    def record_reward(self, reward_id: str, arm: str, *, correct: bool, labelled_at: float) -> RewardOutcome:
        """Apply one label's verdict on an arm's prediction, once per `reward_id` (the label event id)."""
        if arm not in self.posteriors:
            return RewardOutcome.UNKNOWN_ARM
        # The horizon first: whether an old id is still held depends on when it was last compacted.
        horizon = self.horizon
        if horizon is not None and labelled_at < horizon:
            return RewardOutcome.TOO_OLD
        if reward_id in self.applied_rewards:
            return RewardOutcome.DUPLICATE
        posterior = self.posteriors[arm]
        if correct:
            posterior.alpha += 1.0
        else:
            posterior.beta += 1.0
        self.applied_rewards[reward_id] = labelled_at
        if self.newest_labelled_at is None or labelled_at > self.newest_labelled_at:
            self.newest_labelled_at = labelled_at
            if labelled_at - self._compacted_at >= self.reward_id_retention_seconds / 16:
                self.forget_old_rewards()
        return RewardOutcome.APPLIED

    def record_rewards(self, rewards: Iterable[tuple[str, str, bool, float]]) -> dict[RewardOutcome, int]:
        """Apply many `(reward_id, arm, correct, labelled_at)` rewards; how many had each outcome."""
        counts = dict.fromkeys(RewardOutcome, 0)
        for reward_id, arm, correct, labelled_at in rewards:
            counts[self.record_reward(reward_id, arm, correct=correct, labelled_at=labelled_at)] += 1
        return counts

    def forget_old_rewards(self) -> None:
        """Drop the ids of rewards older than the horizon (done as label time advances, and before `to_dict`)."""
        horizon = self.horizon
        if horizon is None:
            return
        self._compacted_at = horizon + self.reward_id_retention_seconds
        stale = [reward_id for reward_id, labelled_at in self.applied_rewards.items() if labelled_at < horizon]
        for reward_id in stale:
            del self.applied_rewards[reward_id]

    def probability_best(self, *, draws: int = DEFAULT_DRAWS, seed: int | None = None) -> dict[str, float]:
        """P(arm has the highest accuracy) under the posteriors, from `draws` seeded joint samples."""
        generator = np.random.default_rng(self.state_seed() if seed is None else seed)
        alphas = np.array([self.posteriors[name].alpha for name in self.arms])
        betas = np.array([self.posteriors[name].beta for name in self.arms])
        samples = generator.beta(alphas, betas, size=(draws, len(self.arms)))
        wins = np.bincount(np.argmax(samples, axis=1), minlength=len(self.arms))
        return {name: float(wins[index]) / draws for index, name in enumerate(self.arms)}

    def allocation(self, *, draws: int = DEFAULT_DRAWS, seed: int | None = None) -> dict[str, float]:
        """Traffic shares for the next plan: probability of being best, floored at `minimum_share`."""
        return floor_shares(self.probability_best(draws=draws, seed=seed), self.minimum_share)

    def state_seed(self) -> int:
        """A seed derived from the posteriors, so equal states give equal allocations everywhere."""
        text = "|".join(f"{name}:{self.posteriors[name].alpha!r}:{self.posteriors[name].beta!r}" for name in self.arms)
        return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state: arms, prior, floor, retention, posteriors, applied reward ids and the newest label time."""
        self.forget_old_rewards()
        return {
            "arms": list(self.arms),
            "prior": {"alpha": self.prior.alpha, "beta": self.prior.beta},
            "minimum_share": self.minimum_share,
            "reward_id_retention_seconds": self.reward_id_retention_seconds,
            "posteriors": {name: {"alpha": p.alpha, "beta": p.beta} for name, p in self.posteriors.items()},
            "applied_rewards": dict(self.applied_rewards),
            "newest_labelled_at": self.newest_labelled_at,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> ThompsonBandit:
        """The bandit `to_dict` saved."""
        bandit = cls(
            [str(name) for name in state["arms"]],
            prior_alpha=float(state["prior"]["alpha"]),
            prior_beta=float(state["prior"]["beta"]),
            minimum_share=float(state["minimum_share"]),
            reward_id_retention_seconds=float(state["reward_id_retention_seconds"]),
        )
        for name, posterior in state["posteriors"].items():
            bandit.posteriors[str(name)] = BetaPosterior(float(posterior["alpha"]), float(posterior["beta"]))
        bandit.applied_rewards = {str(key): float(value) for key, value in state["applied_rewards"].items()}
        newest = state["newest_labelled_at"]
        bandit.newest_labelled_at = None if newest is None else float(newest)
        return bandit


# --- the bandit as a rollout policy: allocations to publish and when the bandit ends

DEFAULT_ALLOCATION_INTERVAL_SECONDS = 600.0
DEFAULT_MINIMUM_CHANGE = 0.02
DEFAULT_END_PROBABILITY = 0.95
DEFAULT_MINIMUM_REWARDS_PER_ARM = 200
# Shares of a published allocation are rounded to this many decimals (0.01 percentage points).
ALLOCATION_DECIMALS = 4


@dataclass(frozen=True)
class ArmRewards:
    """One arm's rewards so far: labelled windows, and those labelled the way the arm called them."""

    correct: int = 0
    labelled: int = 0


def bandit_from_rewards(
    rewards: Mapping[str, ArmRewards],
    *,
    minimum_share: float = DEFAULT_MINIMUM_SHARE,
    prior_alpha: float = DEFAULT_PRIOR_ALPHA,
    prior_beta: float = DEFAULT_PRIOR_BETA,
) -> ThompsonBandit:
    """The bandit whose posteriors are the prior plus `rewards` (arms in the order given): for a caller that keeps
    each label once already (the rollout controller's random-QA windows, unique per window and model version)."""
    bandit = ThompsonBandit(list(rewards), prior_alpha=prior_alpha, prior_beta=prior_beta, minimum_share=minimum_share)
    for name, counted in rewards.items():
        correct = max(min(counted.correct, counted.labelled), 0)
        bandit.posteriors[name] = BetaPosterior(prior_alpha + correct, prior_beta + max(counted.labelled - correct, 0))
    return bandit


class BanditStep(enum.Enum):
    KEEP = "keep"  # the shares stay: too soon after the last allocation, or too small a change
    ALLOCATE = "allocate"  # publish `shares` as the next plan revision
    PROMOTE = "promote"  # a candidate is the best arm, with enough evidence
    ROLL_BACK = "roll-back"  # the champion is the best arm, with enough evidence


@dataclass(frozen=True)
class BanditPolicy:
    """When a bandit rollout publishes a new allocation, and when it ends.

    - Every arm keeps at least `minimum_share` of the devices.
    - A new allocation is published at most every `allocation_interval_seconds`, and only when some arm's share
      moves by more than `minimum_change` (a share, 0.02 = 2 percentage points): each revision moves devices.
    - The bandit ends when one arm is the best with probability at least `end_probability` and every arm has
      `minimum_rewards_per_arm` labels: a candidate best is promoted when `automatic_promotion`, the champion
      best is a rollback when `automatic_rollback`; otherwise it keeps allocating (a person ends it).
    """

    minimum_share: float = DEFAULT_MINIMUM_SHARE
    allocation_interval_seconds: float = DEFAULT_ALLOCATION_INTERVAL_SECONDS
    minimum_change: float = DEFAULT_MINIMUM_CHANGE
    end_probability: float = DEFAULT_END_PROBABILITY
    minimum_rewards_per_arm: int = DEFAULT_MINIMUM_REWARDS_PER_ARM
    automatic_promotion: bool = True
    automatic_rollback: bool = True
    draws: int = DEFAULT_DRAWS


@dataclass(frozen=True)
class BanditDecision:
    """What to do now, with the evidence: posteriors, rewards, probability of being best, shares."""

    step: BanditStep
    best: str
    shares: dict[str, float]  # the allocation the posteriors give now (published on ALLOCATE)
    current: dict[str, float]  # the shares served now
    probability_best: dict[str, float]
    posteriors: dict[str, BetaPosterior]
    rewards: dict[str, ArmRewards]
    reasons: tuple[str, ...]

    def evidence(self) -> dict[str, Any]:
        """JSON-safe evidence for the audited decision (and for `michi rollouts status`)."""
        return {
            "policy": "bandit",
            "step": self.step.value,
            "best": self.best,
            "arms": {
                name: {
                    "alpha": posterior.alpha,
                    "beta": posterior.beta,
                    "mean": round(posterior.mean, 6),
                    "correct": self.rewards[name].correct,
                    "labelled": self.rewards[name].labelled,
                    "probability_best": self.probability_best[name],
                    "share": {"from": self.current.get(name, 0.0), "to": self.shares[name]},
                }
                for name, posterior in self.posteriors.items()
            },
            "reasons": list(self.reasons),
        }


def rounded_allocation(shares: Mapping[str, float], *, decimals: int = ALLOCATION_DECIMALS) -> dict[str, float]:
    """`shares` rounded to `decimals`, the last arm taking what the others leave, so they still sum to 1."""
    names = list(shares)
    rounded = {name: round(shares[name], decimals) for name in names[:-1]}
    rounded[names[-1]] = round(1.0 - math.fsum(rounded.values()), decimals)
    return rounded


def decide_allocation(
    rewards: Mapping[str, ArmRewards],
    *,
    champion: str,
    current: Mapping[str, float],
    last_allocated_at: float,
    now: float,
    policy: BanditPolicy,
) -> BanditDecision:
    """The bandit's next step from each arm's rewards (arms in plan order, `champion` among them), the shares
    served now and when they were published.

    The end rule comes first (it needs no interval); otherwise a new allocation is due once the interval has
    passed and a share moves by more than the policy's minimum change.
    """
    if champion not in rewards:
        raise ValueError(f"the champion {champion!r} is not an arm of the bandit")
    bandit = bandit_from_rewards(rewards, minimum_share=policy.minimum_share)
    probability = bandit.probability_best(draws=policy.draws)
    shares = rounded_allocation(floor_shares(probability, policy.minimum_share))
    best = max(bandit.arms, key=lambda name: probability[name])
    fewest = min(bandit.arms, key=lambda name: rewards[name].labelled)

    def decided(step: BanditStep, *reasons: str) -> BanditDecision:
        return BanditDecision(
            step=step,
            best=best,
            shares=shares,
            current={name: float(current.get(name, 0.0)) for name in bandit.arms},
            probability_best=probability,
            posteriors={name: BetaPosterior(p.alpha, p.beta) for name, p in bandit.posteriors.items()},
            rewards={name: rewards[name] for name in bandit.arms},
            reasons=reasons,
        )

    leading = f"{best} is the best arm with probability {probability[best]:.3f}"
    if probability[best] >= policy.end_probability:
        if rewards[fewest].labelled < policy.minimum_rewards_per_arm:
            waiting = (
                f"{leading}, but {fewest} has {rewards[fewest].labelled} of {policy.minimum_rewards_per_arm} labels"
            )
        elif best == champion and policy.automatic_rollback:
            return decided(BanditStep.ROLL_BACK, f"{leading} >= {policy.end_probability:g}: the champion stays")
        elif best != champion and policy.automatic_promotion:
            return decided(BanditStep.PROMOTE, f"{leading} >= {policy.end_probability:g}")
        else:
            automatic = "rollback" if best == champion else "promotion"
            waiting = f"{leading} >= {policy.end_probability:g}; automatic {automatic} is off: a person ends it"
    else:
        waiting = f"{leading} < {policy.end_probability:g}"
    moved = max(abs(shares[name] - float(current.get(name, 0.0))) for name in bandit.arms)
    elapsed = now - last_allocated_at
    if moved <= policy.minimum_change:
        return decided(BanditStep.KEEP, waiting, f"shares move by {moved:.4f} <= {policy.minimum_change:g}")
    if elapsed < policy.allocation_interval_seconds:
        return decided(
            BanditStep.KEEP,
            waiting,
            f"last allocation {elapsed:.0f} s ago, the next after {policy.allocation_interval_seconds:g} s",
        )
    return decided(BanditStep.ALLOCATE, waiting, f"shares move by {moved:.4f} > {policy.minimum_change:g}")
