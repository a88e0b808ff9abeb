"""The training worker: one thread that bootstraps a champion, then runs the workflow when a trigger fires.

Order of work: at start, runs left `running` by a dead process are marked failed ("interrupted"),
then the bootstrap (when enabled and the registry has no champion), then the physics baseline
`physics-3` is registered as a candidate if the registry does not hold it yet (after the bootstrap, so
the first learned champion keeps version 1); afterwards, runs requested by
people (`POST /v1/runs`) first, then whatever trigger is due (retrain alert, label count, schedule),
checked every `check_interval_s` and whenever the consumer stores new labels or an alert. One run at
a time; a run's failure is recorded and the loop goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from functools import partial

from services.trainer.adapters.metrics import TrainerMetrics
from services.trainer.domain.triggers import Trigger
from services.trainer.handlers import (
    TrainerWiring,
    bootstrap_champion,
    due,
    register_physics_model,
    run_workflow,
    served_traffic_profile,
)

logger = logging.getLogger(__name__)


class TrainingWorker:
    def __init__(
        self,
        wiring: TrainerWiring,
        metrics: TrainerMetrics,
        *,
        bootstrap: bool,
        check_interval_s: float,
        register_physics: bool = True,
    ) -> None:
        self.wiring = wiring
        self.metrics = metrics
        self.bootstrap = bootstrap
        self.register_physics = register_physics
        self.check_interval_s = check_interval_s
        self.requests: queue.Queue[Trigger] = queue.Queue()
        self.woken = threading.Event()
        self.started = threading.Event()
        # Run ids requested but not started yet (shown as "queued").
        self.queued: set[str] = set()

    def wake(self) -> None:
        self.woken.set()

    def request(self, trigger: Trigger) -> int:
        """Queue a run; returns how many runs are queued now (this one included)."""
        if trigger.run_id:
            self.queued.add(trigger.run_id)
        self.requests.put(trigger)
        self.wake()
        return self.requests.qsize()

    def run(self, stop: threading.Event) -> None:
        try:
            interrupted = self.wiring.store.mark_interrupted(self.wiring.model_name)
            if interrupted:
                logger.warning("runs interrupted by an earlier stop marked failed", extra={"runs": interrupted})
            if self.bootstrap or self.register_physics:
                # The served traffic's profile (every registered model's reference) is simulated beside the
                # bootstrap's training, on a fresh machine (cached afterwards); registering waits for it.
                threading.Thread(target=self._warm_traffic, name="reference-traffic", daemon=True).start()
            if self.bootstrap:
                self._guarded(lambda: bootstrap_champion(self.wiring), "bootstrap")
            if self.register_physics:
                self._guarded(lambda: register_physics_model(self.wiring), "physics")
        finally:
            self.started.set()
        while not stop.is_set():
            trigger = self._next_trigger()
            if trigger is None:
                self.woken.wait(self.check_interval_s)
                self.woken.clear()
                continue
            self._guarded(partial(run_workflow, self.wiring, trigger), trigger.kind)

    def _next_trigger(self) -> Trigger | None:
        try:
            trigger = self.requests.get_nowait()
        except queue.Empty:
            pass
        else:
            self.queued.discard(trigger.run_id or "")
            return trigger
        try:
            return due(self.wiring)
        except Exception:
            logger.exception("checking the triggers failed")
            return None

    def _warm_traffic(self) -> None:
        try:
            served_traffic_profile(self.wiring)
        except Exception:  # registering tries again, and fails its run with the reason
            logger.exception("the reference traffic could not be simulated")

    def _guarded(self, work: Callable[[], object], kind: str) -> None:
        self.metrics.running.set(1)
        try:
            work()
        except Exception:
            # run_workflow records its own failures; this is for failures before a run row exists.
            logger.exception("training run could not start", extra={"trigger": kind})
        finally:
            self.metrics.running.set(0)
