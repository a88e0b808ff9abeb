"""The label-request consumer: `michi.label-requests.v1` in, tasks in SQL and Redis, then the offset commit.

The kit's loop decodes each record; `handlers.handle_label_request` decides what it yields (refused
`invalid-request`, or located and taken in); the loop dead-letters what is refused and commits.

At-least-once with idempotent effects: a partition's offset is committed only after every message
before it was recorded in SQL and Redis (or dead-lettered, acknowledged by the broker). A message
whose write fails (Redis or the database down) is retried until it succeeds or the service stops,
so nothing after it is committed past it. So is a dead letter the broker does not acknowledge: it is
sent again, with its own reason (`decode-error`, `invalid-request`, `processing-error`), until the broker
takes it; a refused dead letter never turns into another one. A batch that fails otherwise (a refused
commit) is not committed past either: each of its partitions is sought back to the batch's first record
there and the loop reads it again after `RETRY_PAUSE_S`. Redelivered requests change nothing (event_id
in SQL). Undecodable or unusable requests, and any whose processing fails for another reason than an
outage, go to `michi.dead-letters.v1` with the reason and original bytes.

An outage may last longer than Kafka's `max.poll.interval.ms` (300 s): a consumer that does not poll for
that long is dropped from its group, its partitions go to another member (or to itself after a rejoin)
and its batch is read again. While it retries, the consumer therefore stays in the group
(`michi.kit.consumer.ConsumerLoop.wait_in_group`): it pauses its partitions and goes on polling, at least every `KEEP_ALIVE_POLL_S`, so
the membership and the assignment survive any outage; records a poll hands over meanwhile are not
processed then, and their partitions are sought back to them before the partitions resume. Only the
partitions it still holds are committed.

`/readyz` (`wiring.build_app`) holds the consumer ready while its thread runs and the group makes
progress (`michi.readiness.ConsumerProgress`: records waiting with committed offsets unmoved for 30 s
answer 503).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from michi.bus.catalog import LABEL_REQUESTS
from michi.bus.producer import EventProducer
from michi.contracts.v1 import labels_pb2
from michi.kit.consumer import ConsumerLoop, Delivered, LoopConsumer
from services.annotation.handlers import SERVICE, AnnotationService, WindowUploads, handle_label_request

logger = logging.getLogger(__name__)

# Outages: the write is retried until it succeeds. Any other failure is the message's: dead letter.
RETRYABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    OSError,
)


class LabelRequestConsumer(LoopConsumer):
    def __init__(
        self,
        *,
        consumer: Consumer,
        producer: EventProducer,
        service: AnnotationService,
        topic: str,
        windows: WindowUploads | None = None,
        batch_size: int = 200,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.service = service
        self.topic = topic
        self.windows = windows
        self.batch_size = batch_size
        self.clock = clock
        self._loop = asyncio.new_event_loop()
        self.loop = ConsumerLoop(
            consumer=consumer,
            producer=producer,
            service=SERVICE,
            topics={topic: LABEL_REQUESTS},
            handle=lambda record: self._handle(record),
            on_dead_letter=lambda record, reason: self.service.metrics.dead_letters.inc(),
            retryable=RETRYABLE,
            failure_reason="processing-error",
            batch_size=batch_size,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            clock=clock,
        )

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Rebalance hook (the loop keeps the assignment)."""

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Rebalance hook (the loop keeps the assignment)."""

    @property
    def assigned(self) -> set[int]:
        """The partitions of the topic this consumer holds."""
        return {partition for _, partition in self.loop.assigned}

    def run(self, stop: threading.Event, poll_timeout: float = 0.5) -> None:
        """Poll until `stop` is set, then close the consumer (nothing unprocessed is committed) and its event loop."""
        try:
            super().run(stop, poll_timeout)
        finally:
            self._loop.close()

    def _handle(self, record: Delivered) -> None:
        """Hand one decoded request to `handle_label_request` (which raises `Rejected` for one it refuses).

        Runs inside the record's consumer span (`<topic> process`, opened by the loop), which continues the
        trace of the upload the request is about, on this consumer's own event loop (the archive is async).
        """
        message = record.message
        assert isinstance(message, labels_pb2.LabelRequest)
        self._loop.run_until_complete(handle_label_request(self.service, message, self.windows))
