"""What `michi models promote|rollback|republish` print about a plan: each arm's version, variant and share."""

from __future__ import annotations

from michi.contracts.v1 import inference_pb2, operations_pb2
from michi.registry.commands import _plan_summary


def arm(version: str, variant: int, share: float) -> operations_pb2.RolloutArm:
    entry = operations_pb2.RolloutArm(variant=variant, traffic_share=share)  # type: ignore[arg-type]
    entry.model.name, entry.model.version = "michi-risk", version
    return entry


def test_a_plan_names_each_arm_with_its_variant_and_any_partial_share() -> None:
    shadow = operations_pb2.RolloutPlan(model_name="michi-risk", revision=3)
    shadow.arms.extend([arm("4", inference_pb2.VARIANT_CHAMPION, 1.0), arm("5", inference_pb2.VARIANT_SHADOW, 0.0)])
    assert _plan_summary(shadow) == "michi-risk revision 3: 4 (champion), 5 (shadow)"
    canary = operations_pb2.RolloutPlan(model_name="michi-risk", revision=4, rollout_id="rollout-7f3a")
    canary.arms.extend(
        [
            arm("5", inference_pb2.VARIANT_CANARY, 0.1),
            arm("4", inference_pb2.VARIANT_CHAMPION, 0.9),
            arm("6", inference_pb2.VARIANT_SHADOW, 0.05),
        ]
    )
    assert _plan_summary(canary) == (
        "michi-risk revision 4 [rollout rollout-7f3a]: 5 (canary 10%), 4 (champion 90%), 6 (shadow 5%)"
    )
    assert _plan_summary(operations_pb2.RolloutPlan(model_name="michi-risk", revision=1)) == (
        "michi-risk revision 1: no champion"
    )
