"""Wiring of the scoring service: the only place that creates its adapters.

Run it with `python -m services.scoring` (or `michi run scoring`); `run()` reads
the `MICHI_*` environment, serves /healthz, /readyz and /metrics on
`MICHI_SCORING_PORT` (default 8085, 127.0.0.1) and blocks until SIGINT/SIGTERM.
Tests build the app with `build_app(settings, producer=...)`.
"""

from __future__ import annotations

import sys

import faust

from michi.bus.admin import replication_factor
from michi.bus.catalog import DETECTIONS, TRIP_SEGMENTS
from michi.bus.producer import EventProducer
from michi.bus.streams import StreamPublisher, create_app, run_worker
from michi.runtime import tune_garbage_collection
from michi.settings import load_settings
from michi.telemetry import configure_logging, configure_tracing
from services.scoring.adapters.progress import CommittedProgress
from services.scoring.adapters.tables import FaustDriverStore, FaustTripStore
from services.scoring.adapters.topics import TopicLayoutError, prepare_topics
from services.scoring.domain.driver import RollingWindow
from services.scoring.entrypoints.agents import register_agents
from services.scoring.handlers import SERVICE, ScoringConfig, ScoringHandlers
from services.scoring.metrics import ScoringMetrics
from services.scoring.settings import ScoringSettings


def build_app(settings: ScoringSettings, *, producer: EventProducer | None = None) -> faust.App:
    """The scoring faust app with its tables, agents, timer and pages (the caller closes `producer`)."""
    bootstrap = settings.kafka_connection()
    prefix = settings.topic_prefix
    trip_partitions, driver_partitions = prepare_topics(bootstrap, prefix)
    producer = producer or EventProducer(bootstrap, prefix, client_id=f"{prefix}{SERVICE}")
    app = create_app(
        SERVICE,
        bootstrap=bootstrap,
        app_id=f"{prefix}{SERVICE}",
        data_dir=settings.home / "faust",
        web_port=settings.scoring_port,
        web_host=settings.scoring_host,
        partitions=trip_partitions,
        # The trip and driver tables' changelogs are scoring's state: as many copies as every other topic.
        topic_replication_factor=replication_factor(bootstrap),
    )
    # Tables must match their source topics' partition counts (co-partitioning); keys and values are JSON.
    trip_table = app.Table("trips", default=None, partitions=trip_partitions)
    driver_table = app.Table("drivers", default=None, partitions=driver_partitions)
    detections_topic = DETECTIONS.name(prefix)

    def owns_trip_partition(partition: int) -> bool:
        return any(tp.topic == detections_topic and tp.partition == partition for tp in app.assignor.assigned_actives())

    progress = CommittedProgress(bootstrap, app.conf.id, [detections_topic, TRIP_SEGMENTS.name(prefix)])
    handlers = ScoringHandlers(
        trips=FaustTripStore(trip_table),
        drivers=FaustDriverStore(driver_table),
        publisher=StreamPublisher(producer, SERVICE),
        metrics=ScoringMetrics(),
        config=ScoringConfig(
            trip_end_grace_s=settings.scoring_trip_end_grace_s,
            trip_idle_timeout_s=settings.scoring_trip_idle_timeout_s,
            closed_trip_retention_s=settings.scoring_closed_trip_retention_s,
            driver_window=RollingWindow(
                days=settings.scoring_driver_window_days, max_trips=settings.scoring_driver_max_trips
            ),
        ),
        owns_trip_partition=owns_trip_partition,
        caught_up=progress.caught_up,
    )
    register_agents(
        app,
        handlers=handlers,
        producer=producer,
        prefix=prefix,
        batch_size=settings.scoring_batch_size,
        timer_interval_s=settings.scoring_timer_interval_s,
    )
    return app


def run() -> None:
    """Load settings from the environment and run the scoring worker until SIGINT/SIGTERM."""
    settings = load_settings(ScoringSettings)
    configure_logging(SERVICE, settings.log_level)
    configure_tracing(SERVICE, settings.home)

    producer = EventProducer(
        settings.kafka_connection(), settings.topic_prefix, client_id=f"{settings.topic_prefix}{SERVICE}"
    )
    try:
        try:
            app = build_app(settings, producer=producer)
        except TopicLayoutError as error:
            print(f"michi: scoring: {error}", file=sys.stderr)
            raise SystemExit(2) from error
        tune_garbage_collection()
        run_worker(app)
    finally:
        producer.close()
