"""Publishing decided labels on `michi.labels.v1` (keyed by window_id), after the SQL commit.

`KafkaLabelPublisher` is the handler's `LabelPublisher` port (`services.annotation.handlers`).
"""

from __future__ import annotations

import concurrent.futures

from michi.bus.catalog import LABELS
from michi.bus.producer import Delivery, EventProducer
from michi.contracts.v1 import labels_pb2


class KafkaLabelPublisher:
    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer

    def publish(self, label: labels_pb2.Label) -> concurrent.futures.Future[Delivery]:
        return self.producer.publish(LABELS, label.lineage.window_id, label)
