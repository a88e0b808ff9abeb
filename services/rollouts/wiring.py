"""Wiring of the rollout controller: the only place that creates its adapters.

Run it with `python -m services.rollouts` (or `michi run rollouts`); `run()` reads the `MICHI_*` environment,
serves /healthz, /readyz and /metrics on `MICHI_ROLLOUTS_PORT` (default 8088, 127.0.0.1;
`michi.readiness.serve_operations`) and blocks until SIGINT/SIGTERM. Tests build it with
`build_consumer(settings, producer=...)`, or the controller alone with `build_controller`.
"""

from __future__ import annotations

from confluent_kafka import Consumer

from michi.bus.catalog import UPLOADS
from michi.bus.consumers import group_consumer_config
from michi.bus.producer import EventProducer
from michi.kit.running import run_consumer_service
from michi.migrations import with_database_folder
from michi.registry import ModelRegistry
from michi.registry.store import PlanPublisher
from michi.rollouts.bandit import BanditPolicy
from michi.settings import load_settings
from services.rollouts.adapters.metrics import RolloutsMetrics
from services.rollouts.adapters.store import RolloutsStore
from services.rollouts.entrypoints.consumer import SERVICE, RolloutsConsumer
from services.rollouts.handlers import AbPolicy, OutcomeRecorder, RolloutController, SignalRecorder
from services.rollouts.settings import RolloutsSettings


def ab_policy_of(settings: RolloutsSettings) -> AbPolicy:
    return AbPolicy(
        alpha=settings.rollouts_ab_alpha,
        tau_squared=settings.rollouts_ab_tau_squared,
        minimum_labels=settings.rollouts_ab_minimum_labels,
    )


def bandit_policy_of(settings: RolloutsSettings) -> BanditPolicy:
    return BanditPolicy(
        minimum_share=settings.rollouts_bandit_minimum_share,
        allocation_interval_seconds=settings.rollouts_bandit_interval_s,
        minimum_change=settings.rollouts_bandit_minimum_change,
        end_probability=settings.rollouts_bandit_end_probability,
        minimum_rewards_per_arm=settings.rollouts_bandit_minimum_labels,
        automatic_promotion=settings.rollouts_bandit_automatic_promotion,
        automatic_rollback=settings.rollouts_bandit_automatic_rollback,
    )


def build_controller(
    settings: RolloutsSettings,
    *,
    registry: ModelRegistry,
    store: RolloutsStore,
    metrics: RolloutsMetrics,
) -> RolloutController:
    return RolloutController(
        registry=registry,
        windows=store,
        progress=store,
        reports=metrics,
        interval_s=settings.rollouts_interval_s,
        signals=store,
        ab_policy=ab_policy_of(settings),
        bandit_policy=bandit_policy_of(settings),
        signal_retention_s=settings.rollouts_signal_retention_s,
        policy=settings.rollout_policy(),
    )


def build_consumer(
    settings: RolloutsSettings,
    *,
    producer: EventProducer,
    plans: PlanPublisher | None = None,
) -> RolloutsConsumer:
    """The controller subscribed to its topics (the caller closes `producer`; the consumer's
    `close` the rest). Plan revisions go out through `plans`, by default the service's producer."""
    url = with_database_folder(settings.resolved_database_url())
    metrics = RolloutsMetrics()
    store = RolloutsStore.from_url(url)
    registry = ModelRegistry.from_url(url, plans or producer)

    def closing() -> None:
        registry.close()
        store.close()

    return RolloutsConsumer(
        consumer=Consumer(group_consumer_config(settings.kafka_connection(), settings.topic_prefix, SERVICE)),
        producer=producer,
        recorder=OutcomeRecorder(windows=store, reports=metrics),
        signals=SignalRecorder(signals=store, reports=metrics, uploads_topic=UPLOADS.name(settings.topic_prefix)),
        controller=build_controller(settings, registry=registry, store=store, metrics=metrics),
        metrics=metrics,
        prefix=settings.topic_prefix,
        closing=closing,
    )


def run() -> None:
    """Load settings from the environment and run the rollout controller until SIGINT/SIGTERM."""
    settings = load_settings(RolloutsSettings)
    run_consumer_service(
        SERVICE,
        settings,
        port=settings.rollouts_port,
        host=settings.rollouts_host,
        build=lambda producer: build_consumer(settings, producer=producer),
    )
