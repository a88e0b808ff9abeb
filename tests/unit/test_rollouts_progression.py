"""The canary state machine (`michi/rollouts/progression.py`), walked through whole rollouts with a simulated clock.

A test controller drives `next_action` every minute: it applies weights, runs the analysis when one is due
(figures from a simulated fleet: 1,000 predictions a minute, 5 % of them labelled), and stops at the decision.
The issue's acceptance: an injected regression (5 points lower label agreement, or double the false-alert rate)
is rolled back within two analysis intervals, exactly once, with its reason; a canary with no traffic is never
promoted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from michi.rollouts.analysis import ArmFigures, Outcome, Verdict, evaluate
from michi.rollouts.progression import Action, ActionKind, Progress, next_action, paused_within
from michi.rollouts.steps import Analyse, RolloutSpec, parse_rollout_spec

CANARY = """
analyses:
  quality:
    interval: 10m
    deadline: 1h
    minimum_predictions: 1000
    minimum_labelled_windows: 200
    minimum_km: 100
    success:
      - agreement_with_labels >= champion - 0.02
      - false_alerts_per_1000_km <= champion * 1.2
      - errors_per_1000 <= 1
    failure:
      - agreement_with_labels < champion - 0.03
      - false_alerts_per_1000_km > champion * 1.5
      - errors_per_1000 > 5
steps:
  - set_weight: 10
  - pause: {duration: 10m}
  - analyse: quality
  - set_weight: 25
  - pause: {labelled_windows: 200}
  - analyse: quality
  - set_weight: 50
  - analyse: quality
"""

MINUTE = 60.0
PREDICTIONS_PER_MINUTE = 1000
LABELLED_SHARE = 0.05
KM_PER_PREDICTION = 0.05


@dataclass(frozen=True)
class Behaviour:
    """How an arm performs: label agreement, false alerts per 1,000 km, errors per 1,000 predictions."""

    agreement: float = 0.90
    false_alerts_per_1000_km: float = 10.0
    errors_per_1000: float = 0.2


CHAMPION = Behaviour()


def period_figures(behaviour: Behaviour, predictions: int) -> ArmFigures:
    labelled = int(predictions * LABELLED_SHARE)
    km = predictions * KM_PER_PREDICTION
    return ArmFigures(
        predictions=predictions,
        labelled_windows=labelled,
        correct=round(labelled * behaviour.agreement),
        false_alerts=round(km * behaviour.false_alerts_per_1000_km / 1000),
        km=km,
        errors=round(predictions * behaviour.errors_per_1000 / 1000),
        latency_p99_ms=120.0,
    )


@dataclass
class Walk:
    actions: list[tuple[float, Action]]
    weights: list[float]
    verdicts: list[tuple[int, Verdict]]
    progress: Progress

    def decisions(self) -> list[tuple[float, Action]]:
        return [
            (now, action) for now, action in self.actions if action.kind in (ActionKind.PROMOTE, ActionKind.ROLL_BACK)
        ]


def walk(
    spec: RolloutSpec,
    candidate_for_step: Callable[[int], Behaviour],
    *,
    candidate_traffic: float = 1.0,
    hours: float = 6.0,
    restart_every: int | None = None,
) -> Walk:
    """Drive a rollout minute by minute until a decision (and one more call, which must say FINISHED)."""
    now = 0.0
    progress = Progress.start(now)
    weight = 0.0
    actions: list[tuple[float, Action]] = []
    weights: list[float] = []
    verdicts: list[tuple[int, Verdict]] = []
    calls = 0
    while now <= hours * 3600:
        elapsed = now - progress.step_started_at
        candidate_predictions = int(weight * candidate_traffic * PREDICTIONS_PER_MINUTE * elapsed / MINUTE)
        labelled = int(candidate_predictions * LABELLED_SHARE)
        action = next_action(spec, progress, now=now, labelled_windows=labelled)
        actions.append((now, action))
        calls += 1
        if restart_every and calls % restart_every == 0:  # the controller restarts: progress comes back from JSON
            progress = Progress.from_dict(json.loads(json.dumps(progress.to_dict())))
        if action.kind is ActionKind.FINISHED:
            break
        if action.kind is ActionKind.SET_WEIGHT:
            assert action.weight is not None
            weight = action.weight
            weights.append(weight)
        if action.kind is ActionKind.ANALYSE:
            step = spec.steps[progress.step_index]
            assert isinstance(step, Analyse)
            champion_predictions = int((1 - weight) * PREDICTIONS_PER_MINUTE * elapsed / MINUTE)
            verdict = evaluate(
                step.analysis,
                candidate=period_figures(candidate_for_step(progress.step_index), candidate_predictions),
                champion=period_figures(CHAMPION, champion_predictions),
            )
            verdicts.append((progress.step_index, verdict))
            progress = progress.with_verdict(verdict)
            continue
        progress = progress.after(action, now)
        if action.kind in (ActionKind.WAIT, ActionKind.HOLD):
            now += MINUTE
    return Walk(actions, weights, verdicts, progress)


def test_a_healthy_canary_walks_every_step_and_is_promoted_once() -> None:
    spec = parse_rollout_spec(CANARY)
    result = walk(spec, lambda step: Behaviour(agreement=0.90))
    assert result.weights == [0.10, 0.25, 0.50]
    decisions = result.decisions()
    assert [action.kind for _, action in decisions] == [ActionKind.PROMOTE]
    assert result.actions[-1][1].kind is ActionKind.FINISHED
    outcomes = [(step, verdict.outcome) for step, verdict in result.verdicts]
    # At 10 % the first analyses lack labels (50 a minute... of which 10 % reach the canary): waiting, never passing.
    assert outcomes[0] == (2, Outcome.INCONCLUSIVE)
    assert [outcome for _, outcome in outcomes if outcome is not Outcome.INCONCLUSIVE] == [Outcome.PASS] * 3
    assert all(step in (2, 5, 7) for step, _ in outcomes)


def test_the_same_walk_across_controller_restarts() -> None:
    spec = parse_rollout_spec(CANARY)
    straight = walk(spec, lambda step: Behaviour())
    restarted = walk(spec, lambda step: Behaviour(), restart_every=7)
    assert restarted.actions == straight.actions


def rollback_after_injection(behaviour: Behaviour, injected_at_step: int) -> tuple[Walk, float, float]:
    spec = parse_rollout_spec(CANARY)
    result = walk(spec, lambda step: behaviour if step >= injected_at_step else CHAMPION)
    decisions = result.decisions()
    assert [action.kind for _, action in decisions] == [ActionKind.ROLL_BACK]  # exactly once
    rolled_back_at, _ = decisions[0]
    analyse_step_began = next(now for now, action in result.actions if action.step_index == injected_at_step)
    return result, rolled_back_at, analyse_step_began


def test_five_points_lower_agreement_is_rolled_back_within_two_intervals_with_its_reason() -> None:
    result, rolled_back_at, began = rollback_after_injection(Behaviour(agreement=0.85), injected_at_step=5)
    assert rolled_back_at - began <= 2 * 10 * MINUTE
    reasons = result.decisions()[0][1].reasons
    assert reasons[0] == "analysis failed"
    assert any(
        reason.startswith("failed: agreement_with_labels < champion - 0.03: candidate 0.848") for reason in reasons
    ), reasons
    assert 0.50 not in result.weights  # never went further


def test_double_the_false_alert_rate_is_rolled_back_within_two_intervals() -> None:
    result, rolled_back_at, began = rollback_after_injection(
        Behaviour(false_alerts_per_1000_km=20.0), injected_at_step=2
    )
    assert rolled_back_at - began <= 2 * 10 * MINUTE
    assert any("false_alerts_per_1000_km > champion * 1.5" in reason for reason in result.decisions()[0][1].reasons)


def test_a_canary_with_no_traffic_is_never_promoted() -> None:
    spec = parse_rollout_spec(CANARY)
    result = walk(spec, lambda step: Behaviour(), candidate_traffic=0.0)
    kinds = [action.kind for _, action in result.actions]
    assert ActionKind.PROMOTE not in kinds
    decisions = result.decisions()
    assert [action.kind for _, action in decisions] == [ActionKind.ROLL_BACK]
    rolled_back_at, rollback = decisions[0]
    assert rollback.reasons[0].startswith("still inconclusive after")
    assert "too little data: candidate has 0 of 1000 predictions" in rollback.reasons
    assert rolled_back_at == 10 * MINUTE + 60 * MINUTE  # the pause, then the analysis step's deadline


def test_on_deadline_hold_waits_for_a_person_and_never_promotes() -> None:
    spec = parse_rollout_spec(CANARY.replace("    deadline: 1h\n", "    deadline: 1h\n    on_deadline: hold\n"))
    result = walk(spec, lambda step: Behaviour(), candidate_traffic=0.0, hours=3.0)
    kinds = [action.kind for _, action in result.actions]
    assert ActionKind.PROMOTE not in kinds and ActionKind.ROLL_BACK not in kinds
    assert kinds[-1] is ActionKind.HOLD


def test_pauses_wait_for_time_and_labels() -> None:
    spec = parse_rollout_spec(
        "steps: [{pause: {duration: 10m, labelled_windows: 100}}, {analyse: {success: [drift_alerts == 0]}}]"
    )
    progress = Progress.start(0.0)
    waiting = next_action(spec, progress, now=300.0, labelled_windows=150)
    assert waiting.kind is ActionKind.WAIT and waiting.recheck_after_seconds == 300.0
    assert waiting.reasons == ("paused: 300 of 600 s",)
    labels = next_action(spec, progress, now=900.0, labelled_windows=40)
    assert labels.kind is ActionKind.WAIT and labels.reasons == ("paused: 40 of 100 labelled windows",)
    assert next_action(spec, progress, now=900.0, labelled_windows=100).kind is ActionKind.ADVANCE


def test_an_analysis_is_due_once_per_interval_and_waits_in_between() -> None:
    spec = parse_rollout_spec("steps: [{analyse: {success: [drift_alerts == 0], interval: 10m, deadline: 30m}}]")
    progress = Progress.start(0.0)
    first = next_action(spec, progress, now=300.0, labelled_windows=0)
    assert first.kind is ActionKind.WAIT and first.recheck_after_seconds == 300.0
    assert next_action(spec, progress, now=600.0, labelled_windows=0).kind is ActionKind.ANALYSE
    inconclusive = progress.with_verdict(Verdict(Outcome.INCONCLUSIVE, ("too little data",)))
    again = next_action(spec, inconclusive, now=700.0, labelled_windows=0)
    assert again.kind is ActionKind.WAIT and again.recheck_after_seconds == 500.0
    assert "too little data" in again.reasons
    passed = inconclusive.with_verdict(Verdict(Outcome.PASS, ("met",)))
    assert next_action(spec, passed, now=1200.0, labelled_windows=0).kind is ActionKind.ADVANCE
    finished = passed.after(Action(ActionKind.ADVANCE, 0), 1200.0)
    assert next_action(spec, finished, now=1200.0, labelled_windows=0).kind is ActionKind.PROMOTE


def test_paused_time_counts_toward_no_deadline_interval_or_pause() -> None:
    spec = parse_rollout_spec("steps: [{analyse: {success: [drift_alerts == 0], interval: 10m, deadline: 30m}}]")
    inconclusive = Progress.start(0.0).with_verdict(Verdict(Outcome.INCONCLUSIVE, ("too little data",)))
    # 40 minutes after the step began, 25 of them paused: 15 minutes count, so one analysis was due, none more.
    held = next_action(spec, inconclusive, now=2400.0, labelled_windows=0, paused_seconds=1500.0)
    assert held.kind is ActionKind.WAIT and held.recheck_after_seconds == 300.0
    assert next_action(spec, inconclusive, now=2400.0, labelled_windows=0).kind is ActionKind.ANALYSE
    late = inconclusive.with_verdict(Verdict(Outcome.INCONCLUSIVE, ())).with_verdict(Verdict(Outcome.INCONCLUSIVE, ()))
    assert next_action(spec, late, now=3300.0, labelled_windows=0, paused_seconds=1500.0).kind is ActionKind.ROLL_BACK
    assert next_action(spec, late, now=3299.0, labelled_windows=0, paused_seconds=1500.0).kind is ActionKind.WAIT
    pause = parse_rollout_spec("steps: [{pause: {duration: 10m}}, {analyse: {success: [drift_alerts == 0]}}]")
    waiting = next_action(pause, Progress.start(0.0), now=900.0, labelled_windows=0, paused_seconds=600.0)
    assert waiting.kind is ActionKind.WAIT and waiting.reasons == ("paused: 300 of 600 s",)


def test_paused_within_counts_the_overlap_with_the_step_once() -> None:
    assert paused_within([], since=0.0, until=100.0) == 0.0
    assert paused_within([(10.0, 20.0), (30.0, None)], since=0.0, until=100.0) == 80.0
    assert paused_within([(-50.0, 5.0)], since=0.0, until=100.0) == 5.0, "a pause before the step began: its tail"
    assert paused_within([(10.0, 40.0), (20.0, 30.0)], since=0.0, until=100.0) == 30.0, "overlaps count once"
    assert paused_within([(150.0, 160.0)], since=0.0, until=100.0) == 0.0
