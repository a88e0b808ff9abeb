"""How a plain consumer service (on `michi.kit.consumer.ConsumerLoop`) runs as a process: one `run_consumer_service`.

    def run() -> None:
        settings = load_settings(WarehouseSettings)
        run_consumer_service(
            SERVICE, settings, port=settings.warehouse_port, host=settings.warehouse_host,
            build=lambda producer: build_sink(settings, producer=producer),
            checks={"progress": progress_check(settings)},
        )

Logging and tracing are configured, SIGINT and SIGTERM stop the loop, the service's producer is made from
the one Kafka connection (client id `<prefix><service>`), the consumer is built and its `/healthz`,
`/readyz` (its own readiness as `consumer`, then `checks`) and `/metrics` are served
(`michi.readiness.serve_operations`) while it runs; at the end the pages stop, the consumer and each check
with a `close()` are closed (what they hold: a store's connections), and the producer is flushed and closed.
`pages`, given the consumer `build` made, returns the service's own pages served beside those three (the
monitor's page: `serve_operations(pages=...)`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from prometheus_client import CollectorRegistry

from michi.bus.producer import EventProducer
from michi.readiness import PageHandler, ReadinessCheck, serve_operations
from michi.runtime import tune_garbage_collection
from michi.settings import MichiSettings
from michi.telemetry import configure_logging, configure_tracing


class Registered(Protocol):
    registry: CollectorRegistry


class ConsumerService(Protocol):
    """What a plain consumer service's consumer offers the process: run, readiness, metrics."""

    @property
    def metrics(self) -> Registered: ...

    def run(self, stop: threading.Event) -> None: ...

    def readiness(self) -> str | None: ...


Built = TypeVar("Built", bound=ConsumerService)


def run_consumer_service(
    service: str,
    settings: MichiSettings,
    *,
    port: int,
    host: str,
    build: Callable[[EventProducer], Built],
    checks: Mapping[str, ReadinessCheck] | None = None,
    pages: Callable[[Built], Mapping[str, PageHandler]] | None = None,
) -> None:
    """Run the consumer `build` makes until SIGINT/SIGTERM, with its operations pages (module docstring)."""
    configure_logging(service, settings.log_level)
    configure_tracing(service, settings.home)
    stop = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop.set())
    more_checks = dict(checks or {})
    producer = EventProducer(
        settings.kafka_connection(), settings.topic_prefix, client_id=f"{settings.topic_prefix}{service}"
    )
    try:
        consumer = build(producer)
        tune_garbage_collection()
        server = serve_operations(
            service,
            port,
            host=host,
            alive=lambda: not stop.is_set(),
            registry=consumer.metrics.registry,
            ready={"consumer": consumer.readiness},
            checks=more_checks,
            pages=pages(consumer) if pages is not None else None,
        )
        try:
            consumer.run(stop)
        finally:
            server.shutdown()
            server.server_close()
            close_consumer = getattr(consumer, "close", None)
            if callable(close_consumer):
                close_consumer()
    finally:
        for check in more_checks.values():
            close = getattr(check, "close", None)
            if callable(close):
                close()
        producer.close()
