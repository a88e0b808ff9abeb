"""The warehouse sink on real Kafka: 4w2v answers, no duplicates after redelivery, garbage to dead letters."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition

from michi.bus.catalog import DEAD_LETTERS, DETECTIONS, PREDICTIONS
from michi.bus.headers import build_headers
from michi.bus.producer import EventProducer
from michi.bus.reader import TopicReader, end_offsets
from michi.contracts import timestamp_from_datetime
from michi.contracts.v1 import common_pb2, inference_pb2
from michi.warehouse import query, table_counts
from services.warehouse.settings import WarehouseSettings
from services.warehouse.wiring import build_sink

START = datetime(2026, 11, 28, 13, 50, tzinfo=UTC)


def lineage(trip: str, device: str, model_version: str, data_version: str) -> common_pb2.Lineage:
    return common_pb2.Lineage(
        upload_id=f"upload-{trip}",
        window_id=f"window-{trip}",
        trip_id=trip,
        device_id=device,
        driver_id=f"driver-{device}",
        model_name="baseline",
        model_version=model_version,
        data_version=data_version,
    )


def publish_trip(producer: EventProducer) -> None:
    """Trip X (model 2 on data-x) spans an hour boundary; trip Y uses model 1 on data-y."""
    futures = []
    for index in range(6):
        moment = START + timedelta(minutes=3 * index)
        for trip, device, version, data in (
            ("trip-x", "device-1", "2", "data-x"),
            ("trip-y", "device-2", "1", "data-y"),
        ):
            where = common_pb2.GeoPoint(latitude=35.0 + index / 100, longitude=139.0 + index / 100)
            futures.append(
                producer.publish(
                    PREDICTIONS,
                    device,
                    inference_pb2.Prediction(
                        event_id=f"prediction-{trip}-{index}",
                        occurred_at=timestamp_from_datetime(moment),
                        lineage=lineage(trip, device, version, data),
                        predicted=common_pb2.EVENT_TYPE_NORMAL,
                        confidence=0.9,
                        location=where,
                        sample_rate_hz=100,
                    ),
                )
            )
            if index % 2 == 0:
                futures.append(
                    producer.publish(
                        DETECTIONS,
                        trip,
                        inference_pb2.Detection(
                            event_id=f"detection-{trip}-{index}",
                            occurred_at=timestamp_from_datetime(moment),
                            lineage=lineage(trip, device, version, data),
                            event_type=common_pb2.EVENT_TYPE_HARSH_BRAKING,
                            confidence=0.8,
                            location=where,
                            variant=inference_pb2.VARIANT_CHAMPION,
                        ),
                    )
                )
    garbage = producer.publish_raw(
        DETECTIONS.name(producer.prefix), b"trip-x", b"\xff not a detection", build_headers(DETECTIONS.schema)
    )
    for future in [*futures, garbage]:
        future.result(30)


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def caught_up(bootstrap: str, group: str, topics: list[str]) -> bool:
    ends = [(topic, partition, end) for topic in topics for partition, end in end_offsets(bootstrap, topic).items()]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committed = consumer.committed([TopicPartition(topic, partition) for topic, partition, _ in ends], timeout=10)
    except KafkaException:  # the group coordinator is still loading: not yet
        return False
    finally:
        consumer.close()
    return all(max(item.offset, 0) >= end for item, (_, _, end) in zip(committed, ends, strict=True))


def reset_group(bootstrap: str, group: str, topics: list[str]) -> None:
    partitions = [
        TopicPartition(topic, partition, 0) for topic in topics for partition in end_offsets(bootstrap, topic)
    ]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=partitions, asynchronous=False)
    finally:
        consumer.close()


def run_sink_until_caught_up(settings: WarehouseSettings, producer: EventProducer) -> None:
    sink = build_sink(settings, producer=producer)
    stop = threading.Event()
    worker = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    worker.start()
    topics = [PREDICTIONS.name(settings.topic_prefix), DETECTIONS.name(settings.topic_prefix)]
    try:
        wait_for(lambda: caught_up(settings.resolved_kafka_bootstrap(), f"{settings.topic_prefix}warehouse", topics))
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()


def test_warehouse_answers_4w2v_without_duplicates(
    kafka_bootstrap: str, topic_prefix: str, producer: EventProducer, tmp_path: Path
) -> None:
    blob_url = f"file://{tmp_path / 'blobs'}"
    settings = WarehouseSettings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        home=tmp_path / ".michi",
        blob_url=blob_url,
        warehouse_flush_s=0.3,
    )
    publish_trip(producer)

    run_sink_until_caught_up(settings, producer)

    assert table_counts(blob_url) == {"predictions": 12, "detections": 6}
    answer = query(
        "SELECT model_version, data_version, device_id, driver_id, latitude, longitude, occurred_at, hour "
        "FROM detections WHERE trip_id = 'trip-x' ORDER BY occurred_at",
        blob_url,
    )
    assert [(row["model_version"], row["data_version"], row["device_id"]) for row in answer] == [
        ("2", "data-x", "device-1")
    ] * 3
    assert [row["occurred_at"] for row in answer] == [
        START,
        START + timedelta(minutes=6),
        START + timedelta(minutes=12),
    ]
    assert [row["hour"] for row in answer] == [13, 13, 14]
    assert [(round(row["latitude"], 2), round(row["longitude"], 2)) for row in answer] == [
        (35.0, 139.0),
        (35.02, 139.02),
        (35.04, 139.04),
    ]

    with TopicReader(kafka_bootstrap, DEAD_LETTERS, topic_prefix) as reader:
        letters = reader.read_until(lambda records: len(records) >= 1, timeout=30)
    assert [(record.message.service, record.message.source_topic, record.message.reason) for record in letters] == [  # type: ignore[attr-defined]
        ("warehouse", DETECTIONS.name(topic_prefix), "decode-error")
    ]

    # Redelivery of everything: the same files are rewritten, no row is stored twice.
    topics = [PREDICTIONS.name(topic_prefix), DETECTIONS.name(topic_prefix)]
    reset_group(kafka_bootstrap, f"{topic_prefix}warehouse", topics)
    # This pass cuts files every two rows, unlike the first: superseded files must go (no stored copy twice).
    run_sink_until_caught_up(settings.model_copy(update={"warehouse_flush_rows": 2}), producer)

    assert table_counts(blob_url) == {"predictions": 12, "detections": 6}
    for table in ("predictions", "detections"):
        counted = query(
            f"SELECT count(DISTINCT event_id) AS events, count(*) AS total FROM {table}_all_copies", blob_url
        )
        assert counted[0]["events"] == counted[0]["total"]
