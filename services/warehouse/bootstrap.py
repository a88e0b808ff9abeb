"""Wiring of the warehouse sink: the only place that creates its adapters.

Run it with `python -m services.warehouse` (or `michi run warehouse`); `run()` reads the
`MICHI_*` environment, serves /healthz, /readyz and /metrics on `MICHI_WAREHOUSE_PORT`
(default 8086, 127.0.0.1) and blocks until SIGINT/SIGTERM, then writes what it buffered,
commits and exits. Tests build the sink with `build_sink(settings, producer=..., writer=...)`.
"""

from __future__ import annotations

import signal
import threading

from confluent_kafka import Consumer

from michi.blobs import BlobStore
from michi.bus.catalog import DETECTIONS, PREDICTIONS
from michi.bus.consumers import group_consumer_config
from michi.bus.producer import EventProducer
from michi.runtime import tune_garbage_collection
from michi.settings import load_settings
from michi.telemetry import configure_logging, configure_tracing
from michi.warehouse import DETECTION, PREDICTION, detection_row, prediction_row
from services.warehouse.adapters.parquet import BlobParquetWriter, ParquetWriter
from services.warehouse.entrypoints.consumer import SERVICE, Source, WarehouseSink
from services.warehouse.entrypoints.health import serve_health
from services.warehouse.metrics import WarehouseMetrics
from services.warehouse.settings import WarehouseSettings


def build_sink(
    settings: WarehouseSettings, *, producer: EventProducer, writer: ParquetWriter | None = None
) -> WarehouseSink:
    """The sink subscribed to predictions and detections (the caller closes `producer`)."""
    prefix = settings.topic_prefix
    sources = {
        PREDICTIONS.name(prefix): Source(PREDICTIONS, PREDICTION, prediction_row),
        DETECTIONS.name(prefix): Source(DETECTIONS, DETECTION, detection_row),
    }
    return WarehouseSink(
        consumer=Consumer(group_consumer_config(settings.resolved_kafka_bootstrap(), settings.topic_prefix, SERVICE)),
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
        settings.resolved_kafka_bootstrap(), settings.topic_prefix, client_id=f"{settings.topic_prefix}{SERVICE}"
    )
    try:
        sink = build_sink(settings, producer=producer)
        tune_garbage_collection()
        server = serve_health(
            settings.warehouse_port, alive=lambda: not stop.is_set(), ready=sink.ready, registry=sink.metrics.registry
        )
        try:
            sink.run(stop)
        finally:
            server.shutdown()
            server.server_close()
    finally:
        producer.close()
