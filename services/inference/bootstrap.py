"""Wires the inference service: the only place that creates its adapters.

    python -m services.inference        # or: michi run inference

`build_app(settings, producer=..., model=..., road_map=...)` builds the faust app with every
adapter swappable (tests pass a fake road map or a prepared model); `run()` loads settings
from the environment and blocks until SIGINT/SIGTERM.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faust
from confluent_kafka.admin import AdminClient

from michi.bus.admin import ensure_topics
from michi.bus.catalog import DEAD_LETTERS, DETECTIONS, LABEL_REQUESTS, PREDICTIONS, TRIP_SEGMENTS, UPLOADS
from michi.bus.producer import EventProducer
from michi.bus.streams import create_app, run_worker
from michi.settings import load_settings
from michi.telemetry import configure_logging, configure_tracing
from services.inference.adapters.device_table import DeviceStateTable, create_device_table
from services.inference.adapters.metrics import InferenceMetrics
from services.inference.adapters.onnx_model import OnnxDetector, install_baseline_model
from services.inference.domain.speeding import SpeedLimits
from services.inference.entrypoints.stream import SERVICE, StreamWiring, register_agent, register_pages
from services.inference.handlers import Detector, InferencePipeline
from services.inference.settings import InferenceSettings

logger = logging.getLogger(__name__)


@dataclass
class InferenceApp:
    app: faust.App
    producer: EventProducer
    pipeline: InferencePipeline
    table: DeviceStateTable
    metrics: InferenceMetrics
    settings: InferenceSettings


def uploads_partitions(bootstrap: str, prefix: str, timeout: float = 10.0) -> int:
    """Partitions of the uploads topic (the device table must have as many)."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(UPLOADS.name(prefix), timeout=timeout)
    topic = metadata.topics.get(UPLOADS.name(prefix))
    if topic is None or topic.error is not None or not topic.partitions:
        return UPLOADS.partitions
    return len(topic.partitions)


def default_detector(settings: InferenceSettings) -> OnnxDetector:
    artifact = install_baseline_model(settings.home / "models")
    return OnnxDetector(artifact, threads=settings.inference_threads)


def build_app(
    settings: InferenceSettings,
    *,
    producer: EventProducer | None = None,
    model: Detector | None = None,
    road_map: SpeedLimits | None = None,
) -> InferenceApp:
    bootstrap = settings.resolved_kafka_bootstrap()
    partitions = settings.inference_partitions or uploads_partitions(bootstrap, settings.topic_prefix)
    if road_map is None:
        from michi.roadmap import RoadMap

        road_map = RoadMap.default()
    detector = model if model is not None else default_detector(settings)
    pipeline = InferencePipeline(detector, road_map, uncertainty_band=settings.inference_uncertainty_band)
    event_producer = producer or EventProducer(
        bootstrap, settings.topic_prefix, client_id=f"{settings.topic_prefix}{SERVICE}"
    )
    app = create_app(
        SERVICE,
        bootstrap=bootstrap,
        app_id=f"{settings.topic_prefix}{SERVICE}",
        data_dir=settings.home / "faust",
        web_port=settings.inference_port,
        partitions=partitions,
    )
    table = create_device_table(app, partitions)
    metrics = InferenceMetrics()
    wiring = StreamWiring(
        producer=event_producer,
        pipeline=pipeline,
        table=table,
        metrics=metrics,
        batch_size=settings.inference_batch_size,
        within=settings.inference_batch_within_s,
    )
    register_agent(app, wiring, settings.topic_prefix)

    def ready() -> bool:
        recovery: Any = getattr(app.tables, "recovery", None)
        return recovery is not None and bool(recovery.completed.is_set()) and not app.rebalancing

    register_pages(app, metrics, ready)
    return InferenceApp(app, event_producer, pipeline, table, metrics, settings)


def run() -> None:
    settings = load_settings(InferenceSettings)
    configure_logging(SERVICE, settings.log_level)
    configure_tracing(SERVICE, settings.home)
    bootstrap = settings.resolved_kafka_bootstrap()
    ensure_topics(
        bootstrap,
        settings.topic_prefix,
        (UPLOADS, PREDICTIONS, DETECTIONS, TRIP_SEGMENTS, LABEL_REQUESTS, DEAD_LETTERS),
    )
    built = build_app(settings)
    logger.info(
        "inference starting",
        extra={
            "model_version": built.pipeline.detector.model_version,
            "data_version": built.pipeline.detector.data_version,
        },
    )
    try:
        run_worker(built.app)
    finally:
        built.producer.close()
