"""What inference serves: the rollout plan's models, loaded off the hot path and swapped between batches.

    serving = ModelServing(model_name="michi-risk", template=pipeline, loader=load, metrics=metrics)
    serving.start(feed, timeout=30)        # read the plans to the end and load the champion, before any upload
    PlanWatcher(feed, serving).start()     # then: new plans are loaded in this background thread
    ...
    if serving.pending is not None and <every processed offset is committed>:
        serving.activate()                 # the agent, between two batches
    pipeline = serving.pipeline            # an immutable snapshot for one batch

Plans are applied only when their revision is higher than the one held (`domain/rollout.py`). The
watcher thread fetches, verifies (sha256 from the plan) and loads the new models, then leaves them
*pending*; the agent activates them between batches once the offsets of everything processed with
the old models are committed (see `entrypoints/stream.py`), so no upload is ever handled by two
versions. A refused model (sha256 mismatch, unreachable blob, graph outside the contract) is
counted and logged, and the current one stays: a refused champion keeps the current champion, a
refused shadow means no shadow. The revision is held only when every arm loaded, so a re-sent plan
(same revision, after someone fixed the artifact) tries again; transient failures are retried with
backoff. Earlier versions stay loaded (a few, least recently served dropped first) and any version a
plan ever named can be loaded again, so a redelivered upload is replayed with the model that first
handled it.

A plan with a rollout id serves every serving arm it names (champion, canary, treatments) beside its
shadow, each device routed to one arm by `michi.rollouts.assignment.TrafficSplit`
(`InferencePipeline.routing`). Such a plan is checked whole when it is offered (`arms_of`): one with
any problem (shares not summing to 1, a model named twice, more than `max_arms` arms) is refused with
its reasons and the plan held stays. A refused serving arm keeps every model served (a split cannot
lose an arm: its devices would have nowhere to go); a refused shadow means no shadow. A revision that
changes only shares is a new split (loaded like a swap, activated behind the same commit barrier); one
that changes nothing served (a pause, a resume, a new reason) moves only the revision.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from michi.contracts.v1 import inference_pb2, operations_pb2
from services.inference.adapters.artifacts import INVALID_MODEL, ModelRefused
from services.inference.adapters.metrics import InferenceMetrics
from services.inference.domain.rollout import (
    MAX_ARMS,
    PlanArms,
    PlanDecision,
    arms_of,
    judge_plan,
    same_model,
    variant_label,
)
from services.inference.handlers import ArmModel, Detector, InferencePipeline, Routing

logger = logging.getLogger(__name__)

Loader = Callable[[operations_pb2.ModelRef], Detector]
RETRY_FIRST_S = 2.0
RETRY_MAX_S = 60.0


class PlanSource(Protocol):
    def read_to_end(self, timeout: float = 30.0) -> list[operations_pb2.RolloutPlan]: ...

    def poll(self, timeout: float = 1.0) -> list[operations_pb2.RolloutPlan]: ...


@dataclass(frozen=True)
class Served:
    champion: Detector
    shadow: Detector | None
    # Revision of the plan these come from; 0 when no plan was ever applied (the built-in baseline).
    revision: int
    plan_event_id: str = ""
    # A plan with a rollout id: the split of devices between its serving arms (None: `champion` serves
    # every device and `shadow` scores every device). `champion` is then the CHAMPION arm's model.
    routing: Routing | None = None

    def same_serving(self, other: Served) -> bool:
        """Whether both serve the same models to the same devices (a swap between them changes nothing)."""
        return self.champion is other.champion and self.shadow is other.shadow and self.routing == other.routing

    def arms(self) -> list[tuple[Detector, str, float]]:
        """Every arm served: its model, variant (`champion`, `canary`, `treatment`, `shadow`) and device share."""
        if self.routing is None:
            listed = [(self.champion, "champion", 1.0)]
            if self.shadow is not None:
                listed.append((self.shadow, "shadow", 1.0))
            return listed
        split = self.routing.split
        listed = [
            (self.routing.arms[arm.name].detector, variant_label(self.routing.arms[arm.name].variant), arm.share)
            for arm in split.arms
        ]
        if self.shadow is not None:
            listed.append((self.shadow, "shadow", split.shadows[0].device_share if split.shadows else 1.0))
        return listed

    def describe(self) -> list[str]:
        """One line per arm, `<variant> <version> <share>` (for logs)."""
        return [f"{variant} {detector.model_version} {share:g}" for detector, variant, share in self.arms()]

    @property
    def rollout_id(self) -> str:
        return self.routing.rollout_id if self.routing is not None else ""


class ModelServing:
    def __init__(
        self,
        *,
        model_name: str,
        template: InferencePipeline,
        loader: Loader,
        metrics: InferenceMetrics,
        retain: int = 4,
        clock: Callable[[], float] = time.monotonic,
        max_arms: int = MAX_ARMS,
    ) -> None:
        self.model_name = model_name
        # Serving and shadow arms of one plan together; a plan with more is refused.
        self.max_arms = max_arms
        self.baseline = template.detector
        self._template = replace(template, shadow=None, earlier={}, routing=None)
        self._loader = loader
        self._metrics = metrics
        self._retain = max(retain, 0)
        self._clock = clock
        self._lock = threading.RLock()
        self._active = Served(self.baseline, None, 0)
        self._pending: Served | None = None
        self._wanted: operations_pb2.RolloutPlan | None = None
        self._held_revision: int | None = None
        self._retry_at = 0.0
        self._retry_delay = RETRY_FIRST_S
        # version -> (detector, sha256), most recently served last; the baseline is always kept.
        self._loaded: OrderedDict[str, tuple[Detector, str]] = OrderedDict()
        self._loaded[self.baseline.model_version] = (self.baseline, _sha_of(self.baseline))
        # Every version a plan named, so a replay can load it again.
        self._known: dict[str, operations_pb2.ModelRef] = {}
        self._pipeline = self._template
        self._publish_metrics()

    # --- what the agent reads

    @property
    def pipeline(self) -> InferencePipeline:
        return self._pipeline

    @property
    def active(self) -> Served:
        return self._active

    @property
    def pending(self) -> Served | None:
        return self._pending

    @property
    def held_revision(self) -> int | None:
        return self._held_revision

    # --- plans (called from the watcher thread, or at start)

    def start(self, feed: PlanSource, *, timeout: float = 30.0) -> None:
        """Apply the plan the topic holds now (blocking), before the agent takes uploads.

        If the latest plan's champion is refused, the champion of the newest earlier plan still on the
        topic that loads is served instead (what the fleet served before), else the baseline.
        """
        plans = [plan for plan in feed.read_to_end(timeout) if plan.model_name == self.model_name]
        for plan in plans:
            self.offer(plan)
        latest = self._wanted
        self.load_wanted(force=True)
        wanted_champion = arms_of(latest).champion if latest is not None else None
        served = self._pending or self._active
        if wanted_champion is not None and served.champion.model_version != wanted_champion.version:
            self._fall_back(sorted(plans, key=lambda plan: plan.revision, reverse=True), latest, served)
        self.activate(swap=False)
        active = self._active
        logger.info(
            "serving",
            extra={
                "model": self.model_name,
                "champion": active.champion.model_version,
                "shadow": active.shadow.model_version if active.shadow else None,
                "plan_revision": active.revision,
                "rollout_id": active.rollout_id,
                "arms": active.describe(),
            },
        )

    def _fall_back(
        self, newest_first: list[operations_pb2.RolloutPlan], latest: operations_pb2.RolloutPlan | None, served: Served
    ) -> None:
        for plan in newest_first:
            champion = arms_of(plan).champion
            if latest is None or plan.revision >= latest.revision or champion is None:
                continue
            detector = self._obtain(champion, "champion", [])
            if detector is not None:
                logger.warning(
                    "latest champion refused at start: serving the previous plan's champion",
                    extra={"revision": plan.revision, "champion": champion.version},
                )
                with self._lock:
                    self._pending = replace(
                        served, champion=detector, revision=plan.revision, plan_event_id="", routing=None
                    )
                return

    def offer(self, plan: operations_pb2.RolloutPlan) -> PlanDecision:
        with self._lock:
            claimed = self._held_revision
            if self._wanted is not None:
                claimed = max(claimed or 0, self._wanted.revision)
            decision = judge_plan(plan, model_name=self.model_name, held_revision=claimed)
            problems = self._arms(plan).problems if decision is PlanDecision.APPLY else []
            if problems:
                decision = PlanDecision.REFUSED
            self._metrics.plans.labels(decision=decision.value).inc()
            if decision is PlanDecision.OTHER_MODEL:
                return decision
            if decision is PlanDecision.REFUSED:
                # Nothing of it is loaded or held: the plan held (or wanted) stays, and a corrected plan of
                # the same revision is still accepted.
                logger.error(
                    "rollout plan refused, keeping the plan held",
                    extra={
                        "revision": plan.revision,
                        "rollout_id": plan.rollout_id,
                        "held_revision": claimed,
                        "problems": problems,
                    },
                )
                return decision
            for arm in plan.arms:
                self._known.setdefault(arm.model.version, arm.model)
            if plan.champion.version:
                self._known.setdefault(plan.champion.version, plan.champion)
            if decision is PlanDecision.APPLY:
                self._wanted = plan
                self._retry_at = 0.0
                self._retry_delay = RETRY_FIRST_S
            else:
                logger.info(
                    "rollout plan ignored",
                    extra={"decision": decision.value, "revision": plan.revision, "held_revision": claimed},
                )
            return decision

    def load_wanted(self, *, force: bool = False) -> bool:
        """Load the wanted plan's models (blocking); True when a new set of models is pending."""
        with self._lock:
            plan = self._wanted
            if plan is None or (not force and self._clock() < self._retry_at):
                return False
        arms = self._arms(plan)
        if arms.problems:  # `offer` refuses such plans; never serve part of one
            with self._lock:
                if self._wanted is plan:
                    self._wanted = None
            return False
        if arms.unsupported:
            logger.warning(
                "rollout arms not served (a plan without a rollout id serves only champion and shadow)",
                extra={"revision": plan.revision, "arms": arms.unsupported},
            )
        current = self._pending or self._active
        refusals: list[ModelRefused] = []
        if arms.split is not None:
            served = self._load_split(plan, arms, current, refusals)
        else:
            champion: Detector | None = self.baseline
            if arms.champion is not None:
                champion = self._obtain(arms.champion, "champion", refusals)
            shadow = self._obtain(arms.shadow, "shadow", refusals) if arms.shadow is not None else None
            served = Served(champion or current.champion, shadow, plan.revision, plan.event_id)
        with self._lock:
            if self._wanted is not plan:  # a newer plan came in meanwhile: it will be loaded next
                return False
            if refusals and any(refusal.transient for refusal in refusals):
                self._retry_at = self._clock() + self._retry_delay
                self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_S)
            else:
                self._wanted = None
                if not refusals:
                    self._held_revision = plan.revision
            if served.same_serving(current):
                # Same models (or nothing new could be loaded): no swap, only the revision moves on.
                if not refusals:
                    if self._pending is not None:
                        self._pending = replace(self._pending, revision=served.revision, plan_event_id=plan.event_id)
                    else:
                        self._active = replace(self._active, revision=served.revision, plan_event_id=plan.event_id)
                        self._publish_metrics()
                return False
            self._pending = served
            logger.info(
                "models loaded",
                extra={
                    "revision": plan.revision,
                    "champion": served.champion.model_version,
                    "shadow": served.shadow.model_version if served.shadow else None,
                    "rollout_id": served.rollout_id,
                    "arms": served.describe(),
                },
            )
            return True

    def _arms(self, plan: operations_pb2.RolloutPlan) -> PlanArms:
        return arms_of(plan, max_arms=self.max_arms, baseline_version=self.baseline.model_version)

    def _load_split(
        self, plan: operations_pb2.RolloutPlan, arms: PlanArms, current: Served, refusals: list[ModelRefused]
    ) -> Served:
        """Load every arm of a split plan; any serving arm refused keeps `current` whole (a refused shadow: none)."""
        assert arms.split is not None
        models: dict[str, ArmModel] = {}
        refused: list[str] = []
        for arm in arms.serving:
            detector = self._obtain(arm.model, variant_label(arm.variant), refusals)
            if detector is None:
                refused.append(arm.model.version)
            else:
                models[arm.model.version] = ArmModel(detector, arm.variant)
        if not arms.serving:  # shadows only: the baseline serves every device
            models[self.baseline.model_version] = ArmModel(self.baseline, inference_pb2.VARIANT_CHAMPION)
        shadow = self._obtain(arms.shadow, "shadow", refusals) if arms.shadow is not None else None
        if refused:
            logger.error(
                "rollout arms refused, keeping the models served",
                extra={"revision": plan.revision, "rollout_id": plan.rollout_id, "refused": refused},
            )
            return current
        champion = next(
            (model.detector for model in models.values() if model.variant == inference_pb2.VARIANT_CHAMPION),
            models[arms.split.arms[0].name].detector,
        )
        return Served(champion, shadow, plan.revision, plan.event_id, Routing(arms.split, models))

    def activate(self, *, swap: bool = True) -> Served | None:
        """Serve the pending models from the next batch on (the caller made sure the barrier holds)."""
        with self._lock:
            served = self._pending
            if served is None:
                return None
            previous = self._active
            self._active, self._pending = served, None
            for detector, _, _ in reversed(served.arms()):
                if detector.model_version in self._loaded:
                    self._loaded.move_to_end(detector.model_version)
            self._evict()
            self._pipeline = replace(
                self._template,
                detector=served.champion,
                shadow=served.shadow,
                earlier=self._earlier(),
                routing=served.routing,
            )
            self._publish_metrics()
        if swap:
            self._metrics.swaps.inc()
            logger.info(
                "models swapped",
                extra={
                    "revision": served.revision,
                    "champion": served.champion.model_version,
                    "previous_champion": previous.champion.model_version,
                    "shadow": served.shadow.model_version if served.shadow else None,
                    "rollout_id": served.rollout_id,
                    "arms": served.describe(),
                    "previous_arms": previous.describe(),
                },
            )
        return served

    # --- replays

    def missing(self, versions: Iterable[str]) -> set[str]:
        """Of these versions, the ones not loaded now."""
        with self._lock:
            return {version for version in versions if version not in self._loaded}

    def ensure_loaded(self, versions: Iterable[str]) -> None:
        """Load versions a replay needs (blocking; only versions some plan named can be loaded)."""
        added = False
        for version in self.missing(versions):
            reference = self._known.get(version)
            if reference is None:
                continue
            refusals: list[ModelRefused] = []
            if self._obtain(reference, "replay", refusals) is not None:
                added = True
        if added:
            with self._lock:
                self._pipeline = replace(self._pipeline, earlier=self._earlier())

    # --- internals

    def _obtain(
        self, reference: operations_pb2.ModelRef, variant: str, refusals: list[ModelRefused]
    ) -> Detector | None:
        with self._lock:
            loaded = self._loaded.get(reference.version)
        if loaded is not None and same_model(reference, *loaded):
            return loaded[0]
        try:
            try:
                detector = self._loader(reference)
            except ModelRefused:
                raise
            except Exception as error:  # an unforeseen failure refuses the model; it never stops serving
                raise ModelRefused(INVALID_MODEL, f"{type(error).__name__}: {error}") from error
        except ModelRefused as refusal:
            self._metrics.models_refused.labels(reason=refusal.reason, variant=variant).inc()
            logger.error(
                "model refused, keeping the current one",
                extra={
                    "model": reference.name,
                    "version": reference.version,
                    "variant": variant,
                    "reason": refusal.reason,
                    "detail": refusal.detail,
                },
            )
            refusals.append(refusal)
            return None
        with self._lock:
            self._loaded[reference.version] = (detector, reference.sha256.lower())
            self._evict()
        return detector

    def _evict(self) -> None:
        keep = {self.baseline.model_version}
        for served in (self._active, self._pending):
            if served is not None:
                keep.update(detector.model_version for detector, _, _ in served.arms())
        others = [version for version in self._loaded if version not in keep]  # least recently served first
        for version in others[: max(len(others) - self._retain, 0)]:
            del self._loaded[version]

    def _earlier(self) -> dict[str, Detector]:
        return {version: detector for version, (detector, _) in self._loaded.items()}

    def _publish_metrics(self) -> None:
        active = self._active
        arms = active.arms()
        self._metrics.serve(
            [(detector.model_name, detector.model_version, variant) for detector, variant, _ in arms],
            [share for _, _, share in arms],
            active.rollout_id,
        )
        self._metrics.plan_revision.set(active.revision)


def _sha_of(detector: Detector) -> str:
    artifact = getattr(detector, "artifact", None)
    return str(getattr(artifact, "sha256", "") or "")


class PlanWatcher(threading.Thread):
    """Polls the rollout topic and loads new plans' models, off the serving path."""

    def __init__(self, feed: PlanSource, serving: ModelServing, *, poll_seconds: float = 1.0) -> None:
        super().__init__(name="michi-inference-plans", daemon=True)
        self._feed = feed
        self._serving = serving
        self._poll_seconds = poll_seconds
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.is_set():
            try:
                for plan in self._feed.poll(self._poll_seconds):
                    self._serving.offer(plan)
                self._serving.load_wanted()
            except Exception:
                logger.exception("rollout plan watcher failed; retrying")
                self._stopped.wait(1.0)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        self.join(timeout)
