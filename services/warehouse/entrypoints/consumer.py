"""The consumer loop: read predictions and detections, buffer per partition, write Parquet, then commit.

At-least-once: a partition's offset is committed only after the file holding its rows is in the
blob store. A crash between the two redelivers the rows, and the new file has the same name as the
old one (first offset and partition), so it replaces it instead of adding duplicates.
Undecodable messages, and records without the lineage and time a row needs (`domain/checks.py`), go to
dead letters (awaited) and are committed with the rows around them.
A pass that fails (a write, a commit or a dead letter refused) is never committed past: every
partition with records read and not committed is sought back to its first such record, the
buffers are dropped, and the loop reads them again after `RETRY_PAUSE_S`.
On a rebalance, buffers of revoked partitions are dropped: their new owner reads them again.
After an assignment, the partition's stored files are listed once, so a pass that cuts batches
elsewhere than an earlier one (a group reset) deletes the files it supersedes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from google.protobuf.message import Message

from michi.bus.catalog import TopicSpec
from michi.bus.codec import UndecodableMessage, decode_message
from michi.bus.consumers import seek_back
from michi.bus.headers import read_headers
from michi.bus.producer import EventProducer
from michi.warehouse import Row
from services.warehouse.adapters.parquet import ParquetWriter
from services.warehouse.domain.batches import PartitionBuffer, superseded_keys
from services.warehouse.domain.checks import unplaceable
from services.warehouse.metrics import WarehouseMetrics

logger = logging.getLogger(__name__)

SERVICE = "warehouse"
# Dead-letter reason of a record that decodes but cannot be filed (`domain/checks.py`), besides the decoder's.
SCHEMA_VIOLATION = "schema-violation"
DEAD_LETTER_TIMEOUT_S = 30.0
# Pause before what a failed pass read is read again (blob store, broker trouble).
RETRY_PAUSE_S = 2.0


@dataclass(frozen=True)
class Source:
    """One topic the sink reads: its catalog entry, record kind and row mapping."""

    spec: TopicSpec
    kind: str
    to_row: Callable[..., Row]


class WarehouseSink:
    def __init__(
        self,
        *,
        consumer: Consumer,
        producer: EventProducer,
        writer: ParquetWriter,
        sources: dict[str, Source],
        flush_s: float,
        flush_rows: int,
        metrics: WarehouseMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.writer = writer
        self.sources = sources
        self.flush_s = flush_s
        self.flush_rows = flush_rows
        self.metrics = metrics
        self.clock = clock
        self.buffers: dict[tuple[str, int], PartitionBuffer] = {}
        # Per partition: the first offset read and not committed (where a failed pass seeks back to), and
        # the offset after the last record read.
        self.uncommitted_from: dict[tuple[str, int], int] = {}
        self.read_to: dict[tuple[str, int], int] = {}
        self.last_poll_at: float | None = None
        self.assigned: set[tuple[str, int]] = set()
        # Files stored by earlier passes, per partition, listed at its first flush after an assignment.
        self.earlier_parts: dict[tuple[str, int], dict[int, str]] = {}
        self.consumer.subscribe(list(sources), on_assign=self._on_assign, on_revoke=self._on_revoke)

    # --- rebalances

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        for item in partitions:
            self.assigned.add((item.topic, item.partition))
            self.earlier_parts.pop((item.topic, item.partition), None)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        for item in partitions:
            self.assigned.discard((item.topic, item.partition))
            self.uncommitted_from.pop((item.topic, item.partition), None)
            self.read_to.pop((item.topic, item.partition), None)
            dropped = self.buffers.pop((item.topic, item.partition), None)
            if dropped is not None and dropped.rows:
                logger.info(
                    "buffer of a revoked partition dropped",
                    extra={"topic": item.topic, "partition": item.partition, "rows": len(dropped.rows)},
                )
        self._update_gauge()

    # --- the loop

    def run(self, stop: threading.Event, poll_timeout: float = 0.5) -> None:
        """Poll until `stop` is set, then write what is buffered, commit and close the consumer."""
        try:
            while not stop.is_set():
                try:
                    self.poll_once(poll_timeout)
                except Exception:
                    # poll_once sought back what was not committed: it is read again after a pause.
                    logger.exception("warehouse pass failed; reading the uncommitted records again")
                    stop.wait(RETRY_PAUSE_S)
            self.flush(force=True)
        finally:
            self.consumer.close()

    def poll_once(self, timeout: float = 0.5, max_messages: int = 1000) -> None:
        """Read a batch, write and commit what is due; on failure seek back what is not committed (then raise)."""
        batch: list[Any] = self.consumer.consume(max_messages, timeout)
        self.last_poll_at = self.clock()
        records: list[Any] = []
        for raw in batch:
            error = raw.error()
            if error is not None:
                logger.warning("consumer error", extra={"error": str(error)})
                continue
            key = (raw.topic(), raw.partition())
            self.uncommitted_from.setdefault(key, raw.offset())
            self.read_to[key] = raw.offset() + 1
            records.append(raw)
        try:
            for raw in records:
                self._read(raw)
            self.flush()
        except Exception:
            self._rewind()
            raise

    def _rewind(self) -> None:
        """Seek every partition with records read and not committed back to the first of them; drop the buffers.

        A seek that fails would let a later commit pass those records, so the process stops instead
        (exit 75) and Kafka redelivers from the committed offsets when it is restarted.
        """
        seek_back(self.consumer, SERVICE, self.uncommitted_from, "a failed pass")
        self.read_to.update(self.uncommitted_from)
        self.uncommitted_from.clear()
        self.buffers.clear()
        self._update_gauge()

    def _read(self, raw: Any) -> None:
        topic, partition, offset = raw.topic(), raw.partition(), raw.offset()
        source = self.sources[topic]
        headers = read_headers(raw.headers())
        row: Row | None = None
        try:
            message: Message = decode_message(source.spec, raw.value(), headers)
        except UndecodableMessage as error:
            self._dead_letter(raw, headers, error.reason, error.detail)
        else:
            problem = unplaceable(message)  # type: ignore[arg-type]
            if problem is None:
                row = source.to_row(message, topic=topic, partition=partition, offset=offset)
            else:
                self._dead_letter(raw, headers, SCHEMA_VIOLATION, problem)
        buffer = self.buffers.get((topic, partition))
        if buffer is None:
            buffer = self.buffers[(topic, partition)] = PartitionBuffer(source.kind, topic, partition, self.clock())
        buffer.add(row, offset)
        if row is not None:
            self.metrics.buffered_rows.inc()
        if len(buffer.rows) >= self.flush_rows:
            self._write_and_commit(buffer)
            del self.buffers[(topic, partition)]
            self._update_gauge()

    def _dead_letter(self, raw: Any, headers: dict[str, str], reason: str, detail: str) -> None:
        self.producer.dead_letter_record(
            service=SERVICE, record=raw, headers=headers, reason=reason, error=detail
        ).result(DEAD_LETTER_TIMEOUT_S)
        self.metrics.dead_letters.inc()

    def flush(self, *, force: bool = False) -> None:
        """Write and commit every buffer that is due (all of them with `force`)."""
        now = self.clock()
        for key, buffer in list(self.buffers.items()):
            if force or buffer.due(now, max_age_s=self.flush_s, max_rows=self.flush_rows):
                self._write_and_commit(buffer)
                del self.buffers[key]
        self._update_gauge()

    def _write_and_commit(self, buffer: PartitionBuffer) -> None:
        table = f"{buffer.kind}s"
        partition = (buffer.topic, buffer.partition)
        if partition not in self.earlier_parts:
            self.earlier_parts[partition] = self.writer.existing_parts(buffer.kind, buffer.partition)
        earlier = self.earlier_parts[partition]
        for file in buffer.file_runs():
            self.writer.write(file.key, file.rows)
            for key in superseded_keys(earlier, file):
                self.writer.delete(key)
                logger.info("superseded warehouse file deleted", extra={"key": key})
            last = file.rows[-1]["kafka_offset"]
            for offset in [offset for offset in earlier if offset <= last]:
                del earlier[offset]
            self.metrics.files_written.labels(table).inc()
            self.metrics.rows_written.labels(table).inc(len(file.rows))
            self._commit(buffer, file.commit_offset)
        if not buffer.rows and buffer.next_offset is not None:  # only dead letters since the last commit
            self._commit(buffer, buffer.next_offset)

    def _commit(self, buffer: PartitionBuffer, offset: int) -> None:
        self.consumer.commit(offsets=[TopicPartition(buffer.topic, buffer.partition, offset)], asynchronous=False)
        key = (buffer.topic, buffer.partition)
        if offset >= self.read_to.get(key, offset):
            self.uncommitted_from.pop(key, None)
        else:  # later runs of the buffer, or records read after it, are not committed yet
            self.uncommitted_from[key] = offset

    def _update_gauge(self) -> None:
        self.metrics.buffered_rows.set(sum(len(buffer.rows) for buffer in self.buffers.values()))

    def ready(self, max_silence_s: float = 30.0) -> bool:
        """Polling recently and holding at least one partition (progress is `ConsumerProgress`'s, in `/readyz`)."""
        return (
            self.last_poll_at is not None and self.clock() - self.last_poll_at < max_silence_s and bool(self.assigned)
        )
