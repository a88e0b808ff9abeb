"""What the registry hands out: plain, frozen records (never live ORM rows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from michi.registry.stages import ChangeKind, Stage


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model and everything needed to reproduce and verify it."""

    name: str
    version: str
    stage: Stage
    artifact_uri: str
    artifact_sha256: str
    code_version: str
    data_version: str
    parameters: dict[str, Any]
    metrics: dict[str, Any]
    parent_version: str | None
    created_by: str
    created_at: datetime
    # Registration order per name; a version without a name of its own is called str(number).
    number: int = 0


@dataclass(frozen=True)
class StageChange:
    """One audit entry: `version` went from `from_stage` to `to_stage`."""

    model_name: str
    sequence: int
    version: str
    from_stage: Stage
    to_stage: Stage
    kind: ChangeKind
    reason: str
    actor: str
    changed_at: datetime
    # The plan revision that published it; the changes of one decision share one (a promotion's two).
    revision: int = 0


@dataclass(frozen=True)
class Rollout:
    """One rollout of `candidate_version` (and, for a bandit over more arms, of further candidates) against
    `champion_version` (the champion when it started)."""

    rollout_id: str
    model_name: str
    candidate_version: str
    champion_version: str
    strategy: str
    # The rollout document as parsed, or None for a rollout at a single weight.
    document: dict[str, Any] | None
    status: str
    step_index: int | None
    weight_percent: float
    revision: int
    started_by: str
    started_at: datetime
    ended_at: datetime | None
    # Every candidate in plan order, each with its percent of the devices: `candidate_version` at `weight_percent`
    # first, then those a bandit over more than two arms adds (`registry_rollout_candidate`). Empty: only the first.
    candidate_weights: tuple[tuple[str, float], ...] = ()

    @property
    def steps(self) -> int:
        """How many steps the document has (0 without one)."""
        return len((self.document or {}).get("steps", []))

    @property
    def candidates(self) -> tuple[str, ...]:
        """Every candidate version, in plan order (the first is `candidate_version`)."""
        return tuple(version for version, _ in self.weights) if self.candidate_weights else (self.candidate_version,)

    @property
    def weights(self) -> tuple[tuple[str, float], ...]:
        """Every candidate with its percent of the devices, in plan order (the champion has the rest)."""
        return self.candidate_weights or ((self.candidate_version, self.weight_percent),)

    @property
    def arms(self) -> tuple[str, ...]:
        """The rollout's serving arms in plan order: its candidates, then the champion."""
        return (*self.candidates, self.champion_version)

    @property
    def champion_percent(self) -> float:
        """Percent of the devices the champion keeps."""
        return round(100.0 - sum(percent for _, percent in self.weights), 4)


@dataclass(frozen=True)
class RolloutDecision:
    """One audited rollout decision: the plan revision it published, and the plan it replaced."""

    rollout_id: str
    model_name: str
    revision: int
    action: str
    actor: str
    reason: str
    evidence: dict[str, Any]
    previous_plan: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class ValueChange:
    """One parameter or metric in two versions (None where a version lacks it)."""

    key: str
    left: Any
    right: Any

    @property
    def changed(self) -> bool:
        return bool(self.left != self.right)

    @property
    def delta(self) -> float | None:
        """right - left when both are numbers."""
        numbers = (int, float)
        if isinstance(self.left, numbers) and isinstance(self.right, numbers):
            return float(self.right) - float(self.left)
        return None


@dataclass(frozen=True)
class VersionDiff:
    """Two versions of one model side by side."""

    name: str
    left: ModelVersion
    right: ModelVersion
    parameters: list[ValueChange] = field(default_factory=list)
    metrics: list[ValueChange] = field(default_factory=list)

    @property
    def data_version_changed(self) -> bool:
        return self.left.data_version != self.right.data_version

    @property
    def code_version_changed(self) -> bool:
        return self.left.code_version != self.right.code_version


def compare_values(left: dict[str, Any], right: dict[str, Any]) -> list[ValueChange]:
    """Every key of either mapping, sorted, with both values."""
    return [ValueChange(key, left.get(key), right.get(key)) for key in sorted(left.keys() | right.keys())]
