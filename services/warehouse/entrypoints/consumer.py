"""The warehouse sink: predictions and detections buffered per partition, written as Parquet, then committed.

It runs on the kit's consumer loop (`michi.kit.consumer.ConsumerLoop`), which polls, opens each record's
consumer span, decodes it, dead-letters what cannot be decoded and what the handler refuses (`handlers.row_of`:
a record without the lineage and time a row needs, `schema-violation`), commits, and seeks back after a failure.
The sink keeps the buffers, writes the files and tells the loop what it may commit.

At-least-once: a partition's offset is committed only after the file holding its rows is in the blob store
(`committable`, at the end of each batch). A crash between the two redelivers the rows, and the new file has
the same name as the old one (first offset and partition), so it replaces it instead of adding duplicates.
Dead letters are committed with the rows around them. A batch that fails (a write or a commit) is never
committed past: the loop seeks every partition back to its first record not committed, which may lie in an
earlier batch still buffered here, the buffers are dropped (`on_rewind`), and the loop reads them again after
`RETRY_PAUSE_S`. On a rebalance, buffers of revoked partitions are dropped: their new owner reads them again.
After an assignment, the partition's stored files are listed once, so a pass that cuts batches elsewhere than
an earlier one (a group reset, a rewind) deletes the files it supersedes. On stop, every buffer is written and
committed (`finish`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from michi.bus.producer import EventProducer
from michi.kit.consumer import ConsumerLoop, Delivered, LoopConsumer, Offsets, Partition
from services.warehouse.adapters.parquet import ParquetWriter
from services.warehouse.domain.batches import PartitionBuffer, superseded_keys
from services.warehouse.handlers import SERVICE, Source, row_of
from services.warehouse.metrics import WarehouseMetrics

logger = logging.getLogger(__name__)

# Records read per poll.
BATCH_SIZE = 1000


class WarehouseSink(LoopConsumer):
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
        self.writer = writer
        self.sources = sources
        self.flush_s = flush_s
        self.flush_rows = flush_rows
        self.metrics = metrics
        self.clock = clock
        self.buffers: dict[Partition, PartitionBuffer] = {}
        # Per partition: the offset after the last record whose file is written (or dead letter, when only
        # dead letters followed the last file), not committed yet.
        self.written_to: dict[Partition, int] = {}
        # Files stored by earlier passes, per partition, listed at its first flush after an assignment (files
        # this pass writes join them, so a rewind that cuts them elsewhere supersedes them too).
        self.earlier_parts: dict[Partition, dict[int, str]] = {}
        self.loop = ConsumerLoop(
            consumer=consumer,
            producer=producer,
            service=SERVICE,
            topics={topic: source.spec for topic, source in sources.items()},
            handle=self._buffer,
            end_batch=self.flush,
            on_dead_letter=self._settle_dead_letter,
            committable=self._committable,
            on_rewind=self._drop_buffers,
            finish=lambda: self.flush(force=True),
            batch_size=BATCH_SIZE,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            clock=clock,
        )

    # --- rebalances (the loop keeps the assignment)

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        for item in partitions:
            self.earlier_parts.pop((item.topic, item.partition), None)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        for item in partitions:
            self.written_to.pop((item.topic, item.partition), None)
            dropped = self.buffers.pop((item.topic, item.partition), None)
            if dropped is not None and dropped.rows:
                logger.info(
                    "buffer of a revoked partition dropped",
                    extra={"topic": item.topic, "partition": item.partition, "rows": len(dropped.rows)},
                )
        self._update_gauge()

    # --- the loop

    @property
    def assigned(self) -> set[Partition]:
        return self.loop.assigned

    def run(self, stop: threading.Event, poll_timeout: float = 0.5) -> None:
        """Poll until `stop` is set, then write what is buffered, commit and close the consumer."""
        super().run(stop, poll_timeout)

    def _buffer(self, record: Delivered) -> None:
        """One decoded record into its partition's buffer (`Rejected` when it cannot be a row); a full buffer is written."""
        topic, partition, offset = record.topic(), record.partition(), record.offset()
        row = row_of(record.message, self.sources[topic], topic=topic, partition=partition, offset=offset)
        buffer = self._buffer_of(topic, partition)
        buffer.add(row, offset)
        self.metrics.buffered_rows.inc()
        if len(buffer.rows) >= self.flush_rows:
            self._write(buffer)
            del self.buffers[(topic, partition)]
            self._update_gauge()

    def _settle_dead_letter(self, raw: Any, reason: str) -> None:
        """A dead letter the broker acknowledged: counted, and committed with the rows around it."""
        self._buffer_of(raw.topic(), raw.partition()).add(None, raw.offset())
        self.metrics.dead_letters.inc()

    def _buffer_of(self, topic: str, partition: int) -> PartitionBuffer:
        buffer = self.buffers.get((topic, partition))
        if buffer is None:
            buffer = self.buffers[(topic, partition)] = PartitionBuffer(
                self.sources[topic].kind, topic, partition, self.clock()
            )
        return buffer

    def flush(self, *, force: bool = False) -> None:
        """Write every buffer that is due (all of them with `force`); the loop commits them next."""
        now = self.clock()
        for key, buffer in list(self.buffers.items()):
            if force or buffer.due(now, max_age_s=self.flush_s, max_rows=self.flush_rows):
                self._write(buffer)
                del self.buffers[key]
        self._update_gauge()

    def _write(self, buffer: PartitionBuffer) -> None:
        """Write the buffer's files (deleting those they supersede); its offsets become committable."""
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
            first, last = file.rows[0]["kafka_offset"], file.rows[-1]["kafka_offset"]
            for offset in [offset for offset in earlier if offset <= last]:
                del earlier[offset]
            earlier[first] = file.key
            self.metrics.files_written.labels(table).inc()
            self.metrics.rows_written.labels(table).inc(len(file.rows))
            self.written_to[partition] = file.commit_offset
        if not buffer.rows and buffer.next_offset is not None:  # only dead letters since the last file
            self.written_to[partition] = buffer.next_offset

    def _committable(self, handled: Offsets) -> Offsets:
        """What the loop may commit now: the offsets whose rows are written (not all it handled)."""
        written, self.written_to = self.written_to, {}
        return written

    def _drop_buffers(self) -> None:
        """After a failed batch: the loop sought back to the first record not committed, read again from there."""
        self.buffers.clear()
        self.written_to.clear()
        self._update_gauge()

    def _update_gauge(self) -> None:
        self.metrics.buffered_rows.set(sum(len(buffer.rows) for buffer in self.buffers.values()))
