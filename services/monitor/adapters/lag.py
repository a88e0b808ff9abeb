"""Consumer lag of Michi's consumer groups, read from Kafka itself (`GroupLag`).

    reader = KafkaLagReader(settings.kafka_connection(), ["michi.inference", "michi.scoring", ...])
    lags = reader.read_lag()        # one GroupLag per group that has committed offsets
    reader.close()

Per group: its committed offsets (`AdminClient.list_consumer_group_offsets`), and for every partition of the
topics it has committed on, the low and high watermarks (`AdminClient.list_offsets`). A partition's lag is
high watermark - max(committed, low watermark) (a partition it never committed on, or whose committed records
were deleted by retention, is read from its earliest record, as the groups' `auto.offset.reset` says); the
group's lag is their sum. The age is read from the records themselves: one consumer outside any group is
assigned each lagging partition at its first unconsumed offset, and the oldest Kafka timestamp among the first
records it fetches is the group's `oldest_unconsumed_at` (None when none arrived within `age_timeout_s`).

A group without committed offsets (not running here, or never committed) is left out: not observed. Failing to
reach Kafka raises `KafkaException`; the watch counts the round as not observed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from michi.bus.connection import KafkaConnection
from services.monitor.domain.resources import GroupLag

Partition = tuple[str, int]


class KafkaLagReader:
    def __init__(
        self,
        connection: KafkaConnection,
        groups: Sequence[str],
        *,
        timeout_s: float = 10.0,
        age_timeout_s: float = 3.0,
    ) -> None:
        self.groups = list(groups)
        self.timeout_s = timeout_s
        self.age_timeout_s = age_timeout_s
        self._admin = AdminClient(connection.confluent_config())
        # Assigned partitions only, never subscribed or committing: it joins no group. Small fetches, for it
        # needs one record per partition, not the backlog.
        self._reader = Consumer(
            connection.confluent_config(
                {
                    "group.id": f"michi-monitor-lag-{uuid.uuid4().hex[:12]}",
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

    def read_lag(self) -> list[GroupLag]:
        """One `GroupLag` per group with committed offsets (module docstring)."""
        topics = self._admin.list_topics(timeout=self.timeout_s).topics
        lags = []
        for group in self.groups:
            committed = self._committed(group)
            if not committed:
                continue
            partitions = [
                (topic, partition)
                for topic in sorted({topic for topic, _ in committed})
                if topic in topics
                for partition in sorted(topics[topic].partitions)
            ]
            lows = self._offsets(partitions, OffsetSpec.earliest())
            highs = self._offsets(partitions, OffsetSpec.latest())
            positions = {key: max(committed.get(key, -1), lows.get(key, 0)) for key in partitions if key in highs}
            behind = {key: position for key, position in positions.items() if highs[key] > position}
            records = sum(highs[key] - position for key, position in behind.items())
            lags.append(GroupLag(group, records, self.oldest_timestamp(behind) if behind else None))
        return lags

    def _committed(self, group: str) -> dict[Partition, int]:
        """The group's committed offsets (partitions without one left out); empty for a group Kafka cannot tell."""
        future = self._admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)], request_timeout=self.timeout_s
        )[group]
        try:
            result = future.result(timeout=self.timeout_s)
        except KafkaException:
            return {}  # unknown to the coordinator, or it is moving: not observed this round
        return {
            (item.topic, item.partition): item.offset
            for item in result.topic_partitions or []
            if item.error is None and item.offset >= 0
        }

    def _offsets(self, partitions: Iterable[Partition], spec: OffsetSpec) -> dict[Partition, int]:
        wanted = {TopicPartition(topic, partition): spec for topic, partition in partitions}
        if not wanted:
            return {}
        futures = self._admin.list_offsets(wanted, request_timeout=self.timeout_s)
        found = {}
        for item, future in futures.items():
            try:
                found[item.topic, item.partition] = future.result(timeout=self.timeout_s).offset
            except KafkaException:
                continue  # a partition without a leader just now: not counted this round
        return found

    def oldest_timestamp(self, positions: dict[Partition, int]) -> float | None:
        """The oldest Kafka timestamp (seconds) among the records at `positions`, None if none came in time."""
        self._reader.assign(
            [TopicPartition(topic, partition, offset) for (topic, partition), offset in positions.items()]
        )
        try:
            first: dict[Partition, float] = {}
            deadline = time.monotonic() + self.age_timeout_s
            while len(first) < len(positions) and (left := deadline - time.monotonic()) > 0:
                for record in self._reader.consume(num_messages=100, timeout=min(left, 0.5)):
                    self._note_first(record, first)
            return min(first.values()) if first else None
        finally:
            self._reader.unassign()

    @staticmethod
    def _note_first(record: Any, first: dict[Partition, float]) -> None:
        if record.error() is not None:
            return
        key = (record.topic(), record.partition())
        kind, milliseconds = record.timestamp()
        if key not in first and kind != TIMESTAMP_NOT_AVAILABLE:
            first[key] = milliseconds / 1000.0

    def close(self) -> None:
        self._reader.close()
