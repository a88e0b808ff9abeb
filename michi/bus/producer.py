"""The one Kafka producer every Michi process uses (confluent-kafka, idempotent, acks=all).

`publish()` returns a concurrent future resolved when the broker acknowledged;
`publish_async()` awaits the acknowledgement inside asyncio; `publish_and_wait()` blocks.
A background thread serves delivery callbacks, so callers never poll. The acknowledgements one
poll served reach an event loop together: one wake-up of the loop settles all of them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import heapq
import itertools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from confluent_kafka import KafkaError, Producer
from confluent_kafka import Message as KafkaMessage
from google.protobuf.message import Message
from opentelemetry import trace

from michi.bus.catalog import DEAD_LETTERS, TopicSpec
from michi.bus.connection import KafkaConnection, as_connection
from michi.bus.headers import HeaderList, build_headers
from michi.contracts import stable_event_id, timestamp_now
from michi.contracts.v1 import operations_pb2

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("michi.bus")

# A dead letter carries the original bytes, but never so many that the letter itself would be refused:
# a message near the broker's 1 MB limit, wrapped in a DeadLetter, would fail to publish on every retry
# and stop the stream that tried to park it. Longer values, keys and headers are cut (the error says so;
# the original stays at its topic, partition and offset for the topic's retention).
MAX_DEAD_LETTER_VALUE_BYTES = 512 * 1024
MAX_DEAD_LETTER_KEY_BYTES = 16 * 1024
MAX_DEAD_LETTER_HEADER_BYTES = 16 * 1024


class PublishError(RuntimeError):
    """The broker did not acknowledge a message (retriable unless `fatal`)."""

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class PublishTimeout(PublishError):
    """No acknowledgement within the wait the caller gave `publish_in_loop` (the message may still arrive)."""


class Delivery:
    """Where the broker stored one message."""

    __slots__ = ("offset", "partition", "topic")

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset


# What a delivery callback hands on: the Delivery, or the PublishError when the broker refused.
Outcome = Delivery | PublishError
# What `publish` returns: settled by the delivery callback (`result()` raises the PublishError).
PendingDelivery = concurrent.futures.Future[Delivery]


async def wait_for_deliveries(pending: Iterable[PendingDelivery]) -> None:
    """Return once the broker acknowledged every record of `pending` (raises if one failed)."""
    futures = [asyncio.wrap_future(future) for future in pending]
    if futures:
        await asyncio.gather(*futures)


# Settles one caller's wait with an outcome (a concurrent future's, or an event loop's).
Settle = Callable[[Outcome], None]


class ConsumedRecord(Protocol):
    """What the producer needs of a consumed record (`confluent_kafka.Message` is one)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...


class DecodedRecord(Protocol):
    """What the producer needs of a decoded inbound record (`michi.bus.streams.Inbound` is one)."""

    @property
    def message(self) -> Message: ...
    @property
    def key(self) -> str: ...
    @property
    def headers(self) -> dict[str, str]: ...
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


class EventProducer:
    def __init__(
        self,
        bootstrap: KafkaConnection | str,
        prefix: str = "michi.",
        *,
        client_id: str = "michi",
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.prefix = prefix
        config: dict[str, Any] = {
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "compression.type": "none",  # aiokafka (faust) readers need extra codecs for lz4/zstd
            "message.timeout.ms": 30_000,
            "max.in.flight.requests.per.connection": 5,
        }
        config.update(extra or {})
        self._producer = Producer(as_connection(bootstrap).confluent_config(config))
        # Outcomes for event-loop futures, gathered during one poll and handed to each loop at once.
        self._settlements: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Delivery], Outcome]] = []
        self._settlements_lock = threading.Lock()
        # (deadline, sequence number, loop, future, wait) of loop futures given a timeout: a heap the poller
        # expires, so a bounded wait costs no timer of its own on the event loop.
        self._deadlines: list[tuple[float, int, asyncio.AbstractEventLoop, asyncio.Future[Delivery], float]] = []
        self._deadline_numbers = itertools.count()
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._serve_callbacks, name=f"{client_id}-delivery", daemon=True)
        self._poller.start()

    def _serve_callbacks(self) -> None:
        while not self._closed.is_set():
            self._poll(0.05)

    def _poll(self, timeout: float) -> None:
        """Serve delivery callbacks, then wake each waiting event loop once for all it got."""
        self._producer.poll(timeout)
        if self._deadlines:
            self._expire(time.monotonic())
        if not self._settlements:
            return
        with self._settlements_lock:
            settlements, self._settlements = self._settlements, []
        by_loop: defaultdict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Delivery], Outcome]]] = defaultdict(
            list
        )
        for loop, future, outcome in settlements:
            by_loop[loop].append((future, outcome))
        for loop, batch in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle_in_loop, batch)

    def _expire(self, now: float) -> None:
        with self._settlements_lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                _, _, loop, future, wait_s = heapq.heappop(self._deadlines)
                if not future.done():
                    timeout = PublishTimeout(f"no acknowledgement within {wait_s:g} s")
                    self._settlements.append((loop, future, timeout))

    def publish(
        self, spec: TopicSpec, key: str, message: Message, *, topic: str | None = None
    ) -> concurrent.futures.Future[Delivery]:
        """Send `message` to the spec's topic; the future resolves once acks=all was met."""
        future: concurrent.futures.Future[Delivery] = concurrent.futures.Future()
        self._publish(spec, key, message, topic, _settler(future))
        return future

    def _publish(
        self,
        spec: TopicSpec,
        key: str,
        message: Message | bytes,
        topic: str | None,
        settle: Settle,
        own_span: bool = True,
    ) -> None:
        name = topic or spec.name(self.prefix)
        if own_span:
            with tracer.start_as_current_span(
                f"{name} publish",
                kind=trace.SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.destination.name": name,
                    "messaging.operation.type": "publish",
                    "messaging.kafka.message.key": key,
                    "michi.bus.schema": spec.schema,
                },
            ):
                headers = build_headers(spec.schema)
        else:
            headers = build_headers(spec.schema)
        value = message if isinstance(message, bytes) else message.SerializeToString()
        self._produce(name, key.encode(), value, headers, settle)

    def publish_raw(
        self, topic: str, key: bytes | None, value: bytes, headers: HeaderList
    ) -> concurrent.futures.Future[Delivery]:
        """Send bytes as they are (benchmarks' baselines and dead letters)."""
        future: concurrent.futures.Future[Delivery] = concurrent.futures.Future()
        self._produce(topic, key, value, headers, _settler(future))
        return future

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: HeaderList,
        settle: Settle,
    ) -> None:
        def delivered(error: KafkaError | None, record: KafkaMessage) -> None:
            if error is not None:
                settle(PublishError(f"{topic}: {error.str()}", fatal=error.fatal()))
            else:
                settle(Delivery(record.topic() or topic, record.partition() or 0, record.offset() or 0))

        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=delivered)  # type: ignore[arg-type]
                return
            except BufferError:
                # Local queue full: wait for deliveries to drain rather than drop the message.
                self._poll(0.05)

    def publish_in_loop(
        self,
        spec: TopicSpec,
        key: str,
        message: Message | bytes,
        *,
        topic: str | None = None,
        own_span: bool = True,
        timeout_s: float | None = None,
    ) -> asyncio.Future[Delivery]:
        """`publish()` for asyncio: a future of the running loop, settled without a thread hop per message.

        `message` may be given already serialized (bytes of the spec's schema, e.g. assembled without
        copying a large field). Cancelling the future only stops waiting: the message may still be
        delivered. `timeout_s`: the future fails with `PublishTimeout` when the broker has not
        acknowledged by then (within the poller's 50 ms). `own_span=False`: no producer span; the record
        carries the caller's current span as its parent (for a caller whose own span already stands for
        the publish, such as ingest's).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivery] = loop.create_future()
        if timeout_s is not None:
            deadline = (time.monotonic() + timeout_s, next(self._deadline_numbers), loop, future, timeout_s)
            with self._settlements_lock:
                heapq.heappush(self._deadlines, deadline)

        def settle(outcome: Outcome) -> None:
            with self._settlements_lock:
                self._settlements.append((loop, future, outcome))

        self._publish(spec, key, message, topic, settle, own_span)
        return future

    async def publish_async(self, spec: TopicSpec, key: str, message: Message, *, topic: str | None = None) -> Delivery:
        return await self.publish_in_loop(spec, key, message, topic=topic)

    def publish_and_wait(self, spec: TopicSpec, key: str, message: Message, timeout: float = 30.0) -> Delivery:
        return self.publish(spec, key, message).result(timeout)

    def dead_letter(
        self,
        *,
        service: str,
        source_topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: dict[str, str],
        reason: str,
        error: str,
    ) -> concurrent.futures.Future[Delivery]:
        """Park a message this service could not process, with the original bytes and the reason.

        The letter stays publishable whatever the message: value, key and headers beyond
        `MAX_DEAD_LETTER_*_BYTES` are cut, and the error says what was cut.
        """
        letter = dead_letter_message(
            service=service,
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            headers=headers,
            reason=reason,
            error=error,
        )
        logger.warning(
            "message sent to dead letters",
            extra={
                "source_topic": source_topic,
                "partition": partition,
                "offset": offset,
                "reason": reason,
                "error": letter.error[:300],
            },
        )
        return self.publish(DEAD_LETTERS, letter.key.decode("utf-8", "replace"), letter)

    def dead_letter_record(
        self, *, service: str, record: ConsumedRecord, headers: dict[str, str], reason: str, error: str
    ) -> concurrent.futures.Future[Delivery]:
        """`dead_letter` for a record a confluent-kafka consumer handed over (its topic, partition, offset, bytes)."""
        return self.dead_letter(
            service=service,
            source_topic=record.topic() or "",
            partition=record.partition() or 0,
            offset=record.offset() or 0,
            key=record.key(),
            value=record.value(),
            headers=headers,
            reason=reason,
            error=error,
        )

    def dead_letter_inbound(
        self, *, service: str, inbound: DecodedRecord, reason: str, error: str, value: bytes | None = None
    ) -> concurrent.futures.Future[Delivery]:
        """`dead_letter` for a decoded stream record (`Inbound`): its message re-serialized unless `value` is given."""
        return self.dead_letter(
            service=service,
            source_topic=inbound.topic,
            partition=inbound.partition,
            offset=inbound.offset,
            key=inbound.key.encode(),
            value=inbound.message.SerializeToString() if value is None else value,
            headers=inbound.headers,
            reason=reason,
            error=error,
        )

    def flush(self, timeout: float = 30.0) -> int:
        remaining: int = self._producer.flush(timeout)
        self._poll(0)  # hand on what the flush's callbacks settled
        return remaining

    def ping(self, timeout: float = 2.0) -> bool:
        """True when the broker answers this producer's own connection with metadata."""
        try:
            return bool(self._producer.list_topics(timeout=timeout).brokers)
        except Exception:
            return False

    def close(self, timeout: float = 30.0) -> None:
        self.flush(timeout)
        self._closed.set()
        self._poller.join(timeout=2)
        # Release the client now, not at garbage collection, so it stops reconnecting.
        self._producer.close()


def dead_letter_message(
    *,
    service: str,
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: dict[str, str],
    reason: str,
    error: str,
) -> operations_pb2.DeadLetter:
    """The DeadLetter of one message, its original bytes cut to the `MAX_DEAD_LETTER_*_BYTES` bounds."""
    key, value = key or b"", value or b""
    cuts = []
    if len(value) > MAX_DEAD_LETTER_VALUE_BYTES:
        cuts.append(f"value cut to {MAX_DEAD_LETTER_VALUE_BYTES} of {len(value)} bytes")
        value = value[:MAX_DEAD_LETTER_VALUE_BYTES]
    if len(key) > MAX_DEAD_LETTER_KEY_BYTES:
        cuts.append(f"key cut to {MAX_DEAD_LETTER_KEY_BYTES} of {len(key)} bytes")
        key = key[:MAX_DEAD_LETTER_KEY_BYTES]
    kept: dict[str, str] = {}
    room = MAX_DEAD_LETTER_HEADER_BYTES
    for name, text in headers.items():
        room -= len(name.encode()) + len(text.encode())
        if room < 0:
            cuts.append(f"{len(headers) - len(kept)} of {len(headers)} headers left out")
            break
        kept[name] = text
    if cuts:
        error = f"{error[:1500]} ({'; '.join(cuts)}; the original is at {source_topic}[{partition}]@{offset})"
    return operations_pb2.DeadLetter(
        event_id=stable_event_id("dead-letter", service, source_topic, partition, offset),
        occurred_at=timestamp_now(),
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        headers=kept,
        reason=reason,
        error=error[:2000],
        service=service,
    )


def _resolve(future: concurrent.futures.Future[Delivery] | asyncio.Future[Delivery], outcome: Outcome) -> None:
    if future.done():  # the caller gave up (cancelled) before the broker answered
        return
    if isinstance(outcome, PublishError):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _settler(future: concurrent.futures.Future[Delivery]) -> Settle:
    return functools.partial(_resolve, future)


def _settle_in_loop(batch: list[tuple[asyncio.Future[Delivery], Outcome]]) -> None:
    for future, outcome in batch:
        _resolve(future, outcome)
