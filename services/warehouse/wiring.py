"""Wiring of the warehouse sink: the only place that creates its adapters.

Run it with `python -m services.warehouse` (or `michi run warehouse`); `run()` reads the
`MICHI_*` environment, serves /healthz, /readyz and /metrics on `MICHI_WAREHOUSE_PORT`
(default 8086, 127.0.0.1; `michi.readiness.serve_operations`) and blocks until SIGINT/SIGTERM,
then writes what it buffered, commits and exits. Tests build the sink with
`build_sink(settings, producer=..., writer=...)` and its progress check with `progress_check(settings)`.
"""

from __future__ import annotations

from confluent_kafka import Consumer

from michi.blobs import BlobStore
from michi.bus.catalog import DETECTIONS, PREDICTIONS
from michi.bus.consumers import group_consumer_config
from michi.bus.producer import EventProducer
from michi.bus.stalls import NOT_READY_AFTER_S
from michi.kit.running import run_consumer_service
from michi.readiness import ConsumerProgress
from michi.settings import load_settings
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
    """Load settings from the environment and run the sink until SIGINT/SIGTERM (then write, commit, exit)."""
    settings = load_settings(WarehouseSettings)
    run_consumer_service(
        SERVICE,
        settings,
        port=settings.warehouse_port,
        host=settings.warehouse_host,
        build=lambda producer: build_sink(settings, producer=producer),
        checks={"progress": progress_check(settings)},
    )
