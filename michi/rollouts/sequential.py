"""An A/B test that may be read after every batch of labels: the mixture sequential probability ratio test.

    test = SequentialTest()                                   # alpha 0.05, tau^2 0.0025: proportions
    test.add("control", successes=452, trials=500)            # champion: 452 of 500 labelled windows correct
    test.add("candidate", successes=431, trials=500)
    evidence = test.look()                                    # p-value, difference, confidence interval, decision
    state = test.to_dict()                                    # JSON-safe; SequentialTest.from_dict(state) resumes

A fixed-horizon test read at every look rejects a true null far more often than its alpha says (peeking: 27 %
at alpha = 5 % over 30 looks, 36 % over 50, in the tests). The mSPRT (Robbins 1970; Johari, Koomen, Pekelis and Walsh,
"Peeking at A/B tests", KDD 2017) keeps the stated alpha however often it is read: the mixture likelihood
ratio Lambda of the difference theta = candidate - control against theta_0 (0 by default), mixed over a normal prior
N(theta_0, tau^2), is a martingale under the null, so by Ville's inequality P(Lambda ever ≥ 1/alpha) ≤ alpha. With the
difference estimate theta_hat and its variance V (normal approximation),

    Lambda = sqrt(V / (V + tau^2)) · exp((theta_hat - theta_0)^2 tau^2 / (2 V (V + tau^2)))

The always-valid p-value is the running minimum of 1/Lambda over looks (non-increasing as data arrive), the
null is rejected when it falls to alpha, and the always-valid confidence interval is the set of theta_0 not
rejected, intersected over looks.

Outcomes come in two kinds:
- `PROPORTION`: correct / not per labelled window. theta_hat is the difference of the two rates and
  V = p~_c(1 - p~_c)/n_c + p~_t(1 - p~_t)/n_t with p~ = (successes + 1/2)/(trials + 1) (smoothed, so an arm
  with no error yet does not claim a variance of zero).
- `RATE`: events per unit of exposure (false alerts per km). theta_hat is the difference of the rates and
  V = r~_c/e_c + r~_t/e_t with r~ = (events + 1/2)/exposure (Poisson variance).

tau^2 is the prior variance of the difference, in squared units of the outcome: the default 0.0025
(tau = 0.05) suits accuracy differences of a few points; for rates choose tau near the difference worth
detecting, in the same unit (per km: tau = 0.01 for about 10 false alerts per 1,000 km). Smaller tau is more
sensitive to small differences late, larger tau to large differences early; alpha holds for every tau.

Assumptions, and what they cost: the normal approximation needs `minimum_trials_per_arm` per arm
before the first look counts (default 100); the share of traffic between the arms should stay fixed
while a test runs (a canary that ramps its weight starts a new test per step, or accepts a small
approximation). Measured in `tests/unit/test_rollouts_sequential.py` (1,000 seeded A/A experiments at 0.90,
alpha = 5 %): rejections 1.5 % when read 30 times, 1.8 % read 50 times, 3.7 % read 50 times with a 10/90
split; 0.90 vs 0.85 detected in 89 % of experiments within 1,500 labels per arm read every 30 (median 630).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

DEFAULT_ALPHA = 0.05
DEFAULT_TAU_SQUARED = 0.05**2
DEFAULT_MINIMUM_TRIALS_PER_ARM = 100
ARMS = ("control", "candidate")


class OutcomeKind(enum.Enum):
    PROPORTION = "proportion"
    RATE = "rate"


class Decision(enum.Enum):
    CONTINUE = "continue"
    CANDIDATE_BETTER = "candidate-better"
    CANDIDATE_WORSE = "candidate-worse"


def mixture_log_likelihood_ratio(difference: ArrayLike, variance: ArrayLike, tau_squared: float) -> NDArray[np.float64]:
    """log Lambda of an observed difference (minus theta_0) with variance V under a N(theta_0, tau^2) mixture (vectorised)."""
    difference_array = np.asarray(difference, dtype=np.float64)
    variance_array = np.asarray(variance, dtype=np.float64)
    spread = variance_array + tau_squared
    result: NDArray[np.float64] = 0.5 * np.log(variance_array / spread) + difference_array**2 * tau_squared / (
        2.0 * variance_array * spread
    )
    return result


def difference_and_variance(
    control_events: ArrayLike,
    control_exposure: ArrayLike,
    candidate_events: ArrayLike,
    candidate_exposure: ArrayLike,
    kind: OutcomeKind = OutcomeKind.PROPORTION,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """theta_hat (candidate - control) and its variance V for one kind of outcome (vectorised; exposure > 0)."""
    events_c = np.asarray(control_events, dtype=np.float64)
    exposure_c = np.asarray(control_exposure, dtype=np.float64)
    events_t = np.asarray(candidate_events, dtype=np.float64)
    exposure_t = np.asarray(candidate_exposure, dtype=np.float64)
    difference = events_t / exposure_t - events_c / exposure_c
    if kind is OutcomeKind.PROPORTION:
        smoothed_c = (events_c + 0.5) / (exposure_c + 1.0)
        smoothed_t = (events_t + 0.5) / (exposure_t + 1.0)
        variance = smoothed_c * (1.0 - smoothed_c) / exposure_c + smoothed_t * (1.0 - smoothed_t) / exposure_t
    else:
        variance = (events_c + 0.5) / exposure_c**2 + (events_t + 0.5) / exposure_t**2
    return difference, variance


def log_likelihood_ratio(
    control_events: ArrayLike,
    control_exposure: ArrayLike,
    candidate_events: ArrayLike,
    candidate_exposure: ArrayLike,
    *,
    kind: OutcomeKind = OutcomeKind.PROPORTION,
    tau_squared: float = DEFAULT_TAU_SQUARED,
    null_difference: float = 0.0,
    minimum_trials_per_arm: float = DEFAULT_MINIMUM_TRIALS_PER_ARM,
) -> NDArray[np.float64]:
    """log Lambda for counts per arm (vectorised); 0 (no evidence) where an arm has less than the minimum exposure."""
    exposure_c = np.asarray(control_exposure, dtype=np.float64)
    exposure_t = np.asarray(candidate_exposure, dtype=np.float64)
    enough = (exposure_c >= max(minimum_trials_per_arm, 1e-12)) & (exposure_t >= max(minimum_trials_per_arm, 1e-12))
    safe_c = np.where(enough, exposure_c, 1.0)
    safe_t = np.where(enough, exposure_t, 1.0)
    difference, variance = difference_and_variance(control_events, safe_c, candidate_events, safe_t, kind)
    ratio = mixture_log_likelihood_ratio(difference - null_difference, variance, tau_squared)
    result: NDArray[np.float64] = np.where(enough, ratio, 0.0)
    return result


def confidence_radius(variance: float, tau_squared: float, alpha: float) -> float:
    """Half-width of the always-valid (1 - alpha) interval: the theta_0 with Lambda(theta_0) < 1/alpha lie within it of theta_hat."""
    spread = variance + tau_squared
    return math.sqrt(variance * spread / tau_squared * (2.0 * math.log(1.0 / alpha) + math.log(spread / variance)))


@dataclass
class ArmTally:
    """Outcomes of one arm so far: events (correct windows, or false alerts) over exposure (windows, or km)."""

    events: float = 0.0
    exposure: float = 0.0


@dataclass(frozen=True)
class SequentialEvidence:
    """What one look found, and the decision so far (the record a rollout keeps with its decision)."""

    decision: Decision
    p_value: float
    log_likelihood_ratio: float
    difference: float | None
    interval: tuple[float, float]
    control: ArmTally
    candidate: ArmTally
    looks: int
    decided_at_look: int | None

    def describe(self) -> str:
        """One line for people: the decision, the difference with its interval, the p-value and the counts."""
        if self.difference is None:
            estimate = "no estimate yet"
        else:
            estimate = f"difference {self.difference:+.4f} (always-valid interval {self.interval[0]:+.4f} .. {self.interval[1]:+.4f})"
        return (
            f"{self.decision.value}: {estimate}, always-valid p = {self.p_value:.4g} after {self.looks} looks; "
            f"control {self.control.events:g}/{self.control.exposure:g}, candidate {self.candidate.events:g}/{self.candidate.exposure:g}"
        )


@dataclass
class SequentialTest:
    """A two-arm always-valid test, updated incrementally and serialisable (`to_dict` / `from_dict`).

    `add` accumulates outcomes; `look` computes Lambda for the counts so far, lowers the running p-value and
    decides once it reaches alpha (the decision then stays: the p-value never rises). Higher is better for
    `CANDIDATE_BETTER` (accuracy); for rates where lower is better (false alerts) read `CANDIDATE_WORSE`
    as "the candidate's rate is higher".
    """

    alpha: float = DEFAULT_ALPHA
    tau_squared: float = DEFAULT_TAU_SQUARED
    kind: OutcomeKind = OutcomeKind.PROPORTION
    null_difference: float = 0.0
    minimum_trials_per_arm: float = DEFAULT_MINIMUM_TRIALS_PER_ARM
    control: ArmTally = field(default_factory=ArmTally)
    candidate: ArmTally = field(default_factory=ArmTally)
    p_value: float = 1.0
    looks: int = 0
    interval: tuple[float, float] = (-math.inf, math.inf)
    decision: Decision = Decision.CONTINUE
    decided_at_look: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 < self.alpha < 1.0:
            problems.append(f"alpha {self.alpha!r} is not in (0, 1)")
        if not (math.isfinite(self.tau_squared) and self.tau_squared > 0.0):
            problems.append(f"tau_squared {self.tau_squared!r} is not a positive number")
        if not self.minimum_trials_per_arm > 0:
            problems.append(f"minimum_trials_per_arm {self.minimum_trials_per_arm!r} is not positive")
        if problems:
            raise ValueError("; ".join(problems))

    def add(self, arm: str, *, successes: float, trials: float) -> None:
        """Add outcomes to an arm ("control" or "candidate"): `successes` events over `trials` exposure."""
        if arm not in ARMS:
            raise ValueError(f"unknown arm {arm!r}: expected one of {', '.join(ARMS)}")
        if successes < 0 or trials < 0 or not (math.isfinite(successes) and math.isfinite(trials)):
            raise ValueError(f"counts must be finite and non-negative, got {successes!r} over {trials!r}")
        if self.kind is OutcomeKind.PROPORTION and successes > trials:
            raise ValueError(f"{successes!r} successes cannot exceed {trials!r} trials")
        tally = self.control if arm == "control" else self.candidate
        tally.events += successes
        tally.exposure += trials

    def look(self) -> SequentialEvidence:
        """Read the test now: updates the running p-value, interval and decision, and returns the evidence."""
        self.looks += 1
        enough = min(self.control.exposure, self.candidate.exposure) >= self.minimum_trials_per_arm
        difference: float | None = None
        log_ratio = 0.0
        if enough:
            estimate, variance = difference_and_variance(
                self.control.events, self.control.exposure, self.candidate.events, self.candidate.exposure, self.kind
            )
            difference, variance_value = float(estimate), float(variance)
            log_ratio = float(
                mixture_log_likelihood_ratio(difference - self.null_difference, variance_value, self.tau_squared)
            )
            self.p_value = min(self.p_value, math.exp(-max(log_ratio, 0.0)))
            radius = confidence_radius(variance_value, self.tau_squared, self.alpha)
            low, high = max(self.interval[0], difference - radius), min(self.interval[1], difference + radius)
            # Under a misspecified model the running intersection can empty; then the latest interval stands.
            self.interval = (low, high) if low <= high else (difference - radius, difference + radius)
            if self.decision is Decision.CONTINUE and self.p_value <= self.alpha:
                better = difference > self.null_difference
                self.decision = Decision.CANDIDATE_BETTER if better else Decision.CANDIDATE_WORSE
                self.decided_at_look = self.looks
        return SequentialEvidence(
            decision=self.decision,
            p_value=self.p_value,
            log_likelihood_ratio=log_ratio,
            difference=difference,
            interval=self.interval,
            control=ArmTally(self.control.events, self.control.exposure),
            candidate=ArmTally(self.candidate.events, self.candidate.exposure),
            looks=self.looks,
            decided_at_look=self.decided_at_look,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state (infinite interval ends as null), enough to resume the test after a restart."""
        return {
            "alpha": self.alpha,
            "tau_squared": self.tau_squared,
            "kind": self.kind.value,
            "null_difference": self.null_difference,
            "minimum_trials_per_arm": self.minimum_trials_per_arm,
            "control": {"events": self.control.events, "exposure": self.control.exposure},
            "candidate": {"events": self.candidate.events, "exposure": self.candidate.exposure},
            "p_value": self.p_value,
            "looks": self.looks,
            "interval": [_finite_or_none(self.interval[0]), _finite_or_none(self.interval[1])],
            "decision": self.decision.value,
            "decided_at_look": self.decided_at_look,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> SequentialTest:
        """The test `to_dict` saved."""
        low, high = state["interval"]
        return cls(
            alpha=float(state["alpha"]),
            tau_squared=float(state["tau_squared"]),
            kind=OutcomeKind(state["kind"]),
            null_difference=float(state["null_difference"]),
            minimum_trials_per_arm=float(state["minimum_trials_per_arm"]),
            control=ArmTally(float(state["control"]["events"]), float(state["control"]["exposure"])),
            candidate=ArmTally(float(state["candidate"]["events"]), float(state["candidate"]["exposure"])),
            p_value=float(state["p_value"]),
            looks=int(state["looks"]),
            interval=(-math.inf if low is None else float(low), math.inf if high is None else float(high)),
            decision=Decision(state["decision"]),
            decided_at_look=None if state["decided_at_look"] is None else int(state["decided_at_look"]),
        )


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
