"""The decision core of rollouts: who serves a device, when a candidate is better, when to promote or roll back.

Pure (no I/O, no Kafka, no SQL, no clock): the rollout controller and inference import it and own time,
figures and publishing. docs/rollouts.md describes it for users.

- `assignment` — sticky traffic split by device: `TrafficSplit(...).route(device_id)` gives the serving arm
  (stable hash of rollout id and device id on a unit line, arms as consecutive intervals, monotone ramps)
  and the shadow arms that also score the device (their own device share).
- `sequential` — the always-valid A/B test (mSPRT) on label outcomes or rates: `SequentialTest`, read as
  often as wanted at the stated alpha, state in a JSON-safe dict.
- `bandit` — Thompson sampling with Beta posteriors rewarded by delayed labels, idempotent per label event,
  floored allocations: `ThompsonBandit`.
- `steps` — the rollout document (set weight, pause, analyse), strictly validated: `parse_rollout_spec`.
- `analysis` — one period's figures per arm against success and failure conditions: `evaluate` gives
  PASS / FAIL / INCONCLUSIVE with reasons (too little data is never a pass).
- `progression` — the canary state machine: `next_action` says set weight, wait, analyse, advance, hold,
  promote or roll back.
- `policy` — the rollout policy: which candidates start a rollout by themselves (`auto_start_due`) and whether
  a rollout's end promotes: `parse_rollout_policy`.
"""

from michi.rollouts.analysis import AnalysisSpec, ArmFigures, Condition, Outcome, Verdict, evaluate, parse_condition
from michi.rollouts.assignment import (
    Arm,
    InvalidSplit,
    Route,
    ShadowArm,
    TrafficSplit,
    assign_arm,
    device_position,
    is_shadowed,
    split_problems,
)
from michi.rollouts.bandit import RewardOutcome, ThompsonBandit, floor_shares
from michi.rollouts.policy import RolloutPolicy, RolloutPolicyError, parse_rollout_policy
from michi.rollouts.progression import Action, ActionKind, Progress, next_action
from michi.rollouts.sequential import Decision, OutcomeKind, SequentialEvidence, SequentialTest
from michi.rollouts.steps import (
    Analyse,
    Pause,
    RolloutSpec,
    RolloutSpecError,
    SetWeight,
    parse_duration,
    parse_rollout_spec,
    rollout_spec_from_mapping,
)

__all__ = [
    "Action",
    "ActionKind",
    "Analyse",
    "AnalysisSpec",
    "Arm",
    "ArmFigures",
    "Condition",
    "Decision",
    "InvalidSplit",
    "Outcome",
    "OutcomeKind",
    "Pause",
    "Progress",
    "RewardOutcome",
    "RolloutPolicy",
    "RolloutPolicyError",
    "RolloutSpec",
    "RolloutSpecError",
    "Route",
    "SequentialEvidence",
    "SequentialTest",
    "SetWeight",
    "ShadowArm",
    "ThompsonBandit",
    "TrafficSplit",
    "Verdict",
    "assign_arm",
    "device_position",
    "evaluate",
    "floor_shares",
    "is_shadowed",
    "next_action",
    "parse_condition",
    "parse_duration",
    "parse_rollout_policy",
    "parse_rollout_spec",
    "rollout_spec_from_mapping",
    "split_problems",
]
