"""Inference's `Publisher` port (`services/inference/handlers.py`) over the shared producer.

    publisher = KafkaPublisher(producer, "inference")      # built in `wiring`, used by the handlers

Sends at once, inside the caller's current span (the producer writes its trace context into the
headers); each future settles when the broker acknowledged the record (acks=all).
"""

from __future__ import annotations

from google.protobuf.message import Message

from michi.bus.catalog import TopicSpec
from michi.bus.producer import EventProducer
from michi.bus.streams import Inbound
from services.inference.handlers import PendingDelivery


class KafkaPublisher:
    def __init__(self, producer: EventProducer, service: str) -> None:
        self._producer = producer
        self._service = service

    def publish(self, spec: TopicSpec, key: str, message: Message) -> PendingDelivery:
        return self._producer.publish(spec, key, message)

    def dead_letter(self, inbound: Inbound, reason: str, detail: str) -> PendingDelivery:
        """The record's message re-serialized, with its topic, partition, offset, key and headers."""
        return self._producer.dead_letter_inbound(service=self._service, inbound=inbound, reason=reason, error=detail)
