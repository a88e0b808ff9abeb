"""What a rollout plan asks inference to serve, and whether to apply it (pure: no I/O).

Plans arrive on the compacted `model-rollouts` topic keyed by model name, at least once: the same
plan may come twice (same `event_id` and `revision`), and a reader starting from the beginning sees
older plans before the latest. A plan is applied only when its revision is higher than the one held.
The champion arm (variant CHAMPION, share 1.0) is served; the shadow arm (variant SHADOW, share 0)
scores every window and is never scored; arms of other strategies (canary, A/B, bandit) are not
served yet and are reported as such. A plan without a champion means "the built-in baseline".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from michi.contracts.v1 import inference_pb2, operations_pb2


class Versioned(Protocol):
    model_version: str


class PlanDecision(enum.Enum):
    APPLY = "apply"
    DUPLICATE = "duplicate"
    STALE = "stale"
    OTHER_MODEL = "other-model"


def judge_plan(plan: operations_pb2.RolloutPlan, *, model_name: str, held_revision: int | None) -> PlanDecision:
    """Apply only plans for `model_name` whose revision is higher than the one held."""
    if plan.model_name != model_name:
        return PlanDecision.OTHER_MODEL
    if held_revision is None or plan.revision > held_revision:
        return PlanDecision.APPLY
    return PlanDecision.DUPLICATE if plan.revision == held_revision else PlanDecision.STALE


@dataclass(frozen=True)
class PlanArms:
    champion: operations_pb2.ModelRef | None
    shadow: operations_pb2.ModelRef | None
    # Arms this service does not serve (e.g. "VARIANT_CANARY 2 (share 0.1)").
    unsupported: list[str] = field(default_factory=list)


def arms_of(plan: operations_pb2.RolloutPlan) -> PlanArms:
    """The champion and shadow a plan names (the first arm of each variant; `plan.champion` if no arms)."""
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
