"""The monitor's consumer: predictions from `michi.predictions.v1` through the kit's loop into `DriftMonitor`.

The loop (`michi.kit.consumer.ConsumerLoop`) polls, opens each record's consumer span, decodes it and
dead-letters what cannot be decoded or what the handler rejects (`schema-violation`). This entrypoint only
hands each decoded prediction to the handler and tells the loop what to commit (`committable`: closed
windows' offsets, never an open window's), what to drop after a failed batch (`on_rewind`), and which
offsets the group had committed when partitions are assigned (the start of the windows read next). On stop
nothing more is committed: the open windows' rows are read again by the next run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import Consumer, TopicPartition

from michi.blobs import BlobStoreUnavailable
from michi.bus.catalog import PREDICTIONS
from michi.bus.producer import EventProducer
from michi.kit.consumer import ConsumerLoop, Delivered, Offsets
from services.monitor.adapters.metrics import MonitorMetrics
from services.monitor.handlers import DriftMonitor

SERVICE = "monitor"


class PredictionCounter(Protocol):
    def predictions_seen(self, count: int) -> None:
        """`count` more predictions were read (the resource watch's cost per 1,000 predictions)."""
        ...


BATCH_SIZE = 1000
COMMITTED_TIMEOUT_S = 10.0


class MonitorConsumer:
    def __init__(
        self,
        *,
        consumer: Consumer,
        producer: EventProducer,
        monitor: DriftMonitor,
        metrics: MonitorMetrics,
        prefix: str,
        closing: Callable[[], None] | None = None,
        resources: PredictionCounter | None = None,
    ) -> None:
        self.closing = closing
        self.resources = resources
        # Predictions handled since the last batch ended (the resource watch's CPU per 1,000 predictions).
        self._handled = 0
        self.consumer = consumer
        self.monitor = monitor
        self.metrics = metrics
        self.loop = ConsumerLoop(
            consumer=consumer,
            producer=producer,
            service=SERVICE,
            topics={PREDICTIONS.name(prefix): PREDICTIONS},
            handle=self._handle,
            start_batch=monitor.confirm_commit,
            end_batch=self._end_batch,
            on_dead_letter=self._dead_lettered,
            committable=self._committable,
            on_rewind=monitor.rewind,
            retryable=(BlobStoreUnavailable,),
            batch_size=BATCH_SIZE,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
        )

    def _end_batch(self) -> None:
        """After every poll (an empty one too): windows without a new row for a while are judged and closed."""
        self.monitor.close_idle()
        if self.resources is not None and self._handled:
            self.resources.predictions_seen(self._handled)
        self._handled = 0

    def _handle(self, record: Delivered) -> None:
        self.monitor.handle(record.message, (record.topic(), record.partition()), record.offset())  # type: ignore[arg-type]
        self._handled += 1

    def _dead_lettered(self, raw: Any, reason: str) -> None:
        self.monitor.passed((raw.topic(), raw.partition()), raw.offset())
        self.metrics.dead_letters.inc()

    def _committable(self, handled: Offsets) -> Offsets:
        return self.monitor.committable()

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=COMMITTED_TIMEOUT_S)
        self.monitor.assigned({(item.topic, item.partition): max(item.offset, -1) for item in committed})

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.monitor.revoked([(item.topic, item.partition) for item in partitions])

    def run(self, stop: threading.Event, poll_timeout: float = 0.5) -> None:
        self.loop.run(stop, poll_timeout)

    def poll_once(self, timeout: float = 0.5) -> int:
        return self.loop.poll_once(timeout)

    def close(self) -> None:
        """Release what the monitor holds beside the consumer (the store's connections), after `run`."""
        if self.closing is not None:
            self.closing()

    def readiness(self, max_silence_s: float = 30.0) -> str | None:
        """None while polling recently and holding at least one partition, else why not."""
        return None if self.loop.ready(max_silence_s) else "not polling, or holding no partition"
