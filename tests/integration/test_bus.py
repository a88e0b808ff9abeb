"""The bus on a real broker: explicit topics, acks, headers, dead letters, faust decoding."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, ConfigResource

from michi.bus.admin import ensure_topics
from michi.bus.catalog import CATALOG, DEAD_LETTERS, DRIVER_SCORES, UPLOADS
from michi.bus.consumers import consume_batch, group_consumer_config
from michi.bus.producer import EventProducer, PublishError, PublishTimeout
from michi.bus.reader import TopicReader, end_offsets
from michi.contracts.v1 import operations_pb2, upload_pb2


def test_topics_are_created_once_with_their_configs(kafka_bootstrap: str, topic_prefix: str) -> None:
    assert ensure_topics(kafka_bootstrap, topic_prefix, partitions=2) == []
    topics = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    for spec in CATALOG:
        assert spec.name(topic_prefix) in topics
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, DRIVER_SCORES.name(topic_prefix))
    config = admin.describe_configs([resource])[resource].result()
    assert config["cleanup.policy"].value == "compact"


def test_published_events_carry_headers_and_are_read_back(
    kafka_bootstrap: str, topic_prefix: str, producer: EventProducer
) -> None:
    for index in range(5):
        event = upload_pb2.UploadReceived(
            event_id=f"e{index}", upload=upload_pb2.Upload(upload_id=f"u{index}", device_id="d1")
        )
        delivery = producer.publish_and_wait(UPLOADS, "d1", event)
        assert delivery.topic == UPLOADS.name(topic_prefix)
    with TopicReader(kafka_bootstrap, UPLOADS, topic_prefix) as reader:
        records = reader.read_until(lambda got: len(got) >= 5, timeout=30)
    assert [record.message.upload.upload_id for record in records] == [f"u{index}" for index in range(5)]
    assert {record.partition for record in records} == {records[0].partition}, "one key stays on one partition"
    assert records[0].headers["schema"] == "michi.v1.UploadReceived"
    assert records[0].headers["content-type"] == "application/x-protobuf"


def test_an_unreachable_broker_fails_the_future_instead_of_hanging() -> None:
    lonely = EventProducer("127.0.0.1:1", "x.", client_id="unreachable", extra={"message.timeout.ms": 1500})

    async def publish_in_loop() -> None:
        await lonely.publish_async(UPLOADS, "d", upload_pb2.UploadReceived(event_id="e"))

    try:
        # The concurrent future of publish() and the event-loop future of publish_async() alike.
        waits = (
            lambda: lonely.publish(UPLOADS, "d", upload_pb2.UploadReceived(event_id="e")).result(timeout=20),
            lambda: asyncio.run(asyncio.wait_for(publish_in_loop(), timeout=20)),
        )
        for wait in waits:
            try:
                wait()
            except PublishError as error:
                assert "uploads" in str(error)
            else:
                raise AssertionError("delivery to a closed port must fail")
    finally:
        lonely.close(timeout=1)


def test_loop_futures_settle_every_acknowledgement_once_and_in_batches(
    kafka_bootstrap: str, topic_prefix: str, producer: EventProducer
) -> None:
    async def publish_all() -> tuple[list[int], int]:
        loop = asyncio.get_running_loop()
        wake_ups = 0
        original = loop.call_soon_threadsafe

        def counted(*args: object, **kwargs: object) -> object:
            nonlocal wake_ups
            wake_ups += 1
            return original(*args, **kwargs)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        try:
            events = [
                upload_pb2.UploadReceived(event_id=f"loop{index}", upload=upload_pb2.Upload(upload_id=f"l{index}"))
                for index in range(300)
            ]
            futures = [producer.publish_in_loop(UPLOADS, "loop-device", event) for event in events]
            # A caller that stops waiting does not disturb the others.
            futures[7].cancel()
            deliveries = await asyncio.gather(*(future for index, future in enumerate(futures) if index != 7))
        finally:
            loop.call_soon_threadsafe = original  # type: ignore[method-assign]
        return [delivery.offset for delivery in deliveries], wake_ups

    offsets, wake_ups = asyncio.run(publish_all())
    assert len(offsets) == 299
    assert len(set(offsets)) == 299, "one acknowledgement per message"
    assert offsets == sorted(offsets), "one key, one partition, in order"
    assert wake_ups < 100, f"acknowledgements are handed to the loop in batches ({wake_ups} wake-ups for 300)"


def test_a_loop_future_given_a_timeout_fails_in_time_without_a_timer_of_its_own() -> None:
    # The broker never answers and the producer would wait 30 s: the deadline ends the wait.
    lonely = EventProducer("127.0.0.1:1", "x.", client_id="deadline", extra={"message.timeout.ms": 30_000})

    async def publish() -> tuple[float, float]:
        started = time.monotonic()
        quick = lonely.publish_in_loop(UPLOADS, "d", upload_pb2.UploadReceived(event_id="a"), timeout_s=0.3)
        slower = lonely.publish_in_loop(UPLOADS, "d", upload_pb2.UploadReceived(event_id="b"), timeout_s=0.8)
        waits = []
        for future in (quick, slower):
            try:
                await asyncio.wait_for(future, timeout=10)
            except PublishTimeout as error:
                assert "no acknowledgement within" in str(error)
                waits.append(time.monotonic() - started)
        return waits[0], waits[1]

    try:
        quick_s, slower_s = asyncio.run(publish())
    finally:
        lonely.close(timeout=0.1)
    assert 0.3 <= quick_s < 0.8
    assert 0.8 <= slower_s < 1.5


def test_faust_agent_dead_letters_garbage_and_goes_on(
    kafka_bootstrap: str, topic_prefix: str, producer: EventProducer, tmp_path: Path
) -> None:
    """A faust agent built with the shared factory parks an undecodable message and processes the next one."""
    producer.publish_raw(
        UPLOADS.name(topic_prefix), b"d1", b"\xff\xfenot protobuf", [("schema", b"michi.v1.UploadReceived")]
    ).result(10)
    good = upload_pb2.UploadReceived(
        event_id="good", upload=upload_pb2.Upload(upload_id="after-garbage", device_id="d1")
    )
    producer.publish_and_wait(UPLOADS, "d1", good)
    script = textwrap.dedent(
        f"""
        import os, signal
        from michi.bus.catalog import UPLOADS
        from michi.bus.producer import EventProducer
        from michi.bus.streams import create_app, catalog_topic, decoded_batches, run_worker
        producer = EventProducer({kafka_bootstrap!r}, {topic_prefix!r})
        app = create_app("bus-test", bootstrap={kafka_bootstrap!r}, app_id={topic_prefix + "bus-test"!r}, data_dir=__import__("pathlib").Path({str(tmp_path)!r}), partitions=2)

        @app.agent(catalog_topic(app, UPLOADS, {topic_prefix!r}))
        async def consume(stream):
            async for batch in decoded_batches(stream, UPLOADS, producer=producer, service="bus-test"):
                for item in batch:
                    print("processed", item.message.upload.upload_id, item.headers.get("schema"), flush=True)
                    if item.message.upload.upload_id == "after-garbage":
                        producer.flush()
                        os.kill(os.getpid(), signal.SIGTERM)
        run_worker(app)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert "processed after-garbage michi.v1.UploadReceived" in result.stdout, result.stderr[-3000:]
    with TopicReader(kafka_bootstrap, DEAD_LETTERS, topic_prefix) as reader:
        letters = reader.read_until(lambda got: len(got) >= 1, timeout=30)
    assert len(letters) == 1
    letter = letters[0].message
    assert isinstance(letter, operations_pb2.DeadLetter)
    assert letter.reason == "decode-error"
    assert letter.value == b"\xff\xfenot protobuf"
    assert letter.source_topic == UPLOADS.name(topic_prefix)
    assert letter.service == "bus-test"
    assert sum(end_offsets(kafka_bootstrap, DEAD_LETTERS.name(topic_prefix)).values()) == 1


def test_a_short_batch_is_handed_over_at_once_not_after_the_poll_timeout(
    kafka_bootstrap: str, topic_prefix: str, producer: EventProducer
) -> None:
    """`consume_batch` (every kit consumer's poll): a full batch comes without waiting, and so does a short one,
    the last records of a burst, where `Consumer.consume(count, timeout)` waits out its whole timeout."""

    def publish(first: int, count: int) -> None:
        for index in range(first, first + count):
            producer.publish(UPLOADS, "d1", upload_pb2.UploadReceived(event_id=f"short-{index}"))
        assert producer.flush(30) == 0

    consumer = Consumer(group_consumer_config(kafka_bootstrap, topic_prefix, f"short-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([UPLOADS.name(topic_prefix)])
    try:
        publish(0, 3)
        joined: list[Any] = []
        deadline = time.monotonic() + 60
        while len(joined) < 3 and time.monotonic() < deadline:  # the group join takes its time
            joined.extend(record for record in consume_batch(consumer, 500, 1.0) if record.error() is None)
        assert len(joined) == 3

        publish(3, 1_200)
        sizes, began = [], time.monotonic()
        while sum(sizes) < 1_200 and time.monotonic() - began < 30:
            sizes.append(len([record for record in consume_batch(consumer, 1_000, 20.0) if record.error() is None]))
        waited = time.monotonic() - began
        assert sum(sizes) == 1_200 and max(sizes) <= 1_000, sizes
        assert waited < 10.0, f"{sizes} took {waited:.1f} s: a short batch waited out the 20 s timeout"

        began = time.monotonic()
        assert consume_batch(consumer, 1_000, 0.3) == []  # nothing comes: the timeout, once
        assert 0.25 <= time.monotonic() - began < 5.0
    finally:
        consumer.close()
