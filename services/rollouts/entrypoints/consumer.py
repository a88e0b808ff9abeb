"""The rollout controller's consumer: what the arms did through the kit's loop, and the control loop.

The loop (`michi.kit.consumer.ConsumerLoop`) polls, opens each record's consumer span, decodes it and
dead-letters what cannot be decoded. This entrypoint hands each decoded record by topic to `OutcomeRecorder`
(label requests and labels: the random-QA windows) and to `SignalRecorder` (trip segments with their broker
timestamps, detections, labels, dead letters, alerts): both buffer, and each writes its part in one transaction
at the end of the batch, before its offsets are committed. After every poll (an empty one too)
`RolloutController.tick_if_due` looks at the running rollouts once its interval has passed: the controller runs
whether or not records arrive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer
from sqlalchemy.exc import OperationalError

from michi.bus.catalog import ALERTS, DEAD_LETTERS, DETECTIONS, LABEL_REQUESTS, LABELS, TRIP_SEGMENTS
from michi.bus.producer import EventProducer
from michi.contracts.v1 import inference_pb2, labels_pb2, operations_pb2
from michi.kit.consumer import ConsumerLoop, Delivered, LoopConsumer
from services.rollouts.adapters.metrics import RolloutsMetrics
from services.rollouts.handlers import OutcomeRecorder, RolloutController, SignalRecorder

SERVICE = "rollouts"
BATCH_SIZE = 500


class RolloutsConsumer(LoopConsumer):
    def __init__(
        self,
        *,
        consumer: Consumer,
        producer: EventProducer,
        recorder: OutcomeRecorder,
        signals: SignalRecorder,
        controller: RolloutController,
        metrics: RolloutsMetrics,
        prefix: str,
        closing: Callable[[], None] | None = None,
    ) -> None:
        self.consumer = consumer
        self.recorder = recorder
        self.signals = signals
        self.controller = controller
        self.metrics = metrics
        self.closing = closing
        self.requests_topic = LABEL_REQUESTS.name(prefix)
        self.labels_topic = LABELS.name(prefix)
        topics = (LABEL_REQUESTS, LABELS, TRIP_SEGMENTS, DETECTIONS, DEAD_LETTERS, ALERTS)
        self.handlers: dict[str, Callable[[Delivered], None]] = {
            self.requests_topic: self._request,
            self.labels_topic: self._label,
            TRIP_SEGMENTS.name(prefix): self._segment,
            DETECTIONS.name(prefix): self._detection,
            DEAD_LETTERS.name(prefix): self._dead_letter,
            ALERTS.name(prefix): self._alert,
        }
        self.loop = ConsumerLoop(
            consumer=consumer,
            producer=producer,
            service=SERVICE,
            topics={spec.name(prefix): spec for spec in topics},
            handle=self._handle,
            start_batch=self._start_batch,
            end_batch=self._end_batch,
            on_dead_letter=self._dead_lettered,
            # The database away: retried on the same record, the partitions paused in the group.
            retryable=(OperationalError,),
            batch_size=BATCH_SIZE,
        )

    def _handle(self, record: Delivered) -> None:
        self.handlers[record.topic()](record)

    def _request(self, record: Delivered) -> None:
        self.recorder.request(cast(labels_pb2.LabelRequest, record.message))

    def _label(self, record: Delivered) -> None:
        label = cast(labels_pb2.Label, record.message)
        self.recorder.label(label)
        self.signals.label(label)

    def _segment(self, record: Delivered) -> None:
        self.signals.segment(cast(inference_pb2.TripSegment, record.message), _broker_ms(record))

    def _detection(self, record: Delivered) -> None:
        self.signals.detection(cast(inference_pb2.Detection, record.message))

    def _dead_letter(self, record: Delivered) -> None:
        self.signals.dead_letter(cast(operations_pb2.DeadLetter, record.message))

    def _alert(self, record: Delivered) -> None:
        self.signals.alert(cast(operations_pb2.Alert, record.message))

    def _start_batch(self) -> None:
        # Whatever a failed batch left buffered: that batch is read again.
        self.recorder.discard()
        self.signals.discard()

    def _end_batch(self) -> None:
        # The batch's random-QA windows and signals first, one transaction each, before its offsets are committed
        # (a failure reads the batch again); then the look at the rollouts, on what is kept.
        self.recorder.flush()
        self.signals.flush()
        self.controller.tick_if_due()

    def _dead_lettered(self, raw: Any, reason: str) -> None:
        self.metrics.dead_letters.inc()


def _broker_ms(record: Delivered) -> int | None:
    """The record's broker timestamp (milliseconds; the producer's create time by default), None if it has none."""
    kind, value = record.raw.timestamp()
    return None if kind == TIMESTAMP_NOT_AVAILABLE else int(value)
