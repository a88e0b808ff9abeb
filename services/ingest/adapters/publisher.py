"""Publishing `UploadReceived` on the uploads topic with a bounded wait for the broker's acknowledgement."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Protocol

from michi.bus.catalog import UPLOADS
from michi.bus.producer import Delivery, EventProducer, PublishError
from michi.contracts.v1 import upload_pb2


class PublishFailed(RuntimeError):
    """Kafka did not acknowledge in time (or refused); nothing was accepted."""


class UploadPublisher(Protocol):
    async def publish(self, received: upload_pb2.UploadReceived) -> Delivery: ...


def _consume_outcome(future: asyncio.Future[Delivery]) -> None:
    # An abandoned delivery must not log "exception never retrieved" when it fails later.
    if not future.cancelled():
        future.exception()


class KafkaUploadPublisher:
    def __init__(self, producer: EventProducer, timeout_s: float) -> None:
        self.producer = producer
        self.timeout_s = timeout_s

    async def publish(self, received: upload_pb2.UploadReceived) -> Delivery:
        # `publish()` rather than `publish_async()`: the wait is bounded, and the shield keeps the
        # timeout from cancelling the producer's future (its delivery callback would then fail).
        future: concurrent.futures.Future[Delivery] = self.producer.publish(
            UPLOADS, received.upload.device_id, received
        )
        delivery = asyncio.wrap_future(future)
        delivery.add_done_callback(_consume_outcome)
        try:
            # asyncio.timeout, not wait_for: no extra task per upload.
            async with asyncio.timeout(self.timeout_s):
                return await asyncio.shield(delivery)
        except TimeoutError as error:
            raise PublishFailed(f"no acknowledgement from Kafka within {self.timeout_s:g} s") from error
        except PublishError as error:
            raise PublishFailed(str(error)) from error
