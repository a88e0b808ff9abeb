"""After a rebalance a stream worker reads every partition it holds again from its committed offset, or from
its first record when the group never committed it (`michi.bus.streams.seek_to_committed_or_start`).

faust throws away what it fetched and had not processed when partitions are re-assigned, then asks aiokafka
to seek to the committed offsets; aiokafka's own seek leaves a partition without a commit where its fetcher
got to, so those records were never processed (a broker restart during `michi up` showed it: scoring held
detections it never read, and a later record would have been committed past them).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiokafka
from aiokafka.structs import OffsetAndMetadata
from aiokafka.structs import TopicPartition as AioTopicPartition
from confluent_kafka import Producer

from michi.bus.catalog import DETECTIONS
from michi.bus.streams import _App, _ConsumerThread, _Transport, create_app, seek_to_committed_or_start


def test_partitions_without_a_commit_go_back_to_their_first_record_and_the_others_to_their_commit(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = DETECTIONS.name(topic_prefix)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for partition, count in ((0, 3), (1, 4)):
        for index in range(count):
            producer.produce(topic, value=f"record-{index}".encode(), key=b"k", partition=partition)
    assert producer.flush(30) == 0
    first, second = AioTopicPartition(topic, 0), AioTopicPartition(topic, 1)

    async def positions_after_seeking() -> tuple[dict[int, int], dict[int, int], dict[AioTopicPartition, int | None]]:
        consumer = aiokafka.AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=f"seek-test-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        await consumer.start()
        try:
            read = 0
            for _ in range(60):
                batches = await consumer.getmany(timeout_ms=500)
                read += sum(len(records) for records in batches.values())
                if read >= 7:
                    break
            assert read == 7
            # Only the second partition was ever committed (at 2); the first was read to its end, never committed.
            await consumer.commit({second: OffsetAndMetadata(2, "")})
            await consumer.seek_to_committed()
            aiokafka_own = {tp.partition: await consumer.position(tp) for tp in (first, second)}
            committed = await seek_to_committed_or_start(consumer)
            ours = {tp.partition: await consumer.position(tp) for tp in (first, second)}
            # A topic it is told to keep (a table's changelog, which faust's recovery seeks) is left alone.
            consumer.seek(first, 3)
            await seek_to_committed_or_start(consumer, keep=frozenset({topic}))
            assert await consumer.position(first) == 3
            return aiokafka_own, ours, committed
        finally:
            await consumer.stop()

    aiokafka_own, ours, committed = asyncio.run(positions_after_seeking())
    assert aiokafka_own == {0: 3, 1: 2}  # what faust relied on: the first partition stays past its records
    assert ours == {0: 0, 1: 2}
    assert committed == {first: None, second: 2}


def test_the_app_factory_gives_faust_the_consumer_that_seeks_back(tmp_path: Path) -> None:
    app = create_app("seek-test", bootstrap="127.0.0.1:9", data_dir=tmp_path)
    assert isinstance(app, _App) and isinstance(app.transport, _Transport)
    assert isinstance(app.consumer._thread, _ConsumerThread)  # type: ignore[attr-defined]
