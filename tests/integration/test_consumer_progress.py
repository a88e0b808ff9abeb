"""The plain consumers on a real Kafka never commit past a batch that failed, and say when they stall.

Each of the trainer, annotation and the warehouse sink runs its own consumer loop (group
`<prefix><service>`, manual commits). Here one batch fails once (a store, dead letters or a file
write refuse) and then succeeds: every record must be handled in the end, and at every moment the
group's committed offsets must stand at or before the first record not handled yet. Before the fix,
the trainer's next commit passed the failed batch (lost labels), and annotation's and the sink's
loops died with their thread. The trainer's readiness with a progress check is also judged on the
broker: not ready while records wait without progress, ready again once they are stored (its 30 s
default is shortened to 3 s here; tests/unit/test_consumer_progress.py holds the defaults, and
test_consumer_progress_readiness.py the services' `/readyz` at their real timings).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from michi.blobs import BlobStore
from michi.bus.catalog import ALERTS, DEAD_LETTERS, LABEL_REQUESTS, LABELS, PREDICTIONS
from michi.bus.consumers import group_consumer_config
from michi.bus.headers import build_headers
from michi.bus.producer import ConsumedRecord, Delivery, EventProducer, PublishError
from michi.bus.reader import TopicReader, end_offsets
from michi.contracts import stable_event_id, timestamp_from_datetime, timestamp_from_seconds, timestamp_now
from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2
from michi.infra.processes import wait_until
from michi.readiness import ConsumerProgress
from michi.warehouse import Row, query, table_counts
from services.annotation.adapters.publisher import KafkaLabelPublisher
from services.annotation.entrypoints.consumer import LabelRequestConsumer
from services.trainer.adapters.metrics import TrainerMetrics
from services.trainer.adapters.store import TrainerStore
from services.trainer.domain.labels import WindowLabel
from services.trainer.entrypoints.consumer import EventConsumer
from services.trainer.handlers import EventHandler
from services.warehouse.adapters.parquet import BlobParquetWriter
from services.warehouse.settings import WarehouseSettings
from services.warehouse.wiring import build_sink

from .annotation_support import make_request, settings_for, wire

# (partition, offset) -> what the record was (an event id, or a label for a record without one).
Published = dict[tuple[int, int], str]


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of `topic` (0 where none)."""
    partitions = [TopicPartition(topic, partition) for partition in end_offsets(bootstrap, topic)]
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return {item.partition: max(item.offset, 0) for item in reader.committed(partitions, timeout=10)}
    finally:
        reader.close()


def committed_to_end(bootstrap: str, group: str, topic: str) -> bool:
    try:
        return committed_offsets(bootstrap, group, topic) == end_offsets(bootstrap, topic)
    except KafkaException:  # the group coordinator is still loading
        return False


class CommitAudit:
    """Checks, whenever asked, that the group committed nothing past a record not handled yet."""

    def __init__(self, bootstrap: str, group: str, topic: str, published: Published) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.topic = topic
        self.published = published
        self.handled: set[str] = set()
        self.checks = 0
        self.violations: list[str] = []
        self._lock = threading.Lock()

    def check(self) -> None:
        """Called by the consumer's thread before it handles more: what it finds is recorded, not raised."""
        try:
            committed = committed_offsets(self.bootstrap, self.group, self.topic)
        except KafkaException:  # the group coordinator is still loading: nothing to judge yet
            return
        with self._lock:
            self.checks += 1
            for (partition, offset), what in sorted(self.published.items()):
                if offset < committed.get(partition, 0) and what not in self.handled:
                    self.violations.append(f"{what} at {partition}:{offset} committed (to {committed}) unhandled")

    def record(self, handled: Sequence[str]) -> None:
        with self._lock:
            self.handled.update(handled)


def run_in_thread(run: Callable[[threading.Event], None]) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(stop,), daemon=True)
    thread.start()
    return thread, stop


def stop_thread(thread: threading.Thread, stop: threading.Event) -> None:
    stop.set()
    thread.join(30)
    assert not thread.is_alive()


# --- the trainer


class LabelStoreFailingOnce(TrainerStore):
    """Refuses the first batch of labels as a locked database would; audits commits before every batch."""

    def __init__(self, database_url: str, audit: CommitAudit, *, refusals: int = 1) -> None:
        super().__init__(create_engine(database_url))
        self.create_tables()
        self.audit = audit
        self.refusals = refusals
        self.refused: list[str] = []
        self.release = threading.Event()

    def add_labels(self, labels: Sequence[WindowLabel]) -> int:
        self.audit.check()
        if self.refusals and not self.release.is_set():
            self.refusals -= 1
            self.refused = [label.event_id for label in labels]
            raise OperationalError("INSERT INTO trainer_label", {}, Exception("database is locked"))
        stored = super().add_labels(labels)
        self.audit.record([label.event_id for label in labels])
        return stored


def window_label(index: int) -> labels_pb2.Label:
    window = f"window-{uuid.uuid4().hex[:8]}"
    started = time.time() - 600 + index
    return labels_pb2.Label(
        event_id=stable_event_id("consumer-progress-label", window),
        occurred_at=timestamp_now(),
        lineage=common_pb2.Lineage(upload_id=f"upload-{index}", window_id=window, device_id="device-1"),
        event_type=common_pb2.EVENT_TYPE_HARSH_BRAKING,
        source=labels_pb2.LABEL_SOURCE_CONSENSUS,
        window=common_pb2.TimeSpan(
            started_at=timestamp_from_seconds(started), ended_at=timestamp_from_seconds(started + 2)
        ),
    )


def publish_labels(producer: EventProducer, published: Published, count: int, start: int = 0) -> None:
    for index in range(start, start + count):
        label = window_label(index)
        delivery = producer.publish(LABELS, label.lineage.window_id, label).result(30)
        published[(delivery.partition, delivery.offset)] = label.event_id


def trainer_consumer(
    kafka_bootstrap: str,
    topic_prefix: str,
    producer: EventProducer,
    store: TrainerStore,
    progress: ConsumerProgress | None = None,
) -> EventConsumer:
    return EventConsumer(
        consumer=Consumer(group_consumer_config(kafka_bootstrap, topic_prefix, "trainer")),
        producer=producer,
        handler=EventHandler(store=store, metrics=TrainerMetrics(), wake=lambda: None),
        prefix=topic_prefix,
        progress=progress,
    )


def test_the_trainer_reads_a_failed_batch_again_and_commits_nothing_past_it(
    kafka_bootstrap: str, topic_prefix: str, producer: EventProducer, tmp_path: Path
) -> None:
    labels_topic = LABELS.name(topic_prefix)
    group = f"{topic_prefix}trainer"
    published: Published = {}
    audit = CommitAudit(kafka_bootstrap, group, labels_topic, published)
    store = LabelStoreFailingOnce(f"sqlite:///{tmp_path / 'trainer.db'}", audit)
    progress = ConsumerProgress(kafka_bootstrap, group, [labels_topic, ALERTS.name(topic_prefix)])
    publish_labels(producer, published, 6)
    consumer = trainer_consumer(kafka_bootstrap, topic_prefix, producer, store, progress)
    thread, stop = run_in_thread(consumer.run)
    try:
        assert wait_until(lambda: bool(store.refused), 30), "the first batch reached the store"
        # Labels after the failure: before the fix, the commit after storing them passed the refused batch.
        publish_labels(producer, published, 4, start=6)

        assert wait_until(lambda: committed_to_end(kafka_bootstrap, group, labels_topic), 60, 0.2), "caught up"
        assert {label.event_id for label in store.labels()} == set(published.values())
        assert set(store.refused) <= audit.handled
        assert audit.checks >= 2 and audit.violations == []
        assert consumer.readiness() is None  # caught up: nothing waits
    finally:
        stop_thread(thread, stop)
        progress.close()
        store.engine.dispose()


def test_the_trainer_is_not_ready_while_labels_wait_without_progress(
    kafka_bootstrap: str, topic_prefix: str, producer: EventProducer, tmp_path: Path
) -> None:
    labels_topic = LABELS.name(topic_prefix)
    group = f"{topic_prefix}trainer"
    published: Published = {}
    audit = CommitAudit(kafka_bootstrap, group, labels_topic, published)
    store = LabelStoreFailingOnce(f"sqlite:///{tmp_path / 'trainer.db'}", audit, refusals=10_000)
    progress = ConsumerProgress(kafka_bootstrap, group, [labels_topic], not_ready_after_s=3.0)
    publish_labels(producer, published, 3)
    consumer = trainer_consumer(kafka_bootstrap, topic_prefix, producer, store, progress)
    thread, stop = run_in_thread(consumer.run)
    reasons: list[str | None] = []

    def judged(wanted: Callable[[str | None], bool]) -> bool:
        reasons.append(consumer.readiness())
        return wanted(reasons[-1])

    try:
        assert wait_until(lambda: judged(lambda reason: reason is not None and "no progress" in reason), 30, 0.5), (
            reasons[-5:]
        )
        assert f"{labels_topic}[" in str(reasons[-1]) and "committed 0" in str(reasons[-1])
        store.release.set()  # the database answers again
        assert wait_until(lambda: judged(lambda reason: reason is None), 30, 0.5), reasons[-5:]
        assert wait_until(lambda: committed_to_end(kafka_bootstrap, group, labels_topic), 30, 0.2)
        assert {label.event_id for label in store.labels()} == set(published.values())
        assert audit.violations == []
    finally:
        stop_thread(thread, stop)
        progress.close()
        store.engine.dispose()


# --- annotation


class DeadLettersRefused(EventProducer):
    """A producer whose first `refusals` dead letters the broker does not acknowledge; audits commits at each one."""

    def __init__(self, bootstrap: str, prefix: str, audit: CommitAudit, refusals: int) -> None:
        super().__init__(bootstrap, prefix, client_id="consumer-progress-test")
        self.audit = audit
        self.refusals = refusals
        self.refused = 0

    def dead_letter_record(
        self, *, service: str, record: ConsumedRecord, headers: dict[str, str], reason: str, error: str
    ) -> concurrent.futures.Future[Delivery]:
        self.audit.check()
        if self.refused < self.refusals:
            self.refused += 1
            refused: concurrent.futures.Future[Delivery] = concurrent.futures.Future()
            refused.set_exception(PublishError("no acknowledgement from the broker"))
            return refused
        sent = super().dead_letter_record(service=service, record=record, headers=headers, reason=reason, error=error)
        sent.result(30)
        self.audit.record([f"dead letter {record.partition()}:{record.offset()}"])
        return sent


def test_annotation_reads_a_failed_batch_again_and_commits_nothing_past_it(
    kafka_bootstrap: str, topic_prefix: str, producer: EventProducer, redis_url: str, tmp_path: Path
) -> None:
    requests_topic = LABEL_REQUESTS.name(topic_prefix)
    group = f"{topic_prefix}annotation"
    settings = settings_for(tmp_path, redis_url, topic_prefix=topic_prefix, kafka_bootstrap=kafka_bootstrap)
    wiring = wire(settings, publisher=KafkaLabelPublisher(producer))
    # One key: one partition, in this order: three requests, bytes that are no request, three requests.
    requests = [make_request(f"window-{uuid.uuid4().hex[:8]}") for _ in range(6)]
    for request in requests[:3]:
        producer.publish(LABEL_REQUESTS, "one-key", request).result(30)
    garbage = producer.publish_raw(requests_topic, b"one-key", b"\xff no request", build_headers(LABEL_REQUESTS.schema))
    delivery = garbage.result(30)
    for request in requests[3:]:
        producer.publish(LABEL_REQUESTS, "one-key", request).result(30)
    # Audited: the record whose dead letter is refused once (a commit past it would pass everything after it).
    audit = CommitAudit(
        kafka_bootstrap,
        group,
        requests_topic,
        {(delivery.partition, delivery.offset): f"dead letter {delivery.partition}:{delivery.offset}"},
    )

    # The consumer parks a message whose dead letter fails as a processing error, in a second dead letter;
    # when that one fails too, the batch fails.
    dead_letters = DeadLettersRefused(kafka_bootstrap, topic_prefix, audit, refusals=2)
    consumer = LabelRequestConsumer(
        consumer=Consumer(group_consumer_config(kafka_bootstrap, topic_prefix, "annotation")),
        producer=dead_letters,
        service=wiring.service,
        topic=requests_topic,
    )
    thread, stop = run_in_thread(consumer.run)
    try:
        assert wait_until(lambda: committed_to_end(kafka_bootstrap, group, requests_topic), 60, 0.2), "caught up"
        assert dead_letters.refused == 2 and audit.checks >= 3
        assert audit.violations == []
        assert sum(wiring.store.status_counts().values()) == 6  # every request became a task
    finally:
        stop_thread(thread, stop)
        dead_letters.close()
        wiring.close()
    with TopicReader(kafka_bootstrap, DEAD_LETTERS, topic_prefix) as reader:
        letters = reader.read_until(lambda got: len(got) >= 1, 20)
    assert [letter.message.reason for letter in letters] == ["decode-error"]  # type: ignore[attr-defined]


# --- the warehouse sink


class FileWriteRefusedOnce(BlobParquetWriter):
    """The blob store refuses the first file; commits are audited before every file."""

    def __init__(self, blob_url: str, audit: CommitAudit) -> None:
        super().__init__(BlobStore(blob_url))
        self.audit = audit
        self.refused: list[str] = []

    def write(self, key: str, rows: list[Row]) -> None:
        self.audit.check()
        if not self.refused:
            self.refused = [row["event_id"] for row in rows]
            raise OSError(28, "No space left on device")
        super().write(key, rows)
        self.audit.record([row["event_id"] for row in rows])


def prediction(index: int, moment: datetime) -> inference_pb2.Prediction:
    return inference_pb2.Prediction(
        event_id=f"prediction-{index}",
        occurred_at=timestamp_from_datetime(moment),
        lineage=common_pb2.Lineage(
            upload_id=f"upload-{index}", window_id=f"window-{index}", trip_id="trip-1", device_id="device-1"
        ),
        predicted=common_pb2.EVENT_TYPE_NORMAL,
        confidence=0.9,
        sample_rate_hz=100,
    )


def publish_predictions(producer: EventProducer, published: Published, indexes: range) -> None:
    start = datetime(2026, 11, 28, 13, 0, tzinfo=UTC)
    for index in indexes:
        message = prediction(index, start + timedelta(minutes=index))
        delivery = producer.publish(PREDICTIONS, f"device-{index % 3}", message).result(30)
        published[(delivery.partition, delivery.offset)] = message.event_id


def test_the_warehouse_sink_reads_a_failed_pass_again_and_commits_nothing_past_it(
    kafka_bootstrap: str, topic_prefix: str, producer: EventProducer, tmp_path: Path
) -> None:
    predictions_topic = PREDICTIONS.name(topic_prefix)
    group = f"{topic_prefix}warehouse"
    blob_url = f"file://{tmp_path / 'blobs'}"
    published: Published = {}
    audit = CommitAudit(kafka_bootstrap, group, predictions_topic, published)
    writer = FileWriteRefusedOnce(blob_url, audit)
    settings = WarehouseSettings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        home=tmp_path / ".michi",
        blob_url=blob_url,
        warehouse_flush_s=0.3,
        warehouse_flush_rows=3,
    )
    publish_predictions(producer, published, range(12))
    sink = build_sink(settings, producer=producer, writer=writer)
    thread, stop = run_in_thread(sink.run)
    try:
        assert wait_until(lambda: bool(writer.refused), 30), "the first file was tried"
        publish_predictions(producer, published, range(12, 16))
        assert wait_until(lambda: committed_to_end(kafka_bootstrap, group, predictions_topic), 60, 0.2), "caught up"
    finally:
        stop_thread(thread, stop)
    assert audit.violations == [] and audit.checks >= 2
    assert audit.handled == set(published.values())
    assert set(writer.refused) <= audit.handled
    assert table_counts(blob_url)["predictions"] == 16
    counted = query(
        "SELECT count(DISTINCT event_id) AS events, count(*) AS total FROM predictions_all_copies", blob_url
    )
    assert counted == [{"events": 16, "total": 16}]
