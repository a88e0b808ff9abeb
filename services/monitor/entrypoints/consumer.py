"""The monitor's consumer: predictions, label requests and labels through the kit's loop into the handlers.

The loop (`michi.kit.consumer.ConsumerLoop`, in batch mode) polls, decodes each poll batch, opens a consumer span
per sampled trace in it, and dead-letters what cannot be decoded or what a handler rejects (`schema-violation`).
This entrypoint hands the batch's predictions to `DriftMonitor.handle_batch` at once (columnar: one pass over the
messages, then numpy per version and cohort), and each label request and label to `ConceptDriftMonitor` (which
keeps them in SQL as they come and feeds what became complete after the batch, `settle`). It tells the loop what to commit (`committable`: the closed drift windows' offsets, never an open
window's, and every label topic's handled offsets, already in SQL), what to drop after a failed batch
(`on_rewind`), and which offsets the group had committed on the predictions when partitions are assigned (the
start of the windows read next). On stop nothing more is committed: the open windows' rows are read again by
the next run.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import Consumer, TopicPartition

from michi.blobs import BlobStoreUnavailable
from michi.bus.catalog import LABEL_REQUESTS, LABELS, PREDICTIONS
from michi.bus.producer import EventProducer
from michi.kit.consumer import ConsumerLoop, Delivered, LoopConsumer, Offsets, Rejected
from services.monitor.adapters.metrics import MonitorMetrics
from services.monitor.adapters.prediction_view import PREDICTIONS_VIEW
from services.monitor.domain import binning_kernel
from services.monitor.handlers import ConceptDriftMonitor, DriftMonitor

SERVICE = "monitor"
BATCH_SIZE = 1000
COMMITTED_TIMEOUT_S = 10.0


class ResourceCounts(Protocol):
    def predictions_seen(self, count: int) -> None:
        """`count` more predictions were read (the resource watch's CPU per 1,000 predictions)."""
        ...

    def labels_seen(self, count: int) -> None:
        """`count` more labels were read (the day's label cost)."""
        ...


class MonitorConsumer(LoopConsumer):
    def __init__(
        self,
        *,
        consumer: Consumer,
        producer: EventProducer,
        monitor: DriftMonitor,
        concept: ConceptDriftMonitor,
        metrics: MonitorMetrics,
        prefix: str,
        closing: Callable[[], None] | None = None,
        resources: ResourceCounts | None = None,
    ) -> None:
        self.closing = closing
        self.resources = resources
        self.consumer = consumer
        self.monitor = monitor
        self.concept = concept
        self.metrics = metrics
        self.predictions_topic = PREDICTIONS.name(prefix)
        self.requests_topic = LABEL_REQUESTS.name(prefix)
        self.labels_topic = LABELS.name(prefix)
        # Predictions and labels handled since the last batch ended (the resource watch's counts).
        self._predictions = 0
        self._labels = 0
        self.loop = ConsumerLoop(
            consumer=consumer,
            producer=producer,
            service=SERVICE,
            topics={
                # Decoded without the `features` map the monitor does not read (most of a prediction's bytes).
                self.predictions_topic: PREDICTIONS_VIEW,
                self.requests_topic: LABEL_REQUESTS,
                self.labels_topic: LABELS,
            },
            handle_batch=self._handle_batch,
            start_batch=monitor.confirm_commit,
            end_batch=self._end_batch,
            on_dead_letter=self._dead_lettered,
            committable=self._committable,
            on_rewind=self._rewind,
            retryable=(BlobStoreUnavailable,),
            batch_size=BATCH_SIZE,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
        )

    def _end_batch(self) -> None:
        """After every poll (an empty one too): idle windows are judged and closed, complete labels are fed."""
        self.monitor.flush()
        self.monitor.close_idle()
        self.concept.settle()
        if self.resources is not None:
            if self._predictions:
                self.resources.predictions_seen(self._predictions)
            if self._labels:
                self.resources.labels_seen(self._labels)
        self._predictions = self._labels = 0

    def _handle_batch(self, records: list[Delivered]) -> list[tuple[Delivered, Rejected]]:
        """The batch's predictions to the drift monitor at once (first: an outage raises before anything changed,
        so the loop can hand the batch again), then its label requests and labels one by one."""
        predictions_topic = self.predictions_topic
        predictions: list[Delivered] = []
        others: list[Delivered] = []
        messages: list[Any] = []
        partitions: list[tuple[str, int]] = []
        offsets: list[int] = []
        # Partitions as one tuple each (the monitor keys its maps by them).
        named: dict[int, tuple[str, int]] = {}
        for record in records:
            raw = record.raw
            if raw.topic() == predictions_topic:
                predictions.append(record)
                messages.append(record.message)
                number = raw.partition()
                partition = named.get(number)
                if partition is None:
                    partition = named[number] = (predictions_topic, number)
                partitions.append(partition)
                offsets.append(raw.offset())
            else:
                others.append(record)
        rejected: list[tuple[Delivered, Rejected]] = []
        if predictions:
            letters = self.monitor.handle_batch(messages, partitions, offsets)
            rejected.extend((predictions[index], rejection) for index, rejection in letters)
            self._predictions += len(predictions)
        for record in others:
            self._handle(record)
        return rejected

    def _handle(self, record: Delivered) -> None:
        topic = record.topic()
        if topic == self.predictions_topic:
            self.monitor.handle(record.message, (topic, record.partition()), record.offset())  # type: ignore[arg-type]
            self._predictions += 1
        elif topic == self.requests_topic:
            self.concept.request(record.message)  # type: ignore[arg-type]
        else:
            self.concept.label(record.message)  # type: ignore[arg-type]
            self._labels += 1

    def _rewind(self) -> None:
        self.monitor.rewind()
        self.concept.rewind()

    def _dead_lettered(self, raw: Any, reason: str) -> None:
        if raw.topic() == self.predictions_topic:
            self.monitor.passed((raw.topic(), raw.partition()), raw.offset())
        self.metrics.dead_letters.inc()

    def _committable(self, handled: Offsets) -> Offsets:
        # Label requests and labels are in SQL once handled: commit them as they are.
        labelled = {
            partition: offset for partition, offset in handled.items() if partition[0] != self.predictions_topic
        }
        return {**self.monitor.committable(), **labelled}

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        predictions = [item for item in partitions if item.topic == self.predictions_topic]
        if predictions:
            committed = consumer.committed(predictions, timeout=COMMITTED_TIMEOUT_S)
            self.monitor.assigned({(item.topic, item.partition): max(item.offset, -1) for item in committed})

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        predictions = [(item.topic, item.partition) for item in partitions if item.topic == self.predictions_topic]
        if predictions:
            self.monitor.revoked(predictions)

    def run(self, stop: threading.Event, poll_timeout: float = 0.5) -> None:
        # What starting made (modules, settings, profiles) lives as long as the process: out of the cyclic
        # collector's way (`gc.freeze`), its full collections scan only what the batches make. Each poll batch
        # makes thousands of short-lived objects (messages, their fields), which start collections often.
        gc.freeze()
        # The drift binning compiled (or loaded from numba's cache) before the first poll: not ready until then,
        # and the first batch does not wait for it.
        binning_kernel.warm_up()
        super().run(stop, poll_timeout)

    def close(self) -> None:
        """Release what the monitor holds beside the consumer (the store's connections), after `run`."""
        self.monitor.shutdown()  # its last closed window written first
        super().close()
