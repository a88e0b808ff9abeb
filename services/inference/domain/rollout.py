"""What a rollout plan asks inference to serve, and whether to apply it (pure: no I/O).

Plans arrive on the compacted `model-rollouts` topic keyed by model name, at least once: the same
plan may come twice (same `event_id` and `revision`), and a reader starting from the beginning sees
older plans before the latest. A plan is applied only when its revision is higher than the one held.

A plan **without a `rollout_id`** (every plan written before the field) is served as it always was:
the champion arm (variant CHAMPION, share 1.0) serves every device, the first shadow arm (variant
SHADOW) scores every window and is never scored, and other arms (canary, A/B, bandit) are reported as
not served. A plan without a champion means "the built-in baseline".

A plan **with a `rollout_id`** splits devices between its serving arms (CHAMPION, CANARY, TREATMENT,
in plan order) by `michi.rollouts.assignment.TrafficSplit`: sticky per device for the life of the
rollout. Its one shadow arm scores the share of devices its `traffic_share` says (0: all). Such a
plan is checked as a whole before anything is loaded (`PlanArms.problems`): shares that do not sum to
1, repeated models, more arms than `max_arms`, several champions or shadows, variants the strategy
does not use. A plan with any problem is refused and the plan held stays.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from michi.contracts.v1 import inference_pb2, operations_pb2
from michi.rollouts.assignment import Arm, InvalidSplit, ShadowArm, TrafficSplit

# Serving and shadow arms of one plan, together: each is a loaded ONNX session (memory, warm-up).
MAX_ARMS = 4
# `RolloutArm.traffic_share` is a float32: 0.1 reads 0.10000000149. Rounded to this many decimals before
# the shares are checked against 1 (`michi.rollouts.assignment.SHARE_SUM_TOLERANCE`).
SHARE_DECIMALS = 6

SERVING_VARIANTS = (inference_pb2.VARIANT_CHAMPION, inference_pb2.VARIANT_CANARY, inference_pb2.VARIANT_TREATMENT)
# The variant of the arms beside the champion, per strategy (unspecified: not checked).
CANDIDATE_VARIANT = {
    operations_pb2.ROLLOUT_STRATEGY_CANARY: inference_pb2.VARIANT_CANARY,
    operations_pb2.ROLLOUT_STRATEGY_AB: inference_pb2.VARIANT_TREATMENT,
    operations_pb2.ROLLOUT_STRATEGY_BANDIT: inference_pb2.VARIANT_TREATMENT,
}
# Strategies whose plans serve the champion alone (beside a shadow).
CHAMPION_ONLY_STRATEGIES = (operations_pb2.ROLLOUT_STRATEGY_CHAMPION_ONLY, operations_pb2.ROLLOUT_STRATEGY_SHADOW)


class Versioned(Protocol):
    model_version: str


class PlanDecision(enum.Enum):
    APPLY = "apply"
    DUPLICATE = "duplicate"
    STALE = "stale"
    OTHER_MODEL = "other-model"
    # Newer, but its arms cannot be served (`PlanArms.problems`): the plan held stays.
    REFUSED = "refused"


def judge_plan(plan: operations_pb2.RolloutPlan, *, model_name: str, held_revision: int | None) -> PlanDecision:
    """Apply only plans for `model_name` whose revision is higher than the one held."""
    if plan.model_name != model_name:
        return PlanDecision.OTHER_MODEL
    if held_revision is None or plan.revision > held_revision:
        return PlanDecision.APPLY
    return PlanDecision.DUPLICATE if plan.revision == held_revision else PlanDecision.STALE


def variant_label(variant: int) -> str:
    """`VARIANT_CANARY` -> `canary`: the variant as metrics and logs name it."""
    return inference_pb2.Variant.Name(variant).removeprefix("VARIANT_").lower()  # type: ignore[arg-type]


@dataclass(frozen=True)
class ServingArm:
    """A serving arm of a split plan: its model and the variant its outputs carry.

    Its name in the split is the model version (unique in a plan), its share is the split's.
    """

    model: operations_pb2.ModelRef
    variant: inference_pb2.Variant


@dataclass(frozen=True)
class PlanArms:
    champion: operations_pb2.ModelRef | None
    shadow: operations_pb2.ModelRef | None
    # Arms this service does not serve (e.g. "VARIANT_CANARY 2 (share 0.1)"): plans without a rollout id.
    unsupported: list[str] = field(default_factory=list)
    # Plans with a rollout id: the split of devices (None when the plan has problems or no rollout id),
    # the serving arms in layout order, and every reason the plan cannot be served.
    rollout_id: str = ""
    split: TrafficSplit | None = None
    serving: tuple[ServingArm, ...] = ()
    problems: list[str] = field(default_factory=list)


def rounded_share(value: float) -> float:
    """A float32 share from a plan, rounded so that shares meant to sum to 1 do."""
    return round(float(value), SHARE_DECIMALS)


def arms_of(
    plan: operations_pb2.RolloutPlan, *, max_arms: int = MAX_ARMS, baseline_version: str = "baseline"
) -> PlanArms:
    """The arms a plan names, and for a plan with a rollout id the split of devices between them.

    Without a rollout id: the first arm of each of CHAMPION and SHADOW (`plan.champion` if no arms), the
    rest reported as unsupported, exactly as before rollouts split traffic. With one: every arm, checked
    as a whole; a plan whose only arms are shadows is served by `baseline_version` on every device.
    """
    if plan.rollout_id and plan.arms:
        return _split_arms(plan, max_arms=max_arms, baseline_version=baseline_version)
    champion: operations_pb2.ModelRef | None = None
    shadow: operations_pb2.ModelRef | None = None
    unsupported: list[str] = []
    for arm in plan.arms:
        if arm.variant == inference_pb2.VARIANT_CHAMPION and champion is None:
            champion = arm.model
        elif arm.variant == inference_pb2.VARIANT_SHADOW and shadow is None:
            shadow = arm.model
        else:
            variant = inference_pb2.Variant.Name(arm.variant)
            unsupported.append(f"{variant} {arm.model.version} (share {arm.traffic_share:g})")
    if champion is None and not plan.arms and plan.HasField("champion") and plan.champion.version:
        champion = plan.champion
    return PlanArms(champion, shadow, unsupported)


def _split_arms(plan: operations_pb2.RolloutPlan, *, max_arms: int, baseline_version: str) -> PlanArms:
    serving = [arm for arm in plan.arms if arm.variant in SERVING_VARIANTS]
    shadows = [arm for arm in plan.arms if arm.variant == inference_pb2.VARIANT_SHADOW]
    problems = [
        f"arm {arm.model.version!r} has variant {inference_pb2.Variant.Name(arm.variant)}, neither serving nor shadow"
        for arm in plan.arms
        if arm.variant not in SERVING_VARIANTS and arm.variant != inference_pb2.VARIANT_SHADOW
    ]
    if len(plan.arms) > max_arms:
        problems.append(f"{len(plan.arms)} arms, at most {max_arms} are served at once (shadow included)")
    if len(shadows) > 1:
        problems.append(f"{len(shadows)} shadow arms, at most one is served")
    champions = [arm for arm in serving if arm.variant == inference_pb2.VARIANT_CHAMPION]
    if len(champions) > 1:
        problems.append(f"{len(champions)} champion arms, at most one")
    problems += _variant_problems(plan.strategy, serving)
    arms = [Arm(arm.model.version, rounded_share(arm.traffic_share)) for arm in serving]
    if not serving:
        arms = [Arm(baseline_version, 1.0)]  # a plan of shadows only: the baseline serves, as without a rollout id
    # A shadow's share 0 means all devices (what every plan had before shares of shadows existed).
    shadow_arms = [ShadowArm(arm.model.version, rounded_share(arm.traffic_share) or 1.0) for arm in shadows[:1]]
    split: TrafficSplit | None = None
    try:
        split = TrafficSplit(plan.rollout_id, arms=tuple(arms), shadows=tuple(shadow_arms))
    except InvalidSplit as invalid:
        problems += invalid.problems
    champion = champions[0].model if champions else None
    shadow = shadows[0].model if shadows else None
    return PlanArms(
        champion,
        shadow,
        rollout_id=plan.rollout_id,
        split=None if problems else split,
        serving=tuple(ServingArm(arm.model, arm.variant) for arm in serving),
        problems=problems,
    )


def _variant_problems(strategy: int, serving: Sequence[operations_pb2.RolloutArm]) -> list[str]:
    """Arms whose variant the strategy does not use: the variant is what the monitor compares arms by."""
    candidates = [arm for arm in serving if arm.variant != inference_pb2.VARIANT_CHAMPION]
    if strategy in CHAMPION_ONLY_STRATEGIES and candidates:
        return [f"strategy {operations_pb2.RolloutStrategy.Name(strategy)} serves the champion only"]  # type: ignore[arg-type]
    expected = CANDIDATE_VARIANT.get(strategy)  # type: ignore[call-overload]
    if expected is None:
        return []
    return [
        f"arm {arm.model.version!r} is {inference_pb2.Variant.Name(arm.variant)}; strategy "
        f"{operations_pb2.RolloutStrategy.Name(strategy)} serves {inference_pb2.Variant.Name(expected)} arms"  # type: ignore[arg-type]
        for arm in candidates
        if arm.variant != expected
    ]


def same_model(reference: operations_pb2.ModelRef, detector: Versioned, sha256: str) -> bool:
    """Whether a loaded model (its version, and the sha256 it was verified against) is the referenced one."""
    return reference.version == detector.model_version and bool(sha256) and reference.sha256.lower() == sha256.lower()


class RateBudget:
    """A token bucket: at most `per_minute` admissions per minute, bursts up to `burst` (time is passed in)."""

    def __init__(self, per_minute: float, *, burst: float | None = None) -> None:
        self.rate_per_s = max(per_minute, 0.0) / 60.0
        self.capacity = burst if burst is not None else max(per_minute, 1.0)
        self.tokens = self.capacity
        self._last: float | None = None

    def allow(self, now: float) -> bool:
        if self._last is not None and now > self._last:
            self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate_per_s)
        self._last = now if self._last is None else max(self._last, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
