"""Publishing `UploadReceived` on the uploads topic, and `MediaReceived` on the media topic, with a bounded wait for
the broker's acknowledgement.

`KafkaUploadPublisher` is the handler's `UploadPublisher` port (`services.ingest.handlers`); `KafkaMediaPublisher`
the media door's (`services.ingest.entrypoints.media`).
"""

from __future__ import annotations

from collections.abc import Awaitable

from opentelemetry import trace

from michi.bus.catalog import MEDIA, UPLOADS
from michi.bus.producer import Delivery, EventProducer, PublishError, PublishTimeout
from michi.contracts.v1 import upload_pb2
from services.ingest.handlers import OutgoingUpload, PublishFailed


class KafkaUploadPublisher:
    """`UploadPublisher` over the shared producer: `PublishFailed` when Kafka does not acknowledge in time."""

    def __init__(self, producer: EventProducer, timeout_s: float) -> None:
        self.producer = producer
        self.timeout_s = timeout_s
        self.topic = UPLOADS.name(producer.prefix)
        self._span_attributes = {"messaging.system": "kafka", "messaging.destination.name": self.topic}

    async def publish(self, outgoing: OutgoingUpload) -> Delivery:
        return await self.send(outgoing)

    def send(self, outgoing: OutgoingUpload) -> Awaitable[Delivery]:
        # A loop future: the acknowledgements of one producer poll settle together, and the producer's
        # poller fails it after `timeout_s` (no timer per upload on the loop). The producer gives up on
        # the message at the same time (message.timeout.ms). The request's span stands for the publish
        # (a second span per upload cost ~40 µs): it gets the destination, and consumers' spans are its
        # children.
        trace.get_current_span().set_attributes(self._span_attributes)
        delivery = self.producer.publish_in_loop(
            UPLOADS, outgoing.upload.device_id, outgoing.serialized(), own_span=False, timeout_s=self.timeout_s
        )
        return self._acknowledged(delivery)

    async def _acknowledged(self, delivery: Awaitable[Delivery]) -> Delivery:
        try:
            return await delivery
        except PublishTimeout as error:
            raise PublishFailed(f"no acknowledgement from Kafka within {self.timeout_s:g} s") from error
        except PublishError as error:
            raise PublishFailed(str(error)) from error


class KafkaMediaPublisher:
    """Publishes `MediaReceived` on the media topic, keyed by device: `PublishFailed` when Kafka does not acknowledge
    in time (the media PUT then answers 503 and the device's retry, answered from the stored copy, publishes it
    again under the same event id)."""

    def __init__(self, producer: EventProducer, timeout_s: float) -> None:
        self.producer = producer
        self.timeout_s = timeout_s

    async def publish(self, event: upload_pb2.MediaReceived) -> Delivery:
        delivery = self.producer.publish_in_loop(MEDIA, event.lineage.device_id, event, timeout_s=self.timeout_s)
        try:
            return await delivery
        except PublishTimeout as error:
            raise PublishFailed(f"no acknowledgement from Kafka within {self.timeout_s:g} s") from error
        except PublishError as error:
            raise PublishFailed(str(error)) from error
