"""The rollout controller's consumer: label requests and labels through the kit's loop, and the control loop.

The loop (`michi.kit.consumer.ConsumerLoop`) polls, opens each record's consumer span, decodes it and
dead-letters what cannot be decoded. This entrypoint hands each decoded record to `OutcomeRecorder` by topic
(kept in SQL as it comes, so everything handled is committed at the end of its batch) and, after every poll
(an empty one too), lets `RolloutController.tick_if_due` look at the running rollouts once its interval has
passed: the controller runs whether or not records arrive.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer
from sqlalchemy.exc import OperationalError

from michi.bus.catalog import LABEL_REQUESTS, LABELS
from michi.bus.producer import EventProducer
from michi.kit.consumer import ConsumerLoop, Delivered
from services.rollouts.adapters.metrics import RolloutsMetrics
from services.rollouts.handlers import OutcomeRecorder, RolloutController

SERVICE = "rollouts"
BATCH_SIZE = 500


class RolloutsConsumer:
    def __init__(
        self,
        *,
        consumer: Consumer,
        producer: EventProducer,
        recorder: OutcomeRecorder,
        controller: RolloutController,
        metrics: RolloutsMetrics,
        prefix: str,
        closing: Callable[[], None] | None = None,
    ) -> None:
        self.consumer = consumer
        self.recorder = recorder
        self.controller = controller
        self.metrics = metrics
        self.closing = closing
        self.requests_topic = LABEL_REQUESTS.name(prefix)
        self.labels_topic = LABELS.name(prefix)
        self.loop = ConsumerLoop(
            consumer=consumer,
            producer=producer,
            service=SERVICE,
            topics={self.requests_topic: LABEL_REQUESTS, self.labels_topic: LABELS},
            handle=self._handle,
            end_batch=controller.tick_if_due,
            on_dead_letter=self._dead_lettered,
            # The database away: retried on the same record, the partitions paused in the group.
            retryable=(OperationalError,),
            batch_size=BATCH_SIZE,
        )

    def _handle(self, record: Delivered) -> None:
        if record.topic() == self.requests_topic:
            self.recorder.request(record.message)  # type: ignore[arg-type]
        else:
            self.recorder.label(record.message)  # type: ignore[arg-type]

    def _dead_lettered(self, raw: Any, reason: str) -> None:
        self.metrics.dead_letters.inc()

    def run(self, stop: threading.Event, poll_timeout: float = 0.5) -> None:
        self.loop.run(stop, poll_timeout)

    def poll_once(self, timeout: float = 0.5) -> int:
        return self.loop.poll_once(timeout)

    def close(self) -> None:
        """Release what the controller holds beside the consumer (the stores' connections), after `run`."""
        if self.closing is not None:
            self.closing()

    def readiness(self, max_silence_s: float = 30.0) -> str | None:
        """None while polling recently and holding at least one partition, else why not."""
        return None if self.loop.ready(max_silence_s) else "not polling, or holding no partition"
