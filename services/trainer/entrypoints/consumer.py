"""The trainer's Kafka loop: labels and retrain alerts into SQL, then commit.

At-least-once with idempotent effects: a batch of records is stored (labels by event id, alerts by
event id) before its offsets are committed, so a crash redelivers the batch and storing it again
changes nothing. A batch whose storing or commit fails is never committed past: each of its
partitions is sought back to the batch's first record there (everything before it is committed), and
the loop reads the batch again after `RETRY_PAUSE_S` (the loop is `michi.kit.consumer.ConsumerLoop`). A record that cannot be decoded, or a label
missing what a dataset needs (window id, upload id, device id, window start, event type), goes to
`michi.dead-letters.v1` with the reason. Alerts of kinds other than "retrain" are read and ignored.
New labels or a retrain alert wake the training worker, which checks its triggers.

Ready (`ready()`, the trainer's `/readyz`) while it polled in the last 30 s and holds partitions and,
given `progress` (`michi.readiness.ConsumerProgress` of the group `<prefix>trainer` over labels and
alerts), while the group makes progress: records waiting with committed offsets unmoved for 30 s make
it not ready. The check reads offsets on a client of its own: this consumer's cannot serve it (its
`list_topics` from another thread hung while `consume` ran).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer

from michi.bus.catalog import ALERTS, LABELS
from michi.bus.producer import EventProducer
from michi.contracts.v1 import labels_pb2, operations_pb2
from michi.kit.consumer import ConsumerLoop, Delivered, Rejected
from michi.readiness import ConsumerProgress, run_checks
from services.trainer.adapters.metrics import TrainerMetrics
from services.trainer.adapters.store import TrainerStore
from services.trainer.domain.labels import WindowLabel, label_from_message, label_problem
from services.trainer.domain.triggers import RETRAIN_ALERT_KIND

logger = logging.getLogger(__name__)

SERVICE = "trainer"


class EventConsumer:
    def __init__(
        self,
        *,
        consumer: Consumer,
        producer: EventProducer,
        store: TrainerStore,
        prefix: str,
        metrics: TrainerMetrics,
        wake: Callable[[], None],
        progress: ConsumerProgress | None = None,
    ) -> None:
        """`progress` judges the group's progress in `readiness()` (without it, polling and partitions only)."""
        self.consumer = consumer
        self.producer = producer
        self.store = store
        self.metrics = metrics
        self.wake = wake
        self.specs = {LABELS.name(prefix): LABELS, ALERTS.name(prefix): ALERTS}
        self.progress = progress
        self.assigned = False
        # Why the last readiness check said not ready (None: it said ready); logged when it changes.
        self.not_ready_reason: str | None = None
        # One readiness check at a time (the progress check keeps per-partition clocks).
        self._readiness_lock = threading.Lock()
        # The batch being read: its labels (stored at its end) and whether a new retrain alert arrived.
        self._labels: list[WindowLabel] = []
        self._alert_arrived = False
        self.loop = ConsumerLoop(
            consumer=consumer,
            producer=producer,
            service=SERVICE,
            topics=self.specs,
            handle=self._read,
            start_batch=self._new_batch,
            end_batch=self._store_batch,
            on_dead_letter=lambda record, reason: self.metrics.labels.labels(outcome="dead-letter").inc(),
            batch_size=500,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
        )

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self.assigned = True

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self.assigned = False

    @property
    def last_poll_at(self) -> float | None:
        return self.loop.last_poll_at

    def run(self, stop: threading.Event, poll_timeout: float = 0.5) -> None:
        self.loop.run(stop, poll_timeout)

    def poll_once(self, timeout: float = 0.5) -> None:
        """Store one batch and commit it; on failure seek it back (then raise), so nothing is committed past it."""
        self.loop.poll_once(timeout)

    def _new_batch(self) -> None:
        self._labels, self._alert_arrived = [], False

    def _read(self, record: Delivered) -> None:
        message = record.message
        if isinstance(message, labels_pb2.Label):
            problem = label_problem(message)
            if problem is not None:
                raise Rejected("schema-violation", problem)
            self._labels.append(label_from_message(message))
        elif isinstance(message, operations_pb2.Alert):
            self.metrics.alerts.labels(kind=message.kind or "unknown").inc()
            if message.kind == RETRAIN_ALERT_KIND and self.store.add_alert(
                message.event_id, message.kind, message.message
            ):
                logger.info(
                    "retrain alert received", extra={"event_id": message.event_id, "message": message.message[:300]}
                )
                self._alert_arrived = True

    def _store_batch(self) -> None:
        labels, self._labels = self._labels, []
        stored = self.store.add_labels(labels) if labels else 0
        if labels:
            self.metrics.labels.labels(outcome="stored").inc(stored)
            self.metrics.labels.labels(outcome="duplicate").inc(len(labels) - stored)
        if stored or self._alert_arrived:
            self.wake()

    def readiness(self, max_silence_s: float = 30.0) -> str | None:
        """None when ready; else why not (not polling, no partitions, or no progress while records wait).

        Runs the progress check in its own event loop: call it from a thread without one (a sync route).
        """
        with self._readiness_lock:
            return self._judge(max_silence_s)

    def _judge(self, max_silence_s: float) -> str | None:
        if self.last_poll_at is None or time.monotonic() - self.last_poll_at >= max_silence_s:
            reason: str | None = f"the consumer has not polled in the last {max_silence_s:.0f} s"
        elif not self.assigned:
            reason = "the consumer holds no partitions"
        elif self.progress is not None:
            ready, outcomes = asyncio.run(run_checks({"progress": self.progress}))
            reason = None if ready else outcomes["progress"]
        else:
            reason = None
        if reason != self.not_ready_reason:
            if reason is None:
                logger.info("trainer consumer ready again")
            else:
                logger.warning("trainer consumer not ready", extra={"reason": reason})
        self.not_ready_reason = reason
        return reason

    def ready(self, max_silence_s: float = 30.0) -> bool:
        return self.readiness(max_silence_s) is None
