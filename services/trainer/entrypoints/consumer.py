"""The trainer's Kafka loop: labels and retrain alerts into SQL, then commit.

At-least-once with idempotent effects: a batch of records is stored (labels by event id, alerts by
event id) before its offsets are committed, so a crash redelivers the batch and storing it again
changes nothing. A batch whose storing or commit fails is never committed past: each of its
partitions is sought back to the batch's first record there (everything before it is committed), and
the loop reads the batch again after `RETRY_PAUSE_S`. A record that cannot be decoded, or a label
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
from michi.bus.codec import UndecodableMessage, decode_message
from michi.bus.consumers import first_offsets, seek_back
from michi.bus.headers import read_headers
from michi.bus.producer import EventProducer
from michi.contracts.v1 import labels_pb2, operations_pb2
from michi.readiness import ConsumerProgress, run_checks
from services.trainer.adapters.metrics import TrainerMetrics
from services.trainer.adapters.store import TrainerStore
from services.trainer.domain.labels import WindowLabel, label_from_message, label_problem
from services.trainer.domain.triggers import RETRAIN_ALERT_KIND

logger = logging.getLogger(__name__)

SERVICE = "trainer"
DEAD_LETTER_TIMEOUT_S = 30.0
# Pause before a failed batch is read again (SQL or broker trouble).
RETRY_PAUSE_S = 2.0


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
        self.last_poll_at: float | None = None
        # Why the last readiness check said not ready (None: it said ready); logged when it changes.
        self.not_ready_reason: str | None = None
        # One readiness check at a time (the progress check keeps per-partition clocks).
        self._readiness_lock = threading.Lock()
        self.consumer.subscribe(list(self.specs), on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self.assigned = True

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self.assigned = False

    def run(self, stop: threading.Event, poll_timeout: float = 0.5) -> None:
        try:
            while not stop.is_set():
                try:
                    self.poll_once(poll_timeout)
                except Exception:
                    # poll_once sought the batch back: it is read again after a pause, nothing past it committed.
                    logger.exception("trainer consumer batch failed; reading it again")
                    stop.wait(RETRY_PAUSE_S)
        finally:
            self.consumer.close()

    def poll_once(self, timeout: float = 0.5) -> None:
        """Store one batch and commit it; on failure seek it back (then raise), so nothing is committed past it."""
        records: list[Any] = self.consumer.consume(500, timeout)
        self.last_poll_at = time.monotonic()
        try:
            self._store_and_commit(records)
        except Exception:
            self._rewind(records)
            raise

    def _store_and_commit(self, records: list[Any]) -> None:
        labels: list[WindowLabel] = []
        alert_arrived = False
        consumed = False
        for raw in records:
            if raw.error() is not None:
                logger.warning("consumer error", extra={"error": str(raw.error())})
                continue
            consumed = True
            spec = self.specs[raw.topic()]
            headers = read_headers(raw.headers())
            try:
                message = decode_message(spec, raw.value(), headers)
            except UndecodableMessage as error:
                self._dead_letter(raw, headers, error.reason, error.detail)
                continue
            if isinstance(message, labels_pb2.Label):
                problem = label_problem(message)
                if problem is not None:
                    self._dead_letter(raw, headers, "schema-violation", problem)
                    continue
                labels.append(label_from_message(message))
            elif isinstance(message, operations_pb2.Alert):
                self.metrics.alerts.labels(kind=message.kind or "unknown").inc()
                if message.kind == RETRAIN_ALERT_KIND and self.store.add_alert(
                    message.event_id, message.kind, message.message
                ):
                    logger.info(
                        "retrain alert received", extra={"event_id": message.event_id, "message": message.message[:300]}
                    )
                    alert_arrived = True
        stored = self.store.add_labels(labels) if labels else 0
        if labels:
            self.metrics.labels.labels(outcome="stored").inc(stored)
            self.metrics.labels.labels(outcome="duplicate").inc(len(labels) - stored)
        if consumed:
            self.consumer.commit(asynchronous=False)
        if stored or alert_arrived:
            self.wake()

    def _rewind(self, records: list[Any]) -> None:
        """Seek each partition of a failed batch back to its first record in it (the first uncommitted one).

        Every batch before was committed whole, so a partition's first record in this batch is where its
        committed offset points; the next `commit()` commits positions, which are back there. A seek that
        fails would let that commit pass the batch, so the process stops instead (exit 75) and Kafka
        redelivers from the committed offsets when it is restarted.
        """
        seek_back(self.consumer, SERVICE, first_offsets(records), "a failed batch")

    def _dead_letter(self, raw: Any, headers: dict[str, str], reason: str, detail: str) -> None:
        self.producer.dead_letter_record(
            service=SERVICE, record=raw, headers=headers, reason=reason, error=detail
        ).result(DEAD_LETTER_TIMEOUT_S)
        self.metrics.labels.labels(outcome="dead-letter").inc()

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
