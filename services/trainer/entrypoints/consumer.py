"""The trainer's Kafka loop: labels and retrain alerts into SQL, then commit.

At-least-once with idempotent effects: a batch of records is stored (labels by event id, alerts by
event id) before its offsets are committed, so a crash redelivers the batch and storing it again
changes nothing. A batch whose storing or commit fails is never committed past: each of its
partitions is sought back to the batch's first record there (everything before it is committed), and
the loop reads the batch again after `RETRY_PAUSE_S` (the loop is `michi.kit.consumer.ConsumerLoop`). The loop
decodes each record and hands it to `handlers.EventHandler`, which decides what it yields: a label missing
what a dataset needs (window id, upload id, device id, window start, event type) is refused and, like a
record that cannot be decoded, goes to `michi.dead-letters.v1` with the reason. Alerts of kinds other than
"retrain" are counted and ignored. New labels or a retrain alert wake the training worker, which checks its
triggers.

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
from typing import Any

from confluent_kafka import Consumer

from michi.bus.catalog import ALERTS, LABELS
from michi.bus.producer import EventProducer
from michi.kit.consumer import ConsumerLoop, LoopConsumer
from michi.readiness import ConsumerProgress, run_checks
from services.trainer.handlers import EventHandler

logger = logging.getLogger(__name__)

SERVICE = "trainer"


class EventConsumer(LoopConsumer):
    def __init__(
        self,
        *,
        consumer: Consumer,
        producer: EventProducer,
        handler: EventHandler,
        prefix: str,
        progress: ConsumerProgress | None = None,
    ) -> None:
        """`progress` judges the group's progress in `readiness()` (without it, polling and partitions only)."""
        self.consumer = consumer
        self.producer = producer
        self.handler = handler
        self.specs = {LABELS.name(prefix): LABELS, ALERTS.name(prefix): ALERTS}
        self.progress = progress
        self.assigned = False
        # Why the last readiness check said not ready (None: it said ready); logged when it changes.
        self.not_ready_reason: str | None = None
        # One readiness check at a time (the progress check keeps per-partition clocks).
        self._readiness_lock = threading.Lock()
        self.loop = ConsumerLoop(
            consumer=consumer,
            producer=producer,
            service=SERVICE,
            topics=self.specs,
            handle=lambda record: handler.handle(record.message),
            start_batch=handler.start_batch,
            end_batch=handler.end_batch,
            on_dead_letter=lambda record, reason: handler.dead_lettered(),
            batch_size=500,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
        )

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self.assigned = True

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self.assigned = False

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
