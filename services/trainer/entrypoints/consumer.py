"""The trainer's Kafka loop: labels and retrain alerts into SQL, then commit.

At-least-once with idempotent effects: a batch of records is stored (labels by event id, alerts by
event id) before its offsets are committed, so a crash redelivers the batch and storing it again
changes nothing. A record that cannot be decoded, or a label missing what a dataset needs (window
id, upload id, device id, window start, event type), goes to `michi.dead-letters.v1` with the reason.
Alerts of kinds other than "retrain" are read and ignored. New labels or a retrain alert wake the
training worker, which checks its triggers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer

from michi.bus.catalog import ALERTS, LABELS
from michi.bus.codec import UndecodableMessage, decode_message
from michi.bus.headers import read_headers
from michi.bus.producer import EventProducer
from michi.contracts.v1 import labels_pb2, operations_pb2
from services.trainer.adapters.metrics import TrainerMetrics
from services.trainer.adapters.store import TrainerStore
from services.trainer.domain.labels import WindowLabel, label_from_message, label_problem
from services.trainer.domain.triggers import RETRAIN_ALERT_KIND

logger = logging.getLogger(__name__)

SERVICE = "trainer"
DEAD_LETTER_TIMEOUT_S = 30.0


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
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.store = store
        self.metrics = metrics
        self.wake = wake
        self.specs = {LABELS.name(prefix): LABELS, ALERTS.name(prefix): ALERTS}
        self.assigned = False
        self.last_poll_at: float | None = None
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
                    # Nothing was committed: the batch comes again after a pause (SQL or broker trouble).
                    logger.exception("trainer consumer batch failed; retrying")
                    stop.wait(2.0)
        finally:
            self.consumer.close()

    def poll_once(self, timeout: float = 0.5) -> None:
        records: list[Any] = self.consumer.consume(500, timeout)
        self.last_poll_at = time.monotonic()
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

    def _dead_letter(self, raw: Any, headers: dict[str, str], reason: str, detail: str) -> None:
        self.producer.dead_letter_record(
            service=SERVICE, record=raw, headers=headers, reason=reason, error=detail
        ).result(DEAD_LETTER_TIMEOUT_S)
        self.metrics.labels.labels(outcome="dead-letter").inc()

    def ready(self, max_silence_s: float = 30.0) -> bool:
        return self.last_poll_at is not None and time.monotonic() - self.last_poll_at < max_silence_s and self.assigned
