"""The monitor's lag reader on the session's real Kafka: records behind and the age of the first unconsumed record
of groups committed part-way, never committed on a partition, caught up, or unknown; and on a broker of its own,
fresh, read from the first moment while the groups and topics come into being (it must not crash the process)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from michi.bus.admin import delete_topics
from michi.bus.connection import KafkaConnection
from michi.bus.reader import end_offsets
from michi.infra.kafka import KafkaBroker
from michi.infra.processes import free_port
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


# Run in a process of its own, so that a crash fails the test instead of killing the session. Reads the lag of
# GROUPS from the moment the broker answers, back to back, while another thread creates the topic and commits for
# the first group; prints the first round that saw that group's lag (10 + 6 - 4 - 6 = 6 records) and the rounds.
FRESH_BROKER_SCRIPT = """
import json, sys, threading, time
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from michi.bus.connection import KafkaConnection
from services.monitor.adapters.lag import KafkaLagReader

bootstrap, topic, groups = sys.argv[1], sys.argv[2], sys.argv[3:]

def create_and_commit():
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for partition, count in ((0, 10), (1, 6)):
        for _ in range(count):
            producer.produce(topic, value=b"x", partition=partition)
    producer.flush(30)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": groups[0], "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, 0, 4), TopicPartition(topic, 1, 6)], asynchronous=False)
    consumer.close()

writer = threading.Thread(target=create_and_commit)
reader = KafkaLagReader(KafkaConnection.plain(bootstrap), groups, timeout_s=5.0, age_timeout_s=5.0)
writer.start()
rounds, seen, deadline = 0, None, time.monotonic() + 40
try:
    while seen is None and time.monotonic() < deadline:
        rounds += 1
        lags = {lag.group: lag.records for lag in reader.read_lag()}
        if groups[0] in lags:
            seen = lags
finally:
    reader.close()
writer.join(30)
print(json.dumps({"rounds": rounds, "lags": seen}))
"""


def test_lag_read_on_a_fresh_broker_while_groups_and_topics_are_created(tmp_path: Path) -> None:
    """A fresh broker creates and loads its `__consumer_offsets` on the first group request and answers
    NOT_COORDINATOR meanwhile, which crashed an `AdminClient.list_consumer_group_offsets` (SIGSEGV in librdkafka's
    `rdk:main`, the lag reader's first round in a benchmark): the reader must ride it out."""
    broker = KafkaBroker(tmp_path / "kafka", port=free_port(), controller_port=free_port(), heap="256m")
    broker.start()
    topic = f"test-lag-fresh-{uuid.uuid4().hex[:8]}"
    # Groups spread over the offsets topic's partitions (4 on the embedded broker), each with its own coordinator.
    groups = [f"test-lag-fresh-group-{index}" for index in range(12)]
    try:
        finished = subprocess.run(
            [sys.executable, "-c", FRESH_BROKER_SCRIPT, broker.bootstrap, topic, *groups],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        broker.stop()
    assert finished.returncode != -signal.SIGSEGV, f"the lag reader crashed the process: {finished.stderr[-2000:]}"
    assert finished.returncode == 0, finished.stderr[-2000:]
    outcome = json.loads(finished.stdout.strip().splitlines()[-1])
    assert outcome["lags"] == {groups[0]: 6}, outcome  # the others never committed: not observed
