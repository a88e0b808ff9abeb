"""Rollout plans built from the registry's state (pure: no I/O).

The plan for a model name names its champion (traffic share 1.0) and, when one is set,
its shadow (share 0: it sees every window, its outputs are never scored). The plan's
revision is the number of stage changes recorded for that name, and its event id is
derived from name and revision, so re-sending the same plan is recognisable downstream.
"""

from __future__ import annotations

from datetime import datetime

from michi.contracts import stable_event_id, timestamp_from_datetime
from michi.contracts.v1 import inference_pb2, operations_pb2
from michi.registry.records import ModelVersion
from michi.registry.stages import Stage


def model_reference(version: ModelVersion) -> operations_pb2.ModelRef:
    return operations_pb2.ModelRef(
        name=version.name,
        version=version.version,
        artifact_uri=version.artifact_uri,
        sha256=version.artifact_sha256,
        data_version=version.data_version,
    )


def build_rollout_plan(
    name: str, versions: list[ModelVersion], *, revision: int, changed_at: datetime | None, reason: str
) -> operations_pb2.RolloutPlan:
    """The plan for `name` given all its versions and its latest stage change."""
    champion = next((version for version in versions if version.stage == Stage.CHAMPION), None)
    shadow = next((version for version in versions if version.stage == Stage.SHADOW), None)
    plan = operations_pb2.RolloutPlan(
        event_id=stable_event_id("rollout-plan", name, revision),
        model_name=name,
        strategy=(operations_pb2.ROLLOUT_STRATEGY_SHADOW if shadow else operations_pb2.ROLLOUT_STRATEGY_CHAMPION_ONLY),
        revision=revision,
        reason=reason,
    )
    if changed_at is not None:
        plan.occurred_at.CopyFrom(timestamp_from_datetime(changed_at))
    if champion is not None:
        plan.champion.CopyFrom(model_reference(champion))
        plan.arms.append(
            operations_pb2.RolloutArm(
                model=model_reference(champion), variant=inference_pb2.VARIANT_CHAMPION, traffic_share=1.0
            )
        )
    if shadow is not None:
        plan.arms.append(
            operations_pb2.RolloutArm(
                model=model_reference(shadow), variant=inference_pb2.VARIANT_SHADOW, traffic_share=0.0
            )
        )
    return plan
