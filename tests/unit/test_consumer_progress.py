"""The plain consumers' readiness includes the group's progress (annotation, trainer, warehouse).

Each service's `/readyz` holds a `ConsumerProgress` of its own group and topics; here its clock and
the positions it reads are the test's, so a stall is seen without waiting or a broker.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from redis import Redis

from michi.bus.catalog import ALERTS, DETECTIONS, LABEL_REQUESTS, LABELS, PREDICTIONS
from michi.bus.stalls import NOT_READY_AFTER_S, Partition, Position
from michi.readiness import ConsumerProgress, serve_operations
from services.annotation.settings import AnnotationSettings
from services.annotation.wiring import build_app, build_wiring
from services.trainer.adapters.metrics import TrainerMetrics
from services.trainer.entrypoints.consumer import EventConsumer
from services.trainer.handlers import EventHandler
from services.warehouse.metrics import WarehouseMetrics
from services.warehouse.settings import WarehouseSettings
from services.warehouse.wiring import progress_check

PREFIX = "unit-progress."


class SubscribingConsumer:
    """What the trainer's loop needs of a consumer before it polls: a subscription."""

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.topics = topics

    def consume(self, count: int, timeout: float) -> list[Any]:
        return []


class Positions:
    """A hand-moved clock and the (committed, end) offsets a `ConsumerProgress` reads."""

    def __init__(self, partitions: dict[Partition, Position]) -> None:
        self.now = 0.0
        self.partitions = partitions

    def clock(self) -> float:
        return self.now

    def read(self) -> dict[Partition, Position]:
        return dict(self.partitions)


def test_annotation_readiness_includes_its_groups_progress_when_it_consumes(tmp_path: Path) -> None:
    settings = AnnotationSettings(
        home=tmp_path / ".michi",
        redis_url="redis://127.0.0.1:1/0",
        database_url=f"sqlite:///{tmp_path / 'annotation.db'}",
        blob_url=f"file://{tmp_path / 'blobs'}",
        kafka_bootstrap="127.0.0.1:1",
        topic_prefix=PREFIX,
        annotation_consume=True,
    )
    redis = Redis.from_url(settings.resolved_redis_url())  # never connected: nothing here runs a check
    wiring = build_wiring(settings, publisher=object(), redis=redis, password_work=2**4)  # type: ignore[arg-type]
    try:
        consuming = build_app(settings, producer=object(), wiring=wiring)  # type: ignore[arg-type]
        progress = consuming.state.readiness_checks["progress"]
        assert isinstance(progress, ConsumerProgress)
        assert (progress.group_id, progress.topics) == (f"{PREFIX}annotation", (LABEL_REQUESTS.name(PREFIX),))
        assert progress.not_ready_after_s == NOT_READY_AFTER_S

        not_consuming = build_app(
            settings.model_copy(update={"annotation_consume": False}),
            producer=object(),  # type: ignore[arg-type]
            wiring=wiring,
        )
        assert "progress" not in not_consuming.state.readiness_checks
    finally:
        wiring.close()
        redis.close()


def test_trainer_consumer_is_ready_only_while_its_group_progresses() -> None:
    def event_consumer(progress: ConsumerProgress | None) -> EventConsumer:
        return EventConsumer(
            consumer=SubscribingConsumer(),  # type: ignore[arg-type]
            producer=object(),  # type: ignore[arg-type]
            handler=EventHandler(store=object(), metrics=TrainerMetrics(), wake=lambda: None),  # type: ignore[arg-type]
            prefix=PREFIX,
            progress=progress,
        )

    positions = Positions({(LABELS.name(PREFIX), 0): (5, 9)})
    judged = event_consumer(
        ConsumerProgress("unused:9092", "group", ["labels"], clock=positions.clock, read=positions.read)
    )
    assert judged.readiness() == "the consumer has not polled in the last 30 s"
    judged.poll_once(0)
    assert judged.readiness() == "the consumer holds no partitions"
    judged._on_assign(None, [])
    assert judged.readiness() is None and judged.ready()
    positions.now = 29.0
    judged.poll_once(0)
    assert judged.ready()
    positions.now = 30.0
    assert judged.readiness() == (
        "error: ConsumerStalled: no progress for 30 s on 1 partition(s) with records waiting "
        f"({LABELS.name(PREFIX)}[0]: committed 5, end 9)"
    )
    assert not judged.ready()
    positions.partitions[(LABELS.name(PREFIX), 0)] = (7, 9)  # a commit
    assert judged.ready()

    # Without a progress check: polling and partitions only.
    unjudged = event_consumer(None)
    unjudged.poll_once(0)
    unjudged._on_assign(None, [])
    assert unjudged.readiness() is None


def test_the_trainer_service_is_built_with_a_progress_check_on_its_group(tmp_path: Path) -> None:
    from services.trainer.settings import TrainerSettings
    from services.trainer.wiring import build_service

    home = tmp_path / ".michi"
    settings = TrainerSettings(
        home=home,
        database_url=f"sqlite:///{home / 'michi.db'}",
        blob_url=f"file://{home / 'blobs'}",
        kafka_bootstrap="127.0.0.1:1",
        topic_prefix=PREFIX,
    )
    service = build_service(settings, producer=None)  # type: ignore[arg-type]
    try:
        progress = service.consumer.progress
        assert progress is not None
        assert (progress.group_id, progress.topics) == (f"{PREFIX}trainer", (LABELS.name(PREFIX), ALERTS.name(PREFIX)))
        assert progress.not_ready_after_s == NOT_READY_AFTER_S
    finally:
        service.close()
        service.consumer.consumer.close()  # never started: nothing else closes its Kafka client


def test_warehouse_readiness_includes_its_groups_progress_beyond_the_flush_wait(tmp_path: Path) -> None:
    settings = WarehouseSettings(
        home=tmp_path / ".michi", kafka_bootstrap="127.0.0.1:1", topic_prefix=PREFIX, warehouse_flush_s=10.0
    )
    check = progress_check(settings)
    assert (check.group_id, check.topics) == (f"{PREFIX}warehouse", (PREDICTIONS.name(PREFIX), DETECTIONS.name(PREFIX)))
    # Rows wait in a buffer up to the flush age before their offsets move.
    assert check.not_ready_after_s == NOT_READY_AFTER_S + 10.0

    positions = Positions({(PREDICTIONS.name(PREFIX), 1): (2, 6)})
    progress = ConsumerProgress(
        "unused:9092", "group", ["predictions"], not_ready_after_s=40.0, clock=positions.clock, read=positions.read
    )
    server = serve_operations(
        "warehouse",
        0,
        alive=lambda: True,
        registry=WarehouseMetrics().registry,
        ready={"consumer": lambda: None},
        checks={"progress": progress},
    )
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert readyz(base) == (
            200,
            {"status": "ready", "service": "warehouse", "ready": True, "checks": {"consumer": "ok", "progress": "ok"}},
        )
        positions.now = 40.0
        status, body = readyz(base)
        assert status == 503 and body["ready"] is False and body["checks"]["consumer"] == "ok"
        assert body["checks"]["progress"] == (
            "error: ConsumerStalled: no progress for 40 s on 1 partition(s) with records waiting "
            f"({PREDICTIONS.name(PREFIX)}[1]: committed 2, end 6)"
        )
        positions.partitions[(PREDICTIONS.name(PREFIX), 1)] = (6, 6)  # written and committed
        assert readyz(base)[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def readyz(base: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())
