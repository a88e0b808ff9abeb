"""Rollout plans built from the registry's state (pure: no I/O).

The plan for a model name names its champion (traffic share 1.0) and, when one is set,
its shadow (share 0: it sees every window, its outputs are never scored). While a rollout
serves (`ServingRollout`), the plan carries its `rollout_id` and splits the devices: the
candidate first (CANARY, or TREATMENT for an A/B test or a bandit, share w), a bandit's further candidates next
(TREATMENT, each its share), the champion last (the rest), then the shadow if there is one (share 0: every device). The plan's revision is the
model's latest (one per decision, a stage change asked for or a rollout action, however many stage changes
it makes: a promotion is one revision; stage changes and rollout decisions share one sequence per name), and its
event id is derived from name and revision, so re-sending the same plan is recognisable
downstream. `plan_problems` checks a plan as inference will before it is published.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from michi.contracts import stable_event_id, timestamp_from_datetime
from michi.contracts.v1 import inference_pb2, operations_pb2
from michi.registry.records import ModelVersion
from michi.registry.stages import Stage
from michi.rollouts.assignment import Arm, ShadowArm, split_problems

# Shares are float32 on the wire; inference rounds them to this many decimals before checking they sum to 1.
SHARE_DECIMALS = 6
# Inference's default limit of models served at once per plan (shadow included).
MAX_PLAN_ARMS = 4
_STRATEGIES = {
    "canary": (operations_pb2.ROLLOUT_STRATEGY_CANARY, inference_pb2.VARIANT_CANARY),
    "ab": (operations_pb2.ROLLOUT_STRATEGY_AB, inference_pb2.VARIANT_TREATMENT),
    "bandit": (operations_pb2.ROLLOUT_STRATEGY_BANDIT, inference_pb2.VARIANT_TREATMENT),
}


@dataclass(frozen=True)
class ServingRollout:
    """What a running or paused rollout adds to the plan: its id, how the candidate is served, its share."""

    rollout_id: str
    strategy: str  # canary | ab | bandit
    candidate_version: str
    candidate_share: float  # in [0, 1]
    # A bandit's further candidates, in plan order after the first, each with its share in [0, 1].
    more_candidates: tuple[tuple[str, float], ...] = ()

    @property
    def candidate_shares(self) -> tuple[tuple[str, float], ...]:
        """Every candidate with its share, in plan order."""
        return ((self.candidate_version, self.candidate_share), *self.more_candidates)


def model_reference(version: ModelVersion) -> operations_pb2.ModelRef:
    return operations_pb2.ModelRef(
        name=version.name,
        version=version.version,
        artifact_uri=version.artifact_uri,
        sha256=version.artifact_sha256,
        data_version=version.data_version,
    )


def build_rollout_plan(
    name: str,
    versions: list[ModelVersion],
    *,
    revision: int,
    changed_at: datetime | None,
    reason: str,
    rollout: ServingRollout | None = None,
) -> operations_pb2.RolloutPlan:
    """The plan for `name` given all its versions, its latest revision, and the rollout serving, if any."""
    champion = next((version for version in versions if version.stage == Stage.CHAMPION), None)
    shadow = next((version for version in versions if version.stage == Stage.SHADOW), None)
    by_version = {version.version: version for version in versions}
    candidates = (
        [(by_version[version], share) for version, share in rollout.candidate_shares if version in by_version]
        if rollout is not None
        else []
    )
    strategy = operations_pb2.ROLLOUT_STRATEGY_SHADOW if shadow else operations_pb2.ROLLOUT_STRATEGY_CHAMPION_ONLY
    if rollout is not None:
        strategy, candidate_variant = _STRATEGIES[rollout.strategy]
    plan = operations_pb2.RolloutPlan(
        event_id=stable_event_id("rollout-plan", name, revision),
        model_name=name,
        strategy=strategy,
        revision=revision,
        reason=reason,
        rollout_id=rollout.rollout_id if rollout is not None else "",
    )
    if changed_at is not None:
        plan.occurred_at.CopyFrom(timestamp_from_datetime(changed_at))
    champion_share = 1.0
    if rollout is not None and candidates:
        # Candidates first, champion last: raising the (first) candidate's share moves only champion devices onto it.
        shares = [round(share, SHARE_DECIMALS) for _, share in candidates]
        champion_share = round(1.0 - sum(shares), SHARE_DECIMALS)
        for (candidate, _), share in zip(candidates, shares, strict=True):
            plan.arms.append(
                operations_pb2.RolloutArm(
                    model=model_reference(candidate), variant=candidate_variant, traffic_share=share
                )
            )
    if champion is not None:
        plan.champion.CopyFrom(model_reference(champion))
        plan.arms.append(
            operations_pb2.RolloutArm(
                model=model_reference(champion), variant=inference_pb2.VARIANT_CHAMPION, traffic_share=champion_share
            )
        )
    if shadow is not None:
        plan.arms.append(
            operations_pb2.RolloutArm(
                model=model_reference(shadow), variant=inference_pb2.VARIANT_SHADOW, traffic_share=0.0
            )
        )
    return plan


def plan_problems(plan: operations_pb2.RolloutPlan) -> list[str]:
    """Why inference would refuse a plan with a rollout id (an empty list: it serves it), as inference checks it:
    float32 shares rounded to 6 decimals, serving arms summing to 1 (`split_problems`), at most 4 arms."""
    if not plan.rollout_id:
        return []
    serving = [
        Arm(arm.model.version, round(float(arm.traffic_share), SHARE_DECIMALS))
        for arm in plan.arms
        if arm.variant != inference_pb2.VARIANT_SHADOW
    ]
    shadows = [
        ShadowArm(arm.model.version, round(float(arm.traffic_share), SHARE_DECIMALS) or 1.0)
        for arm in plan.arms
        if arm.variant == inference_pb2.VARIANT_SHADOW
    ]
    problems = split_problems(serving, shadows)
    if len(plan.arms) > MAX_PLAN_ARMS:
        problems.append(f"{len(plan.arms)} arms, at most {MAX_PLAN_ARMS} are served at once (shadow included)")
    return problems
