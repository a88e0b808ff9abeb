"""Stage rules of the model registry, as pure functions (no I/O).

A version is born `candidate`. It may run in `shadow` (seeing live traffic, never
scored), become the `champion` (serving), or be `retired`. While a rollout serves it
to a share of the devices beside the champion it is `canary`. Per model name there is
at most one champion, at most one shadow, and canaries only of its one rollout (one, or up to three for a
bandit over several candidates):

- promoting a version to champion retires the previous champion;
- putting a version in shadow sends the previous shadow back to candidate;
- the champion leaves only when another version is promoted, or by rollback;
- `retired` is terminal, except that a rollback restores the previous champion;
- a candidate or the shadow becomes `canary` only when a rollout of it starts
  (`plan_rollout_start`), and leaves it only when the rollout ends (`plan_rollout_end`):
  promoted to champion (the previous champion retired, as any promotion does), or
  back to candidate on a rollback or an abort (and the other candidates of a bandit when one is promoted).

`plan_transition`, `plan_rollback`, `plan_rollout_start` and `plan_rollout_end` return the
stage changes an operation makes, the registry writes them in one transaction.
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
    # Served to a share of the devices by a running (or paused) rollout, beside the champion.
    CANARY = "canary"


class ChangeKind(StrEnum):
    """Why a stage change happened (rollbacks are told apart to find the previous champion)."""

    TRANSITION = "transition"
    PROMOTION = "promotion"
    ROLLBACK = "rollback"
    SIDE_EFFECT = "side-effect"
    # Into canary when a rollout starts, back to candidate when it is rolled back or aborted (a rollout's
    # promotion is a PROMOTION like any other, so the champions' lineage stays whole).
    ROLLOUT = "rollout"


# Where each stage may go by an explicit transition (rollback is the only way out of retired,
# promotion of another version or rollback the only way out of champion). Nothing goes to canary by a
# transition: only a rollout's start puts a version there; a canary may be promoted (which ends its
# rollout), and goes back to candidate only by its rollout's rollback or abort.
ALLOWED_TRANSITIONS: dict[Stage, frozenset[Stage]] = {
    Stage.CANDIDATE: frozenset({Stage.SHADOW, Stage.CHAMPION, Stage.RETIRED}),
    Stage.SHADOW: frozenset({Stage.CANDIDATE, Stage.CHAMPION, Stage.RETIRED}),
    Stage.CHAMPION: frozenset(),
    Stage.RETIRED: frozenset(),
    Stage.CANARY: frozenset({Stage.CHAMPION}),
}
# The stages a rollout may start from.
ROLLOUT_START_STAGES = frozenset({Stage.CANDIDATE, Stage.SHADOW})


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
        if current == Stage.CANARY:
            raise StageRuleViolation(
                f"version {version} is the canary of a rollout: promote it, or roll back or abort the rollout"
            )
        if target == Stage.CANARY:
            raise StageRuleViolation(f"a version becomes canary only when a rollout of it starts, not {version}")
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


def plan_rollout_start(stages: Mapping[str, Stage], version: str, *more: str) -> list[PlannedChange]:
    """Put `version` (and `more`, a bandit's further candidates), each a candidate or the shadow, in canary for a
    rollout against the champion.

    A rollout needs a champion to share the devices with; the canaries of a model are those of its one rollout.
    """
    versions = (version, *more)
    if len(set(versions)) != len(versions):
        raise StageRuleViolation(f"a version is a candidate of a rollout once, not {', '.join(versions)}")
    for each in versions:
        if each not in stages:
            raise StageRuleViolation(f"unknown version {each}")
        current = stages[each]
        if current == Stage.CHAMPION:
            raise StageRuleViolation(f"version {each} is the champion: a rollout needs another version")
        if current not in ROLLOUT_START_STAGES:
            raise StageRuleViolation(f"version {each} is {current}: a rollout starts from a candidate or the shadow")
    if not any(stage == Stage.CHAMPION for stage in stages.values()):
        raise StageRuleViolation("there is no champion to roll out against: promote one first")
    canaries = sorted(other for other, stage in stages.items() if stage == Stage.CANARY)
    if canaries:
        raise StageRuleViolation(f"version {canaries[0]} is already canary")
    return [PlannedChange(each, stages[each], Stage.CANARY, ChangeKind.ROLLOUT) for each in versions]


def plan_rollout_end(stages: Mapping[str, Stage], version: str, *, promote: bool) -> list[PlannedChange]:
    """End the rollout of the canary `version`: promote it (retiring the champion) or send it back to candidate."""
    if stages.get(version) != Stage.CANARY:
        raise StageRuleViolation(f"version {version} is {stages.get(version, 'unknown')}, not canary")
    if promote:
        return plan_transition(stages, version, Stage.CHAMPION)
    return [PlannedChange(version, Stage.CANARY, Stage.CANDIDATE, ChangeKind.ROLLOUT)]
