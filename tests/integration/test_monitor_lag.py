"""The monitor's lag reader on the session's real Kafka: records behind and the age of the first unconsumed record
of groups committed part-way, never committed on a partition, caught up, or unknown."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from michi.bus.admin import delete_topics
from michi.bus.connection import KafkaConnection
from michi.bus.reader import end_offsets
from services.monitor.adapters.lag import KafkaLagReader

pytestmark = pytest.mark.integration

# Record i of partition p was produced at BASE + 100 p + i (Kafka CreateTime, milliseconds on the wire).
BASE = time.time() - 3600.0
RECORDS = {0: 10, 1: 6}


@pytest.fixture
def topic(kafka_bootstrap: str) -> Iterator[str]:
    name = f"test-lag-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[name].result(30)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    for partition, count in RECORDS.items():
        for index in range(count):
            moment = BASE + 100 * partition + index
            producer.produce(name, value=b"x", partition=partition, timestamp=round(moment * 1000))
    assert producer.flush(30) == 0
    deadline = time.monotonic() + 30
    while end_offsets(kafka_bootstrap, name) != RECORDS and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        yield name
    finally:
        delete_topics(kafka_bootstrap, [name])


def commit(bootstrap: str, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Commit `offsets` for `group` as its consumers would, without joining it."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()],
            asynchronous=False,
        )
    finally:
        consumer.close()


def test_lag_in_records_and_age_of_the_first_unconsumed_record(kafka_bootstrap: str, topic: str) -> None:
    part_way, one_partition, caught_up, unknown = (f"test-lag-group-{uuid.uuid4().hex[:8]}-{n}" for n in range(4))
    commit(kafka_bootstrap, part_way, {(topic, 0): 4, (topic, 1): 6})
    # Committed on partition 1 only: partition 0 is read from its earliest record.
    commit(kafka_bootstrap, one_partition, {(topic, 1): 2})
    commit(kafka_bootstrap, caught_up, {(topic, 0): 10, (topic, 1): 6})
    reader = KafkaLagReader(
        KafkaConnection.plain(kafka_bootstrap), [part_way, one_partition, caught_up, unknown], age_timeout_s=10.0
    )
    try:
        lags = {lag.group: lag for lag in reader.read_lag()}
    finally:
        reader.close()
    assert set(lags) == {part_way, one_partition, caught_up}  # a group without commits is not observed

    assert lags[part_way].records == 6
    assert lags[part_way].oldest_unconsumed_at == pytest.approx(BASE + 4, abs=0.002)
    now = BASE + 3600
    assert lags[part_way].age_s(now) == pytest.approx(3596, abs=0.01)

    assert lags[one_partition].records == 10 + 4
    assert lags[one_partition].oldest_unconsumed_at == pytest.approx(BASE, abs=0.002)

    assert lags[caught_up].records == 0
    assert lags[caught_up].oldest_unconsumed_at is None and lags[caught_up].age_s(now) == 0.0
