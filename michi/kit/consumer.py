"""The one consumer loop of the plain confluent-kafka services: annotation, camera, monitor, rollouts, trainer and
warehouse (the faust workers have their own).

    loop = ConsumerLoop(
        consumer=Consumer(group_consumer_config(connection, prefix, SERVICE)),
        producer=producer,
        service=SERVICE,
        topics={LABELS.name(prefix): LABELS},
        handle=store_label,            # one decoded record; raise Rejected(reason, detail) to dead-letter it
        start_batch=new_batch,         # optional: before the first record of a batch
        end_batch=store_batch,         # optional: after every record of a batch, before its commit
        on_dead_letter=count_letter,   # optional: after a dead letter was acknowledged (a metric)
    )
    loop.run(stop)

Each pass polls a batch (up to `batch_size` records: the first within the poll's timeout, then what arrived with
it, `michi.bus.consumers.consume_batch`), and for each record opens a CONSUMER span continuing the trace in its `traceparent`
header (`michi.bus.tracing.consumer_span`, `<topic> process`), decodes it by its topic's catalog type
(`michi.bus.codec`), and hands it to `handle` as a `Delivered` (the record's accessors, plus the message and
its headers). What cannot be decoded goes to the dead letters with the decoder's reason (`decode-error`,
`schema-mismatch`, `empty-value`); what the handler rejects, with its reason (the span says so, status
ERROR). Offsets are committed only after the batch was handled (`end_batch` included), and only for the
partitions the consumer still holds.

An owner that keeps records past their batch (a sink buffering rows until a file is due) says so with three
more hooks, all optional:

    committable=written_offsets,   # after end_batch: {(topic, partition): next offset} it may commit now,
                                   # given what the batch handled (default: all of it)
    on_rewind=drop_buffers,        # after a failed batch was sought back: drop what it held
    finish=write_everything,       # on stop, before the consumer closes; then `committable` is committed once more

The loop remembers, per partition it holds, the first record it handled and has not committed; a failed
batch seeks each partition back to that record or to the batch's first record there, whichever is earlier
(so a record held in an earlier batch is read again), and forgets them (`on_rewind`). A revoked partition is
forgotten too (the owner's `on_revoke` drops its part). Without `committable`, everything handled is
committed at the end of its batch, so a failed batch goes back to its own first records.

**Batch mode** (the monitor): `handle_batch=` instead of `handle=` takes a whole poll batch at once, as a list of
`Delivered` in the order polled (what could not be decoded is left out and dead-lettered with the decoder's
reason), and returns the records to dead-letter with their `Rejected` (reason and detail); the loop sends those
after the batch, then `end_batch` and the commit as above. Records written as Michi writes them (`content-type`
and `schema` first, as `michi.bus.headers.build_headers` puts them) are decoded without reading their headers
into a dict (`Delivered.headers` reads them when asked). Tracing: the loop opens a span only for records whose
`traceparent` says their trace is sampled (`michi.bus.headers.sampled_traceparent`): one CONSUMER span
`<topic> process` per sampled trace and topic in the batch (`michi.bus.tracing.consumer_batch_span`), a child of
the first such record's producer, linked to the others', open while the batch is handled, status ERROR when one
of its records was dead-lettered; an untraced or unsampled record costs a look at its headers and no span. Spans
and messages the handler makes are not children of any record's span (it handles many traces at once). An
exception in `retryable` retries the whole batch (`handle_batch` must raise it before it changed anything);
any other exception fails the batch (`failure_reason` does not apply).

Failures:
- an exception in `retryable` (an outage: Redis, the database) is retried on the same record until it
  succeeds or the loop stops, with the partitions paused and polled at least every `KEEP_ALIVE_POLL_S`,
  so an outage longer than `max.poll.interval.ms` never drops the consumer from its group; records a poll
  hands over meanwhile are sought back to before the partitions resume;
- any other exception of `handle` dead-letters the record with `failure_reason` when one is given;
  without one (and for `end_batch`, `committable` or a commit) the batch fails: each of its partitions is
  sought back as above (exit 75 if the seek fails, `michi.bus.consumers.seek_back`) and read again
  after `RETRY_PAUSE_S`;
- a dead letter the broker refuses is sent again, always with its own reason, until it is acknowledged;
- `finish` (or its commit) failing is raised from `run`, after the consumer closed: nothing it held is
  committed, Kafka redelivers it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import trace

from michi.bus.catalog import TopicSpec
from michi.bus.codec import UndecodableMessage, decode_message
from michi.bus.consumers import consume_batch, first_offsets, seek_back
from michi.bus.headers import (
    CONTENT_TYPE,
    extract_context,
    read_headers,
    sampled_traceparent,
    traceparent_trace_id,
)
from michi.bus.producer import EventProducer
from michi.bus.tracing import consumer_batch_span, consumer_span

logger = logging.getLogger(__name__)

DEAD_LETTER_TIMEOUT_S = 30.0
RETRY_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
# Pause before a failed batch is read again.
RETRY_PAUSE_S = 2.0
# While retrying, the consumer polls (its partitions paused) at least this often: far below
# max.poll.interval.ms (300 s), so no outage, however long, drops it from its group.
KEEP_ALIVE_POLL_S = 0.5
# How long without a poll makes a consumer not ready.
MAX_SILENCE_S = 30.0

Partition = tuple[str, int]
# (topic, partition) -> an offset: the next record to read, commit or seek to.
Offsets = Mapping[Partition, int]


class Rejected(Exception):
    """Raised by a handler: this record goes to the dead letters with `reason` (its batch goes on)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Delivered:
    """One decoded record: the confluent-kafka record's accessors, its `message`, `headers` and trace `context`.

    `handle` runs inside the record's CONSUMER span: spans it opens, and messages it publishes, are its children.
    `headers` None: read from the record when first asked (batch mode decodes without them).
    """

    __slots__ = ("_headers", "message", "raw")

    def __init__(self, raw: Any, message: Message, headers: dict[str, str] | None) -> None:
        self.raw = raw
        self.message = message
        self._headers = headers

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = read_headers(self.raw.headers())
        return self._headers

    def topic(self) -> str:
        return str(self.raw.topic() or "")

    def partition(self) -> int:
        return int(self.raw.partition() or 0)

    def offset(self) -> int:
        return int(self.raw.offset() or 0)

    def key(self) -> bytes | None:
        key: bytes | None = self.raw.key()
        return key

    def value(self) -> bytes | None:
        value: bytes | None = self.raw.value()
        return value

    @property
    def context(self) -> otel_context.Context:
        return extract_context(self.headers)


class Stopped(Exception):
    """The loop stopped while a record was being retried (nothing after it is handled)."""


RebalanceHook = Callable[[Any, list[TopicPartition]], None]
# What `handle_batch` returns: the records to dead-letter, each with why.
Rejections = Iterable[tuple[Delivered, Rejected]]


class ConsumerLoop:
    """Poll, decode, dead-letter, handle, commit: see the module's docstring."""

    def __init__(
        self,
        *,
        consumer: Consumer,
        producer: EventProducer,
        service: str,
        topics: Mapping[str, TopicSpec],
        handle: Callable[[Delivered], None] | None = None,
        handle_batch: Callable[[list[Delivered]], Rejections] | None = None,
        start_batch: Callable[[], None] | None = None,
        end_batch: Callable[[], None] | None = None,
        on_dead_letter: Callable[[Any, str], None] | None = None,
        committable: Callable[[Offsets], Offsets] | None = None,
        on_rewind: Callable[[], None] | None = None,
        finish: Callable[[], None] | None = None,
        retryable: tuple[type[BaseException], ...] = (),
        failure_reason: str | None = None,
        batch_size: int = 500,
        on_assign: RebalanceHook | None = None,
        on_revoke: RebalanceHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.service = service
        self.topics = dict(topics)
        if (handle is None) == (handle_batch is None):
            raise ValueError("a consumer loop needs one of handle and handle_batch")
        self.handle = handle
        self.handle_batch = handle_batch
        # Batch mode: per topic, the first two headers as Michi writes them (then no dict of headers is built).
        self._written_headers = {
            topic: [("content-type", CONTENT_TYPE.encode()), ("schema", spec.schema.encode())]
            for topic, spec in self.topics.items()
        }
        # Batch mode: per topic, the message type records are decoded into.
        self._value_types = {topic: spec.value_type for topic, spec in self.topics.items()}
        self.start_batch = start_batch
        self.end_batch = end_batch
        self.on_dead_letter = on_dead_letter
        self.committable = committable
        self.on_rewind = on_rewind
        self.finish = finish
        self.retryable = retryable
        self.failure_reason = failure_reason
        self.batch_size = batch_size
        self.clock = clock
        self._on_assign_hook = on_assign
        self._on_revoke_hook = on_revoke
        self.assigned: set[Partition] = set()
        self.last_poll_at: float | None = None
        # Per partition: the first record handled and not committed (where a failed batch goes back to, when
        # the owner held it past its batch), and the offset after the last record handled.
        self.uncommitted_from: dict[Partition, int] = {}
        self._handled_to: dict[Partition, int] = {}
        # Records a poll handed over while the partitions were paused for a retry: the first offset of each
        # partition, sought back to before the partitions resume.
        self._held: dict[Partition, int] = {}
        self._paused = False
        self._stop = threading.Event()
        self.consumer.subscribe(list(self.topics), on_assign=self._assigned, on_revoke=self._revoked)

    # --- rebalances

    def _assigned(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.assigned.update((item.topic, item.partition) for item in partitions)
        if self._on_assign_hook is not None:
            self._on_assign_hook(consumer, partitions)

    def _revoked(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        for item in partitions:
            # Its new owner reads it from the committed offset: nothing of it is this consumer's to commit.
            self.assigned.discard((item.topic, item.partition))
            self.uncommitted_from.pop((item.topic, item.partition), None)
            self._handled_to.pop((item.topic, item.partition), None)
        if self._on_revoke_hook is not None:
            self._on_revoke_hook(consumer, partitions)

    # --- the loop

    def run(self, stop: threading.Event, poll_timeout: float = 0.5) -> None:
        """Poll until `stop` is set, then `finish` and commit what it allows, and close the consumer.

        Nothing unhandled is committed; without `finish`, nothing is committed after the last batch.
        """
        self._stop = stop
        try:
            while not stop.is_set():
                try:
                    self.poll_once(poll_timeout)
                except Exception:
                    # poll_once sought the batch back: it is read again after a pause, nothing past it committed.
                    logger.exception("consumer batch failed; reading it again", extra={"service": self.service})
                    stop.wait(RETRY_PAUSE_S)
            if self.finish is not None:
                self.finish()
                self._commit(self._committable({}))
        finally:
            self.consumer.close()

    def poll_once(self, timeout: float = 0.5) -> int:
        """Handle one batch and commit it; on failure seek it back (then raise). Returns the records handled.

        Waits up to `timeout` for a first record, then hands over what came (`consume_batch`), up to `batch_size`.
        """
        records = consume_batch(self.consumer, self.batch_size, timeout)
        self.last_poll_at = self.clock()
        try:
            return self._handle_and_commit(records)
        except Exception:
            self._rewind(records)
            raise

    def _handle_and_commit(self, records: list[Any]) -> int:
        if self.handle_batch is not None:
            return self._handle_batch_and_commit(records)
        done: dict[Partition, int] = {}
        settled = 0
        if self.start_batch is not None:
            self.start_batch()
        for raw in records:
            if raw.error() is not None:
                logger.warning("consumer error", extra={"error": str(raw.error())})
                continue
            if not self._settle(raw):
                break
            settled += 1
            partition = (raw.topic(), raw.partition())
            done[partition] = raw.offset() + 1
            if partition in self.assigned:  # one revoked meanwhile is its new owner's to read again
                self.uncommitted_from.setdefault(partition, raw.offset())
                self._handled_to[partition] = raw.offset() + 1
        if self.end_batch is not None:
            self.end_batch()
        self._commit(self._committable(done))
        return settled

    def _handle_batch_and_commit(self, records: list[Any]) -> int:
        """Batch mode (the module's docstring): decode, hand over at once, dead-letter, commit."""
        if self.start_batch is not None:
            self.start_batch()
        valid: list[Any] = []
        delivered: list[Delivered] = []
        letters: dict[int, tuple[str, str]] = {}
        # Per (topic, sampled trace): its records (raw, traceparent) in the batch.
        traced: dict[tuple[str, str], list[tuple[Any, str]]] = {}
        written = self._written_headers
        types = self._value_types
        for raw in records:
            if raw.error() is not None:
                logger.warning("consumer error", extra={"error": str(raw.error())})
                continue
            topic = raw.topic()
            listed = raw.headers()
            if listed is not None and listed[:2] == written[topic]:
                # Written as Michi writes: nothing in the first two headers to check, and a traceparent, if any,
                # comes after them. Decoded as `decode_message` decodes, which says why when this cannot.
                message = types[topic]()
                try:
                    message.ParseFromString(raw.value() or b"")
                    decoded = bool(getattr(message, "event_id", ""))
                except Exception:  # whatever the reason, `decode_message` below gives it
                    decoded = False
                try:
                    if not decoded:
                        message = decode_message(self.topics[topic], raw.value(), {})
                    delivered.append(Delivered(raw, message, None))
                except UndecodableMessage as error:
                    letters[id(raw)] = (error.reason, error.detail)
                traceparent = sampled_traceparent(listed[2:]) if len(listed) > 2 else None
            else:
                try:
                    headers = read_headers(listed)
                    delivered.append(Delivered(raw, decode_message(self.topics[topic], raw.value(), headers), headers))
                except UndecodableMessage as error:
                    letters[id(raw)] = (error.reason, error.detail)
                traceparent = sampled_traceparent(listed)
            valid.append(raw)
            if traceparent is not None:
                traced.setdefault((topic, traceparent_trace_id(traceparent)), []).append((raw, traceparent))
        spans = self._batch_spans(traced)
        failed = True
        try:
            if delivered:
                rejections = self._handle_batch_with_retry(delivered)
                if rejections is None:
                    failed = False
                    return self._commit_settled(0, {})
                for record, rejected in rejections:
                    letters[id(record.raw)] = (rejected.reason, rejected.detail)
            settled = len(valid)
            for position, raw in enumerate(valid if letters else ()):
                letter = letters.get(id(raw))
                if letter is None:
                    continue
                span = spans.get((raw.topic(), traceparent_trace_id(sampled_traceparent(raw.headers()) or "")))
                if span is not None:
                    span.set_status(trace.Status(trace.StatusCode.ERROR, f"dead letter: {letter[0]}"))
                try:
                    self._dead_letter_with_retry(raw, *letter)
                except Stopped:
                    settled = position  # the records before it are settled
                    break
                finally:
                    self._resume(seek=not self._stop.is_set())
            # A partition's records come in offset order: its first and last settled record.
            last: dict[Partition, int] = {}
            first: dict[Partition, int] = {}
            for raw in valid[:settled] if settled < len(valid) else valid:
                partition, offset = (raw.topic(), raw.partition()), raw.offset()
                if partition not in first:
                    first[partition] = offset
                last[partition] = offset
            for partition, offset in first.items():
                if partition in self.assigned:
                    self.uncommitted_from.setdefault(partition, offset)
                    self._handled_to[partition] = last[partition] + 1
            failed = False
            return self._commit_settled(settled, {partition: offset + 1 for partition, offset in last.items()})
        finally:
            for span in spans.values():
                if failed:
                    span.set_status(trace.Status(trace.StatusCode.ERROR, "batch failed"))
                span.end()

    def _commit_settled(self, settled: int, done: dict[Partition, int]) -> int:
        if self.end_batch is not None:
            self.end_batch()
        self._commit(self._committable(done))
        return settled

    def _batch_spans(self, traced: Mapping[tuple[str, str], list[tuple[Any, str]]]) -> dict[tuple[str, str], Any]:
        """One CONSUMER span per sampled trace and topic of the batch (the module's docstring)."""
        spans: dict[tuple[str, str], Any] = {}
        for (topic, trace_id), members in traced.items():
            first, traceparent = members[0]
            links = [
                trace.Link(trace.get_current_span(extract_context({"traceparent": other})).get_span_context())
                for _, other in members[1:]
            ]
            spans[(topic, trace_id)] = consumer_batch_span(
                self.service,
                topic=topic,
                partition=first.partition() or 0,
                offset=first.offset() or 0,
                context=extract_context({"traceparent": traceparent}),
                records=len(members),
                links=links,
            )
        return spans

    def _handle_batch_with_retry(self, delivered: list[Delivered]) -> list[tuple[Delivered, Rejected]] | None:
        """`handle_batch`, retrying outages on the whole batch; None when the loop stopped first."""
        assert self.handle_batch is not None
        attempt = 0
        while True:
            try:
                rejections = list(self.handle_batch(delivered))
            except self.retryable:
                if attempt == 0:
                    logger.warning(
                        "batch not handled; retrying",
                        extra={"service": self.service, "records": len(delivered)},
                        exc_info=True,
                    )
                try:
                    self.wait_in_group(RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)])
                except Stopped:
                    self._resume(seek=False)
                    return None
                attempt += 1
                continue
            self._resume(seek=not self._stop.is_set())
            return rejections

    def _committable(self, handled: Offsets) -> Offsets:
        return handled if self.committable is None else self.committable(handled)

    def _commit(self, offsets: Offsets) -> None:
        """Commit `offsets` of the partitions still held, and remember what is still not committed."""
        # A partition taken away meanwhile is no longer this consumer's to commit: its new owner reads it
        # from the committed offset (effects are idempotent).
        owned = {partition: offset for partition, offset in offsets.items() if partition in self.assigned}
        if not owned:
            return
        self.consumer.commit(
            offsets=[TopicPartition(topic, number, offset) for (topic, number), offset in sorted(owned.items())],
            asynchronous=False,
        )
        for partition, offset in owned.items():
            if offset >= self._handled_to.get(partition, offset):
                self.uncommitted_from.pop(partition, None)
                self._handled_to.pop(partition, None)
            elif partition in self.uncommitted_from:
                self.uncommitted_from[partition] = max(self.uncommitted_from[partition], offset)

    def _rewind(self, records: list[Any]) -> None:
        """Seek a failed batch back: each partition to its first record not committed, in this batch or before."""
        positions = first_offsets(records)
        for partition, offset in self.uncommitted_from.items():
            positions[partition] = min(positions.get(partition, offset), offset)
        seek_back(self.consumer, self.service, positions, "a failed batch")
        self.uncommitted_from.clear()
        self._handled_to.clear()
        if self.on_rewind is not None:
            self.on_rewind()

    def _settle(self, raw: Any) -> bool:
        """Handle or dead-letter one record in its span, through any outage; False when the loop stopped first."""
        headers = read_headers(raw.headers())
        try:
            with consumer_span(
                self.service,
                topic=raw.topic() or "",
                partition=raw.partition() or 0,
                offset=raw.offset() or 0,
                context=extract_context(headers),
            ) as span:
                letter = self._handle_with_retry(raw, headers)
                if letter is not None:
                    span.set_status(trace.Status(trace.StatusCode.ERROR, f"dead letter: {letter[0]}"))
                    self._dead_letter_with_retry(raw, *letter)
            return True
        except Stopped:
            return False
        finally:
            self._resume(seek=not self._stop.is_set())

    def decode(self, raw: Any, headers: dict[str, str] | None = None) -> Delivered:
        """The record decoded by its topic's catalog type (`UndecodableMessage` with the reason when it is not)."""
        if headers is None:
            headers = read_headers(raw.headers())
        return Delivered(raw, decode_message(self.topics[raw.topic()], raw.value(), headers), headers)

    def _handle_with_retry(self, raw: Any, headers: dict[str, str]) -> tuple[str, str] | None:
        """Decode and handle the record, retrying outages; the (reason, detail) of the dead letter it needs instead."""
        assert self.handle is not None
        attempt = 0
        while True:
            try:
                self.handle(self.decode(raw, headers))
                return None
            except UndecodableMessage as error:
                return error.reason, error.detail
            except Rejected as rejected:
                return rejected.reason, rejected.detail
            except self.retryable:
                if attempt == 0:
                    logger.warning(
                        "record not handled; retrying",
                        extra={"service": self.service, "partition": raw.partition(), "offset": raw.offset()},
                        exc_info=True,
                    )
                self.wait_in_group(RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)])
                attempt += 1
            except Exception as error:
                if self.failure_reason is None:
                    raise
                # Not an outage but this record: park it with the error, so it cannot stop the queue.
                logger.exception("record failed", extra={"partition": raw.partition(), "offset": raw.offset()})
                return self.failure_reason, f"{type(error).__name__}: {error}"

    def _dead_letter_with_retry(self, raw: Any, reason: str, detail: str) -> None:
        """Send the dead letter until the broker acknowledges it, always with its own reason (`Stopped` on stop)."""
        attempt = 0
        while True:
            try:
                self.dead_letter(raw, reason, detail)
                return
            except Exception:
                if attempt == 0:
                    logger.warning(
                        "dead letter not acknowledged; sending it again",
                        extra={"partition": raw.partition(), "offset": raw.offset(), "reason": reason},
                        exc_info=True,
                    )
                self.wait_in_group(RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)])
                attempt += 1

    def dead_letter(self, raw: Any, reason: str, detail: str) -> None:
        """Park one record (awaited: raises when the broker refuses it) and count it."""
        self.producer.dead_letter_record(
            service=self.service, record=raw, headers=read_headers(raw.headers()), reason=reason, error=detail
        ).result(DEAD_LETTER_TIMEOUT_S)
        if self.on_dead_letter is not None:
            self.on_dead_letter(raw, reason)

    def wait_in_group(self, seconds: float) -> None:
        """Wait `seconds` between two attempts, polling with the partitions paused; `Stopped` when stopping.

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
            if self._stop.is_set():
                raise Stopped
            if time.monotonic() >= deadline:
                return

    def _resume(self, *, seek: bool) -> None:
        """After a retry: records held back are read again (`seek`; not when stopping), the partitions resume."""
        if not self._paused:
            return
        held = {key: offset for key, offset in self._held.items() if key in self.assigned}
        self._held.clear()
        if seek:
            seek_back(self.consumer, self.service, held, "records held during a retry")
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.resume(assignment)
        self._paused = False

    # --- readiness

    def polling(self, max_silence_s: float = MAX_SILENCE_S) -> bool:
        """Whether the loop polled in the last `max_silence_s`."""
        return self.last_poll_at is not None and self.clock() - self.last_poll_at < max_silence_s

    def ready(self, max_silence_s: float = MAX_SILENCE_S) -> bool:
        """Polling recently and holding at least one partition (progress is `ConsumerProgress`'s, in `/readyz`)."""
        return self.polling(max_silence_s) and bool(self.assigned)


class LoopConsumer:
    """A service's consumer on one `ConsumerLoop`: what `michi.kit.running.ConsumerService` asks of it, once.

    The service builds its loop in `__init__` as `self.loop` and may set `self.closing` (what it holds beside
    the consumer: a store's connections, released by `close` after `run`). It gets `run`, `poll_once`, `close`,
    `readiness` (polling recently and holding a partition), `ready` and `last_poll_at`, and overrides one to do
    more around the loop (the monitor's `run` freezes the collector first; the trainer's `readiness` judges
    the group's progress too).
    """

    loop: ConsumerLoop
    closing: Callable[[], None] | None = None

    @property
    def last_poll_at(self) -> float | None:
        return self.loop.last_poll_at

    def run(self, stop: threading.Event, poll_timeout: float = 0.5) -> None:
        """Poll until `stop` is set, then close the consumer (nothing unhandled is committed)."""
        self.loop.run(stop, poll_timeout)

    def poll_once(self, timeout: float = 0.5) -> int:
        """Handle one batch and commit what may be; returns the records handled (on failure: sought back, raised)."""
        return self.loop.poll_once(timeout)

    def close(self) -> None:
        """Release what the service holds beside the consumer (`closing`), after `run`."""
        if self.closing is not None:
            self.closing()

    def readiness(self, max_silence_s: float = MAX_SILENCE_S) -> str | None:
        """None while polling recently and holding at least one partition, else why not (progress is
        `ConsumerProgress`'s, in `/readyz`)."""
        return None if self.loop.ready(max_silence_s) else "not polling, or holding no partition"

    def ready(self, max_silence_s: float = MAX_SILENCE_S) -> bool:
        return self.readiness(max_silence_s) is None


__all__ = [
    "ConsumerLoop",
    "Delivered",
    "LoopConsumer",
    "Offsets",
    "Partition",
    "Rejected",
    "Rejections",
    "Stopped",
]
