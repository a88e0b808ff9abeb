"""Wires the inference service: the only place that creates its adapters.

    python -m services.inference        # or: michi run inference

`build_app(settings, producer=..., publisher=..., model=..., road_map=..., loader=...)` builds the faust
app with every adapter swappable (tests pass a fake road map, a prepared baseline model, a model loader
or a publisher standing in for the handlers' `Publisher` port);
`run()` loads settings from the environment, reads the rollout plans to their end and loads the
champion they name (the built-in baseline when there is none), then blocks until SIGINT/SIGTERM
while a background thread follows new plans.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faust
from confluent_kafka.admin import AdminClient

from michi.blobs.store import BlobStore
from michi.bus.admin import ensure_topics
from michi.bus.catalog import (
    DEAD_LETTERS,
    DETECTIONS,
    LABEL_REQUESTS,
    MODEL_ROLLOUTS,
    PREDICTIONS,
    TRIP_SEGMENTS,
    UPLOADS,
)
from michi.bus.connection import KafkaConnection, as_connection
from michi.bus.producer import EventProducer
from michi.bus.streams import StreamPublisher, create_app, run_worker
from michi.contracts.v1 import operations_pb2
from michi.runtime import tune_garbage_collection
from michi.settings import load_settings
from michi.telemetry import configure_logging, configure_tracing
from services.inference.adapters.artifacts import ArtifactCache, load_detector
from services.inference.adapters.device_table import DeviceStateTable, create_device_table
from services.inference.adapters.metrics import InferenceMetrics
from services.inference.adapters.onnx_model import OnnxDetector, install_baseline_model
from services.inference.adapters.plans import RolloutPlanFeed
from services.inference.domain.rollout import RateBudget
from services.inference.domain.speeding import SpeedLimits
from services.inference.entrypoints.stream import (
    StreamWiring,
    faust_commit_barrier,
    register_agent,
    register_pages,
)
from services.inference.handlers import SERVICE, Detector, InferencePipeline, Publisher
from services.inference.serving import Loader, ModelServing, PlanWatcher
from services.inference.settings import InferenceSettings

logger = logging.getLogger(__name__)


@dataclass
class InferenceApp:
    app: faust.App
    producer: EventProducer
    serving: ModelServing
    table: DeviceStateTable
    metrics: InferenceMetrics
    settings: InferenceSettings


def uploads_partitions(bootstrap: KafkaConnection | str, prefix: str, timeout: float = 10.0) -> int:
    """Partitions of the uploads topic (the device table must have as many)."""
    admin = AdminClient(as_connection(bootstrap).confluent_config())
    metadata = admin.list_topics(UPLOADS.name(prefix), timeout=timeout)
    topic = metadata.topics.get(UPLOADS.name(prefix))
    if topic is None or topic.error is not None or not topic.partitions:
        return UPLOADS.partitions
    return len(topic.partitions)


def default_detector(settings: InferenceSettings) -> OnnxDetector:
    """The built-in baseline, served while no rollout plan names a champion."""
    artifact = install_baseline_model(settings.home / "models")
    return OnnxDetector(artifact, threads=settings.inference_threads)


def blob_loader(settings: InferenceSettings) -> Loader:
    """Loads a plan's model: blob store → `<home>/models` cache → sha256 check → ONNX Runtime session."""
    cache = ArtifactCache(
        BlobStore(settings.resolved_blob_url()), settings.home / "models", max_bytes=settings.inference_model_max_bytes
    )

    def load(reference: operations_pb2.ModelRef) -> Detector:
        return load_detector(cache, reference, threads=settings.inference_threads)

    return load


def build_app(
    settings: InferenceSettings,
    *,
    producer: EventProducer | None = None,
    publisher: Publisher | None = None,
    model: Detector | None = None,
    road_map: SpeedLimits | None = None,
    loader: Loader | None = None,
) -> InferenceApp:
    bootstrap = settings.kafka_connection()
    partitions = settings.inference_partitions or uploads_partitions(bootstrap, settings.topic_prefix)
    if road_map is None:
        from michi.roads import RoadMap

        road_map = RoadMap.default()
    baseline = model if model is not None else default_detector(settings)
    template = InferencePipeline(
        baseline,
        road_map,
        uncertainty_band=settings.inference_uncertainty_band,
        shadow_requests_per_upload=settings.inference_shadow_requests_per_upload,
        qa_sample_rate=settings.inference_qa_sample_rate,
    )
    metrics = InferenceMetrics()
    serving = ModelServing(
        model_name=settings.inference_model_name,
        template=template,
        loader=loader or blob_loader(settings),
        metrics=metrics,
        retain=settings.inference_retained_models,
        max_arms=settings.inference_max_arms,
    )
    event_producer = producer or EventProducer(
        bootstrap, settings.topic_prefix, client_id=f"{settings.topic_prefix}{SERVICE}"
    )
    app = create_app(
        SERVICE,
        bootstrap=bootstrap,
        app_id=f"{settings.topic_prefix}{SERVICE}",
        data_dir=settings.home / "faust",
        web_port=settings.inference_port,
        web_host=settings.inference_host,
        partitions=partitions,
    )
    table = create_device_table(app, partitions)
    wiring = StreamWiring(
        producer=event_producer,
        publisher=publisher or StreamPublisher(event_producer, SERVICE),
        serving=serving,
        table=table,
        metrics=metrics,
        batch_size=settings.inference_batch_size,
        within=settings.inference_batch_within_s,
        commit_barrier=faust_commit_barrier(app, UPLOADS.name(settings.topic_prefix)),
        budget=RateBudget(settings.inference_shadow_requests_per_minute),
    )
    register_agent(app, wiring, settings.topic_prefix)

    register_pages(app, metrics)
    return InferenceApp(app, event_producer, serving, table, metrics, settings)


def run() -> None:
    settings = load_settings(InferenceSettings)
    configure_logging(SERVICE, settings.log_level)
    configure_tracing(SERVICE, settings.home)
    bootstrap = settings.kafka_connection()
    ensure_topics(
        bootstrap,
        settings.topic_prefix,
        (UPLOADS, PREDICTIONS, DETECTIONS, TRIP_SEGMENTS, LABEL_REQUESTS, MODEL_ROLLOUTS, DEAD_LETTERS),
    )
    built = build_app(settings)
    tune_garbage_collection()
    feed = RolloutPlanFeed(bootstrap, settings.topic_prefix, producer=built.producer, service=SERVICE)
    # The plan is applied before the worker takes its first upload.
    built.serving.start(feed, timeout=settings.inference_plan_timeout_s)
    watcher = PlanWatcher(feed, built.serving)
    watcher.start()
    active = built.serving.active
    logger.info(
        "inference starting",
        extra={
            "model_version": active.champion.model_version,
            "data_version": active.champion.data_version,
            "shadow_version": active.shadow.model_version if active.shadow else None,
            "rollout_id": active.rollout_id,
            "arms": active.describe(),
            "plan_revision": active.revision,
        },
    )
    try:
        run_worker(built.app)
    finally:
        watcher.stop()
        feed.close()
        built.producer.close()
