"""Alerts onto `michi.alerts.v1` (keyed by kind), each awaited: the monitor commits nothing before its ack."""

from __future__ import annotations

from michi.bus.catalog import ALERTS
from michi.bus.producer import EventProducer
from michi.contracts.v1 import operations_pb2

PUBLISH_TIMEOUT_S = 30.0


class KafkaAlertPublisher:
    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer

    def publish_alert(self, alert: operations_pb2.Alert) -> None:
        self.producer.publish_and_wait(ALERTS, alert.kind, alert, timeout=PUBLISH_TIMEOUT_S)
