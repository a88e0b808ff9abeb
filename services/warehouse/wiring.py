"""Wiring of the warehouse sink: the only place that creates its adapters.

Run it with `python -m services.warehouse` (or `michi run warehouse`); `run()` reads the
`MICHI_*` environment, serves /healthz, /readyz and /metrics on `MICHI_WAREHOUSE_PORT`
(default 8086, 127.0.0.1; `michi.readiness.serve_operations`) and blocks until SIGINT/SIGTERM,
then writes what it buffered, commits and exits. Tests build the sink with
`build_sink(settings, producer=..., writer=...)` and its progress check with `progress_check(settings)`.
"""

from __future__ import annotations

import signal
import threading

from confluent_kafka import Consumer

from michi.blobs import BlobStore
from michi.bus.catalog import DETECTIONS, PREDICTIONS
from michi.bus.consumers import group_consumer_config
from michi.bus.producer import EventProducer
from michi.bus.stalls import NOT_READY_AFTER_S
from michi.readiness import ConsumerProgress, serve_operations
from michi.runtime import tune_garbage_collection
from michi.settings import load_settings
from michi.telemetry import configure_logging, configure_tracing
from michi.warehouse import DETECTION, PREDICTION, detection_row, prediction_row
from services.warehouse.adapters.parquet import BlobParquetWriter, ParquetWriter
from services.warehouse.entrypoints.consumer import WarehouseSink
from services.warehouse.handlers import SERVICE, Source
from services.warehouse.metrics import WarehouseMetrics
from services.warehouse.settings import WarehouseSettings


def source_topics(settings: WarehouseSettings) -> dict[str, Source]:
    prefix = settings.topic_prefix
    return {
        PREDICTIONS.name(prefix): Source(PREDICTIONS, PREDICTION, prediction_row),
        DETECTIONS.name(prefix): Source(DETECTIONS, DETECTION, detection_row),
    }


def progress_check(settings: WarehouseSettings) -> ConsumerProgress:
    """`/readyz`'s judgement of the group's progress (the caller closes it).

    Rows wait in a buffer up to `warehouse_flush_s` before their offsets are committed, so the sink is
    judged stalled only after that wait plus `NOT_READY_AFTER_S` (40 s with the default 10 s).
    """
    return ConsumerProgress(
        settings.kafka_connection(),
        f"{settings.topic_prefix}{SERVICE}",
        list(source_topics(settings)),
        not_ready_after_s=NOT_READY_AFTER_S + settings.warehouse_flush_s,
    )


def build_sink(
    settings: WarehouseSettings, *, producer: EventProducer, writer: ParquetWriter | None = None
) -> WarehouseSink:
    """The sink subscribed to predictions and detections (the caller closes `producer`)."""
    sources = source_topics(settings)
    return WarehouseSink(
        consumer=Consumer(group_consumer_config(settings.kafka_connection(), settings.topic_prefix, SERVICE)),
        producer=producer,
        writer=writer or BlobParquetWriter(BlobStore(settings.resolved_blob_url())),
        sources=sources,
        flush_s=settings.warehouse_flush_s,
        flush_rows=settings.warehouse_flush_rows,
        metrics=WarehouseMetrics(),
    )


def run() -> None:
    """Load settings from the environment and run the sink until SIGINT/SIGTERM."""
    settings = load_settings(WarehouseSettings)
    configure_logging(SERVICE, settings.log_level)
    configure_tracing(SERVICE, settings.home)

    stop = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop.set())
    producer = EventProducer(
        settings.kafka_connection(), settings.topic_prefix, client_id=f"{settings.topic_prefix}{SERVICE}"
    )
    progress = progress_check(settings)
    try:
        sink = build_sink(settings, producer=producer)
        tune_garbage_collection()
        server = serve_operations(
            SERVICE,
            settings.warehouse_port,
            host=settings.warehouse_host,
            alive=lambda: not stop.is_set(),
            registry=sink.metrics.registry,
            ready={"consumer": sink.readiness},
            checks={"progress": progress},
        )
        try:
            sink.run(stop)
        finally:
            server.shutdown()
            server.server_close()
    finally:
        progress.close()
        producer.close()
