"""How far scoring has read its trip inputs: the consumer group's committed offsets against the end of each partition.

The deadline timer closes a trip for a lost upload only on partitions where both
detections and trip segments are fully consumed; otherwise our own lag (a
restart, a backlog) would look like lost data and close complete trips early.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable

from confluent_kafka import Consumer, TopicPartition

from michi.bus.connection import KafkaConnection, as_connection


class CommittedProgress:
    def __init__(self, bootstrap: KafkaConnection | str, group_id: str, topics: Iterable[str]) -> None:
        self._topics = tuple(topics)
        self._consumer = Consumer(
            as_connection(bootstrap).confluent_config(
                {
                    "group.id": group_id,
                    # Only reads the group's offsets: never subscribes, joins or commits.
                    "enable.auto.commit": False,
                }
            )
        )
        self._lock = threading.Lock()

    def _caught_up(self, partitions: set[int]) -> set[int]:
        wanted = [TopicPartition(topic, partition) for topic in self._topics for partition in sorted(partitions)]
        with self._lock:
            committed = {(tp.topic, tp.partition): tp.offset for tp in self._consumer.committed(wanted, timeout=10)}
            behind = set()
            for tp in wanted:
                _, high = self._consumer.get_watermark_offsets(tp, timeout=10, cached=False)
                position = committed.get((tp.topic, tp.partition), -1)
                if high > 0 and position < high:
                    behind.add(tp.partition)
        return partitions - behind

    async def caught_up(self, partitions: set[int]) -> set[int]:
        """The given partitions whose trip inputs were all consumed (and committed)."""
        if not partitions:
            return set()
        return await asyncio.to_thread(self._caught_up, partitions)

    def close(self) -> None:
        with self._lock:
            self._consumer.close()
