"""Publishing decided labels on `michi.labels.v1` (keyed by window_id), after the SQL commit."""

from __future__ import annotations

import concurrent.futures
from typing import Protocol

from michi.bus.catalog import LABELS
from michi.bus.producer import Delivery, EventProducer
from michi.contracts.v1 import labels_pb2


class LabelPublisher(Protocol):
    def publish(self, label: labels_pb2.Label) -> concurrent.futures.Future[Delivery]:
        """Send the label; the future resolves once the broker acknowledged it (acks=all)."""
        ...


class KafkaLabelPublisher:
    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer

    def publish(self, label: labels_pb2.Label) -> concurrent.futures.Future[Delivery]:
        return self.producer.publish(LABELS, label.lineage.window_id, label)
