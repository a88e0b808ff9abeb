"""Reading a catalog topic from the outside (CLI, tests, product-team examples).

A `TopicReader` is a plain confluent-kafka consumer that decodes each record
with the catalog's value type; it is not used on any service's hot path.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from google.protobuf.message import Message

from michi.bus.catalog import TopicSpec
from michi.bus.codec import UndecodableMessage, decode_message
from michi.bus.connection import KafkaConnection, as_connection
from michi.bus.consumers import consume_batch
from michi.bus.headers import read_headers


@dataclass
class Record:
    message: Message
    key: str
    headers: dict[str, str]
    partition: int
    offset: int


class TopicReader:
    def __init__(
        self,
        bootstrap: KafkaConnection | str,
        spec: TopicSpec,
        prefix: str = "michi.",
        *,
        group_id: str | None = None,
        from_beginning: bool = True,
    ) -> None:
        self.spec = spec
        self.topic = spec.name(prefix)
        self._connection = as_connection(bootstrap)
        self._consumer = Consumer(
            self._connection.confluent_config(
                {
                    "group.id": group_id or f"michi-reader-{uuid.uuid4().hex[:12]}",
                    "auto.offset.reset": "earliest" if from_beginning else "latest",
                    "enable.auto.commit": group_id is not None,
                    "session.timeout.ms": 6000,
                    "heartbeat.interval.ms": 1000,
                    "fetch.wait.max.ms": 50,
                }
            )
        )
        self._consumer.subscribe([self.topic])

    def poll(self, timeout: float = 1.0, max_records: int = 500) -> list[Record]:
        records = []
        for raw in consume_batch(self._consumer, max_records, timeout):
            if raw.error():
                continue
            record = self._decode(raw)
            if record is not None:
                records.append(record)
        return records

    def _decode(self, raw: Any) -> Record | None:
        headers = read_headers(raw.headers())
        try:
            message = decode_message(self.spec, raw.value(), headers)
        except UndecodableMessage:
            return None
        key = (raw.key() or b"").decode("utf-8", "replace")
        return Record(message, key, headers, raw.partition() or 0, raw.offset() or 0)

    def read_until(self, done: Callable[[list[Record]], bool], timeout: float) -> list[Record]:
        """Poll until `done(all records so far)` or the timeout; return everything read."""
        collected: list[Record] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            collected.extend(self.poll(0.5))
            if done(collected):
                break
        return collected

    def read_to_end(self, timeout: float = 30.0) -> list[Record]:
        """Everything written to the topic before this call (bounded by `timeout`)."""
        ends = {
            partition: end for partition, end in end_offsets(self._connection, self.topic, timeout).items() if end > 0
        }
        collected: list[Record] = []
        reached: dict[int, int] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(
            reached.get(partition, -1) < end - 1 for partition, end in ends.items()
        ):
            for raw in consume_batch(self._consumer, 500, 0.5):
                if raw.error():
                    continue
                reached[raw.partition() or 0] = max(reached.get(raw.partition() or 0, -1), raw.offset() or 0)
                record = self._decode(raw)
                if record is not None:
                    collected.append(record)
        return collected

    def __iter__(self) -> Iterator[Record]:
        while True:
            yield from self.poll(1.0)

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def end_offsets(bootstrap: KafkaConnection | str, topic: str, timeout: float = 10.0) -> dict[int, int]:
    """High watermark per partition (message counts for topics without deletes).

    Retries within `timeout`: right after a topic is created its partitions may have no leader yet.
    """
    consumer = Consumer(
        as_connection(bootstrap).confluent_config({"group.id": f"michi-offsets-{uuid.uuid4().hex[:8]}"})
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                metadata = consumer.list_topics(topic, timeout=timeout)
                partitions = metadata.topics[topic].partitions if topic in metadata.topics else {}
                result = {}
                for partition in partitions:
                    _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
                    result[partition] = high
                return result
            except KafkaException:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
    finally:
        consumer.close()
