"""Wiring of the camera service: the only place that creates its adapters.

Run it with `python -m services.camera` (or `michi run camera`); `run()` reads the `MICHI_*` environment, opens the
vision models (`MICHI_VISION_MODELS_DIR`; `make models` builds them), serves /healthz, /readyz and /metrics on
`MICHI_CAMERA_PORT` (default 8087, 127.0.0.1; `michi.readiness.serve_operations`) and blocks until SIGINT/SIGTERM.
Without the models it stops at start with one line saying to run `make models`, except with `MICHI_ENV=dev`
(`michi up` on a development machine), where it idles and says so (`WithoutModels`).
Tests build it with `build_consumer(settings, producer=...)`, or the join alone with `build_join`.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaException
from sqlalchemy.exc import SQLAlchemyError

from michi.blobs import BlobStore, BlobStoreUnavailable
from michi.bus.catalog import MEDIA, UPLOADS
from michi.bus.consumers import group_consumer_config
from michi.bus.producer import EventProducer
from michi.kit.running import run_consumer_service
from michi.migrations import with_database_folder
from michi.registry import ModelRegistry, PlanNotPublished
from michi.settings import load_settings
from michi.vision.model_store import VisionModelsMissing, VisionModelStore
from services.camera.adapters.analysis import CameraAnalyses
from services.camera.adapters.frames import BlobFrames
from services.camera.adapters.metrics import CameraMetrics
from services.camera.adapters.publisher import KafkaDeadLetters, KafkaDetections, KafkaReviewRequests
from services.camera.adapters.registration import register_vision_models
from services.camera.adapters.store import CameraStore
from services.camera.domain.join import Sampling
from services.camera.domain.review import ReviewSampling
from services.camera.entrypoints.consumer import SERVICE, CameraConsumer
from services.camera.handlers import Analyses, JoinBounds, MediaJoin
from services.camera.settings import CameraSettings

logger = logging.getLogger(__name__)


def bounds_of(settings: CameraSettings) -> JoinBounds:
    return JoinBounds(
        media_wait_s=settings.camera_media_wait_s,
        max_waiting_media=settings.camera_max_waiting_media,
        upload_retention_s=settings.camera_upload_retention_s,
        max_uploads=settings.camera_max_uploads,
        settled_retention_s=settings.camera_settled_retention_s,
        max_settled_media=settings.camera_max_settled_media,
        stream_retention_s=settings.camera_stream_retention_s,
    )


def sampling_of(settings: CameraSettings) -> Sampling:
    return Sampling(
        max_fps=settings.camera_max_fps,
        max_frames=settings.camera_max_frames_per_item,
        max_decoded_frames=settings.camera_max_decoded_frames,
    )


def review_sampling_of(settings: CameraSettings) -> ReviewSampling:
    return ReviewSampling(
        share=settings.camera_review_share,
        share_by_event_type={str(kind): share for kind, share in settings.camera_review_share_by_event_type.items()},
        always_below_confidence=settings.camera_review_below_confidence,
    )


def build_join(
    settings: CameraSettings,
    *,
    producer: EventProducer,
    store: CameraStore,
    metrics: CameraMetrics,
    analyses: Analyses | None = None,
    now: Callable[[], datetime] | None = None,
) -> MediaJoin:
    return MediaJoin(
        store=store,
        frames=BlobFrames(
            BlobStore(settings.resolved_blob_url()),
            max_media_bytes=settings.camera_max_media_bytes,
            sampling=sampling_of(settings),
        ),
        analyses=analyses
        or CameraAnalyses(VisionModelStore(settings.vision_models_dir, threads=settings.camera_model_threads)),
        publisher=KafkaDetections(producer),
        reviews=KafkaReviewRequests(producer),
        review_sampling=review_sampling_of(settings),
        dead_letters=KafkaDeadLetters(producer),
        metrics=metrics,
        bounds=bounds_of(settings),
        now=now or (lambda: datetime.now(UTC)),
    )


def consumer_config(settings: CameraSettings) -> dict[str, Any]:
    config = group_consumer_config(settings.kafka_connection(), settings.topic_prefix, SERVICE)
    # A device's uploads and media (both keyed by device_id) in one consumer: see entrypoints/consumer.py.
    config["partition.assignment.strategy"] = "range"
    return config


class PartitionsDiffer(RuntimeError):
    """The media and uploads topics have different partition counts: one device's streams would reach two consumers."""


def partition_mismatch(consumer: Consumer, topics: Sequence[str], timeout: float = 10.0) -> str | None:
    """Why `topics` cannot be joined per device (their partition counts differ), or None. Topics not created yet
    are not judged: the platform creates them all from the catalog, with equal counts. Nor are they while the
    broker does not answer: the service waits for it as it does for every record."""
    try:
        metadata = consumer.list_topics(timeout=timeout).topics
    except KafkaException:
        logger.warning("partition counts not checked: the broker did not answer", exc_info=True)
        return None
    counts = {
        topic: len(metadata[topic].partitions) for topic in topics if topic in metadata and metadata[topic].partitions
    }
    if len(set(counts.values())) <= 1:
        return None
    listed = ", ".join(f"{topic} has {count}" for topic, count in counts.items())
    return (
        f"the topics it joins per device must have the same partition count ({listed}): a device's media and "
        "uploads would reach different consumers (docs/camera.md, Scaling)"
    )


def build_consumer(
    settings: CameraSettings, *, producer: EventProducer, analyses: Analyses | None = None
) -> CameraConsumer:
    """The join subscribed to media and uploads (the caller closes `producer`; the consumer's `close` the rest).
    `PartitionsDiffer` when the two topics' partition counts differ."""
    client = Consumer(consumer_config(settings))
    try:
        problem = partition_mismatch(client, [MEDIA.name(settings.topic_prefix), UPLOADS.name(settings.topic_prefix)])
    except BaseException:
        client.close()
        raise
    if problem is not None:
        client.close()
        raise PartitionsDiffer(problem)
    metrics = CameraMetrics()
    store = CameraStore.from_url(with_database_folder(settings.resolved_database_url()))
    try:
        join = build_join(settings, producer=producer, store=store, metrics=metrics, analyses=analyses)
    except BaseException:
        store.close()
        client.close()
        raise
    return CameraConsumer(
        consumer=client,
        producer=producer,
        join=join,
        metrics=metrics,
        prefix=settings.topic_prefix,
        closing=store.close,
    )


class WithoutModels:
    """The service on a development machine where `make models` never ran: it consumes nothing (its group's
    offsets stay where they are, so media are analysed once the models are built and it restarts), answers ready
    so `michi up` runs the rest of the platform, and says why in its log and in `michi_camera_models_missing`."""

    def __init__(self, reason: str) -> None:
        self.metrics = CameraMetrics()
        self.metrics.models_missing.set(1)
        logger.warning("vision models missing: not analysing camera media", extra={"reason": reason})

    def run(self, stop: threading.Event) -> None:
        stop.wait()

    def readiness(self) -> str | None:
        return None


def register_models(settings: CameraSettings, producer: EventProducer, models: VisionModelStore) -> None:
    """The vision model sets the service runs (`models`), in the model registry (`adapters/registration.py`). A
    registry that cannot be reached is logged and left for the next start: detections carry their lineage either
    way."""
    registry = ModelRegistry.from_url(with_database_folder(settings.resolved_database_url()), producer)
    try:
        register_vision_models(registry, BlobStore(settings.resolved_blob_url()), models)
    except (SQLAlchemyError, BlobStoreUnavailable, PlanNotPublished, OSError):
        logger.warning("vision models not registered; trying again at the next start", exc_info=True)
    finally:
        registry.close()


def build_service(settings: CameraSettings, producer: EventProducer) -> CameraConsumer | WithoutModels:
    """The consumer (the vision models registered first, when `camera_register_models`); without the vision
    models, outside dev the one-line refusal, in dev `WithoutModels`."""
    try:
        models = VisionModelStore(settings.vision_models_dir, threads=settings.camera_model_threads)
        consumer = build_consumer(settings, producer=producer, analyses=CameraAnalyses(models))
    except VisionModelsMissing as missing:
        if settings.env != "dev":
            sys.exit(f"camera: {missing}")
        return WithoutModels(str(missing))
    except PartitionsDiffer as differ:
        sys.exit(f"camera: {differ}")
    if settings.camera_register_models:
        register_models(settings, producer, models)
    return consumer


def run() -> None:
    """Load settings from the environment and run the camera service until SIGINT/SIGTERM."""
    settings = load_settings(CameraSettings)
    run_consumer_service(
        SERVICE,
        settings,
        port=settings.camera_port,
        host=settings.camera_host,
        build=lambda producer: build_service(settings, producer),
    )
