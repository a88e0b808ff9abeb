"""`/readyz` of the plain consumers tells the truth at its real timings: 503 while records wait without progress.

A consumer that polls but never commits used to stay ready. Here the annotation app (uvicorn, its real
consumer thread) cannot record label requests (the database refuses), and the warehouse sink runs as
`python -m services.warehouse` while its blob store refuses every file: records wait, the group's
offsets stay put, and `/readyz` must answer 503 naming the stalled partition within 60 s (the checks
judge after 30 s, the sink after 30 s plus its flush age), then 200 again once the writes succeed and
the offsets move, with every record handled.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from michi.bus.catalog import LABEL_REQUESTS, PREDICTIONS
from michi.bus.producer import EventProducer
from michi.contracts.v1 import labels_pb2
from michi.infra.processes import free_port
from michi.warehouse import table_counts
from services.annotation.adapters.publisher import KafkaLabelPublisher
from services.annotation.adapters.store import AnnotationStore, IntakeResult
from services.annotation.wiring import build_app, build_wiring

from .annotation_support import TEST_PASSWORD_WORK, make_request, serving, settings_for
from .test_consumer_progress import committed_to_end, publish_predictions

READY_WITHIN_S = 60.0
STALLED = "error: ConsumerStalled: no progress for "


class RefusingStore(AnnotationStore):
    """The database refuses to record label requests while `refusing` is set (an outage the consumer retries)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.refusing = threading.Event()

    def record_request(
        self, request: labels_pb2.LabelRequest, *, now: datetime, location: tuple[float, float] | None = None
    ) -> IntakeResult:
        if self.refusing.is_set():
            raise OperationalError("INSERT INTO annotation_request", {}, Exception("database is locked"))
        return super().record_request(request, now=now, location=location)


def readyz(client: httpx.Client) -> tuple[int, dict[str, Any]]:
    try:
        answer = client.get("/readyz", timeout=10)
    except httpx.HTTPError:  # not listening yet
        return 0, {}
    return answer.status_code, answer.json()


def stalled(status: int, body: dict[str, Any]) -> bool:
    return status == 503 and str(body.get("checks", {}).get("progress", "")).startswith(STALLED)


def ready(status: int, body: dict[str, Any]) -> bool:
    return status == 200


def wait_for_answer(
    client: httpx.Client, wanted: Callable[[int, dict[str, Any]], bool], timeout: float
) -> tuple[float, dict[str, Any]]:
    """Ask `/readyz` every second until its answer is `wanted`: how long that took, and the body."""
    started = time.monotonic()
    seen: list[tuple[int, dict[str, Any]]] = []
    while time.monotonic() - started < timeout:
        seen.append(readyz(client))
        if wanted(*seen[-1]):
            return time.monotonic() - started, seen[-1][1]
        time.sleep(1.0)
    raise AssertionError(f"/readyz did not answer as wanted within {timeout:.0f} s; last answers {seen[-3:]}")


def test_annotation_is_not_ready_while_label_requests_wait_without_progress(
    tmp_path: Path, redis_url: str, kafka_bootstrap: str, topic_prefix: str, producer: EventProducer
) -> None:
    settings = settings_for(
        tmp_path, redis_url, topic_prefix=topic_prefix, kafka_bootstrap=kafka_bootstrap, annotation_consume=True
    )
    store = RefusingStore.from_url(settings.resolved_database_url())
    assert isinstance(store, RefusingStore)
    store.create_tables()
    store.refusing.set()
    wiring = build_wiring(
        settings, publisher=KafkaLabelPublisher(producer), store=store, password_work=TEST_PASSWORD_WORK
    )
    requests_topic = LABEL_REQUESTS.name(topic_prefix)
    for _ in range(3):
        request = make_request(f"window-{uuid.uuid4().hex[:8]}")
        producer.publish(LABEL_REQUESTS, request.lineage.window_id, request).result(30)

    app = build_app(settings, producer=producer, wiring=wiring)
    try:
        with serving(app) as url, httpx.Client(base_url=url) as client:
            took, body = wait_for_answer(client, stalled, READY_WITHIN_S)
            assert took <= READY_WITHIN_S
            assert f"records waiting ({requests_topic}[" in body["checks"]["progress"]
            # Everything else answers: only the progress says no.
            assert {name for name, outcome in body["checks"].items() if outcome != "ok"} == {"progress"}

            store.refusing.clear()  # the database is back: the consumer's retry records the requests
            _, body = wait_for_answer(client, ready, 30)
            assert body["checks"]["progress"] == "ok"
            assert committed_to_end(kafka_bootstrap, f"{topic_prefix}annotation", requests_topic)
            assert sum(store.status_counts().values()) == 3
    finally:
        wiring.close()
        store.close()


def test_the_warehouse_sink_process_is_not_ready_while_its_files_cannot_be_written(
    tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, producer: EventProducer
) -> None:
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    obstruction = blobs / "warehouse"  # a file where the sink's folder goes: every write fails
    obstruction.write_bytes(b"not a folder")
    published: dict[tuple[int, int], str] = {}
    publish_predictions(producer, published, range(8))
    port = free_port()
    environment = {
        **os.environ,
        "MICHI_HOME": str(tmp_path / ".michi"),
        "MICHI_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "MICHI_TOPIC_PREFIX": topic_prefix,
        "MICHI_BLOB_URL": f"file://{blobs}",
        "MICHI_WAREHOUSE_PORT": str(port),
        "MICHI_WAREHOUSE_FLUSH_S": "0.3",
    }
    log = tmp_path / "warehouse.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.warehouse"], env=environment, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            took, body = wait_for_answer(client, stalled, READY_WITHIN_S)
            assert took <= READY_WITHIN_S
            assert f"records waiting ({PREDICTIONS.name(topic_prefix)}[" in body["checks"]["progress"]
            assert body["checks"]["consumer"] == "ok"  # it polls and holds its partitions all along

            obstruction.unlink()  # the blob store takes files again
            _, body = wait_for_answer(client, ready, 30)
            assert body == {
                "status": "ready",
                "service": "warehouse",
                "ready": True,
                "checks": {"consumer": "ok", "progress": "ok"},
            }
        assert committed_to_end(kafka_bootstrap, f"{topic_prefix}warehouse", PREDICTIONS.name(topic_prefix))
        assert table_counts(f"file://{blobs}")["predictions"] == len(published)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
