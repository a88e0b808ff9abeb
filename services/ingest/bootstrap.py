"""Wiring of the ingest service: the only place that creates its adapters.

`build_app(settings)` returns the FastAPI app (tests pass their own producer, Redis
client or registry); `run()` serves it with uvicorn until SIGINT/SIGTERM:

    python -m services.ingest          # or: michi run ingest
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from confluent_kafka.admin import AdminClient
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from michi.bus.catalog import UPLOADS
from michi.bus.producer import EventProducer
from michi.settings import load_settings
from michi.telemetry import configure_logging, configure_tracing
from services.ingest.adapters.claims import UploadClaims
from services.ingest.adapters.devices import DeviceRegistry
from services.ingest.adapters.publisher import KafkaUploadPublisher
from services.ingest.domain.validation import UploadLimits
from services.ingest.entrypoints.http import IngestEndpoints, create_http_app
from services.ingest.entrypoints.metrics import IngestMetrics
from services.ingest.handlers import UploadHandler
from services.ingest.settings import IngestSettings

SERVICE = "ingest"
logger = logging.getLogger(__name__)


def device_registry(settings: IngestSettings) -> DeviceRegistry:
    """The device registry on `settings.resolved_database_url()`, its table created if missing (CLI entry)."""
    url = settings.resolved_database_url()
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    registry = DeviceRegistry.from_url(
        url, settings.token_secret.get_secret_value().encode(), cache_ttl_s=settings.ingest_token_cache_ttl_s
    )
    registry.create_tables()
    return registry


def upload_limits(settings: IngestSettings) -> UploadLimits:
    return UploadLimits(
        sample_rates_hz=settings.ingest_sample_rates_hz,
        max_samples=settings.ingest_max_samples,
        max_gps_fixes=settings.ingest_max_gps_fixes,
        max_future_skew_s=settings.ingest_max_future_skew_s,
        max_age_s=settings.ingest_max_age_s,
    )


def upload_producer(settings: IngestSettings) -> EventProducer:
    # The producer gives up on a message when ingest gives up waiting, so a 503 leaves nothing queued.
    timeout_ms = int(settings.ingest_publish_timeout_s * 1000)
    return EventProducer(
        settings.resolved_kafka_bootstrap(),
        settings.topic_prefix,
        client_id=f"michi-{SERVICE}",
        extra={"message.timeout.ms": timeout_ms, "request.timeout.ms": min(timeout_ms, 30_000)},
    )


def build_app(
    settings: IngestSettings,
    *,
    producer: EventProducer | None = None,
    redis: Redis | None = None,
    registry: DeviceRegistry | None = None,
) -> FastAPI:
    """The ingest app. Adapters passed in stay the caller's to close; those created here close on shutdown."""
    owned_producer = producer is None
    owned_redis = redis is None
    owned_registry = registry is None
    producer = producer or upload_producer(settings)
    redis = redis or Redis.from_url(settings.resolved_redis_url())
    registry = registry or device_registry(settings)
    uploads_topic = UPLOADS.name(settings.topic_prefix)

    claims = UploadClaims(
        redis,
        key_prefix=settings.topic_prefix,
        accepted_ttl_s=settings.ingest_idempotency_ttl_s,
        pending_ttl_s=max(30, int(settings.ingest_publish_timeout_s * 3)),
    )
    handler = UploadHandler(
        claims=claims,
        publisher=KafkaUploadPublisher(producer, settings.ingest_publish_timeout_s),
        limits=upload_limits(settings),
        pending_wait_s=settings.ingest_pending_wait_s,
        max_missing_sequences=settings.ingest_max_missing_sequences,
    )

    async def kafka_ready() -> None:
        def check() -> None:
            # A client per check, gone when the check ends: an idle one would reconnect forever.
            admin = AdminClient({"bootstrap.servers": settings.resolved_kafka_bootstrap()})
            metadata = admin.list_topics(topic=uploads_topic, timeout=3)
            topic = metadata.topics.get(uploads_topic)
            if topic is None or topic.error is not None:
                raise RuntimeError(f"topic {uploads_topic} unavailable")

        await asyncio.to_thread(check)

    async def database_ready() -> None:
        await asyncio.to_thread(registry.ping)

    endpoints = IngestEndpoints(
        handler=handler,
        registry=registry,
        metrics=IngestMetrics(),
        max_body_bytes=settings.ingest_max_body_bytes,
        readiness_checks={"kafka": kafka_ready, "redis": claims.ping, "database": database_ready},
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned_producer:
            await asyncio.to_thread(producer.close, settings.ingest_publish_timeout_s)
        if owned_redis:
            await redis.aclose()
        if owned_registry:
            registry.close()

    return create_http_app(endpoints, lifespan=lifespan)


def run() -> None:
    """Serve ingest until SIGINT/SIGTERM, settings from the `MICHI_*` environment."""
    settings = load_settings(IngestSettings)
    configure_logging(SERVICE, settings.log_level)
    configure_tracing(SERVICE, settings.home)
    app = build_app(settings)
    logger.info("ingest listening", extra={"host": settings.ingest_host, "port": settings.ingest_http_port})
    uvicorn.run(
        app,
        host=settings.ingest_host,
        port=settings.ingest_http_port,
        log_config=None,
        access_log=False,
        server_header=False,
    )
