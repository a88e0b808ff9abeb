"""Publishing `UploadReceived` on the uploads topic with a bounded wait for the broker's acknowledgement."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from opentelemetry import trace

from michi.bus.catalog import UPLOADS
from michi.bus.producer import Delivery, EventProducer, PublishError, PublishTimeout
from michi.contracts.v1 import upload_pb2


class PublishFailed(RuntimeError):
    """Kafka did not acknowledge in time (or refused); nothing was accepted."""


class UploadPublisher(Protocol):
    async def publish(self, received: upload_pb2.UploadReceived) -> Delivery: ...

    def send(self, received: upload_pb2.UploadReceived) -> Awaitable[Delivery]:
        """Hand the event to the producer as soon as it may go (at once, unless the publisher orders events);
        the acknowledgement is awaited later. `publish(received)` is `await send(received)`."""
        ...


class KafkaUploadPublisher:
    def __init__(self, producer: EventProducer, timeout_s: float) -> None:
        self.producer = producer
        self.timeout_s = timeout_s
        self.topic = UPLOADS.name(producer.prefix)

    async def publish(self, received: upload_pb2.UploadReceived) -> Delivery:
        return await self.send(received)

    def send(self, received: upload_pb2.UploadReceived) -> Awaitable[Delivery]:
        # A loop future: the acknowledgements of one producer poll settle together, and the producer's
        # poller fails it after `timeout_s` (no timer per upload on the loop). The producer gives up on
        # the message at the same time (message.timeout.ms). The request's span stands for the publish
        # (a second span per upload cost ~40 µs): it gets the destination, and consumers' spans are its
        # children.
        span = trace.get_current_span()
        span.set_attribute("messaging.system", "kafka")
        span.set_attribute("messaging.destination.name", self.topic)
        delivery = self.producer.publish_in_loop(
            UPLOADS, received.upload.device_id, received, own_span=False, timeout_s=self.timeout_s
        )
        return self._acknowledged(delivery)

    async def _acknowledged(self, delivery: Awaitable[Delivery]) -> Delivery:
        try:
            return await delivery
        except PublishTimeout as error:
            raise PublishFailed(f"no acknowledgement from Kafka within {self.timeout_s:g} s") from error
        except PublishError as error:
            raise PublishFailed(str(error)) from error
