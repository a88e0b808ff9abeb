"""The plain confluent-kafka group consumers (annotation, trainer, warehouse sink): settings, polling and seeking back.

Offsets are committed by hand, only after the work they stand for is durable (at-least-once); a new
group starts from the earliest record; short session and fetch waits so a restart or a rebalance
takes seconds, not the default 45 s. Batches are polled with `consume_batch`, which hands over a short batch
once the records stop coming instead of waiting out the poll's timeout. A batch whose work failed is never committed past: each of its
partitions is sought back to its first uncommitted record (`seek_back`), and read again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from michi.bus.connection import KafkaConnection, as_connection
from michi.bus.redelivery import stop_without_acknowledging


def group_consumer_config(bootstrap: KafkaConnection | str, prefix: str, service: str) -> dict[str, Any]:
    """A consumer in the service's group `<prefix><service>` that never commits on its own."""
    return as_connection(bootstrap).confluent_config(
        {
            "group.id": f"{prefix}{service}",
            "client.id": f"{prefix}{service}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            "fetch.wait.max.ms": 100,
        }
    )


# How long a poll waits for more records once it has one (`consume_batch`): the most a record waits for its batch
# to fill when fewer than a batch arrive, and what bounds how often a trickle of records is handled and committed
# (`python -m benchmarks consumer`: a lone record is handled ~11 ms later than by a bare poll). Not 0: with 0 the
# platform fault test's inference worker stalled in its table recovery after the broker's restart in three runs of
# three (the cause is not known; with 10 ms it passed).
BATCH_LINGER_S = 0.01


def consume_batch(consumer: Any, count: int, timeout: float, linger: float = BATCH_LINGER_S) -> list[Any]:
    """Up to `count` records: waits at most `timeout` for the first, then at most `linger` for the rest.

    `Consumer.consume(count, timeout)` returns before its timeout only with `count` records: a short batch (the
    last records of a burst, a trickle) waits out the whole timeout, every record in it delayed by up to
    `timeout`. Here records already fetched come at once, a full batch without waiting.

    The lingering poll is `consumer.consume_lingering(count, timeout)` where the consumer has one, else its
    `consume`: a confluent_kafka Consumer has none; the tests' scripted consumers (`tests.fakes.ScriptedPolls`) do,
    to tell the polls of one call apart without reading meaning into a timeout.
    """
    records: list[Any] = consumer.consume(1, timeout)
    if records and count > 1:
        records.extend(getattr(consumer, "consume_lingering", consumer.consume)(count - 1, linger))
    return records


def first_offsets(records: Iterable[Any]) -> dict[tuple[str, int], int]:
    """The offset of each (topic, partition)'s first record among `records` (error records left out)."""
    firsts: dict[tuple[str, int], int] = {}
    for raw in records:
        if raw.error() is None:
            firsts.setdefault((raw.topic(), raw.partition()), raw.offset())
    return firsts


def seek_back(consumer: Any, service: str, positions: Mapping[tuple[str, int], int], what: str) -> None:
    """Seek each (topic, partition) back to its offset, so the next commit cannot pass what was not done.

    A seek that fails would let a later commit pass those records, so the process stops instead
    (exit 75, `michi.bus.redelivery`) and Kafka redelivers from the committed offsets when it restarts.
    """
    for (topic, partition), offset in sorted(positions.items()):
        try:
            consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as error:
            stop_without_acknowledging(service, f"could not seek back {what}: {error}"[:500], topic)
