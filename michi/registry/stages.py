"""Stage rules of the model registry, as pure functions (no I/O).

A version is born `candidate`. It may run in `shadow` (seeing live traffic, never
scored), become the `champion` (serving), or be `retired`. Per model name there is
at most one champion and at most one shadow:

- promoting a version to champion retires the previous champion;
- putting a version in shadow sends the previous shadow back to candidate;
- the champion leaves only when another version is promoted, or by rollback;
- `retired` is terminal, except that a rollback restores the previous champion.

`plan_transition` and `plan_rollback` return the stage changes an operation makes,
the registry writes them in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Stage(StrEnum):
    CANDIDATE = "candidate"
    SHADOW = "shadow"
    CHAMPION = "champion"
    RETIRED = "retired"


class ChangeKind(StrEnum):
    """Why a stage change happened (rollbacks are told apart to find the previous champion)."""

    TRANSITION = "transition"
    PROMOTION = "promotion"
    ROLLBACK = "rollback"
    SIDE_EFFECT = "side-effect"


# Where each stage may go by an explicit transition (rollback is the only way out of retired,
# promotion of another version or rollback the only way out of champion).
ALLOWED_TRANSITIONS: dict[Stage, frozenset[Stage]] = {
    Stage.CANDIDATE: frozenset({Stage.SHADOW, Stage.CHAMPION, Stage.RETIRED}),
    Stage.SHADOW: frozenset({Stage.CANDIDATE, Stage.CHAMPION, Stage.RETIRED}),
    Stage.CHAMPION: frozenset(),
    Stage.RETIRED: frozenset(),
}


class StageRuleViolation(ValueError):
    """The requested stage change breaks a registry rule; nothing was changed."""


@dataclass(frozen=True)
class PlannedChange:
    """One version moving from one stage to another within an operation."""

    version: str
    from_stage: Stage
    to_stage: Stage
    kind: ChangeKind


def plan_transition(stages: Mapping[str, Stage], version: str, target: Stage) -> list[PlannedChange]:
    """The changes that move `version` to `target`, given every version's current stage for one name."""
    if version not in stages:
        raise StageRuleViolation(f"unknown version {version}")
    current = stages[version]
    if current == target:
        raise StageRuleViolation(f"version {version} is already {target}")
    if target not in ALLOWED_TRANSITIONS[current]:
        if current == Stage.CHAMPION:
            raise StageRuleViolation(f"version {version} is the champion: promote another version or roll back instead")
        if current == Stage.RETIRED:
            raise StageRuleViolation(f"version {version} is retired: only a rollback can bring it back")
        raise StageRuleViolation(f"version {version} cannot go from {current} to {target}")
    kind = ChangeKind.PROMOTION if target == Stage.CHAMPION else ChangeKind.TRANSITION
    changes = [PlannedChange(version, current, target, kind)]
    if target == Stage.CHAMPION:
        changes += [
            PlannedChange(other, Stage.CHAMPION, Stage.RETIRED, ChangeKind.SIDE_EFFECT)
            for other, stage in stages.items()
            if stage == Stage.CHAMPION and other != version
        ]
    if target == Stage.SHADOW:
        changes += [
            PlannedChange(other, Stage.SHADOW, Stage.CANDIDATE, ChangeKind.SIDE_EFFECT)
            for other, stage in stages.items()
            if stage == Stage.SHADOW and other != version
        ]
    return changes


def champion_lineage(champion_changes: Sequence[tuple[str, ChangeKind]]) -> list[str]:
    """The stack of champions, oldest first, from the changes *to* champion in the order they happened.

    A promotion pushes a version; a rollback pops the current champion (restoring the one below).
    """
    lineage: list[str] = []
    for version, kind in champion_changes:
        if kind == ChangeKind.ROLLBACK:
            if lineage:
                lineage.pop()
            if not lineage or lineage[-1] != version:
                lineage.append(version)
        else:
            lineage.append(version)
    return lineage


def plan_rollback(stages: Mapping[str, Stage], lineage: Sequence[str]) -> list[PlannedChange]:
    """Retire the current champion and restore the one it replaced."""
    champions = [version for version, stage in stages.items() if stage == Stage.CHAMPION]
    if not champions:
        raise StageRuleViolation("there is no champion to roll back")
    [current] = champions
    if len(lineage) < 2 or lineage[-1] != current:
        raise StageRuleViolation(f"champion {current} has no previous champion to roll back to")
    previous = lineage[-2]
    if stages.get(previous) != Stage.RETIRED:
        raise StageRuleViolation(f"previous champion {previous} is {stages.get(previous)}, not retired")
    return [
        PlannedChange(current, Stage.CHAMPION, Stage.RETIRED, ChangeKind.ROLLBACK),
        PlannedChange(previous, Stage.RETIRED, Stage.CHAMPION, ChangeKind.ROLLBACK),
    ]
