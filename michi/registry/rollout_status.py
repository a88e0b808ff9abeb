"""The life of a rollout record in the registry, as pure rules (no I/O).

A rollout serves a candidate to a share of the devices beside the champion until it ends. It is `running`
or `paused` while it serves (at most one per model name), and ends `promoted`, `rolled-back` or `aborted`.
Every action on it is one decision in its log and one `RolloutPlan` revision:

| action | allowed while | leads to |
|---|---|---|
| start | (no rollout of the model running or paused) | running |
| set-weight | running | running |
| pause | running | paused |
| resume | paused | running |
| promote, rollback, abort | running or paused | promoted, rolled-back, aborted |

A pause changes no share: it is the word to the controller (a later slice) not to move the rollout on, and
the plan revision it publishes differs only by its reason, so inference moves no device.
"""

from __future__ import annotations

import math
import secrets
from enum import StrEnum

from michi.rollouts.steps import RolloutSpec, SetWeight

# Default share of devices on the candidate when a rollout starts without a weight or a document.
DEFAULT_WEIGHT_PERCENT = {"canary": 10.0, "ab": 50.0, "bandit": 50.0}


class RolloutStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled-back"
    ABORTED = "aborted"


class RolloutAction(StrEnum):
    START = "start"
    SET_WEIGHT = "set-weight"
    PAUSE = "pause"
    RESUME = "resume"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    ABORT = "abort"


class RolloutStrategy(StrEnum):
    """How the candidate is served: a canary (variant CANARY), the treatment arm of an A/B test, or an arm of a
    bandit (variant TREATMENT, its share set by the rollout controller's Thompson sampling)."""

    CANARY = "canary"
    AB = "ab"
    BANDIT = "bandit"


# A rollout in these statuses serves its candidate; the registry allows one per model name.
ACTIVE_STATUSES = frozenset({RolloutStatus.RUNNING, RolloutStatus.PAUSED})

_ALLOWED_FROM: dict[RolloutAction, frozenset[RolloutStatus]] = {
    RolloutAction.SET_WEIGHT: frozenset({RolloutStatus.RUNNING}),
    RolloutAction.PAUSE: frozenset({RolloutStatus.RUNNING}),
    RolloutAction.RESUME: frozenset({RolloutStatus.PAUSED}),
    RolloutAction.PROMOTE: ACTIVE_STATUSES,
    RolloutAction.ROLLBACK: ACTIVE_STATUSES,
    RolloutAction.ABORT: ACTIVE_STATUSES,
}
_LEADS_TO: dict[RolloutAction, RolloutStatus] = {
    RolloutAction.START: RolloutStatus.RUNNING,
    RolloutAction.SET_WEIGHT: RolloutStatus.RUNNING,
    RolloutAction.PAUSE: RolloutStatus.PAUSED,
    RolloutAction.RESUME: RolloutStatus.RUNNING,
    RolloutAction.PROMOTE: RolloutStatus.PROMOTED,
    RolloutAction.ROLLBACK: RolloutStatus.ROLLED_BACK,
    RolloutAction.ABORT: RolloutStatus.ABORTED,
}
# How a plan's reason names each action ("rollout ro-... paused: <reason>").
_PAST_TENSE: dict[RolloutAction, str] = {
    RolloutAction.START: "started",
    RolloutAction.SET_WEIGHT: "weight set",
    RolloutAction.PAUSE: "paused",
    RolloutAction.RESUME: "resumed",
    RolloutAction.PROMOTE: "promoted",
    RolloutAction.ROLLBACK: "rolled back",
    RolloutAction.ABORT: "aborted",
}


class RolloutRefused(ValueError):
    """A rollout action that cannot be taken now (no rollout running, one already running, a bad weight...);
    nothing was changed."""


def status_after(action: RolloutAction, status: RolloutStatus, *, model_name: str) -> RolloutStatus:
    """The status `action` leads to from `status`, or `RolloutRefused` saying why it cannot be taken."""
    if action != RolloutAction.START and status not in _ALLOWED_FROM[action]:
        if status == RolloutStatus.PAUSED:
            raise RolloutRefused(f"the rollout of {model_name} is paused: resume it first")
        raise RolloutRefused(f"the rollout of {model_name} is {status}: cannot {action} it")
    return _LEADS_TO[action]


def ends_rollout(action: RolloutAction) -> bool:
    return _LEADS_TO[action] not in ACTIVE_STATUSES


def new_rollout_id(model_name: str, candidate_version: str, random_hex: str | None = None) -> str:
    """`ro-<model>-<candidate>-<8 hex>`: readable in logs and warehouse rows, fixed for the rollout's life,
    and different for every rollout (so each one reshuffles which devices get the candidate)."""
    suffix = random_hex if random_hex is not None else secrets.token_hex(4)
    return f"ro-{model_name}-{candidate_version}-{suffix}"


def checked_weight(percent: float) -> float:
    """`percent` of devices on the candidate, refused unless a finite number in [0, 100]."""
    if not isinstance(percent, int | float) or not math.isfinite(percent) or not 0.0 <= percent <= 100.0:
        raise RolloutRefused(f"weight {percent!r} is outside 0-100 (percent of devices on the candidate)")
    return float(percent)


def candidate_share(percent: float) -> float:
    """The candidate arm's traffic share for a weight in percent, rounded as inference rounds shares."""
    return round(percent / 100.0, 6)


def first_weight(spec: RolloutSpec) -> tuple[int, float]:
    """The index and percent of the document's first `set_weight` step: where a rollout by the document starts."""
    for index, step in enumerate(spec.steps):
        if isinstance(step, SetWeight):
            return index, step.percent
    raise RolloutRefused("the rollout document has no set_weight step: nothing says how many devices to start with")


def step_after_weight(spec: RolloutSpec, current_step: int, percent: float) -> int:
    """The step a manual weight change reaches: the next `set_weight` step after `current_step` with that weight,
    or `current_step` when none has it (a weight off the document's plan)."""
    for index in range(current_step + 1, len(spec.steps)):
        step = spec.steps[index]
        if isinstance(step, SetWeight) and math.isclose(step.percent, percent):
            return index
    return current_step


def plan_reason(rollout_id: str, action: RolloutAction, reason: str) -> str:
    """The reason a rollout action's plan revision carries (and its stage changes, if it makes any)."""
    return f"rollout {rollout_id} {_PAST_TENSE[action]}: {reason}"
