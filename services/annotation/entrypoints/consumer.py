"""The label-request consumer: `michi.label-requests.v1` in, tasks in SQL and Redis, then the offset commit.

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
(`_wait_in_group`): it pauses its partitions and goes on polling, at least every `KEEP_ALIVE_POLL_S`, so
the membership and the assignment survive any outage; records a poll hands over meanwhile are not
processed then, and their partitions are sought back to them before the partitions resume. Only the
partitions it still holds are committed.

`/readyz` (`bootstrap.build_app`) holds the consumer ready while its thread runs and the group makes
progress (`michi.readiness.ConsumerProgress`: records waiting with committed offsets unmoved for 30 s
answer 503).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from michi.bus.catalog import LABEL_REQUESTS
from michi.bus.codec import UndecodableMessage, decode_message
from michi.bus.consumers import first_offsets, seek_back
from michi.bus.headers import extract_context, read_headers
from michi.bus.producer import EventProducer
from michi.bus.streams import consumer_span
from michi.contracts import timestamp_to_seconds
from michi.contracts.v1 import labels_pb2
from services.annotation.adapters.windows import ArchiveWindowSource
from services.annotation.domain.tasks import InvalidRequest, check_request
from services.annotation.domain.windows import window_location
from services.annotation.handlers import SERVICE, AnnotationService

logger = logging.getLogger(__name__)


DEAD_LETTER_TIMEOUT_S = 30.0
RETRY_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
# Pause before a failed batch is read again.
RETRY_PAUSE_S = 2.0
# While retrying, the consumer polls (its partitions paused) at least this often: far below
# max.poll.interval.ms (300 s), so no outage, however long, drops it from its group.
KEEP_ALIVE_POLL_S = 0.5
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


@dataclass(frozen=True)
class DeadLetterNeeded:
    """A record that goes to the dead letters, and why (kept through every attempt to send it)."""

    reason: str
    detail: str


class _Stopped(Exception):
    """The service stopped while a record was being retried."""


class LabelRequestConsumer:
    def __init__(
        self,
        *,
        consumer: Consumer,
        producer: EventProducer,
        service: AnnotationService,
        topic: str,
        windows: ArchiveWindowSource | None = None,
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
        self.assigned: set[int] = set()
        self.last_poll_at: float | None = None
        # Records a poll handed over while the partitions were paused for a retry: the first offset of each
        # partition, sought back to before the partitions resume.
        self._held: dict[tuple[str, int], int] = {}
        self._paused = False
        self._loop = asyncio.new_event_loop()
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.assigned.update(item.partition for item in partitions)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.assigned.difference_update(item.partition for item in partitions)

    def run(self, stop: threading.Event, poll_timeout: float = 0.5) -> None:
        """Poll until `stop` is set, then close the consumer (nothing unprocessed is committed)."""
        try:
            while not stop.is_set():
                try:
                    self.poll_once(stop, poll_timeout)
                except Exception:
                    # poll_once sought the batch back: it is read again after a pause, nothing past it committed.
                    logger.exception("label request batch failed; reading it again")
                    stop.wait(RETRY_PAUSE_S)
        finally:
            self.consumer.close()
            self._loop.close()

    def poll_once(self, stop: threading.Event, timeout: float = 0.5) -> int:
        """Process one batch; commit what was fully processed. Returns how many messages were handled.

        When it fails, the batch is sought back (nothing of it committed) and the error raised.
        """
        messages = self.consumer.consume(self.batch_size, timeout)
        self.last_poll_at = self.clock()
        try:
            return self._process_and_commit(messages, stop)
        except Exception:
            self._rewind(messages)
            raise

    def _process_and_commit(self, messages: list[Any], stop: threading.Event) -> int:
        processed: dict[int, int] = {}
        handled = 0
        for raw in messages:
            if raw.error() is not None:
                logger.warning("consumer error", extra={"error": str(raw.error())})
                continue
            if not self._handle_with_retry(raw, stop):
                break
            processed[raw.partition() or 0] = (raw.offset() or 0) + 1
            handled += 1
        # A partition taken away during a retry is no longer this consumer's to commit: its new owner reads
        # it from the committed offset (the requests are idempotent).
        owned = {partition: offset for partition, offset in processed.items() if partition in self.assigned}
        if owned:
            self.consumer.commit(
                offsets=[TopicPartition(self.topic, partition, offset) for partition, offset in owned.items()],
                asynchronous=False,
            )
        return handled

    def _rewind(self, messages: list[Any]) -> None:
        """Seek each partition of a failed batch back to its first message in it (the first uncommitted one).

        Every batch before was committed whole (a stop ends the loop), so that is where the committed
        offset points. A seek that fails would let a later commit pass the batch, so the process stops
        instead (exit 75) and Kafka redelivers from the committed offsets when it is restarted.
        """
        seek_back(self.consumer, SERVICE, first_offsets(messages), "a failed batch")

    def _handle_with_retry(self, raw: Any, stop: threading.Event) -> bool:
        """Handle one record, through any outage; False when `stop` was set first (nothing after it is done)."""
        try:
            letter = self._retry_outages(raw, stop)
            if letter is not None:
                self._dead_letter_with_retry(raw, letter, stop)
            return True
        except _Stopped:
            return False
        finally:
            self._resume(seek=not stop.is_set())

    def _retry_outages(self, raw: Any, stop: threading.Event) -> DeadLetterNeeded | None:
        """Record the request, retrying outages; the dead letter it needs instead, if any (`_Stopped` on stop)."""
        attempt = 0
        while True:
            try:
                return self._handle(raw)
            except RETRYABLE:
                if attempt == 0:
                    logger.warning(
                        "label request not recorded; retrying",
                        extra={"partition": raw.partition(), "offset": raw.offset()},
                        exc_info=True,
                    )
                self._wait_in_group(stop, RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)])
                attempt += 1
            except Exception as error:
                # Not an outage but this message: park it with the error, so it cannot stop the queue.
                logger.exception("label request failed", extra={"partition": raw.partition(), "offset": raw.offset()})
                return DeadLetterNeeded("processing-error", f"{type(error).__name__}: {error}")

    def _dead_letter_with_retry(self, raw: Any, letter: DeadLetterNeeded, stop: threading.Event) -> None:
        """Send the dead letter until the broker acknowledges it, always with its own reason (`_Stopped` on stop)."""
        headers = read_headers(raw.headers())
        attempt = 0
        while True:
            try:
                self._dead_letter(raw, headers, letter.reason, letter.detail)
                return
            except Exception:
                if attempt == 0:
                    logger.warning(
                        "dead letter not acknowledged; sending it again",
                        extra={"partition": raw.partition(), "offset": raw.offset(), "reason": letter.reason},
                        exc_info=True,
                    )
                self._wait_in_group(stop, RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)])
                attempt += 1

    def _wait_in_group(self, stop: threading.Event, seconds: float) -> None:
        """Wait `seconds` between two attempts, polling with the partitions paused; `_Stopped` when `stop` is set.

        Polling keeps the consumer in its group (a consumer silent for `max.poll.interval.ms` is dropped);
        pausing keeps it from fetching what it cannot handle yet. What a poll hands over all the same
        (fetched before the pause, or from a partition assigned meanwhile) is held, and read again later.
        """
        deadline = time.monotonic() + seconds
        while True:
            assignment = self.consumer.assignment()
            if assignment:
                # Again every time: a partition assigned by a rebalance meanwhile arrives unpaused.
                self.consumer.pause(assignment)
            self._paused = True
            remaining = deadline - time.monotonic()
            for record in self.consumer.consume(self.batch_size, max(0.0, min(KEEP_ALIVE_POLL_S, remaining))):
                if record.error() is None:
                    self._held.setdefault((record.topic() or "", record.partition() or 0), record.offset() or 0)
            self.last_poll_at = self.clock()
            if stop.is_set():
                raise _Stopped
            if time.monotonic() >= deadline:
                return

    def _resume(self, *, seek: bool) -> None:
        """After a retry: records held back are read again (`seek`; not when stopping), the partitions resume."""
        if not self._paused:
            return
        held = {key: offset for key, offset in self._held.items() if key[1] in self.assigned}
        self._held.clear()
        if seek:
            seek_back(self.consumer, SERVICE, held, "records held during a retry")
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.resume(assignment)
        self._paused = False

    def _handle(self, raw: Any) -> DeadLetterNeeded | None:
        """Record one request; the dead letter it needs instead, if any."""
        headers = read_headers(raw.headers())
        try:
            message = decode_message(LABEL_REQUESTS, raw.value(), headers)
            assert isinstance(message, labels_pb2.LabelRequest)
            check_request(message)
        except UndecodableMessage as error:
            return DeadLetterNeeded(error.reason, error.detail)
        except InvalidRequest as error:
            return DeadLetterNeeded("invalid-request", str(error))
        inbound = _InboundView(raw, headers)
        with consumer_span(inbound, SERVICE):  # type: ignore[arg-type]
            self.service.intake(message, location=self._location(message))
        return None

    def _location(self, request: labels_pb2.LabelRequest) -> tuple[float, float] | None:
        if self.windows is None or not request.window.HasField("started_at"):
            return None
        start = timestamp_to_seconds(request.window.started_at)
        end = timestamp_to_seconds(request.window.ended_at) if request.window.HasField("ended_at") else start
        upload = self._loop.run_until_complete(self.windows.upload(request.lineage, datetime.fromtimestamp(start, UTC)))
        return window_location(upload, start, end) if upload is not None else None

    def _dead_letter(self, raw: Any, headers: dict[str, str], reason: str, detail: str) -> None:
        self.producer.dead_letter_record(
            service=SERVICE, record=raw, headers=headers, reason=reason, error=detail
        ).result(DEAD_LETTER_TIMEOUT_S)
        self.service.metrics.dead_letters.inc()

    def ready(self, max_silence_s: float = 30.0) -> bool:
        """Polling recently and holding at least one partition."""
        return (
            self.last_poll_at is not None and self.clock() - self.last_poll_at < max_silence_s and bool(self.assigned)
        )


class _InboundView:
    """The attributes `consumer_span` reads, from a confluent-kafka message."""

    def __init__(self, raw: Any, headers: dict[str, str]) -> None:
        self.topic = raw.topic()
        self.partition = raw.partition()
        self.offset = raw.offset()
        self.context = extract_context(headers)
