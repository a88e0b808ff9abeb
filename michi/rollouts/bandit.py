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
