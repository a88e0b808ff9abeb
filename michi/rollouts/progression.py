"""Where a canary rollout stands and what to do next (a pure state machine: time and counts are passed in).

    progress = Progress.start(now)
    action = next_action(spec, progress, now=now, labelled_windows=labels_since_step_began)
    # SET_WEIGHT -> publish a plan with action.weight, then progress = progress.after(action, now)
    # ANALYSE    -> verdict = evaluate(...the step's period...), then progress = progress.with_verdict(verdict)
    # WAIT/HOLD  -> call again later (action.recheck_after_seconds), progress unchanged
    # ADVANCE    -> progress = progress.after(action, now)
    # PROMOTE / ROLL_BACK -> publish the decision with action.reasons, then progress = progress.after(action, now)

The caller (the rollout controller) owns time, figures and publishing; this module only decides, so every
rule is testable without a clock. `Progress` is JSON-safe (`to_dict` / `from_dict`) and survives restarts.

Time a person held the rollout paused does not count: `next_action(..., paused_seconds=...)` takes it off the
step's elapsed time (pause durations, analysis intervals and deadlines alike), and `paused_within` measures it
from the rollout's pause and resume times.

Rules per step:
- `set_weight`: SET_WEIGHT with the weight in [0, 1]; applying it begins the next step.
- `pause`: WAIT until the duration has passed and the labelled windows have come in (both when both are
  given), then ADVANCE.
- `analyse`: an analysis is due at every `interval` of the step (the first one interval after the step
  began; its period is the whole step so far, so evidence accumulates). ANALYSE when one is due; then a
  FAIL verdict is ROLL_BACK with the verdict's reasons, PASS is ADVANCE, INCONCLUSIVE is WAIT for the next
  interval, until the step has lasted `deadline`: then ROLL_BACK (`on_deadline: rollback`, the default)
  or HOLD for a person (`on_deadline: hold`), never a promotion. So a regression with enough data is rolled
  back at the first analysis and one that needs more labels at the next ones; a canary with no traffic
  is never promoted.
- after the last step: PROMOTE. After PROMOTE or ROLL_BACK every call answers FINISHED: a decision is
  taken exactly once.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from michi.rollouts.analysis import Outcome, Verdict
from michi.rollouts.steps import Analyse, Pause, RolloutSpec, SetWeight


class ActionKind(enum.Enum):
    SET_WEIGHT = "set-weight"
    WAIT = "wait"
    ANALYSE = "analyse"
    ADVANCE = "advance"
    HOLD = "hold"
    PROMOTE = "promote"
    ROLL_BACK = "roll-back"
    FINISHED = "finished"


@dataclass(frozen=True)
class Action:
    """What the controller does now; `reasons` say why (they go into the audited plan revision)."""

    kind: ActionKind
    step_index: int
    weight: float | None = None
    recheck_after_seconds: float | None = None
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Progress:
    """A rollout's place in its steps: the step, when it began, its analyses, and the final decision if any."""

    step_index: int
    step_started_at: float
    analyses: int = 0
    last_verdict: Verdict | None = None
    finished: ActionKind | None = None

    @classmethod
    def start(cls, now: float) -> Progress:
        return cls(step_index=0, step_started_at=now)

    def with_verdict(self, verdict: Verdict) -> Progress:
        """Record the verdict of the analysis an ANALYSE action asked for."""
        return replace(self, analyses=self.analyses + 1, last_verdict=verdict)

    def after(self, action: Action, now: float) -> Progress:
        """The progress once `action` is carried out at `now`."""
        if action.kind in (ActionKind.SET_WEIGHT, ActionKind.ADVANCE):
            return Progress(step_index=self.step_index + 1, step_started_at=now)
        if action.kind in (ActionKind.PROMOTE, ActionKind.ROLL_BACK):
            return replace(self, finished=action.kind)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "step_index": self.step_index,
            "step_started_at": self.step_started_at,
            "analyses": self.analyses,
            "last_verdict": None if self.last_verdict is None else self.last_verdict.to_dict(),
            "finished": None if self.finished is None else self.finished.value,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Progress:
        verdict = state["last_verdict"]
        finished = state["finished"]
        return cls(
            step_index=int(state["step_index"]),
            step_started_at=float(state["step_started_at"]),
            analyses=int(state["analyses"]),
            last_verdict=None if verdict is None else Verdict.from_dict(verdict),
            finished=None if finished is None else ActionKind(finished),
        )


def paused_within(pauses: Iterable[tuple[float, float | None]], *, since: float, until: float) -> float:
    """Seconds of [since, until] covered by the pauses, each `(paused_at, resumed_at)` (None: still paused).

    Overlapping pauses count once, so a pause recorded twice is not taken off twice."""
    covered = 0.0
    reach = since
    for paused_at, resumed_at in sorted((start, until if end is None else end) for start, end in pauses):
        start, end = max(paused_at, reach), min(resumed_at, until)
        if end > start:
            covered += end - start
            reach = end
    return covered


def next_action(
    spec: RolloutSpec, progress: Progress, *, now: float, labelled_windows: int, paused_seconds: float = 0.0
) -> Action:
    """The next thing to do, given the steps, the progress, the time, the labelled windows since the step began, and
    the seconds of the step the rollout was paused (`paused_within`: they count toward no duration or deadline)."""
    index = progress.step_index
    if progress.finished is not None:
        return Action(ActionKind.FINISHED, index, reasons=(f"the rollout already ended: {progress.finished.value}",))
    if index >= len(spec.steps):
        return Action(ActionKind.PROMOTE, index, reasons=("every step passed",))
    step = spec.steps[index]
    elapsed = max(now - progress.step_started_at - max(paused_seconds, 0.0), 0.0)

    if isinstance(step, SetWeight):
        return Action(ActionKind.SET_WEIGHT, index, weight=step.percent / 100.0)

    if isinstance(step, Pause):
        waiting = []
        remaining: float | None = None
        if step.duration_seconds is not None and elapsed < step.duration_seconds:
            remaining = step.duration_seconds - elapsed
            waiting.append(f"paused: {elapsed:g} of {step.duration_seconds:g} s")
        if step.labelled_windows is not None and labelled_windows < step.labelled_windows:
            waiting.append(f"paused: {labelled_windows} of {step.labelled_windows} labelled windows")
        if waiting:
            return Action(ActionKind.WAIT, index, recheck_after_seconds=remaining, reasons=tuple(waiting))
        return Action(ActionKind.ADVANCE, index, reasons=("pause over",))

    return _analyse_action(step, progress, elapsed, index)


def _analyse_action(step: Analyse, progress: Progress, elapsed: float, index: int) -> Action:
    verdict = progress.last_verdict
    if verdict is not None and verdict.outcome is Outcome.FAIL:
        return Action(ActionKind.ROLL_BACK, index, reasons=("analysis failed", *verdict.reasons))
    if verdict is not None and verdict.outcome is Outcome.PASS:
        return Action(ActionKind.ADVANCE, index, reasons=("analysis passed", *verdict.reasons))
    due = math.floor(elapsed / step.interval_seconds + 1e-9)
    if progress.analyses < due:
        return Action(ActionKind.ANALYSE, index, reasons=(f"analysis {progress.analyses + 1} of this step is due",))
    if elapsed >= step.deadline_seconds:
        last = verdict.reasons if verdict is not None else ("no analysis finished",)
        why = f"still inconclusive after {elapsed:g} s (deadline {step.deadline_seconds:g} s)"
        kind = ActionKind.ROLL_BACK if step.on_deadline == "rollback" else ActionKind.HOLD
        return Action(kind, index, reasons=(why, *last))
    next_due = (progress.analyses + 1) * step.interval_seconds
    reasons = ("waiting for the next analysis", *(verdict.reasons if verdict is not None else ()))
    return Action(ActionKind.WAIT, index, recheck_after_seconds=max(next_due - elapsed, 0.0), reasons=reasons)
