"""`michi.kit.consumer.ConsumerLoop` on a scripted consumer: what it commits, where a failed batch goes back to,
what it does on stop, and the consumer span it opens around each record.

Without the owner's hooks every record handled is committed at the end of its batch (the trainer and
annotation); with `committable` an owner holds records past their batch (the warehouse sink), and a failed
batch then goes back to the first record not committed, in whichever batch it was.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

from confluent_kafka import TopicPartition
from opentelemetry import trace

from michi.bus.catalog import LABELS
from michi.bus.consumers import consume_batch
from michi.bus.headers import build_headers
from michi.contracts.v1 import labels_pb2
from michi.kit.consumer import ConsumerLoop, Delivered, Offsets, Rejected
from tests.fakes import ScriptedPolls

from ..tracing_support import recorded_spans

TOPIC = "labels"


class Record:
    """A confluent-kafka record as the loop reads it."""

    def __init__(self, partition: int, offset: int, value: bytes, headers: list[tuple[str, bytes]] | None = None):
        self._coordinates = (partition, offset)
        self._value = value
        self._headers = build_headers(LABELS.schema) if headers is None else headers

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._coordinates[0]

    def offset(self) -> int:
        return self._coordinates[1]

    def key(self) -> bytes:
        return b"key"

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers


def label(partition: int, offset: int, event_id: str | None = None) -> Record:
    message = labels_pb2.Label(event_id=event_id or f"label-{partition}-{offset}")
    return Record(partition, offset, message.SerializeToString())


class ScriptedConsumer(ScriptedPolls):
    """Hands over its batches in order and writes down commits, seeks and the close; holds partitions 0 and 1."""

    def __init__(self, journal: list[Any], batches: list[list[Record]]) -> None:
        self.journal = journal
        super().__init__(batches)
        self.callbacks: dict[str, Any] = {}

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.callbacks = callbacks
        callbacks["on_assign"](self, [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])

    def revoke(self, partition: int) -> None:
        self.callbacks["on_revoke"](self, [TopicPartition(TOPIC, partition)])

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.journal.append(("commit", [(item.partition, item.offset) for item in offsets]))

    def seek(self, partition: TopicPartition) -> None:
        self.journal.append(("seek", partition.partition, partition.offset))

    def close(self) -> None:
        self.journal.append(("close",))


class AcknowledgingProducer:
    def __init__(self, journal: list[Any]) -> None:
        self.journal = journal

    def dead_letter_record(self, **fields: Any) -> concurrent.futures.Future[None]:
        self.journal.append(("dead letter", fields["record"].offset(), fields["reason"]))
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        future.set_result(None)
        return future


class Holder:
    """An owner that keeps what it handles until told to let go: `release` makes offsets committable."""

    def __init__(self, journal: list[Any], fail_on: str | None = None) -> None:
        self.journal = journal
        self.fail_on = fail_on
        self.held: list[str] = []
        self.release: dict[tuple[str, int], int] = {}

    def handle(self, record: Delivered) -> None:
        event_id = record.message.event_id  # type: ignore[attr-defined]
        if event_id == self.fail_on:
            raise OSError("blob store unavailable")
        if event_id == "invalid":
            raise Rejected("schema-violation", "a label without a window")
        self.held.append(event_id)

    def committable(self, handled: Offsets) -> Offsets:
        released, self.release = self.release, {}
        return released

    def on_rewind(self) -> None:
        self.journal.append(("rewound", list(self.held)))
        self.held.clear()

    def finish(self) -> None:
        self.journal.append(("finish", list(self.held)))
        self.release = {(TOPIC, 0): 99}


def loop_for(journal: list[Any], batches: list[list[Record]], holder: Holder | None = None) -> ConsumerLoop:
    """A loop over `batches`; with a `holder`, its handler and the three owner's hooks."""
    hooks: dict[str, Any] = {}
    if holder is not None:
        hooks = {"committable": holder.committable, "on_rewind": holder.on_rewind, "finish": holder.finish}
    return ConsumerLoop(
        consumer=ScriptedConsumer(journal, batches),  # type: ignore[arg-type]
        producer=AcknowledgingProducer(journal),  # type: ignore[arg-type]
        service="test",
        topics={TOPIC: LABELS},
        handle=holder.handle if holder is not None else (lambda record: None),
        **hooks,
    )


def test_the_scripted_consumer_hands_one_batch_to_each_consume_batch_call_whatever_its_timeout() -> None:
    """`consume_batch`'s lingering poll, not a timeout, ends a call's share: a call that waits no longer than the
    linger still gets the next batch, and a batch longer than a call asks for is handed over across calls."""

    def offsets(count: int, timeout: float, batches: list[list[int]]) -> list[list[int]]:
        consumer = ScriptedConsumer([], [[label(0, offset) for offset in batch] for batch in batches])
        return [[record.offset() for record in consume_batch(consumer, count, timeout)] for _ in range(len(batches))]

    assert offsets(500, 0.0, [[0, 1], [2], [], [3]]) == [[0, 1], [2], [], [3]]
    assert offsets(2, 0.5, [[0], [1, 2, 3], [4]]) == [[0], [1, 2], [3]]
    assert offsets(1, 0.0, [[0, 1], [2]]) == [[0], [1]]


def test_without_hooks_each_batch_commits_everything_it_handled_and_a_failed_one_goes_back_to_its_start() -> None:
    journal: list[Any] = []
    failing = Holder(journal, fail_on="label-0-3")
    batches = [[label(0, 0), label(1, 5), label(0, 1)], [label(0, 2), label(0, 3)]]
    loop = ConsumerLoop(
        consumer=ScriptedConsumer(journal, batches),  # type: ignore[arg-type]
        producer=AcknowledgingProducer(journal),  # type: ignore[arg-type]
        service="test",
        topics={TOPIC: LABELS},
        handle=failing.handle,
    )

    assert loop.poll_once() == 3
    try:
        loop.poll_once()
        raise AssertionError("the second batch did not fail")
    except OSError:
        pass

    assert journal == [("commit", [(0, 2), (1, 6)]), ("seek", 0, 2)]


def test_an_owner_commits_what_it_releases_and_a_failed_batch_goes_back_to_the_first_record_it_held() -> None:
    journal: list[Any] = []
    holder = Holder(journal, fail_on="label-0-4")
    batches = [[label(0, 0), label(0, 1)], [label(0, 2), label(1, 7)], [label(0, 3), label(0, 4)]]
    loop = loop_for(journal, batches, holder)

    loop.poll_once()  # held: nothing committed
    holder.release = {(TOPIC, 0): 1}  # record 0 is safe, 1 and 2 are still held
    loop.poll_once()
    try:
        loop.poll_once()
        raise AssertionError("the third batch did not fail")
    except OSError:
        pass

    assert journal == [
        ("commit", [(0, 1)]),
        # Partition 0 goes back to record 1 of the first batch, partition 1 to record 7 of the second.
        ("seek", 0, 1),
        ("seek", 1, 7),
        ("rewound", ["label-0-0", "label-0-1", "label-0-2", "label-1-7", "label-0-3"]),
    ]
    assert loop.uncommitted_from == {}


def test_a_revoked_partition_is_forgotten_and_its_offsets_are_never_committed() -> None:
    journal: list[Any] = []
    holder = Holder(journal, fail_on="label-0-1")
    loop = loop_for(journal, [[label(1, 3)], [label(0, 0)], [label(0, 1)]], holder)

    loop.poll_once()
    loop.consumer.revoke(1)  # type: ignore[attr-defined]
    holder.release = {(TOPIC, 1): 4}  # its new owner's to commit now, not this consumer's
    loop.poll_once()
    try:
        loop.poll_once()
        raise AssertionError("the third batch did not fail")
    except OSError:
        pass

    assert journal == [("seek", 0, 0), ("rewound", ["label-1-3", "label-0-0"])]


def test_on_stop_the_owner_finishes_before_the_consumer_closes_and_what_it_releases_is_committed() -> None:
    journal: list[Any] = []
    holder = Holder(journal)
    loop = loop_for(journal, [[label(0, 0), label(0, 1, "invalid"), label(0, 2)]], holder)
    loop.poll_once()
    stop = threading.Event()
    stop.set()

    loop.run(stop)

    assert journal == [
        ("dead letter", 1, "schema-violation"),
        ("finish", ["label-0-0", "label-0-2"]),
        ("commit", [(0, 99)]),
        ("close",),
    ]


def test_without_finish_nothing_is_committed_on_stop() -> None:
    journal: list[Any] = []
    loop = loop_for(journal, [])
    stop = threading.Event()
    stop.set()

    loop.run(stop)

    assert journal == [("close",)]


# --- spans


def upload_headers(schema: str) -> tuple[list[tuple[str, bytes]], trace.SpanContext]:
    """Headers written inside an upload's span (as ingest and inference write them), and that span."""
    with trace.get_tracer("test").start_as_current_span("POST /v1/uploads") as upload:
        return build_headers(schema), upload.get_span_context()


def test_each_record_is_handled_in_a_consumer_span_that_continues_its_trace() -> None:
    journal: list[Any] = []
    seen: list[trace.SpanContext] = []
    with recorded_spans() as spans:
        headers, upload = upload_headers(LABELS.schema)
        valid = labels_pb2.Label(event_id="label-0-4").SerializeToString()
        invalid = labels_pb2.Label(event_id="invalid").SerializeToString()
        holder = Holder(journal)

        def handle(record: Delivered) -> None:
            seen.append(trace.get_current_span().get_span_context())
            holder.handle(record)

        batch = [Record(0, 4, valid, headers), Record(1, 9, invalid, headers)]
        loop = ConsumerLoop(
            consumer=ScriptedConsumer(journal, [batch]),  # type: ignore[arg-type]
            producer=AcknowledgingProducer(journal),  # type: ignore[arg-type]
            service="test",
            topics={TOPIC: LABELS},
            handle=handle,
        )
        loop.poll_once()

    handled, rejected = [span for span in spans if span.kind == trace.SpanKind.CONSUMER]
    assert handled.name == rejected.name == f"{TOPIC} process"
    assert handled.context is not None and seen[0] == handled.context  # the handler runs inside it
    assert handled.context.trace_id == rejected.context.trace_id == upload.trace_id  # type: ignore[union-attr]
    assert handled.parent is not None and handled.parent.span_id == upload.span_id
    assert dict(handled.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.destination.name": TOPIC,
        "messaging.operation.type": "process",
        "messaging.kafka.destination.partition": 0,
        "messaging.kafka.message.offset": 4,
        "messaging.consumer.group.name": "michi-test",
    }
    assert handled.status.status_code == trace.StatusCode.UNSET
    assert (rejected.status.status_code, rejected.status.description) == (
        trace.StatusCode.ERROR,
        "dead letter: schema-violation",
    )


# --- batch mode (the monitor)


class PausingConsumer(ScriptedConsumer):
    """A scripted consumer that can be paused while a batch is retried (nothing arrives meanwhile)."""

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.journal.append(("pause",))

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.journal.append(("resume",))

    def consume(self, count: int, timeout: float) -> list[Record]:
        paused = self.journal and self.journal[-1] == ("pause",)
        return [] if paused else super().consume(count, timeout)


def batch_loop(journal: list[Any], batches: list[list[Record]], handle_batch: Any, **hooks: Any) -> ConsumerLoop:
    return ConsumerLoop(
        consumer=PausingConsumer(journal, batches),  # type: ignore[arg-type]
        producer=AcknowledgingProducer(journal),  # type: ignore[arg-type]
        service="test",
        topics={TOPIC: LABELS},
        handle_batch=handle_batch,
        **hooks,
    )


def test_a_batch_handler_gets_the_poll_batch_at_once_and_its_rejections_are_dead_lettered_in_order() -> None:
    journal: list[Any] = []
    handed: list[list[str]] = []

    def handle_batch(records: list[Delivered]) -> list[tuple[Delivered, Rejected]]:
        event_ids = [record.message.event_id for record in records]  # type: ignore[attr-defined]
        handed.append(event_ids)
        rejection = Rejected("schema-violation", "a label without a window")
        return [
            (record, rejection) for record, event_id in zip(records, event_ids, strict=True) if event_id == "invalid"
        ]

    other_schema = Record(0, 2, labels_pb2.Label(event_id="x").SerializeToString(), build_headers("michi.v1.Other"))
    batch = [label(0, 0), label(0, 1, "invalid"), other_schema, Record(1, 4, b""), label(1, 5)]
    loop = batch_loop(journal, [batch], handle_batch)

    assert loop.poll_once() == 5
    assert handed == [["label-0-0", "invalid", "label-1-5"]]
    assert journal == [
        ("dead letter", 1, "schema-violation"),
        ("dead letter", 2, "schema-mismatch"),
        ("dead letter", 4, "empty-value"),
        ("commit", [(0, 3), (1, 6)]),
    ]


def test_a_batch_handler_reads_headers_only_when_asked_and_gets_them_as_the_record_has_them() -> None:
    journal: list[Any] = []
    seen: list[dict[str, str]] = []
    headers, _ = upload_headers(LABELS.schema)

    def handle_batch(records: list[Delivered]) -> list[tuple[Delivered, Rejected]]:
        seen.extend(record.headers for record in records)
        return []

    loop = batch_loop(
        journal, [[Record(0, 0, labels_pb2.Label(event_id="a").SerializeToString(), headers)]], handle_batch
    )
    loop.poll_once()
    assert seen[0]["schema"] == LABELS.schema and seen[0]["content-type"] == "application/x-protobuf"


def test_an_outage_retries_the_whole_batch_and_commits_it_once() -> None:
    journal: list[Any] = []
    handed: list[int] = []

    def handle_batch(records: list[Delivered]) -> list[tuple[Delivered, Rejected]]:
        handed.append(len(records))
        if len(handed) == 1:
            raise OSError("blob store unavailable")
        return []

    loop = batch_loop(journal, [[label(0, 0), label(0, 1)]], handle_batch, retryable=(OSError,))
    assert loop.poll_once() == 2
    assert handed == [2, 2]
    assert journal[-1] == ("commit", [(0, 2)]) and journal.count(("resume",)) == 1


def test_in_batch_mode_only_sampled_traces_get_a_consumer_span_one_per_trace() -> None:
    from ..tracing_support import traceparent_of

    journal: list[Any] = []
    with recorded_spans() as spans:
        headers, upload = upload_headers(LABELS.schema)
        unsampled = trace.SpanContext(upload.trace_id + 1, 7, is_remote=False, trace_flags=trace.TraceFlags(0))
        unsampled_headers = [*build_headers(LABELS.schema)[:2], ("traceparent", traceparent_of(unsampled).encode())]

        def payload(event_id: str) -> bytes:
            return labels_pb2.Label(event_id=event_id).SerializeToString()

        batch = [
            Record(0, 4, payload("a"), headers),
            Record(0, 5, payload("invalid"), headers),
            Record(1, 9, payload("b"), unsampled_headers),
            Record(1, 10, payload("c"), build_headers(LABELS.schema)),  # no trace at all
        ]

        def handle_batch(records: list[Delivered]) -> list[tuple[Delivered, Rejected]]:
            assert not trace.get_current_span().get_span_context().is_valid  # no record's span is current
            return [(records[1], Rejected("schema-violation", "a label without a window"))]

        batch_loop(journal, [batch], handle_batch).poll_once()

    (span,) = [span for span in spans if span.kind == trace.SpanKind.CONSUMER]
    assert span.name == f"{TOPIC} process"
    assert span.context is not None and span.context.trace_id == upload.trace_id
    assert span.parent is not None and span.parent.span_id == upload.span_id
    assert [link.context.span_id for link in span.links] == [upload.span_id]
    assert (span.attributes or {})["messaging.batch.message_count"] == 2
    assert (span.attributes or {})["messaging.kafka.message.offset"] == 4
    assert (span.status.status_code, span.status.description) == (
        trace.StatusCode.ERROR,
        "dead letter: schema-violation",
    )


def test_a_loop_needs_exactly_one_of_handle_and_handle_batch() -> None:
    import pytest

    with pytest.raises(ValueError):
        ConsumerLoop(
            consumer=ScriptedConsumer([], []),  # type: ignore[arg-type]
            producer=AcknowledgingProducer([]),  # type: ignore[arg-type]
            service="test",
            topics={TOPIC: LABELS},
            handle=lambda record: None,
            handle_batch=lambda records: [],
        )
