"""Wiring of the monitor: the only place that creates its adapters.

Run it with `python -m services.monitor` (or `michi run monitor`); `run()` reads the `MICHI_*` environment,
serves /healthz, /readyz and /metrics on `MICHI_MONITOR_PORT` (default 8083, 127.0.0.1;
`michi.readiness.serve_operations`) and blocks until SIGINT/SIGTERM. Tests build it with
`build_consumer(settings, producer=..., profiles=...)`.
"""

from __future__ import annotations

import signal
import threading

from confluent_kafka import Consumer

from michi.blobs import BlobStore
from michi.bus.consumers import group_consumer_config
from michi.bus.producer import EventProducer
from michi.readiness import serve_operations
from michi.runtime import tune_garbage_collection
from michi.settings import load_settings
from michi.telemetry import configure_logging, configure_tracing
from services.monitor.adapters.metrics import MonitorMetrics
from services.monitor.adapters.profiles import BlobProfiles
from services.monitor.adapters.publisher import KafkaAlertPublisher
from services.monitor.entrypoints.consumer import SERVICE, MonitorConsumer
from services.monitor.handlers import DriftMonitor, DriftPolicy, ProfileSource
from services.monitor.settings import MonitorSettings


def policy_of(settings: MonitorSettings) -> DriftPolicy:
    return DriftPolicy(
        window_rows=settings.monitor_window_rows,
        idle_s=settings.monitor_window_idle_s,
        retrain_after_windows=settings.monitor_retrain_after_windows,
        min_rows=settings.monitor_min_rows,
        psi_threshold=settings.monitor_psi_threshold,
        min_drifted_features=settings.monitor_min_drifted_features,
        alert_on_low_resolution=settings.monitor_alert_low_resolution,
    )


def build_consumer(
    settings: MonitorSettings, *, producer: EventProducer, profiles: ProfileSource | None = None
) -> MonitorConsumer:
    """The monitor subscribed to predictions (the caller closes `producer`)."""
    metrics = MonitorMetrics()
    monitor = DriftMonitor(
        profiles=profiles or BlobProfiles(BlobStore(settings.resolved_blob_url())),
        publisher=KafkaAlertPublisher(producer),
        reports=metrics,
        policy=policy_of(settings),
    )
    return MonitorConsumer(
        consumer=Consumer(group_consumer_config(settings.kafka_connection(), settings.topic_prefix, SERVICE)),
        producer=producer,
        monitor=monitor,
        metrics=metrics,
        prefix=settings.topic_prefix,
    )


def run() -> None:
    """Load settings from the environment and run the monitor until SIGINT/SIGTERM."""
    settings = load_settings(MonitorSettings)
    configure_logging(SERVICE, settings.log_level)
    configure_tracing(SERVICE, settings.home)

    stop = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop.set())
    producer = EventProducer(
        settings.kafka_connection(), settings.topic_prefix, client_id=f"{settings.topic_prefix}{SERVICE}"
    )
    try:
        consumer = build_consumer(settings, producer=producer)
        tune_garbage_collection()
        # No ConsumerProgress check: an open window holds its partitions' commits back by design.
        server = serve_operations(
            SERVICE,
            settings.monitor_port,
            host=settings.monitor_host,
            alive=lambda: not stop.is_set(),
            registry=consumer.metrics.registry,
            ready={"consumer": consumer.readiness},
        )
        try:
            consumer.run(stop)
        finally:
            server.shutdown()
            server.server_close()
    finally:
        producer.close()
