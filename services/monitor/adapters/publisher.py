"""Alerts onto `michi.alerts.v1` (keyed by kind) and drift-sample label requests onto `michi.label-requests.v1`
(keyed by window id), each awaited: the monitor saves and commits nothing before the broker's ack."""

from __future__ import annotations

from michi.bus.catalog import ALERTS, LABEL_REQUESTS
from michi.bus.producer import EventProducer
from michi.contracts.v1 import labels_pb2, operations_pb2

PUBLISH_TIMEOUT_S = 30.0


class KafkaMonitorPublisher:
    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer

    def publish_alert(self, alert: operations_pb2.Alert) -> None:
        self.producer.publish_and_wait(ALERTS, alert.kind, alert, timeout=PUBLISH_TIMEOUT_S)

    def publish_label_requests(self, requests: list[labels_pb2.LabelRequest]) -> None:
        futures = [self.producer.publish(LABEL_REQUESTS, request.lineage.window_id, request) for request in requests]
        for future in futures:
            future.result(PUBLISH_TIMEOUT_S)
