"""Wiring of the monitor: the only place that creates its adapters.

Run it with `python -m services.monitor` (or `michi run monitor`); `run()` reads the `MICHI_*` environment,
serves /healthz, /readyz and /metrics on `MICHI_MONITOR_PORT` (default 8083, 127.0.0.1;
`michi.readiness.serve_operations`) with the monitor page beside them (`/` and `/v1/monitor/*`, `page_routes`)
and blocks until SIGINT/SIGTERM. Tests build it with `build_consumer(settings, producer=..., profiles=...)`.
"""

from __future__ import annotations

from confluent_kafka import Consumer

from michi.blobs import BlobStore
from michi.bus.consumers import group_consumer_config
from michi.bus.producer import EventProducer
from michi.kit.running import run_consumer_service
from michi.migrations import with_database_folder
from michi.readiness import PageHandler
from michi.settings import load_settings
from services.monitor.adapters.metrics import MonitorMetrics
from services.monitor.adapters.profiles import BlobProfiles
from services.monitor.adapters.publisher import KafkaMonitorPublisher
from services.monitor.adapters.store import MonitorStore
from services.monitor.entrypoints.consumer import SERVICE, MonitorConsumer
from services.monitor.entrypoints.page import pages_of
from services.monitor.handlers import ConceptDriftMonitor, ConceptPolicy, DriftMonitor, DriftPolicy, ProfileSource
from services.monitor.resources import ResourceWatch, ResourceWatchThread, start_resource_watch
from services.monitor.settings import MonitorSettings, cohort_names

# The monitor's consumer prefetches as its loop drains: once the local queue is over `queued.max.messages.kbytes`
# (64 MB, about 60,000 predictions), librdkafka postpones the next fetch by `fetch.queue.backoff.ms`, 1 s by
# default, while the loop drains the queue in less (63,000-82,000 predictions/s): reading a backlog it waited
# 130-250 ms for records every ~75,000 of them (15-24 % of its time, docs/benchmarks.md, *Monitor*). Fetching
# again 10 ms after the queue was full keeps it fed; the queue's size limit is unchanged.
PREFETCH = {"fetch.queue.backoff.ms": 10}


def policy_of(settings: MonitorSettings) -> DriftPolicy:
    return DriftPolicy(
        window_rows=settings.monitor_window_rows,
        idle_s=settings.monitor_window_idle_s,
        retrain_after_windows=settings.monitor_retrain_after_windows,
        min_rows=settings.monitor_min_rows,
        min_devices=settings.monitor_min_devices,
        sustain_windows=settings.monitor_sustain_windows,
        psi_threshold=settings.monitor_psi_threshold,
        min_drifted_features=settings.monitor_min_drifted_features,
        alert_on_low_resolution=settings.monitor_alert_low_resolution,
        drift_sample_per_class=settings.monitor_drift_sample_per_class,
        cohorts=cohort_names(settings.monitor_cohorts),
        max_cohorts=settings.monitor_max_cohorts,
        max_age_s=settings.monitor_window_max_age_s,
        page_url=settings.monitor_page_url,
    )


def build_consumer(
    settings: MonitorSettings,
    *,
    producer: EventProducer,
    profiles: ProfileSource | None = None,
    store: MonitorStore | None = None,
    watch_resources: bool = False,
) -> MonitorConsumer:
    """The monitor subscribed to predictions (the caller closes `producer`; the consumer's `close` the rest).

    `watch_resources`: also run the resource watch (memory, lag, cost: `services/monitor/resources.py`), as the
    service does; tests of the drift windows leave it off.
    """
    metrics = MonitorMetrics()
    history = store or MonitorStore.from_url(with_database_folder(settings.resolved_database_url()))
    publisher = KafkaMonitorPublisher(producer)
    resources: ResourceWatchThread | None = None
    if watch_resources:
        resources = start_resource_watch(
            settings,
            publisher,
            metrics.registry,
            published=lambda alert: metrics.alerts.labels(alert.kind).inc(),
            ledger=history,
        )

    def closing() -> None:
        if resources is not None:
            resources.stop()  # before the producer behind its publisher is closed
        history.close()

    concept = ConceptDriftMonitor(
        outcomes=history,
        publisher=publisher,
        reports=metrics,
        policy=ConceptPolicy(
            delta=settings.monitor_adwin_delta, retrain_on_concept_drift=settings.monitor_retrain_on_concept_drift
        ),
    )
    monitor = DriftMonitor(
        profiles=profiles
        or BlobProfiles(BlobStore(settings.resolved_blob_url()), refresh_s=settings.monitor_profile_refresh_s),
        publisher=publisher,
        history=history,
        reports=metrics,
        policy=policy_of(settings),
        calibrations=concept.calibration,
        # A closed window's SQL commit runs beside the next rows (`DriftMonitor._record_close`).
        background_writes=True,
    )
    return MonitorConsumer(
        consumer=Consumer(
            {**group_consumer_config(settings.kafka_connection(), settings.topic_prefix, SERVICE), **PREFETCH}
        ),
        producer=producer,
        monitor=monitor,
        concept=concept,
        metrics=metrics,
        prefix=settings.topic_prefix,
        closing=closing,
        resources=resources.watch if resources is not None else None,
    )


def page_routes(settings: MonitorSettings, consumer: MonitorConsumer) -> dict[str, PageHandler]:
    """The monitor page (`entrypoints/page.py`) over what `build_consumer` made: its store and its resource watch
    (None when it was built without one)."""
    store = consumer.monitor.history
    if not isinstance(store, MonitorStore):
        raise TypeError(f"the monitor page reads a MonitorStore, not {type(store).__name__}")
    watch = consumer.resources if isinstance(consumer.resources, ResourceWatch) else None
    return pages_of(settings, store, watch)


def run() -> None:
    """Load settings from the environment and run the monitor until SIGINT/SIGTERM."""
    settings = load_settings(MonitorSettings)
    # No ConsumerProgress check: an open window holds its partitions' commits back by design.
    run_consumer_service(
        SERVICE,
        settings,
        port=settings.monitor_port,
        host=settings.monitor_host,
        build=lambda producer: build_consumer(settings, producer=producer, watch_resources=True),
        pages=lambda consumer: page_routes(settings, consumer),
    )
