"""Waiting on a consumer group's committed offsets (a service commits only after its effects are out)."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition

from michi.bus.reader import end_offsets


def wait_until_committed(bootstrap: str, group_id: str, topics: list[str], timeout: float = 60.0) -> None:
    """Bounded wait until `group_id` has committed up to the end of every partition of `topics`.

    Once it returns, everything the group will produce for what those topics held is in Kafka: a read
    to the end of its output topics sees all of it, duplicates included. The asking consumer never
    subscribes, so it does not join (or rebalance) the group it asks about.
    """
    asking = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id, "enable.auto.commit": False})
    ends: dict[tuple[str, int], int] = {}
    positions: dict[tuple[str, int], int] = {}
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ends = {
                (topic, partition): end for topic in topics for partition, end in end_offsets(bootstrap, topic).items()
            }
            committed = asking.committed([TopicPartition(topic, partition) for topic, partition in ends], timeout=10)
            positions = {(item.topic, item.partition): item.offset for item in committed}
            if all(end == 0 or positions.get(key, -1) >= end for key, end in ends.items()):
                return
            time.sleep(0.2)
    finally:
        asking.close()
    raise AssertionError(f"group {group_id} did not commit its inputs: committed {positions}, ends {ends}")
