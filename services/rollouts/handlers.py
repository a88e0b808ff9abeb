"""What the rollout controller does with each label request and label, and with each running rollout.

`OutcomeRecorder` keeps the random-QA windows of every model version (the shared rules of
`michi/labels/outcomes.py`, the monitor's): what the serving arm said and when, from the window's random-QA
`LabelRequest`, and what people said, from its `Label`, whichever comes first; a batch at a time, in one
transaction before the batch's offsets are committed; idempotent (a redelivered request or label changes nothing;
the first label of a window counts).

`RolloutController.tick` looks at every running rollout of the registry (`ModelRegistry.active_rollouts`):

- a canary with a rollout document (`steps`): its place in the steps (`Progress`) is kept in SQL; the next
  action comes from `michi.rollouts.progression.next_action`. ANALYSE compares candidate and champion over the
  step so far (`domain/figures.py`: label agreement from the random-QA windows; uploads, km, detections, false
  alerts, errors and latency from what `SignalRecorder` kept, each device placed on its arm by the plan's split;
  drift episodes from the monitor's alerts; no data is never a pass) and keeps the verdict; SET_WEIGHT, PROMOTE and ROLL_BACK are carried out through the registry's rollout operations as
  `policy:rollout-steps`, with the figures and the verdict as evidence; WAIT and HOLD do nothing.
- an A/B test (strategy ab, no document): a `SequentialTest` over the random-QA outcomes since the start, its
  state in SQL; once it decides, `promote_rollout` (candidate better) or `rollback_rollout` (worse), as
  `policy:ab-test`, with the p-value and the interval as evidence.
- a bandit (strategy bandit): Thompson sampling over the arms (the champion and one to three candidates), each
  arm's Beta posterior the prior plus its
  random-QA outcomes since the start (counted from the SQL windows, so a redelivered label, kept once per window,
  is never counted twice and a restart resumes the same posteriors); a new allocation goes out as a weight
  change at most every `BanditPolicy.allocation_interval_seconds` and only when a share moves by more than its
  minimum change, as `policy:bandit` with the posteriors and rewards as evidence (every candidate's share in one
  revision, `set_rollout_shares`); once an arm is the best with the policy's probability (and every arm has its
  minimum labels), `promote_rollout` of that candidate (the other candidates back to candidate) or
  `rollback_rollout` (the champion best: every candidate back) if the policy allows it, else it keeps allocating
  (`michi.rollouts.bandit.decide_allocation`).
- a paused rollout, or a canary without a document (driven by hand), is left alone; a rollout no longer running
  (ended by the controller or by a person) has its state forgotten. Time a canary was paused counts toward none of
  its step's durations, intervals or deadlines (`michi.rollouts.progression.paused_within`).

Every decision is taken from state in SQL, so a restart (or a crash between a registry action and the state it
leaves) takes none twice: a weight the registry already holds moves the progress on without a new decision
(`_follow_registry`), an ended rollout is no longer running, and the registry refuses what no longer applies
(logged and counted, never raised out of the loop).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from michi.contracts.v1 import inference_pb2, labels_pb2, operations_pb2
from michi.labels.outcomes import NOT_RANDOM, QaLabel, QaPrediction, Skipped, qa_label, qa_prediction
from michi.registry import (
    ModelRegistry,
    PlanNotPublished,
    Rollout,
    RolloutDecision,
    RolloutRefused,
    UnknownModelVersion,
)
from michi.registry.records import ModelVersion
from michi.registry.rollout_status import RolloutAction, RolloutStatus, RolloutStrategy
from michi.registry.stages import Stage
from michi.rollouts.assignment import Arm, InvalidSplit, TrafficSplit
from michi.rollouts.bandit import ArmRewards, BanditDecision, BanditPolicy, BanditStep, decide_allocation
from michi.rollouts.policy import AutoStart, RolloutPolicy, ShadowPlacement, auto_start_due
from michi.rollouts.progression import Action, ActionKind, Progress, next_action, paused_within
from michi.rollouts.sequential import Decision, SequentialEvidence, SequentialTest
from michi.rollouts.steps import Analyse, RolloutSpec, SetWeight, rollout_spec_from_mapping
from services.rollouts.domain.figures import (
    ArmCounts,
    ArmDetections,
    ArmExposure,
    DeviceTotals,
    exposure_by_arm,
    verdict,
)
from services.rollouts.domain.signals import (
    SignalBatch,
    detection_seen,
    drift_seen,
    error_seen,
    segment_seen,
    window_label_seen,
)

logger = logging.getLogger(__name__)

STEPS_ACTOR = "policy:rollout-steps"
AB_ACTOR = "policy:ab-test"
BANDIT_ACTOR = "policy:bandit"
AUTO_START_ACTOR = "policy:auto-start"
# Verdicts kept per rollout (the newest; every decision's own evidence is in the registry's history).
MAX_VERDICTS_KEPT = 200
# The registry's refusals of a controller action: logged and counted, the rollout looked at again next time.
REFUSALS = (RolloutRefused, UnknownModelVersion)
# The variants of a plan's serving arms, and the decimals inference rounds their float32 shares to
# (services/inference/domain/rollout.py): the split the controller places devices with is the one inference serves.
SERVING_VARIANTS = (inference_pb2.VARIANT_CHAMPION, inference_pb2.VARIANT_CANARY, inference_pb2.VARIANT_TREATMENT)
SHARE_DECIMALS = 6
# How often signals older than the retention are deleted.
PRUNE_EVERY_S = 3600.0


class QaWindows(Protocol):
    """The random-QA windows per model version (SQL): both sides kept as they come, counted per period."""

    def record_outcomes(self, predictions: Sequence[QaPrediction], labels: Sequence[QaLabel]) -> None:
        """What the arms said and what people said of a batch's windows, in one transaction (idempotent: the
        first request and the first label of a window count)."""
        ...

    def arm_counts(self, model_name: str, model_version: str, since_s: float) -> ArmCounts:
        """The version's random-QA windows predicted at or after `since_s`: requested, labelled, correct."""
        ...


class ArmSignals(Protocol):
    """The arms' other signals (SQL): written a batch at a time, summed per device, detection and episode."""

    def record_signals(self, batch: SignalBatch) -> None: ...

    def device_totals(self, since_s: float) -> DeviceTotals: ...

    def arm_detections(
        self, model_name: str, rollout_id: str, versions: Sequence[str], since_s: float
    ) -> dict[str, ArmDetections]: ...

    def drift_alerts(
        self, model_name: str, versions: Sequence[str], since_s: float, until_s: float
    ) -> dict[str, int]: ...

    def prune_signals(self, before_s: float) -> int: ...


class ProgressStore(Protocol):
    """Each driven rollout's state (SQL), by rollout id."""

    def load(self, rollout_id: str) -> dict[str, Any] | None: ...

    def save(self, rollout_id: str, model_name: str, state: dict[str, Any]) -> None: ...

    def forget(self, rollout_id: str) -> None: ...

    def forget_except(self, rollout_ids: Iterable[str]) -> list[str]:
        """Delete the state of every rollout not in `rollout_ids`; return the ids deleted."""
        ...


class ControllerReports(Protocol):
    def label_skipped(self, reason: str) -> None: ...

    def recorded(self, side: str, count: int = 1) -> None:
        """`count` random-QA requests (`prediction`) or labels (`label`) were kept (redeliveries included)."""
        ...

    def watched(self, counts: dict[str, int]) -> None:
        """Running rollouts the controller drives, per strategy."""
        ...

    def decision(self, action: str) -> None: ...

    def refused(self, action: str) -> None: ...

    def arm(self, model_name: str, arm: str, version: str, counts: ArmCounts) -> None:
        """An arm's random-QA outcomes since its rollout started."""
        ...

    def bandit(self, model_name: str, roles: dict[str, str], decision: BanditDecision) -> None:
        """A bandit's last look: per arm (version -> candidate/champion) its share, posterior and P(best)."""
        ...

    def signals(self, kind: str, count: int) -> None:
        """Signals of `kind` (segment, detection, label, error, drift) handed to the store in a batch."""
        ...

    def awaiting_promotion(self, model_name: str, awaiting: bool) -> None:
        """Whether the model's rollout would promote and waits for a person (`promotion: manual`)."""
        ...


class OutcomeRecorder:
    """Label requests and labels into the random-QA windows (the monitor's acceptance rules, shared), a batch at a
    time: buffered until `flush`, which the consumer calls at the end of every batch, before its offsets are
    committed, and which writes them in one transaction (a crash before it loses nothing Kafka will not deliver
    again; a redelivered batch changes nothing)."""

    def __init__(self, *, windows: QaWindows, reports: ControllerReports) -> None:
        self.windows = windows
        self.reports = reports
        self.predictions: list[QaPrediction] = []
        self.labels: list[QaLabel] = []

    def request(self, request: labels_pb2.LabelRequest) -> None:
        prediction = qa_prediction(request)
        if isinstance(prediction, Skipped):
            if prediction.reason != NOT_RANDOM:  # requests for other reasons are not random-QA windows: not counted
                self.reports.label_skipped(prediction.reason)
            return
        self.predictions.append(prediction)

    def label(self, label: labels_pb2.Label) -> None:
        labelled = qa_label(label)
        if isinstance(labelled, Skipped):
            self.reports.label_skipped(labelled.reason)
            return
        self.labels.append(labelled)

    def flush(self) -> None:
        """Write the buffered requests and labels in one transaction (raises if the store cannot: the buffer is
        dropped all the same, and the batch read again from Kafka)."""
        predictions, labels = self.predictions, self.labels
        self.discard()
        if not predictions and not labels:
            return
        self.windows.record_outcomes(predictions, labels)
        if predictions:
            self.reports.recorded("prediction", len(predictions))
        if labels:
            self.reports.recorded("label", len(labels))

    def discard(self) -> None:
        """Drop what is buffered (a batch that failed is read again from Kafka)."""
        self.predictions, self.labels = [], []


class SignalRecorder:
    """Trip segments, detections, labels, dead letters and alerts into the arms' signals, a batch at a time.

    Each message becomes a record (`domain/signals.py`) buffered until `flush`, which the consumer calls at the end
    of every batch, before its offsets are committed: a crash loses nothing that was committed, and the records of
    a redelivered batch are kept once each by their ids.
    """

    def __init__(self, *, signals: ArmSignals, reports: ControllerReports, uploads_topic: str) -> None:
        self.signals = signals
        self.reports = reports
        self.uploads_topic = uploads_topic
        self.batch = SignalBatch()

    def segment(self, segment: inference_pb2.TripSegment, broker_ms: int | None) -> None:
        seen = segment_seen(segment, broker_ms)
        if not isinstance(seen, Skipped):
            self.batch.segments.append(seen)

    def detection(self, detection: inference_pb2.Detection) -> None:
        seen = detection_seen(detection)
        if not isinstance(seen, Skipped):
            self.batch.detections.append(seen)

    def label(self, label: labels_pb2.Label) -> None:
        seen = window_label_seen(label)
        if not isinstance(seen, Skipped):
            self.batch.labels.append(seen)

    def dead_letter(self, dead_letter: operations_pb2.DeadLetter) -> None:
        seen = error_seen(dead_letter, self.uploads_topic)
        if not isinstance(seen, Skipped):
            self.batch.errors.append(seen)

    def alert(self, alert: operations_pb2.Alert) -> None:
        seen = drift_seen(alert)
        if not isinstance(seen, Skipped):
            self.batch.drift.append(seen)

    def flush(self) -> None:
        """Write the buffered records (raises if the store cannot: the buffer is dropped all the same, and the
        batch read again)."""
        batch = self.batch
        self.discard()
        if not batch:
            return
        self.signals.record_signals(batch)
        for kind, records in (
            ("segment", batch.segments),
            ("detection", batch.detections),
            ("label", batch.labels),
            ("error", batch.errors),
            ("drift", batch.drift),
        ):
            if records:
                self.reports.signals(kind, len(records))

    def discard(self) -> None:
        """Drop what is buffered (a batch that failed is read again from Kafka)."""
        self.batch = SignalBatch()


def serving_split(plan: operations_pb2.RolloutPlan) -> TrafficSplit | None:
    """The split inference serves for `plan` (arms named by model version), or None without a valid one."""
    arms = tuple(
        Arm(arm.model.version, round(float(arm.traffic_share), SHARE_DECIMALS))
        for arm in plan.arms
        if arm.variant in SERVING_VARIANTS
    )
    if not plan.rollout_id or not arms:
        return None
    try:
        return TrafficSplit(plan.rollout_id, arms=arms)
    except InvalidSplit:
        return None


@dataclass(frozen=True)
class AbPolicy:
    """The always-valid test of A/B rollouts (`michi.rollouts.sequential`)."""

    alpha: float = 0.05
    tau_squared: float = 0.0025
    minimum_labels: int = 100

    def new_test(self) -> SequentialTest:
        return SequentialTest(
            alpha=self.alpha, tau_squared=self.tau_squared, minimum_trials_per_arm=float(self.minimum_labels)
        )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def ab_evidence(test: SequentialTest, evidence: SequentialEvidence | None = None) -> dict[str, Any]:
    """JSON-safe evidence of an A/B decision: the test's decision, p-value, interval and counts."""
    return {
        "test": "msprt",
        "decision": test.decision.value,
        "p_value": test.p_value,
        "interval": [_finite(test.interval[0]), _finite(test.interval[1])],
        "difference": evidence.difference if evidence is not None else None,
        "alpha": test.alpha,
        "tau_squared": test.tau_squared,
        "looks": test.looks,
        "decided_at_look": test.decided_at_look,
        "control": {"correct": test.control.events, "labelled": test.control.exposure},
        "candidate": {"correct": test.candidate.events, "labelled": test.candidate.exposure},
    }


def pause_intervals(decisions: Iterable[RolloutDecision]) -> list[tuple[float, float | None]]:
    """When a rollout was paused and resumed, from its decisions (any order): `(paused_at, resumed_at)`, None while
    still paused."""
    intervals: list[tuple[float, float | None]] = []
    paused_at: float | None = None
    for decision in sorted(decisions, key=lambda decision: decision.revision):
        if decision.action == RolloutAction.PAUSE.value and paused_at is None:
            paused_at = decision.created_at.timestamp()
        elif decision.action == RolloutAction.RESUME.value and paused_at is not None:
            intervals.append((paused_at, decision.created_at.timestamp()))
            paused_at = None
    if paused_at is not None:
        intervals.append((paused_at, None))
    return intervals


def describe_bandit_arm(decision: BanditDecision, version: str, role: str) -> str:
    """`candidate 2 72.31% (P(best) 0.962, 45/50 labels agree, Beta(46, 6))`."""
    posterior, rewards = decision.posteriors[version], decision.rewards[version]
    return (
        f"{role} {version} {decision.shares[version] * 100:.2f}% (P(best) {decision.probability_best[version]:.3f}, "
        f"{rewards.correct}/{rewards.labelled} labels agree, Beta({posterior.alpha:g}, {posterior.beta:g}))"
    )


class RolloutController:
    """Every `interval_s`, the next decision of each running rollout (module docstring)."""

    def __init__(
        self,
        *,
        registry: ModelRegistry,
        windows: QaWindows,
        progress: ProgressStore,
        reports: ControllerReports,
        interval_s: float,
        signals: ArmSignals | None = None,
        ab_policy: AbPolicy | None = None,
        bandit_policy: BanditPolicy | None = None,
        signal_retention_s: float = 14 * 86400.0,
        policy: RolloutPolicy | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.windows = windows
        self.progress = progress
        self.reports = reports
        self.interval_s = interval_s
        # None: only the random-QA windows are measured (every other metric is too little data).
        self.signals = signals
        self.ab_policy = ab_policy or AbPolicy()
        self.bandit_policy = bandit_policy or BanditPolicy()
        self.signal_retention_s = signal_retention_s
        # Which candidates start by themselves, and whether an end that would promote waits for a person.
        self.policy = policy or RolloutPolicy()
        if not self.policy.automatic_promotion:
            self.bandit_policy = replace(self.bandit_policy, automatic_promotion=False)
        self.clock = clock
        self.monotonic = monotonic
        self._last_tick: float | None = None
        self._last_prune: float | None = None
        # Models whose rollout waits for a person's promotion (reported until the rollout ends).
        self._awaiting: set[str] = set()

    def tick_if_due(self) -> None:
        """Tick when `interval_s` has passed since the last one (the first at once); never raises."""
        moment = self.monotonic()
        if self._last_tick is not None and moment - self._last_tick < self.interval_s:
            return
        self._last_tick = moment
        try:
            self.tick()
        except Exception:
            # The registry's database away, say: looked at again next interval; the consumer goes on.
            logger.exception("rollout controller tick failed; trying again next interval")
        if self.signals is not None and (self._last_prune is None or moment - self._last_prune >= PRUNE_EVERY_S):
            self._last_prune = moment
            try:
                deleted = self.signals.prune_signals(self.clock() - self.signal_retention_s)
                if deleted:
                    logger.info("old arm signals deleted", extra={"rows": deleted})
            except Exception:
                logger.exception("arm signals not pruned; trying again later")

    def tick(self) -> None:
        """Look at every running rollout once (a failure with one is logged; the others go on)."""
        now = self.clock()
        if self.policy.auto_start is not None:
            self._auto_start(self.policy.auto_start)
        active = self.registry.active_rollouts()
        for forgotten in self.progress.forget_except(rollout.rollout_id for rollout in active):
            logger.info("rollout no longer running; its progress forgotten", extra={"rollout_id": forgotten})
        watched: dict[str, int] = {strategy.value: 0 for strategy in RolloutStrategy}
        for rollout in active:
            if not self._driven(rollout):
                continue
            watched[rollout.strategy] = watched.get(rollout.strategy, 0) + 1
            try:
                self._report_arms(rollout)
                if rollout.status != RolloutStatus.RUNNING.value:
                    continue  # paused: a person holds it where it is
                if rollout.document is not None:
                    self._drive_canary(rollout, now)
                elif rollout.strategy == RolloutStrategy.BANDIT.value:
                    self._drive_bandit(rollout, now)
                else:
                    self._drive_ab(rollout)
            except Exception:
                logger.exception(
                    "rollout not looked at; trying again next interval",
                    extra={"rollout_id": rollout.rollout_id, "model": rollout.model_name},
                )
        self.reports.watched(watched)
        for model_name in self._awaiting - {rollout.model_name for rollout in active}:
            self.reports.awaiting_promotion(model_name, False)
            self._awaiting.discard(model_name)

    @staticmethod
    def _driven(rollout: Rollout) -> bool:
        """A canary by a document, an A/B test or a bandit; a canary at one weight is driven by hand."""
        if rollout.document is not None:
            return True
        return rollout.strategy in (RolloutStrategy.AB.value, RolloutStrategy.BANDIT.value)

    def _report_arms(self, rollout: Rollout) -> None:
        if not self.policy.automatic_promotion:
            state = self.progress.load(rollout.rollout_id) or {}
            awaiting = state.get("awaiting_promotion") is not None
            self.reports.awaiting_promotion(rollout.model_name, awaiting)
            if awaiting:
                self._awaiting.add(rollout.model_name)
        since = rollout.started_at.timestamp()
        arms = [*(("candidate", version) for version in rollout.candidates), ("champion", rollout.champion_version)]
        for arm, version in arms:
            self.reports.arm(
                rollout.model_name, arm, version, self.windows.arm_counts(rollout.model_name, version, since)
            )

    # --- automatic start by policy

    def _auto_start(self, policy: AutoStart) -> None:
        """Start a rollout of each version the policy says is due (a failure with one model is logged)."""
        models: dict[str, list[ModelVersion]] = {}
        for version in self.registry.list():
            models.setdefault(version.name, []).append(version)
        for model_name, versions in sorted(models.items()):
            shadow = next((version for version in versions if version.stage == Stage.SHADOW), None)
            if shadow is None or not policy.covers(model_name):
                continue
            try:
                self._auto_start_version(policy, shadow, versions)
            except Exception:
                logger.exception(
                    "automatic rollout start failed; trying again next interval", extra={"model": model_name}
                )

    def _auto_start_version(self, policy: AutoStart, shadow: ModelVersion, versions: list[ModelVersion]) -> None:
        model_name = shadow.name
        placed = next(
            (
                change
                for change in reversed(self.registry.history(model_name))
                if change.version == shadow.version and change.to_stage == Stage.SHADOW
            ),
            None,
        )
        rollouts = self.registry.rollouts(model_name)
        champion = next((version for version in versions if version.stage == Stage.CHAMPION), None)
        placement = ShadowPlacement(
            model_name=model_name,
            version=shadow.version,
            placed_by=placed.actor if placed is not None else None,
            reason=placed.reason if placed is not None else "",
            ever_in_rollout=any(shadow.version in rollout.candidates for rollout in rollouts),
            model_has_rollout=any(rollout.ended_at is None for rollout in rollouts),
            model_has_champion=champion is not None,
        )
        if auto_start_due(policy, placement) is not None:
            return
        assert placed is not None and champion is not None
        evidence = {
            "policy": "auto-start",
            "strategy": policy.strategy,
            "automatic_promotion": self.policy.automatic_promotion,
            # The trainer registers a candidate only once its gate passed, and puts it in shadow right after: the
            # placement, the registered evaluation the gate passed on, and the champion's for comparison.
            "gate": {
                "passed": True,
                "shadowed_by": placed.actor,
                "shadowed_at": placed.changed_at.isoformat(),
                "shadow_reason": placed.reason,
                "shadow_revision": placed.revision,
                "run_id": shadow.parameters.get("run_id"),
                "trigger": shadow.parameters.get("trigger"),
                "data_version": shadow.data_version,
                "code_version": shadow.code_version,
                "candidate_metrics": shadow.metrics,
                "champion": {"version": champion.version, "metrics": champion.metrics},
            },
        }
        reason = (
            f"candidate {shadow.version} passed the trainer's gate ({placed.actor}: {placed.reason}); "
            f"{policy.strategy} rollout started by policy"
        )
        started = self._act_on_model(
            model_name,
            RolloutAction.START,
            lambda: self.registry.start_rollout(
                model_name,
                shadow.version,
                actor=AUTO_START_ACTOR,
                reason=reason,
                strategy=policy.strategy,
                weight=policy.weight,
                document=policy.document,
                evidence=evidence,
            ),
        )
        if started:
            logger.info(
                "rollout started by policy",
                extra={"model": model_name, "version": shadow.version, "strategy": policy.strategy},
            )

    def _hold_for_promotion(self, rollout: Rollout, reasons: list[str], evidence: dict[str, Any] | None) -> None:
        """An end that would promote, under `promotion: manual`: kept in the state once, for a person to act on."""
        state = self.progress.load(rollout.rollout_id) or {}
        if state.get("awaiting_promotion") is None:
            state["awaiting_promotion"] = {"at": self.clock(), "reasons": reasons, "evidence": evidence}
            self.progress.save(rollout.rollout_id, rollout.model_name, state)
            logger.info(
                "rollout would promote; the policy leaves it to a person (michi rollouts promote)",
                extra={"rollout_id": rollout.rollout_id, "model": rollout.model_name, "reasons": reasons},
            )
        self._awaiting.add(rollout.model_name)
        self.reports.awaiting_promotion(rollout.model_name, True)

    # --- canary by steps

    def _drive_canary(self, rollout: Rollout, now: float) -> None:
        assert rollout.document is not None
        spec = rollout_spec_from_mapping(rollout.document)
        state = self.progress.load(rollout.rollout_id) or {"verdicts": []}
        stored = state.get("progress")
        progress = Progress.from_dict(stored) if stored is not None else Progress.start(rollout.started_at.timestamp())
        decisions = self._decisions(rollout)
        followed = self._follow_registry(rollout, progress, decisions)
        if followed is not progress or stored is None:
            progress = followed
            self._save(rollout, state, progress)
        pauses = pause_intervals(decisions)
        # Several actions in one look (an analysis passed: advance, set the next weight), each kept as it is taken.
        for _ in range(2 * len(spec.steps) + 2):
            labelled = self.windows.arm_counts(
                rollout.model_name, rollout.candidate_version, progress.step_started_at
            ).labelled
            paused = paused_within(pauses, since=progress.step_started_at, until=now)
            action = next_action(spec, progress, now=now, labelled_windows=labelled, paused_seconds=paused)
            if action.kind is ActionKind.ANALYSE:
                progress = self._analyse(rollout, spec, action, progress, state, now)
            elif action.kind is ActionKind.ADVANCE:
                progress = progress.after(action, now)
                self._save(rollout, state, progress)
            elif action.kind is ActionKind.SET_WEIGHT:
                step = spec.steps[action.step_index]
                assert isinstance(step, SetWeight)
                if not self._set_weight(rollout, step.percent, action, state):
                    return
                progress = progress.after(action, now)
                self._save(rollout, state, progress)
            elif action.kind is ActionKind.PROMOTE and not self.policy.automatic_promotion:
                self._hold_for_promotion(rollout, list(action.reasons), self._evidence(action, state))
                return
            elif action.kind in (ActionKind.PROMOTE, ActionKind.ROLL_BACK):
                if self._end(rollout, action, state):
                    self.progress.forget(rollout.rollout_id)  # ended: no longer running
                return
            else:  # WAIT, HOLD, FINISHED
                return

    def _follow_registry(self, rollout: Rollout, progress: Progress, decisions: list[RolloutDecision]) -> Progress:
        """The registry's step is the truth about weights: one it reached (a weight set by hand to a later step
        of the document, or set by this controller just before a crash left its progress unsaved) moves the
        progress to the step after it, begun when that weight was set; no new decision."""
        if rollout.step_index is None or progress.finished is not None or rollout.step_index < progress.step_index:
            return progress
        began = rollout.started_at.timestamp()
        for decision in decisions:  # newest first
            if decision.action in (
                RolloutAction.START.value,
                RolloutAction.SET_WEIGHT.value,
            ):
                began = decision.created_at.timestamp()
                break
        # Never before the step the progress was in began: the weight was set after the controller got there.
        return Progress(step_index=rollout.step_index + 1, step_started_at=max(began, progress.step_started_at))

    def _analyse(
        self,
        rollout: Rollout,
        spec: RolloutSpec,
        action: Action,
        progress: Progress,
        state: dict[str, Any],
        now: float,
    ) -> Progress:
        step = spec.steps[action.step_index]
        assert isinstance(step, Analyse)
        since = progress.step_started_at
        candidate = self.windows.arm_counts(rollout.model_name, rollout.candidate_version, since)
        champion = self.windows.arm_counts(rollout.model_name, rollout.champion_version, since)
        exposure = self._exposure(rollout, since, now)
        candidate_exposure = exposure.get(rollout.candidate_version, ArmExposure())
        champion_exposure = exposure.get(rollout.champion_version, ArmExposure())
        found = verdict(
            step.analysis,
            candidate=candidate,
            champion=champion,
            candidate_exposure=candidate_exposure,
            champion_exposure=champion_exposure,
        )
        analysed = progress.with_verdict(found)
        record = {
            "at": now,
            "step_index": action.step_index,
            "analysis": analysed.analyses,
            "since": since,
            "outcome": found.outcome.value,
            "reasons": list(found.reasons),
            "candidate": {
                "version": rollout.candidate_version,
                **candidate.to_dict(),
                **candidate_exposure.to_dict(),
            },
            "champion": {"version": rollout.champion_version, **champion.to_dict(), **champion_exposure.to_dict()},
        }
        state["last_analysis"] = record
        state["verdicts"] = [*state.get("verdicts", []), record][-MAX_VERDICTS_KEPT:]
        self._save(rollout, state, analysed)
        logger.info(
            "rollout analysed",
            extra={
                "rollout_id": rollout.rollout_id,
                "step_index": action.step_index,
                "outcome": found.outcome.value,
                "reasons": list(found.reasons),
            },
        )
        return analysed

    def _exposure(self, rollout: Rollout, since: float, now: float) -> dict[str, ArmExposure]:
        """Each arm's uploads, km, detections, false alerts, errors, latency and drift since `since`.

        Devices are placed on arms by the split the registry's plan serves now: within an analysed step the weight
        does not change (a step's weight is set before the step begins).
        """
        if self.signals is None:
            return {}
        versions = (rollout.candidate_version, rollout.champion_version)
        split = serving_split(self.registry.current_plan(rollout.model_name))
        if split is None or split.rollout_id != rollout.rollout_id:
            return {}
        return exposure_by_arm(
            self.signals.device_totals(since),
            lambda device: split.route(device).arm,
            detections=self.signals.arm_detections(rollout.model_name, rollout.rollout_id, versions, since),
            drift_alerts=self.signals.drift_alerts(rollout.model_name, versions, since, now),
            arms=versions,
        )

    def _evidence(self, action: Action, state: dict[str, Any]) -> dict[str, Any]:
        return {
            "policy": "rollout-steps",
            "step_index": action.step_index,
            "reasons": list(action.reasons),
            "analysis": state.get("last_analysis"),
        }

    def _set_weight(self, rollout: Rollout, percent: float, action: Action, state: dict[str, Any]) -> bool:
        reason = f"step {action.step_index + 1}: {percent:g}% of devices on the candidate"
        if state.get("last_analysis") is not None:
            reason += f" (analysis {state['last_analysis']['outcome']})"
        return self._act(
            rollout,
            RolloutAction.SET_WEIGHT,
            lambda: self.registry.set_rollout_weight(
                rollout.model_name, percent, actor=STEPS_ACTOR, reason=reason, evidence=self._evidence(action, state)
            ),
        )

    def _end(self, rollout: Rollout, action: Action, state: dict[str, Any]) -> bool:
        reason = "; ".join(action.reasons)
        evidence = self._evidence(action, state)
        if action.kind is ActionKind.PROMOTE:
            return self._act(
                rollout,
                RolloutAction.PROMOTE,
                lambda: self.registry.promote_rollout(
                    rollout.model_name, actor=STEPS_ACTOR, reason=reason, evidence=evidence
                ),
            )
        return self._act(
            rollout,
            RolloutAction.ROLLBACK,
            lambda: self.registry.rollback_rollout(
                rollout.model_name, actor=STEPS_ACTOR, reason=reason, evidence=evidence
            ),
        )

    # --- A/B test

    def _drive_ab(self, rollout: Rollout) -> None:
        state = self.progress.load(rollout.rollout_id) or {}
        stored = state.get("test")
        test = SequentialTest.from_dict(stored) if stored is not None else self.ab_policy.new_test()
        since = rollout.started_at.timestamp()
        candidate = self.windows.arm_counts(rollout.model_name, rollout.candidate_version, since)
        champion = self.windows.arm_counts(rollout.model_name, rollout.champion_version, since)
        evidence: SequentialEvidence | None = None
        # The counts since the start only grow: what the test has not seen yet is the difference.
        added = False
        for arm, counts, tally in (("control", champion, test.control), ("candidate", candidate, test.candidate)):
            trials = counts.labelled - tally.exposure
            if trials > 0:
                successes = min(max(counts.correct - tally.events, 0.0), trials)
                test.add(arm, successes=successes, trials=trials)
                added = True
        if added and test.decision is Decision.CONTINUE:
            evidence = test.look()
            state["test"] = test.to_dict()
            self.progress.save(rollout.rollout_id, rollout.model_name, state)
        elif stored is None:
            state["test"] = test.to_dict()
            self.progress.save(rollout.rollout_id, rollout.model_name, state)
        if test.decision is Decision.CONTINUE:
            return
        details = {"policy": "ab-test", **ab_evidence(test, evidence)}
        low, high = details["interval"]
        reason = (
            f"{test.decision.value}: always-valid p = {test.p_value:.4g} <= alpha {test.alpha:g}, "
            f"interval of the accuracy difference {low if low is None else round(low, 4)} .. "
            f"{high if high is None else round(high, 4)}, after {test.looks} looks"
        )
        if test.decision is Decision.CANDIDATE_BETTER and not self.policy.automatic_promotion:
            self._hold_for_promotion(rollout, [reason], details)
            return
        if test.decision is Decision.CANDIDATE_BETTER:
            ended = self._act(
                rollout,
                RolloutAction.PROMOTE,
                lambda: self.registry.promote_rollout(
                    rollout.model_name, actor=AB_ACTOR, reason=reason, evidence=details
                ),
            )
        else:
            ended = self._act(
                rollout,
                RolloutAction.ROLLBACK,
                lambda: self.registry.rollback_rollout(
                    rollout.model_name, actor=AB_ACTOR, reason=reason, evidence=details
                ),
            )
        if ended:
            self.progress.forget(rollout.rollout_id)

    # --- bandit

    def _drive_bandit(self, rollout: Rollout, now: float) -> None:
        champion = rollout.champion_version
        roles = {**dict.fromkeys(rollout.candidates, "candidate"), champion: "champion"}
        since = rollout.started_at.timestamp()
        rewards: dict[str, ArmRewards] = {}
        for version in rollout.arms:  # plan order: the candidates first, the champion last
            counts = self.windows.arm_counts(rollout.model_name, version, since)
            rewards[version] = ArmRewards(correct=counts.correct, labelled=counts.labelled)
        current = {version: round(percent / 100.0, 6) for version, percent in rollout.weights}
        current[champion] = round(1.0 - sum(current.values()), 6)
        state = self.progress.load(rollout.rollout_id) or {}
        # When the shares served now were set: the registry's last start or weight change (also one a crash kept
        # this controller from noting), or this controller's own last allocation by its clock, the later.
        allocated_at = max(since, float(state.get("allocated_at", since)))
        for decision in self._decisions(rollout):  # newest first
            if decision.action in (RolloutAction.START.value, RolloutAction.SET_WEIGHT.value):
                allocated_at = max(allocated_at, decision.created_at.timestamp())
                break
        decided = decide_allocation(
            rewards,
            champion=champion,
            current=current,
            last_allocated_at=allocated_at,
            now=now,
            policy=self.bandit_policy,
        )
        evidence = self._bandit_evidence(rollout, decided, roles)
        state["bandit"] = {"at": now, **evidence}
        self.progress.save(rollout.rollout_id, rollout.model_name, state)
        self.reports.bandit(rollout.model_name, roles, decided)
        if decided.step is BanditStep.KEEP:
            return
        described = "; ".join(describe_bandit_arm(decided, version, roles[version]) for version in roles)
        if decided.step is BanditStep.ALLOCATE:
            # Every candidate's share, in one revision; the champion (the last arm) keeps the rest.
            percents = {version: round(decided.shares[version] * 100.0, 4) for version in rollout.candidates}
            if self._act(
                rollout,
                RolloutAction.SET_WEIGHT,
                lambda: self.registry.set_rollout_shares(
                    rollout.model_name,
                    percents,
                    actor=BANDIT_ACTOR,
                    reason=f"bandit allocation: {described}",
                    evidence=evidence,
                ),
            ):
                state["allocated_at"] = now
                self.progress.save(rollout.rollout_id, rollout.model_name, state)
            return
        reason = f"bandit: {decided.reasons[0]}; {described}"
        if decided.step is BanditStep.PROMOTE:
            # The best candidate becomes champion; the other candidates go back to candidate.
            ended = self._act(
                rollout,
                RolloutAction.PROMOTE,
                lambda: self.registry.promote_rollout(
                    rollout.model_name, actor=BANDIT_ACTOR, reason=reason, evidence=evidence, version=decided.best
                ),
            )
        else:
            ended = self._act(
                rollout,
                RolloutAction.ROLLBACK,
                lambda: self.registry.rollback_rollout(
                    rollout.model_name, actor=BANDIT_ACTOR, reason=reason, evidence=evidence
                ),
            )
        if ended:
            self.progress.forget(rollout.rollout_id)

    def _bandit_evidence(self, rollout: Rollout, decided: BanditDecision, roles: dict[str, str]) -> dict[str, Any]:
        evidence = decided.evidence()
        for version, arm in evidence["arms"].items():
            arm["arm"] = roles[version]
        policy = self.bandit_policy
        evidence["settings"] = {
            "minimum_share": policy.minimum_share,
            "allocation_interval_s": policy.allocation_interval_seconds,
            "minimum_change": policy.minimum_change,
            "end_probability": policy.end_probability,
            "minimum_labels_per_arm": policy.minimum_rewards_per_arm,
            "automatic_promotion": policy.automatic_promotion,
            "automatic_rollback": policy.automatic_rollback,
        }
        evidence["since"] = rollout.started_at.timestamp()
        return evidence

    # --- through the registry

    def _decisions(self, rollout: Rollout) -> list[RolloutDecision]:
        """The decisions of this rollout, newest first."""
        return [
            decision
            for decision in self.registry.rollout_history(rollout.model_name)
            if decision.rollout_id == rollout.rollout_id
        ]

    def _act(self, rollout: Rollout, action: RolloutAction, call: Callable[[], object]) -> bool:
        """Carry out one decision on a rollout; False when the registry refused it (nothing changed)."""
        return self._act_on_model(rollout.model_name, action, call, rollout_id=rollout.rollout_id)

    def _act_on_model(
        self, model_name: str, action: RolloutAction, call: Callable[[], object], *, rollout_id: str = ""
    ) -> bool:
        """Carry out one decision on a model's plan; False when the registry refused it (nothing changed)."""
        try:
            call()
        except REFUSALS as refusal:
            self.reports.refused(action.value)
            logger.warning(
                "rollout decision refused by the registry",
                extra={"model": model_name, "rollout_id": rollout_id, "action": action.value, "refusal": str(refusal)},
            )
            return False
        except PlanNotPublished as error:
            # Committed: the decision stands; its plan goes out again now, or with the next revision.
            logger.warning(
                "rollout decision committed, plan not published; sending it again",
                extra={
                    "model": model_name,
                    "rollout_id": rollout_id,
                    "action": action.value,
                    "error": str(error)[:300],
                },
            )
            try:
                self.registry.republish_plan(model_name)
            except PlanNotPublished:
                logger.warning(
                    "rollout plan still not published", extra={"model": model_name, "rollout_id": rollout_id}
                )
        self.reports.decision(action.value)
        logger.info(
            "rollout decision",
            extra={"rollout_id": rollout_id, "model": model_name, "action": action.value},
        )
        return True

    def _save(self, rollout: Rollout, state: dict[str, Any], progress: Progress) -> None:
        state["progress"] = progress.to_dict()
        self.progress.save(rollout.rollout_id, rollout.model_name, state)
