"""Wiring of the trainer service: the only place that creates its adapters.

    python -m services.trainer          # or: michi run trainer

`build_wiring(settings, ...)` returns what the workflow needs (tests pass their own registry, store,
artifact store, cache, baseline, real recordings or physics baseline); `build_service(settings, producer=...)` adds the Kafka consumer,
the training worker and the HTTP app; `run()` reads the `MICHI_*` environment, serves HTTP on
127.0.0.1:`MICHI_TRAINER_PORT` (8082) and blocks until SIGINT/SIGTERM.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import uvicorn
from confluent_kafka import Consumer
from fastapi import FastAPI

from michi.bus.admin import ensure_topics
from michi.bus.catalog import ALERTS, DEAD_LETTERS, LABELS, MODEL_ROLLOUTS
from michi.bus.consumers import group_consumer_config
from michi.bus.producer import EventProducer
from michi.migrations import with_database_folder
from michi.readiness import ConsumerProgress
from michi.registry import ModelRegistry
from michi.registry.store import PlanPublisher
from michi.runtime import tune_garbage_collection
from michi.settings import load_settings
from michi.telemetry import configure_logging, configure_tracing
from michi.windows.physics import build_physics_model
from services.trainer.adapters.archive import ArchiveWindowSource
from services.trainer.adapters.artifacts import ArtifactStore, ModelCache
from services.trainer.adapters.metrics import TrainerMetrics
from services.trainer.adapters.recordings import RealRecordings
from services.trainer.adapters.simulation import REFERENCE_TRAFFIC, SimulationRecipe
from services.trainer.adapters.store import TrainerStore
from services.trainer.domain.gate import GatePolicy
from services.trainer.domain.training import TrainingParameters
from services.trainer.domain.triggers import TriggerPolicy
from services.trainer.entrypoints.consumer import SERVICE, EventConsumer
from services.trainer.entrypoints.http import create_http_app
from services.trainer.entrypoints.worker import TrainingWorker
from services.trainer.handlers import EventHandler, TrainerWiring
from services.trainer.settings import TrainerSettings

logger = logging.getLogger(__name__)


def baseline_model() -> bytes:
    """The hand-set baseline graph inference serves when no model is registered (the champion of last resort)."""
    from services.inference.adapters.onnx_model import build_baseline_model

    return build_baseline_model()


def database_url(settings: TrainerSettings) -> str:
    """The database URL, with the folder of a SQLite file created."""
    return with_database_folder(settings.resolved_database_url())


def training_parameters(settings: TrainerSettings) -> TrainingParameters:
    return TrainingParameters.from_dict({**TrainingParameters().to_dict(), **settings.trainer_parameters})


def build_wiring(
    settings: TrainerSettings,
    *,
    producer: PlanPublisher | None = None,
    registry: ModelRegistry | None = None,
    store: TrainerStore | None = None,
    artifacts: ArtifactStore | None = None,
    archive: ArchiveWindowSource | None = None,
    cache: ModelCache | None = None,
    baseline: Callable[[], bytes] | None = None,
    metrics: TrainerMetrics | None = None,
    parameters: TrainingParameters | None = None,
    recordings: RealRecordings | None = None,
    physics: Callable[[], bytes] | None = None,
) -> TrainerWiring:
    url = database_url(settings)
    blob_url = settings.resolved_blob_url()
    return TrainerWiring(
        model_name=settings.trainer_model_name,
        store=store or TrainerStore.from_url(url),
        registry=registry or ModelRegistry.from_url(url, producer),
        artifacts=artifacts or ArtifactStore(blob_url),
        archive=archive or ArchiveWindowSource(blob_url),
        cache=cache or ModelCache(settings.resolved_cache_dir()),
        simulation=(
            SimulationRecipe.from_dict(settings.trainer_simulation)
            if settings.trainer_simulation is not None
            else SimulationRecipe()
        ),
        reference_traffic=(
            SimulationRecipe.from_dict(settings.trainer_reference_traffic)
            if settings.trainer_reference_traffic is not None
            else REFERENCE_TRAFFIC
        ),
        parameters=parameters or training_parameters(settings),
        gate=GatePolicy.from_dict(settings.trainer_gate) if settings.trainer_gate is not None else GatePolicy(),
        triggers=TriggerPolicy(settings.trainer_label_trigger, settings.trainer_schedule_s),
        baseline=baseline or baseline_model,
        parity_tolerance=settings.trainer_parity_tolerance,
        evaluation_threads=settings.trainer_evaluation_threads,
        metrics=metrics,
        recordings=recordings
        or RealRecordings(
            evaluation_folder=settings.trainer_real_recordings,
            training_folder=settings.trainer_real_training,
            shipped=settings.trainer_shipped_recordings,
        ),
        physics=physics or build_physics_model,
    )


@dataclass
class TrainerService:
    wiring: TrainerWiring
    worker: TrainingWorker
    consumer: EventConsumer
    metrics: TrainerMetrics
    app: FastAPI
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def ready(self) -> bool:
        return all(outcome == "ok" for outcome in self.readiness_checks().values())

    def readiness_checks(self) -> dict[str, str]:
        """`/readyz`'s checks: the worker attempted its bootstrap; the consumer polls, holds partitions, progresses."""
        reason = self.consumer.readiness()
        return {
            "worker": "ok" if self.worker.started.is_set() else "error: the training worker has not started",
            "consumer": "ok" if reason is None else f"error: {reason}",
        }

    def start(self) -> None:
        for name, target in (("trainer-consumer", self.consumer.run), ("trainer-worker", self.worker.run)):
            thread = threading.Thread(target=target, args=(self.stop,), name=name, daemon=True)
            thread.start()
            self.threads.append(thread)

    def close(self, timeout: float = 10.0) -> None:
        self.stop.set()
        self.worker.wake()
        for thread in self.threads:
            thread.join(timeout)
        if self.consumer.progress is not None:
            self.consumer.progress.close()
        self.wiring.registry.close()
        self.wiring.store.close()


def build_service(
    settings: TrainerSettings, *, producer: EventProducer, wiring: TrainerWiring | None = None
) -> TrainerService:
    """The whole service (the caller closes `producer`); `start()` runs its threads, `close()` stops them."""
    metrics = wiring.metrics if wiring is not None and isinstance(wiring.metrics, TrainerMetrics) else TrainerMetrics()
    built = wiring or build_wiring(settings, producer=producer, metrics=metrics)
    built.metrics = metrics
    worker = TrainingWorker(
        built,
        metrics,
        bootstrap=settings.trainer_bootstrap,
        check_interval_s=settings.trainer_check_interval_s,
        register_physics=settings.trainer_register_physics,
    )
    bootstrap, prefix = settings.kafka_connection(), settings.topic_prefix
    consumer = EventConsumer(
        consumer=Consumer(group_consumer_config(bootstrap, prefix, SERVICE)),
        producer=producer,
        handler=EventHandler(store=built.store, metrics=metrics, wake=worker.wake),
        prefix=prefix,
        # Not ready when labels or alerts wait and the group's committed offsets stop moving.
        progress=ConsumerProgress(bootstrap, f"{prefix}{SERVICE}", [LABELS.name(prefix), ALERTS.name(prefix)]),
    )
    service = TrainerService(built, worker, consumer, metrics, FastAPI())
    token = settings.trainer_api_token.get_secret_value() if settings.trainer_api_token is not None else None
    service.app = create_http_app(built, worker, metrics, service.readiness_checks, api_token=token)
    return service


def run() -> None:
    settings = load_settings(TrainerSettings)
    configure_logging(SERVICE, settings.log_level)
    configure_tracing(SERVICE, settings.home)
    bootstrap = settings.kafka_connection()
    ensure_topics(bootstrap, settings.topic_prefix, (LABELS, ALERTS, MODEL_ROLLOUTS, DEAD_LETTERS))
    producer = EventProducer(bootstrap, settings.topic_prefix, client_id=f"{settings.topic_prefix}{SERVICE}")
    try:
        service = build_service(settings, producer=producer)
        tune_garbage_collection()
        logger.info(
            "trainer starting",
            extra={
                "model": service.wiring.model_name,
                "port": settings.trainer_port,
                "bootstrap": settings.trainer_bootstrap,
                "label_trigger": settings.trainer_label_trigger,
                "schedule_s": settings.trainer_schedule_s,
            },
        )
        service.start()
        try:
            uvicorn.run(
                service.app,
                host=settings.trainer_host,
                port=settings.trainer_port,
                log_level="warning",
                access_log=False,
            )
        finally:
            service.close()
    finally:
        producer.close()
