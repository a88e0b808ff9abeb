"""`michi.bus.consumers.seek_back`: a failed batch's partitions go back to their first uncommitted record,
and a seek that fails stops the process with exit 75 (so Kafka redelivers), never a commit past the batch."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from confluent_kafka import TopicPartition

from michi.bus.consumers import first_offsets, seek_back
from michi.bus.redelivery import EXIT_REDELIVER


@dataclass
class Record:
    topic_name: str
    partition_number: int
    offset_number: int
    failed: bool = False

    def topic(self) -> str:
        return self.topic_name

    def partition(self) -> int:
        return self.partition_number

    def offset(self) -> int:
        return self.offset_number

    def error(self) -> Any:
        return "broker error" if self.failed else None


class SeekingConsumer:
    def __init__(self) -> None:
        self.sought: list[tuple[str, int, int]] = []

    def seek(self, partition: TopicPartition) -> None:
        self.sought.append((partition.topic, partition.partition, partition.offset))


def test_each_partition_goes_back_to_its_first_record_of_the_batch() -> None:
    batch = [
        Record("labels", 1, 40),
        Record("labels", 0, 7),
        Record("labels", 1, 41),
        Record("alerts", 0, 3, failed=True),  # an error record holds no position
        Record("alerts", 0, 4),
        Record("labels", 0, 8),
    ]
    assert first_offsets(batch) == {("labels", 1): 40, ("labels", 0): 7, ("alerts", 0): 4}
    consumer = SeekingConsumer()
    seek_back(consumer, "trainer", first_offsets(batch), "a failed batch")
    assert consumer.sought == [("alerts", 0, 4), ("labels", 0, 7), ("labels", 1, 40)]


def test_a_seek_that_fails_stops_the_process_for_redelivery() -> None:
    program = """
from confluent_kafka import KafkaError, KafkaException
from michi.bus.consumers import seek_back

class Refusing:
    def seek(self, partition):
        raise KafkaException(KafkaError(KafkaError._STATE, "partition not assigned"))

seek_back(Refusing(), "trainer", {("labels", 0): 7}, "a failed batch")
print("went on")
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_REDELIVER, result.stderr
    assert "went on" not in result.stdout
