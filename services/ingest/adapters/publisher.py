"""Publishing `UploadReceived` on the uploads topic with a bounded wait for the broker's acknowledgement."""

from __future__ import annotations

import asyncio
from typing import Protocol

from michi.bus.catalog import UPLOADS
from michi.bus.producer import Delivery, EventProducer, PublishError
from michi.contracts.v1 import upload_pb2


class PublishFailed(RuntimeError):
    """Kafka did not acknowledge in time (or refused); nothing was accepted."""


class UploadPublisher(Protocol):
    async def publish(self, received: upload_pb2.UploadReceived) -> Delivery: ...


class KafkaUploadPublisher:
    def __init__(self, producer: EventProducer, timeout_s: float) -> None:
        self.producer = producer
        self.timeout_s = timeout_s

    async def publish(self, received: upload_pb2.UploadReceived) -> Delivery:
        # A loop future: the acknowledgements of one producer poll settle together. The timeout
        # cancels only the wait (the producer gives up on the message at the same time).
        delivery = self.producer.publish_in_loop(UPLOADS, received.upload.device_id, received)
        try:
            # asyncio.timeout, not wait_for: no extra task per upload.
            async with asyncio.timeout(self.timeout_s):
                return await delivery
        except TimeoutError as error:
            raise PublishFailed(f"no acknowledgement from Kafka within {self.timeout_s:g} s") from error
        except PublishError as error:
            raise PublishFailed(str(error)) from error
