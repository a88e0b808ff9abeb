"""Wiring of the ingest service: the only place that creates its adapters.

`build_app(settings)` returns the FastAPI app (tests pass their own producer, Redis
client or registry), `build_grpc_server(settings, app.state.endpoints)` the gRPC door around
the same handler; `run()` serves both in one event loop until SIGINT/SIGTERM:

    python -m services.ingest          # or: michi run ingest

With `MICHI_INGEST_WORKERS=N` (N > 1) `run()` supervises N worker processes instead, all on the same
ports: each worker listens on the HTTP and the gRPC port with SO_REUSEPORT, so the kernel spreads new
connections over the workers (one shared listening socket let the first worker to wake accept nearly
every connection of a burst). SIGINT/SIGTERM is passed on to every worker; when one
worker exits, the others are stopped too. The workers keep their Prometheus metrics in files of a directory made
for the run (`<home>/metrics/ingest-<host>-<pid>`, removed when the workers have stopped), so `/metrics` answers
for all of them, whichever worker serves it (`michi.telemetry.metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
import uvloop
from confluent_kafka.admin import AdminClient
from fastapi import FastAPI
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy.engine import make_url

from michi.batching import PipelinedScripts
from michi.blobs import BlobStore
from michi.bus.catalog import UPLOADS
from michi.bus.producer import EventProducer
from michi.runtime import tune_garbage_collection
from michi.settings import load_settings
from michi.telemetry import configure_logging, configure_tracing
from michi.telemetry.metrics import MULTIPROCESS_VARIABLE, prepare_workers_directory
from services.ingest.adapters.archive import BlobUploadArchive
from services.ingest.adapters.claims import UploadClaims
from services.ingest.adapters.devices import DeviceRegistry
from services.ingest.adapters.publisher import KafkaMediaPublisher, KafkaUploadPublisher
from services.ingest.adapters.rate_limits import NonceRegistry, RateLimiter
from services.ingest.domain.validation import UploadLimits
from services.ingest.entrypoints.grpc import IngestGrpcServer, IngestService
from services.ingest.entrypoints.http import IngestEndpoints, create_http_app
from services.ingest.entrypoints.http_protocol import json_error_protocol
from services.ingest.entrypoints.media import MediaEndpoints, create_media_router
from services.ingest.entrypoints.metrics import IngestMetrics
from services.ingest.handlers import UploadHandler
from services.ingest.settings import IngestSettings

SERVICE = "ingest"
# Set by the supervisor for its workers ("1"): listen with SO_REUSEPORT on the ports it reserved.
WORKER_VARIABLE = "MICHI_INGEST_WORKER"
# Redis connections per ingest process, and how long a request waits for one before Redis counts as down.
REDIS_CONNECTIONS = 64
REDIS_POOL_WAIT_S = 5.0
REDIS_RETRIES = 1
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


def redis_client(settings: IngestSettings) -> Redis:
    """A Redis client whose pool waits for a free connection instead of failing.

    redis-py's default pool raises "Too many connections" past 100 at once: with many gRPC streams,
    each with a window of uploads in flight, that refused uploads as `rate-limiter-unavailable`.
    A command (or a batch of scripts) that meets a dropped connection is sent again once on a new
    one, so a Redis restart or failover does not refuse the uploads that were using the old ones.
    """
    pool = BlockingConnectionPool.from_url(
        settings.resolved_redis_url(),
        max_connections=REDIS_CONNECTIONS,
        timeout=REDIS_POOL_WAIT_S,
        retry=Retry(NoBackoff(), REDIS_RETRIES),
    )
    return Redis.from_pool(pool)


def upload_limits(settings: IngestSettings) -> UploadLimits:
    return UploadLimits(
        min_sample_rate_hz=settings.ingest_min_sample_rate_hz,
        max_sample_rate_hz=settings.ingest_max_sample_rate_hz,
        sample_rates_hz=settings.ingest_sample_rates_hz,
        max_upload_duration_s=settings.ingest_max_upload_duration_s,
        max_samples=settings.resolved_max_samples(),
        max_gps_fixes=settings.ingest_max_gps_fixes,
        max_future_skew_s=settings.ingest_max_future_skew_s,
        max_age_s=settings.ingest_max_age_s,
        max_sequence=settings.ingest_max_sequence,
    )


def rate_limiter(settings: IngestSettings, redis: Redis, scripts: PipelinedScripts | None = None) -> RateLimiter:
    """Per-device and global upload rate limits (shared by the HTTP and gRPC doors)."""
    return RateLimiter(
        redis,
        scripts=scripts,
        key_prefix=settings.topic_prefix,
        device_rate_per_s=settings.ingest_device_rate_per_s,
        device_burst=settings.ingest_device_burst,
        global_rate_per_s=settings.ingest_global_rate_per_s,
    )


def nonce_registry(settings: IngestSettings, redis: Redis) -> NonceRegistry:
    # Twice the window: a nonce must outlive every timestamp that could still be accepted with it.
    return NonceRegistry(redis, key_prefix=settings.topic_prefix, ttl_s=2 * settings.ingest_signature_window_s)


def upload_producer(settings: IngestSettings) -> EventProducer:
    # The producer gives up on a message when ingest gives up waiting, so a 503 leaves nothing queued.
    timeout_ms = int(settings.ingest_publish_timeout_s * 1000)
    return EventProducer(
        settings.kafka_connection(),
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
    blobs: BlobStore | None = None,
    metrics: IngestMetrics | None = None,
) -> FastAPI:
    """The ingest app. Adapters passed in stay the caller's to close; those created here close on shutdown.

    `blobs` (media and the raw archive) defaults to the store at `settings.resolved_blob_url()`; `metrics` to
    this process's own (a worker's span all workers, `run`).
    """
    owned_producer = producer is None
    owned_redis = redis is None
    owned_registry = registry is None
    producer = producer or upload_producer(settings)
    redis = redis or redis_client(settings)
    registry = registry or device_registry(settings)
    uploads_topic = UPLOADS.name(settings.topic_prefix)
    blobs = blobs or BlobStore(settings.resolved_blob_url())
    # Every Redis script of the hot path (rate limits, claims, settlements): concurrent calls share pipelines.
    scripts = PipelinedScripts(redis)

    claims = UploadClaims(
        redis,
        scripts=scripts,
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
        max_sequence_gap=settings.ingest_max_sequence_gap,
        archive=BlobUploadArchive(blobs) if settings.ingest_archive else None,
    )

    async def kafka_ready() -> None:
        def check() -> None:
            # A client per check, gone when the check ends: an idle one would reconnect forever.
            admin = AdminClient(settings.kafka_connection().confluent_config())
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
        metrics=metrics or IngestMetrics(),
        max_body_bytes=settings.ingest_max_body_bytes,
        readiness_checks={"kafka": kafka_ready, "redis": claims.ping, "database": database_ready},
        rate_limiter=rate_limiter(settings, redis, scripts),
        nonces=nonce_registry(settings, redis),
        require_signatures=settings.ingest_require_signatures,
        signature_window_s=settings.ingest_signature_window_s,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Revocations reach this process through the registry's version, read every ttl / 2.
        watcher = asyncio.create_task(registry.watch_for_changes()) if settings.ingest_token_cache_ttl_s > 0 else None
        yield
        if watcher is not None:
            watcher.cancel()
        if owned_producer:
            await asyncio.to_thread(producer.close, settings.ingest_publish_timeout_s)
        if owned_redis:
            await redis.aclose()
        if owned_registry:
            registry.close()

    app = create_http_app(endpoints, lifespan=lifespan)
    # The gRPC door (build_grpc_server) serves the same handler, registry, limits and metrics.
    app.state.endpoints = endpoints
    app.include_router(
        create_media_router(
            MediaEndpoints(
                registry=registry,
                claims=claims,
                blobs=blobs,
                max_media_bytes=settings.ingest_max_media_bytes,
                media_types=settings.ingest_media_types,
                metrics_registry=endpoints.metrics.registry,
                publisher=KafkaMediaPublisher(producer, settings.ingest_publish_timeout_s),
            )
        )
    )
    return app


def build_grpc_server(
    settings: IngestSettings, endpoints: IngestEndpoints, *, reuse_port: bool = False
) -> IngestGrpcServer:
    """The gRPC door on `ingest_host:ingest_grpc_port` around `build_app(...).state.endpoints`.

    Create it inside the running event loop, then `await server.start()` ... `await server.stop(grace)`.
    """
    return IngestGrpcServer(
        IngestService(endpoints, stream_window=settings.ingest_grpc_stream_window),
        host=settings.ingest_host,
        port=settings.ingest_grpc_port,
        max_message_bytes=settings.ingest_grpc_max_message_bytes or settings.ingest_max_body_bytes,
        reflection=settings.ingest_grpc_reflection,
        environment=settings.env,
        reuse_port=reuse_port,
    )


class _HttpServer(uvicorn.Server):
    """uvicorn minus its signal handling: `serve()` owns SIGINT/SIGTERM and stops both doors in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    settings: IngestSettings, *, http_socket: socket.socket | None = None, metrics: IngestMetrics | None = None
) -> None:
    """HTTP (uvicorn) and gRPC (grpc.aio) in this event loop until SIGINT/SIGTERM.

    `http_socket`: this worker's SO_REUSEPORT listening socket (then gRPC binds with SO_REUSEPORT too);
    `metrics`: a worker's, on the workers' shared directory.
    """
    app = build_app(settings, metrics=metrics)
    http = _HttpServer(
        uvicorn.Config(
            app,
            host=settings.ingest_host,
            port=settings.ingest_http_port,
            log_config=None,
            access_log=False,
            server_header=False,
            # Requests the HTTP parser refuses (`Content-Length: abc`) get ingest's JSON error body too.
            http=json_error_protocol(app.state.endpoints.metrics),
        )
    )
    grpc_server = build_grpc_server(settings, app.state.endpoints, reuse_port=http_socket is not None)
    # Everything built so far lives as long as the process: out of the collector's way (michi.runtime).
    tune_garbage_collection()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stopping.set)
    await grpc_server.start()
    http_task = asyncio.create_task(http.serve(sockets=[http_socket] if http_socket is not None else None))
    logger.info(
        "ingest listening",
        extra={"host": settings.ingest_host, "port": settings.ingest_http_port, "grpc_port": grpc_server.port},
    )
    stop_task = asyncio.create_task(stopping.wait())
    await asyncio.wait({http_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    stop_task.cancel()
    # gRPC first: its in-flight uploads still need the producer that the HTTP app closes on shutdown.
    await grpc_server.stop(settings.ingest_publish_timeout_s)
    http.should_exit = True
    await http_task


def run() -> None:
    """Serve ingest (HTTP and gRPC) until SIGINT/SIGTERM, settings from the `MICHI_*` environment."""
    settings = load_settings(IngestSettings)
    configure_logging(SERVICE, settings.log_level)
    worker = os.environ.get(WORKER_VARIABLE) == "1"
    if settings.ingest_workers > 1 and not worker:
        sys.exit(supervise(settings))
    configure_tracing(SERVICE, settings.home)
    http_socket = _listening_socket(settings.ingest_host, settings.ingest_http_port) if worker else None
    # A worker's metrics go to the files the supervisor's directory collects (its variable was set before
    # prometheus_client was imported here, which is what puts prometheus_client in multiprocess mode).
    metrics = IngestMetrics(workers_directory=Path(os.environ[MULTIPROCESS_VARIABLE])) if worker else None
    # uvloop: the event loop in C (libuv); grpc.aio and uvicorn both run on it.
    uvloop.run(serve(settings, http_socket=http_socket, metrics=metrics))


def _listening_socket(host: str, port: int) -> socket.socket:
    """A worker's own listening socket on the port the supervisor reserved (SO_REUSEPORT)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family, backlog=2048, reuse_port=True)


def _reserved_reuse_port(host: str, port: int) -> tuple[socket.socket, int]:
    """A bound (not listening) SO_REUSEPORT socket holding a port while the workers listen on it.

    Not listening, it gets no connections; it fixes the port (an ephemeral one for port 0) and keeps
    it for the workers until the supervisor ends.
    """
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((host, port))
    return holder, holder.getsockname()[1]


def supervise(settings: IngestSettings) -> int:
    """Run `ingest_workers` worker processes on shared ports until SIGINT/SIGTERM or one of them exits."""
    http_holder, http_port = _reserved_reuse_port(settings.ingest_host, settings.ingest_http_port)
    grpc_holder, grpc_port = _reserved_reuse_port(settings.ingest_host, settings.ingest_grpc_port)
    metrics_directory = prepare_workers_directory(settings.home.resolve(), SERVICE)
    environment = {
        **os.environ,
        WORKER_VARIABLE: "1",
        "MICHI_INGEST_HTTP_PORT": str(http_port),
        "MICHI_INGEST_GRPC_PORT": str(grpc_port),
        # Read by prometheus_client as a worker imports it: every worker's metrics in files there.
        MULTIPROCESS_VARIABLE: str(metrics_directory),
        # Workers import `services` however this process did.
        "PYTHONPATH": os.pathsep.join(entry for entry in sys.path if entry),
    }
    stopping = False
    workers: list[subprocess.Popen[bytes]] = []

    def stop_workers(signal_number: int = signal.SIGTERM, frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop_workers)
    signal.signal(signal.SIGINT, stop_workers)
    workers = [
        subprocess.Popen([sys.executable, "-m", "services.ingest"], env=environment)
        for _ in range(settings.ingest_workers)
    ]
    logger.info(
        "ingest workers started",
        extra={
            "workers": len(workers),
            "port": http_port,
            "grpc_port": grpc_port,
            "metrics_directory": str(metrics_directory),
        },
    )
    try:
        while not stopping and all(worker.poll() is None for worker in workers):
            time.sleep(0.2)
        stop_workers()
        codes = [worker.wait() for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        http_holder.close()
        grpc_holder.close()
        shutil.rmtree(metrics_directory, ignore_errors=True)
    return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1
