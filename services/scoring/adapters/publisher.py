"""Publishing through the shared producer: send now (inside the message's span), await the acks per batch."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterable

from google.protobuf.message import Message

from michi.bus.catalog import TopicSpec
from michi.bus.producer import Delivery, EventProducer
from michi.bus.streams import Inbound

PendingDelivery = concurrent.futures.Future[Delivery]


class KafkaPublisher:
    def __init__(self, producer: EventProducer, service: str) -> None:
        self._producer = producer
        self._service = service

    def publish(self, spec: TopicSpec, key: str, message: Message) -> PendingDelivery:
        """Send a message; the current span's trace context goes into its headers."""
        return self._producer.publish(spec, key, message)

    def dead_letter(self, inbound: Inbound, reason: str, detail: str) -> PendingDelivery:
        return self._producer.dead_letter_inbound(service=self._service, inbound=inbound, reason=reason, error=detail)


async def wait_for_deliveries(pending: Iterable[PendingDelivery]) -> None:
    """Return once the broker acknowledged every message (raises if one failed)."""
    futures = [asyncio.wrap_future(future) for future in pending]
    if futures:
        await asyncio.gather(*futures)
