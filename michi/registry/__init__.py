"""The model registry: versions with full lineage, their stages, and the rollout plan they imply.

`ModelRegistry` (in `store`) is the API; `stages` holds the rules as pure functions;
`rollout_status` the life of a rollout record (statuses, actions, rollout ids), also pure;
`rollout` turns the registry's state into the `RolloutPlan` published on `MODEL_ROLLOUTS`;
`commands` holds the `michi models` and `michi rollouts` command groups. See docs/registry.md.

Names are imported on first use, so `michi --help` does not pay for SQLAlchemy and Kafka.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from michi.registry.records import ModelVersion, Rollout, RolloutDecision, StageChange, ValueChange, VersionDiff
    from michi.registry.rollout_status import RolloutRefused, RolloutStatus
    from michi.registry.stages import Stage, StageRuleViolation
    from michi.registry.store import (
        ConcurrentChangeConflict,
        ModelRegistry,
        PlanNotPublished,
        PlanPublisher,
        UnknownModelVersion,
        VersionAlreadyRegistered,
    )

_HOMES = {
    "ModelVersion": "records",
    "Rollout": "records",
    "RolloutDecision": "records",
    "RolloutRefused": "rollout_status",
    "RolloutStatus": "rollout_status",
    "StageChange": "records",
    "ValueChange": "records",
    "VersionDiff": "records",
    "Stage": "stages",
    "StageRuleViolation": "stages",
    "ConcurrentChangeConflict": "store",
    "ModelRegistry": "store",
    "PlanNotPublished": "store",
    "PlanPublisher": "store",
    "UnknownModelVersion": "store",
    "VersionAlreadyRegistered": "store",
}

__all__ = [
    "ConcurrentChangeConflict",
    "ModelRegistry",
    "ModelVersion",
    "PlanNotPublished",
    "PlanPublisher",
    "Rollout",
    "RolloutDecision",
    "RolloutRefused",
    "RolloutStatus",
    "Stage",
    "StageChange",
    "StageRuleViolation",
    "UnknownModelVersion",
    "ValueChange",
    "VersionAlreadyRegistered",
    "VersionDiff",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"michi.registry.{_HOMES[name]}"), name)
