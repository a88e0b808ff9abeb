"""The annotation service on real Kafka: label requests become tasks, answers become exactly one Label per window.

The service runs as it does in production (uvicorn, its consumer and upkeep threads) against the
session's broker, redis-server and a SQLite file; annotators work through the HTTP API.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import httpx
from confluent_kafka import Consumer, TopicPartition

from michi.bus.catalog import DEAD_LETTERS, LABEL_REQUESTS, LABELS
from michi.bus.headers import build_headers
from michi.bus.producer import EventProducer
from michi.bus.reader import TopicReader, end_offsets
from michi.contracts.v1 import labels_pb2, operations_pb2
from michi.infra.processes import wait_until
from services.annotation.adapters.publisher import KafkaLabelPublisher
from services.annotation.domain.roles import Role
from services.annotation.wiring import build_app

from .annotation_support import make_request, serving, settings_for, wire

PASSWORD = "a long enough password"


def _committed_to_end(bootstrap: str, group: str, topic: str) -> bool:
    ends = end_offsets(bootstrap, topic)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(topic, partition) for partition in ends], timeout=5)
    finally:
        consumer.close()
    return all(item.offset == ends[item.partition] for item in committed if ends[item.partition] > 0)


def test_label_requests_become_tasks_and_answers_one_label_per_window(
    tmp_path: Path, redis_url: str, kafka_bootstrap: str, topic_prefix: str, producer: EventProducer
) -> None:
    settings = settings_for(
        tmp_path, redis_url, topic_prefix=topic_prefix, kafka_bootstrap=kafka_bootstrap, annotation_consume=True
    )
    wiring = wire(settings, publisher=KafkaLabelPublisher(producer))
    for name in ("ann-1", "ann-2"):
        wiring.accounts.add(name, Role.ANNOTATOR, actor="test", password=PASSWORD)
    requests_topic = LABEL_REQUESTS.name(topic_prefix)
    windows = [f"window-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    requests = [make_request(window_id, priority=10 * index) for index, window_id in enumerate(windows)]
    for request in requests:
        producer.publish(LABEL_REQUESTS, request.lineage.window_id, request)
    # The same event again, and a second request for the first window: neither adds a task.
    producer.publish(LABEL_REQUESTS, windows[0], requests[0])
    producer.publish(
        LABEL_REQUESTS, windows[0], make_request(windows[0], reason=labels_pb2.LABEL_REASON_RANDOM_QA, priority=99)
    )
    # Bytes that are no LabelRequest, and a request without a window: dead letters.
    producer.publish_raw(requests_topic, b"garbage", b"\x08\x96\x01not-protobuf", build_headers(LABEL_REQUESTS.schema))
    producer.publish(LABEL_REQUESTS, "", make_request("", event_id="no-window"))
    producer.flush()

    app = build_app(settings, producer=producer, wiring=wiring)
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        tokens = {
            name: client.post("/v1/sessions", json={"name": name, "password": PASSWORD}).json()["token"]
            for name in ("ann-1", "ann-2")
        }

        def waiting() -> int:
            answer = client.get("/v1/queues", headers={"Authorization": f"Bearer {tokens['ann-1']}"}).json()
            return sum(queue["waiting"] for queue in answer)

        assert wait_until(lambda: waiting() == 5, 60, 0.1), "five tasks from six requests"
        assert wait_until(
            lambda: _committed_to_end(kafka_bootstrap, f"{topic_prefix}annotation", requests_topic), 30, 0.1
        ), "commit"
        assert client.get("/readyz").json()["ready"]

        for name, token in tokens.items():
            headers = {"Authorization": f"Bearer {token}"}
            while (task := client.post("/v1/queues/uncertain/leases", headers=headers)).status_code == 200:
                body = task.json()
                vote = client.post(
                    f"/v1/tasks/{body['task_id']}/votes",
                    json={"lease_id": body["lease_id"], "answer": "harsh-braking"},
                    headers=headers,
                )
                assert vote.json()["recorded_as"] == "counted", name

        with TopicReader(kafka_bootstrap, LABELS, topic_prefix) as reader:
            records = reader.read_until(lambda got: len(got) >= 5, 30)
        labels = [record.message for record in records]
        assert isinstance(labels[0], labels_pb2.Label)
        assert Counter(record.key for record in records) == Counter(windows)
        by_window = {label.lineage.window_id: label for label in labels if isinstance(label, labels_pb2.Label)}
        for request in requests:
            label = by_window[request.lineage.window_id]
            assert label.lineage == request.lineage and label.window == request.window
            assert label.detection_event_id == request.detection_event_id
            assert sorted(label.annotators) == ["ann-1", "ann-2"]
        # Each label says why its window was asked for: the first window also for random QA.
        assert {label.lineage.window_id: list(label.request_reasons) for label in by_window.values()} == {
            window_id: [labels_pb2.LABEL_REASON_UNCERTAIN] + ([labels_pb2.LABEL_REASON_RANDOM_QA] if index == 0 else [])
            for index, window_id in enumerate(windows)
        }

        # A redelivery of every request after the labels changes nothing, nor does a new reason for a labeled window.
        for request in requests:
            producer.publish(LABEL_REQUESTS, request.lineage.window_id, request)
        producer.publish(
            LABEL_REQUESTS, windows[1], make_request(windows[1], reason=labels_pb2.LABEL_REASON_DRIFT_SAMPLE)
        )
        producer.flush()
        assert wait_until(
            lambda: _committed_to_end(kafka_bootstrap, f"{topic_prefix}annotation", requests_topic), 30, 0.1
        ), "commit"
        assert waiting() == 0
        wiring.service.upkeep()
        with TopicReader(kafka_bootstrap, LABELS, topic_prefix) as reader:
            assert len(reader.read_to_end(timeout=10)) == 5

    with TopicReader(kafka_bootstrap, DEAD_LETTERS, topic_prefix) as reader:
        letters = reader.read_until(lambda got: len(got) >= 2, 20)
    reasons = sorted(letter.message.reason for letter in letters)  # type: ignore[attr-defined]
    assert reasons == ["decode-error", "invalid-request"]
    assert all(isinstance(letter.message, operations_pb2.DeadLetter) for letter in letters)
    assert {letter.message.service for letter in letters} == {"annotation"}  # type: ignore[attr-defined]
