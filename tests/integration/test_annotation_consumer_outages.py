"""Annotation's label-request consumer through outages, on the session's real Kafka broker (issue 14).

- A dead letter the broker refuses is sent again with its own reason (`decode-error`, `invalid-request`),
  never replaced by `processing-error`, and nothing is committed past it meanwhile.
- A Redis outage longer than the group's `max.poll.interval.ms` (shortened here to 7 s from Kafka's 300 s,
  so the test takes seconds, not minutes) does not drop the consumer from its group: same member, no
  partition revoked, and every request recorded once, in order, none lost, when Redis is back.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from michi.bus.catalog import DEAD_LETTERS, LABEL_REQUESTS
from michi.bus.consumers import group_consumer_config
from michi.bus.headers import build_headers
from michi.bus.producer import ConsumedRecord, Delivery, EventProducer, PublishError
from michi.bus.reader import TopicReader, end_offsets
from michi.infra.processes import free_port, wait_until
from michi.infra.redis import RedisServer
from services.annotation.adapters.publisher import KafkaLabelPublisher
from services.annotation.entrypoints.consumer import LabelRequestConsumer

from .annotation_support import make_request, settings_for, wire

pytestmark = pytest.mark.integration

# Far below Kafka's 300 s, so an outage longer than it takes seconds (session.timeout.ms is 6 s).
SHORT_MAX_POLL_INTERVAL_MS = 7000


def committed_to_end(bootstrap: str, group: str, topic: str) -> bool:
    ends = end_offsets(bootstrap, topic)
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = reader.committed([TopicPartition(topic, partition) for partition in ends], timeout=5)
    except KafkaException:  # the coordinator is still loading
        return False
    finally:
        reader.close()
    return all(item.offset == ends[item.partition] for item in committed if ends[item.partition] > 0)


class DeadLettersRefused(EventProducer):
    """A producer whose first `refusals` dead letters the broker does not acknowledge; every attempt is kept."""

    def __init__(self, bootstrap: str, prefix: str, refusals: int) -> None:
        super().__init__(bootstrap, prefix, client_id="annotation-outage-test")
        self.refusals = refusals
        self.attempts: list[tuple[int, str]] = []
        self.committed_while_refused: list[bool] = []
        self.group = ""

    def dead_letter_record(
        self, *, service: str, record: ConsumedRecord, headers: dict[str, str], reason: str, error: str
    ) -> concurrent.futures.Future[Delivery]:
        self.attempts.append((record.offset() or 0, reason))
        if len(self.attempts) <= self.refusals:
            refused: concurrent.futures.Future[Delivery] = concurrent.futures.Future()
            refused.set_exception(PublishError("no acknowledgement from the broker"))
            return refused
        return super().dead_letter_record(service=service, record=record, headers=headers, reason=reason, error=error)


class WatchedConsumer(LabelRequestConsumer):
    """The consumer as built in production, counting revoked partitions and each record recorded."""

    def __init__(self, **arguments: Any) -> None:
        self.revoked = 0
        self.attempts = 0
        self.recorded: list[int] = []
        # The group member id at each attempt (read in the consumer's own thread).
        self.members: set[str] = set()
        super().__init__(**arguments)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.revoked += len(partitions)
        super()._on_revoke(consumer, partitions)

    def _handle(self, raw: Any) -> Any:
        self.attempts += 1
        self.members.add(self.consumer.memberid())
        letter = super()._handle(raw)
        self.recorded.append(raw.offset())
        return letter


def run_in_thread(consumer: LabelRequestConsumer) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    return thread, stop


def stop_thread(thread: threading.Thread, stop: threading.Event) -> None:
    stop.set()
    thread.join(30)
    assert not thread.is_alive()


def test_a_refused_dead_letter_is_sent_again_with_its_own_reason(
    kafka_bootstrap: str, topic_prefix: str, producer: EventProducer, redis_url: str, tmp_path: Path
) -> None:
    requests_topic = LABEL_REQUESTS.name(topic_prefix)
    group = f"{topic_prefix}annotation"
    wiring = wire(
        settings_for(tmp_path, redis_url, topic_prefix=topic_prefix, kafka_bootstrap=kafka_bootstrap),
        publisher=KafkaLabelPublisher(producer),
    )
    # One partition, in this order: a request, bytes that are no request, a request without a window, a request.
    producer.publish(LABEL_REQUESTS, "one-key", make_request(f"window-{uuid.uuid4().hex[:8]}")).result(30)
    garbage = producer.publish_raw(requests_topic, b"one-key", b"\xff no request", build_headers(LABEL_REQUESTS.schema))
    garbage_delivery = garbage.result(30)
    garbage_offset = garbage_delivery.offset
    producer.publish(LABEL_REQUESTS, "one-key", make_request("", event_id="no-window")).result(30)
    producer.publish(LABEL_REQUESTS, "one-key", make_request(f"window-{uuid.uuid4().hex[:8]}")).result(30)

    dead_letters = DeadLettersRefused(kafka_bootstrap, topic_prefix, refusals=6)
    consumer = LabelRequestConsumer(
        consumer=Consumer(group_consumer_config(kafka_bootstrap, topic_prefix, "annotation")),
        producer=dead_letters,
        service=wiring.service,
        topic=requests_topic,
    )
    thread, stop = run_in_thread(consumer)
    try:
        # While the first dead letter is refused, nothing is committed past the record before it.
        assert wait_until(lambda: len(dead_letters.attempts) >= 3, 60, 0.1)
        committed = committed_offset(kafka_bootstrap, group, requests_topic, garbage_delivery.partition)
        assert committed is None or committed <= garbage_offset
        assert wait_until(lambda: committed_to_end(kafka_bootstrap, group, requests_topic), 90, 0.2), "caught up"
    finally:
        stop_thread(thread, stop)
        dead_letters.close()
        wiring.close()
    # Every attempt carried the record's own reason; the refusals were all the first one's.
    assert Counter(reason for _, reason in dead_letters.attempts) == {"decode-error": 7, "invalid-request": 1}
    assert all(offset == garbage_offset for offset, _ in dead_letters.attempts[:7])
    with TopicReader(kafka_bootstrap, DEAD_LETTERS, topic_prefix) as reader:
        letters = reader.read_until(lambda got: len(got) >= 2, 20)
    assert sorted(letter.message.reason for letter in letters) == ["decode-error", "invalid-request"]  # type: ignore[attr-defined]
    assert sum(wiring.store.status_counts().values()) == 2  # both requests became tasks


def committed_offset(bootstrap: str, group: str, topic: str, partition: int) -> int | None:
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        [position] = reader.committed([TopicPartition(topic, partition)], timeout=5)
    finally:
        reader.close()
    return position.offset if position.offset >= 0 else None


@pytest.mark.timeout(240)
def test_an_outage_longer_than_max_poll_interval_keeps_the_consumer_in_its_group_without_loss_or_duplicates(
    kafka_bootstrap: str, topic_prefix: str, producer: EventProducer, tmp_path: Path
) -> None:
    # A redis-server of this test's own, stopped and started again on the same port and data.
    redis = RedisServer(tmp_path / "redis", port=free_port())
    redis.start()
    requests_topic = LABEL_REQUESTS.name(topic_prefix)
    group = f"{topic_prefix}annotation"
    wiring = wire(
        settings_for(tmp_path, redis.url, topic_prefix=topic_prefix, kafka_bootstrap=kafka_bootstrap),
        publisher=KafkaLabelPublisher(producer),
    )
    # One partition; more requests than a batch, so the broker hands some over beyond the failing batch.
    requests = [make_request(f"window-{uuid.uuid4().hex[:8]}") for _ in range(12)]
    for request in requests:
        producer.publish(LABEL_REQUESTS, "one-key", request).result(30)
    config = group_consumer_config(kafka_bootstrap, topic_prefix, "annotation")
    config["max.poll.interval.ms"] = SHORT_MAX_POLL_INTERVAL_MS
    consumer = WatchedConsumer(
        consumer=Consumer(config), producer=producer, service=wiring.service, topic=requests_topic, batch_size=4
    )
    redis.stop()
    thread, stop = run_in_thread(consumer)
    try:
        assert wait_until(lambda: bool(consumer.assigned) and consumer.attempts > 0, 60, 0.1), "joined, failing"
        # Three max.poll.interval.ms of outage.
        time.sleep(3 * SHORT_MAX_POLL_INTERVAL_MS / 1000)
        redis.start()
        assert wait_until(lambda: committed_to_end(kafka_bootstrap, group, requests_topic), 90, 0.2), "caught up"
        assert len(consumer.members) == 1 and consumer.revoked == 0
    finally:
        stop_thread(thread, stop)
        wiring.close()
        redis.stop()
    # Every record recorded exactly once, in order, once Redis was back; every request became a task.
    assert consumer.recorded == list(range(len(requests)))
    assert consumer.attempts > len(requests)  # the first was tried through the outage
    assert sum(wiring.store.status_counts().values()) == len(requests)
