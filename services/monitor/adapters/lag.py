"""Consumer lag of Michi's consumer groups, read from Kafka itself (`GroupLag`).

    reader = KafkaLagReader(connection, ["michi.inference", "michi.scoring", ...], topic_prefix="michi.")
    lags = reader.read_lag()        # one GroupLag per group that has committed offsets
    reader.close()                  # in the thread that called read_lag

Per group: its committed offsets on the partitions of the topics named `topic_prefix...` (Kafka's own `__` topics
left out), and for every partition of the topics it has committed on, the low and high watermarks. A partition's
lag is high watermark - max(committed, low watermark) (a partition it never committed on, or whose committed
records were deleted by retention, is read from its earliest record, as the groups' `auto.offset.reset` says); the
group's lag is their sum. The age is read from the records themselves: one consumer outside any group is assigned
each lagging partition at its first unconsumed offset, and the oldest Kafka timestamp among the first records it
fetches is the group's `oldest_unconsumed_at` (None when none arrived within `age_timeout_s`).

A group without committed offsets (not running here, never committed, or its coordinator not answering within the
round) is left out: not observed. Failing to reach Kafka raises `KafkaException`; the watch counts the round as
not observed.

Why no `AdminClient`: librdkafka (2.16.0 here; its current source reads the same) answers an OffsetFetch error
that asks for a coordinator refresh (NOT_COORDINATOR, sent while `__consumer_offsets` is created and loaded on a
fresh broker, or when a coordinator moves) by queueing an operation on the client's consumer group, which an admin
client does not have: `AdminClient.list_consumer_group_offsets` then dereferences NULL in librdkafka's `rdk:main`
thread and the process dies with SIGSEGV (`rd_kafka_cgrp_op` <- `rd_kafka_handle_OffsetFetch` <-
`rd_kafka_ListConsumerGroupOffsetsResponse_parse`; confluent-kafka-python #1982, librdkafka #5040). So committed
offsets are read with `Consumer.committed()`, by one consumer per group configured with that group's id and never
subscribed (it joins nothing and commits nothing; its own group handling retries the refresh), and watermarks with
`Consumer.get_watermark_offsets`.

Threads: the clients are created by the first `read_lag()`, used only under the reader's lock and closed by
`close()`; call `read_lag()` and `close()` from one thread (the resource watch's), so every client is made, used
and closed in one thread and none is dropped while a call is in flight. `read_lag()` after `close()` raises
`RuntimeError`.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaException, TopicPartition

from michi.bus.connection import KafkaConnection
from michi.bus.consumers import consume_batch
from services.monitor.domain.resources import GroupLag

Partition = tuple[str, int]

CLIENT_ID = "michi-monitor-lag"

# Shortest wait granted to a Kafka query once the round's deadline has passed: it still answers from a warm client.
MIN_QUERY_TIMEOUT_S = 0.05


class KafkaLagReader:
    def __init__(
        self,
        connection: KafkaConnection,
        groups: Sequence[str],
        *,
        topic_prefix: str = "",
        timeout_s: float = 10.0,
        age_timeout_s: float = 3.0,
    ) -> None:
        self.connection = connection
        self.groups = list(groups)
        self.topic_prefix = topic_prefix
        self.timeout_s = timeout_s
        self.age_timeout_s = age_timeout_s
        self._lock = threading.Lock()
        self._closed = False
        self._reader: Consumer | None = None
        self._group_readers: dict[str, Consumer] = {}

    def read_lag(self) -> list[GroupLag]:
        """One `GroupLag` per group with committed offsets (module docstring); the Kafka queries of one call share
        one deadline of `timeout_s` (the age reading has its own `age_timeout_s` per lagging group)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the lag reader is closed")
            deadline = time.monotonic() + self.timeout_s
            reader = self._age_reader()
            partitions = self._partitions(reader.list_topics(timeout=self._left(deadline)).topics)
            watermarks: dict[Partition, tuple[int, int]] = {}
            lags = []
            for group in self.groups:
                committed = self._committed(group, partitions, deadline)
                if not committed:
                    continue
                keys = [
                    (topic, partition)
                    for topic in sorted({topic for topic, _ in committed})
                    for partition in partitions.get(topic, ())
                ]
                self._read_watermarks(reader, keys, watermarks, deadline)
                positions = {key: max(committed.get(key, -1), watermarks[key][0]) for key in keys if key in watermarks}
                behind = {key: position for key, position in positions.items() if watermarks[key][1] > position}
                records = sum(watermarks[key][1] - position for key, position in behind.items())
                lags.append(GroupLag(group, records, self.oldest_timestamp(behind) if behind else None))
            return lags

    def _partitions(self, topics: dict[str, Any]) -> dict[str, list[int]]:
        """Partitions of the topics a group may have committed on: named `topic_prefix...`, not Kafka's own."""
        return {
            name: sorted(metadata.partitions)
            for name, metadata in topics.items()
            if name.startswith(self.topic_prefix) and not name.startswith("__") and metadata.error is None
        }

    def _committed(self, group: str, partitions: dict[str, list[int]], deadline: float) -> dict[Partition, int]:
        """The group's committed offsets (partitions without one left out); empty for a group Kafka cannot tell."""
        wanted = [TopicPartition(topic, partition) for topic, numbers in partitions.items() for partition in numbers]
        if not wanted:
            return {}
        try:
            result = self._group_reader(group).committed(wanted, timeout=self._left(deadline))
        except KafkaException:
            return {}  # its coordinator unknown, loading or moving: not observed this round
        return {(item.topic, item.partition): item.offset for item in result if item.error is None and item.offset >= 0}

    def _read_watermarks(
        self,
        reader: Consumer,
        keys: Iterable[Partition],
        watermarks: dict[Partition, tuple[int, int]],
        deadline: float,
    ) -> None:
        """(low, high) of each of `keys` not read yet this round into `watermarks`; failures are left out."""
        for topic, partition in keys:
            if (topic, partition) in watermarks:
                continue
            try:
                low, high = reader.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=self._left(deadline), cached=False
                )
            except KafkaException:
                continue  # a partition without a leader just now: not counted this round
            watermarks[topic, partition] = (low, high)

    @staticmethod
    def _left(deadline: float) -> float:
        return max(deadline - time.monotonic(), MIN_QUERY_TIMEOUT_S)

    def oldest_timestamp(self, positions: dict[Partition, int]) -> float | None:
        """The oldest Kafka timestamp (seconds) among the records at `positions`, None if none came in time."""
        reader = self._age_reader()
        reader.assign([TopicPartition(topic, partition, offset) for (topic, partition), offset in positions.items()])
        try:
            first: dict[Partition, float] = {}
            deadline = time.monotonic() + self.age_timeout_s
            while len(first) < len(positions) and (left := deadline - time.monotonic()) > 0:
                for record in consume_batch(reader, 100, min(left, 0.5)):
                    self._note_first(record, first)
            return min(first.values()) if first else None
        finally:
            reader.unassign()

    @staticmethod
    def _note_first(record: Any, first: dict[Partition, float]) -> None:
        if record.error() is not None:
            return
        key = (record.topic(), record.partition())
        kind, milliseconds = record.timestamp()
        if key not in first and kind != TIMESTAMP_NOT_AVAILABLE:
            first[key] = milliseconds / 1000.0

    def _age_reader(self) -> Consumer:
        """The consumer that reads metadata, watermarks and the first unconsumed records: assigned partitions only,
        never subscribed or committing, so it joins no group. Small fetches: it needs one record per partition,
        not the backlog."""
        if self._reader is None:
            self._reader = Consumer(
                self.connection.confluent_config(
                    {
                        "group.id": f"michi-monitor-lag-{uuid.uuid4().hex[:12]}",
                        "client.id": CLIENT_ID,
                        "enable.auto.commit": False,
                        "enable.auto.offset.store": False,
                        "auto.offset.reset": "earliest",
                        "fetch.wait.max.ms": 100,
                        "max.partition.fetch.bytes": 65536,
                        "queued.min.messages": 1,
                        "queued.max.messages.kbytes": 1024,
                    }
                )
            )
        return self._reader

    def _group_reader(self, group: str) -> Consumer:
        """A consumer with `group`'s id that only asks for its committed offsets: never subscribed, assigned or
        committing, so the group does not see it."""
        consumer = self._group_readers.get(group)
        if consumer is None:
            consumer = Consumer(
                self.connection.confluent_config(
                    {
                        "group.id": group,
                        "client.id": CLIENT_ID,
                        "enable.auto.commit": False,
                        "enable.auto.offset.store": False,
                    }
                )
            )
            self._group_readers[group] = consumer
        return consumer

    def close(self) -> None:
        """Close every client (in the thread that read); a second call does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            clients = [*self._group_readers.values(), *([self._reader] if self._reader is not None else [])]
            self._group_readers.clear()
            self._reader = None
            failure: Exception | None = None
            for client in clients:
                try:
                    client.close()
                except Exception as error:  # close the others all the same
                    failure = failure or error
            if failure is not None:
                raise failure
