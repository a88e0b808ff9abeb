"""Wiring of the annotation service: the only place that creates its adapters.

`build_wiring(settings)` makes the service objects over SQL, Redis, Kafka and the blob store (tests
pass their own Redis client, store or publisher); `build_app(settings)` returns the FastAPI app whose
lifespan creates the tables, rebuilds Redis from SQL when the queues are missing, and runs the
background upkeep and the label-request consumer (its `/readyz` includes the consumer's progress);
`run()` serves it until SIGINT/SIGTERM:

    python -m services.annotation          # or: michi run annotation
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from fastapi import FastAPI
from redis import BlockingConnectionPool, Redis

from michi.blobs import BlobStore
from michi.bus.catalog import LABEL_REQUESTS, LABELS
from michi.bus.consumers import group_consumer_config
from michi.bus.producer import EventProducer
from michi.migrations import with_database_folder
from michi.readiness import ConsumerProgress
from michi.runtime import tune_garbage_collection
from michi.settings import load_settings
from michi.telemetry import configure_logging, configure_tracing
from services.annotation.adapters.frames import EvidenceFrames
from services.annotation.adapters.publisher import KafkaLabelPublisher
from services.annotation.adapters.queues import RedisQueues
from services.annotation.adapters.store import AnnotationStore
from services.annotation.adapters.windows import ArchiveWindowSource
from services.annotation.domain.consensus import ConsensusPolicy
from services.annotation.domain.quality import QualityPolicy
from services.annotation.entrypoints.consumer import LabelRequestConsumer
from services.annotation.entrypoints.http import AnnotationEndpoints, create_http_app
from services.annotation.handlers import SERVICE, Accounts, AnnotationService, LabelPublisher, ServiceConfig
from services.annotation.metrics import AnnotationMetrics
from services.annotation.settings import AnnotationSettings

logger = logging.getLogger(__name__)

REDIS_CONNECTIONS = 64
REDIS_POOL_WAIT_S = 5.0


def service_config(settings: AnnotationSettings) -> ServiceConfig:
    return ServiceConfig(
        consensus=ConsensusPolicy(
            votes_required=settings.annotation_votes_required,
            max_votes=settings.annotation_max_votes,
            min_share=settings.annotation_min_share,
            min_support_weight=settings.annotation_min_support_weight,
        ),
        quality=QualityPolicy(
            window=settings.annotation_gold_window,
            min_answers=settings.annotation_gold_min_answers,
            threshold=settings.annotation_accuracy_threshold,
            gold_rate=settings.annotation_gold_rate,
            new_annotator_gold_rate=settings.annotation_new_annotator_gold_rate,
            low_accuracy_gold_rate=settings.annotation_low_accuracy_gold_rate,
        ),
        lease_s=settings.annotation_lease_s,
        lease_scan=settings.annotation_lease_scan,
        max_skips=settings.annotation_max_skips,
        rate_per_s=settings.annotation_rate_per_s,
        session_ttl_s=settings.annotation_session_ttl_s,
        signin_attempts=settings.annotation_signin_attempts,
        signin_window_s=settings.annotation_signin_window_s,
        context_s=settings.annotation_context_s,
        max_points=settings.annotation_max_points,
    )


def annotation_store(settings: AnnotationSettings) -> AnnotationStore:
    """The store on `settings.resolved_database_url()`, its tables created if missing (CLI entry too)."""
    store = AnnotationStore.from_url(with_database_folder(settings.resolved_database_url()))
    store.create_tables()
    return store


def redis_client(settings: AnnotationSettings) -> Redis:
    # A pool that waits for a free connection instead of failing past its size (the API runs in threads).
    pool = BlockingConnectionPool.from_url(
        settings.resolved_redis_url(), max_connections=REDIS_CONNECTIONS, timeout=REDIS_POOL_WAIT_S
    )
    return Redis(connection_pool=pool)


@dataclass
class Wiring:
    """Everything the doors share; `close()` releases what this wiring created."""

    settings: AnnotationSettings
    store: AnnotationStore
    redis: Redis
    queues: RedisQueues
    service: AnnotationService
    accounts: Accounts
    windows: ArchiveWindowSource
    metrics: AnnotationMetrics
    owned: list[Callable[[], None]] = field(default_factory=list)
    frames: EvidenceFrames | None = None

    def close(self) -> None:
        for release in reversed(self.owned):
            release()
        self.owned.clear()


def build_wiring(
    settings: AnnotationSettings,
    *,
    publisher: LabelPublisher,
    redis: Redis | None = None,
    store: AnnotationStore | None = None,
    clock: Callable[[], float] = time.time,
    chance: Callable[[], float] | None = None,
    password_work: int = 2**14,
) -> Wiring:
    """The service objects. Adapters passed in stay the caller's to close; those created here close with `close()`."""
    owned: list[Callable[[], None]] = []
    if store is None:
        store = annotation_store(settings)
        owned.append(store.close)
    if redis is None:
        redis = redis_client(settings)
        owned.append(redis.close)
    queues = RedisQueues(redis, settings.topic_prefix, lease_record_ttl_s=settings.annotation_late_window_s)
    config = service_config(settings)
    metrics = AnnotationMetrics()
    extra: dict[str, Any] = {"chance": chance} if chance is not None else {}
    service = AnnotationService(
        store=store, queues=queues, publisher=publisher, metrics=metrics, config=config, clock=clock, **extra
    )
    accounts = Accounts(store, queues, config, clock=clock, password_work=password_work)
    blobs = BlobStore(settings.resolved_blob_url())
    windows = ArchiveWindowSource(blobs)
    frames = EvidenceFrames(
        blobs,
        max_media_bytes=settings.annotation_max_frame_media_bytes,
        max_side=settings.annotation_frame_max_side,
        cache_bytes=settings.annotation_frames_cache_bytes,
    )
    return Wiring(settings, store, redis, queues, service, accounts, windows, metrics, owned, frames)


def label_producer(settings: AnnotationSettings) -> EventProducer:
    return EventProducer(
        settings.kafka_connection(), settings.topic_prefix, client_id=f"{settings.topic_prefix}{SERVICE}"
    )


def _background(name: str, target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, name=f"annotation-{name}", daemon=True)
    thread.start()
    return thread


def build_app(
    settings: AnnotationSettings,
    *,
    producer: EventProducer | None = None,
    redis: Redis | None = None,
    store: AnnotationStore | None = None,
    wiring: Wiring | None = None,
) -> FastAPI:
    """The annotation app (page, API, upkeep, and the consumer when `annotation_consume`)."""
    owned_producer = producer is None and wiring is None
    producer = producer or (None if wiring is not None else label_producer(settings))
    if wiring is None:
        assert producer is not None
        wiring = build_wiring(settings, publisher=KafkaLabelPublisher(producer), redis=redis, store=store)
    built = wiring
    stop = threading.Event()
    threads: list[threading.Thread] = []
    labels_topic = LABELS.name(settings.topic_prefix)

    def upkeep_loop() -> None:
        while not stop.wait(settings.annotation_upkeep_interval_s):
            try:
                built.service.upkeep()
            except Exception:
                logger.warning("upkeep failed; retrying", exc_info=True)

    async def redis_ready() -> None:
        await asyncio.to_thread(built.queues.ping)

    async def database_ready() -> None:
        await asyncio.to_thread(built.store.ping)

    async def kafka_ready() -> None:
        def check() -> None:
            admin = AdminClient(settings.kafka_connection().confluent_config())
            metadata = admin.list_topics(topic=labels_topic, timeout=3)
            topic = metadata.topics.get(labels_topic)
            if topic is None or topic.error is not None:
                raise RuntimeError(f"topic {labels_topic} unavailable")

        await asyncio.to_thread(check)

    async def consumer_ready() -> None:
        if not any(thread.name == "annotation-consumer" and thread.is_alive() for thread in threads):
            raise RuntimeError("the label-request consumer is not running")

    checks: dict[str, Callable[[], Awaitable[None]]] = {"redis": redis_ready, "database": database_ready}
    progress: ConsumerProgress | None = None
    if producer is not None:
        checks["kafka"] = kafka_ready
        if settings.annotation_consume:
            checks["consumer"] = consumer_ready
            # Polling is not progress: records waiting while the group's offsets stay put answer 503.
            progress = ConsumerProgress(
                settings.kafka_connection(),
                f"{settings.topic_prefix}{SERVICE}",
                [LABEL_REQUESTS.name(settings.topic_prefix)],
            )
            checks["progress"] = progress

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not built.queues.built():
            await asyncio.to_thread(built.service.rebuild, "startup")
        threads.append(_background("upkeep", upkeep_loop))
        if settings.annotation_consume and producer is not None:
            consumer = LabelRequestConsumer(
                consumer=Consumer(group_consumer_config(settings.kafka_connection(), settings.topic_prefix, SERVICE)),
                producer=producer,
                service=built.service,
                topic=LABEL_REQUESTS.name(settings.topic_prefix),
                windows=built.windows,
                batch_size=settings.annotation_consumer_batch,
            )
            app.state.consumer = consumer
            threads.append(_background("consumer", lambda: consumer.run(stop)))
        yield
        stop.set()
        for thread in threads:
            await asyncio.to_thread(thread.join, 10)
        if owned_producer and producer is not None:
            await asyncio.to_thread(producer.close, 10)
        if progress is not None:
            await asyncio.to_thread(progress.close)
        built.close()

    app = create_http_app(
        AnnotationEndpoints(
            service=built.service,
            accounts=built.accounts,
            windows=built.windows,
            metrics=built.metrics,
            readiness_checks=checks,
            max_body_bytes=settings.annotation_max_body_bytes,
            max_media_bytes=settings.annotation_max_media_bytes,
            frames=built.frames,
        ),
        lifespan=lifespan,
    )
    app.state.wiring = built
    app.state.readiness_checks = checks
    return app


def run() -> None:
    """Serve the annotation page, API and consumer until SIGINT/SIGTERM, settings from `MICHI_*`."""
    settings = load_settings(AnnotationSettings)
    configure_logging(SERVICE, settings.log_level)
    configure_tracing(SERVICE, settings.home)
    app = build_app(settings)
    tune_garbage_collection()
    logger.info("annotation listening", extra={"host": settings.annotation_host, "port": settings.annotation_port})
    uvicorn.run(
        app,
        host=settings.annotation_host,
        port=settings.annotation_port,
        log_config=None,
        access_log=False,
        server_header=False,
    )
