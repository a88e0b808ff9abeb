"""A bandit rollout driven by the rollout controller's consumer on the session's real Kafka broker (SQLite):
random-QA label requests of both arms first and their labels later (delayed feedback) through
`michi.label-requests.v1` and `michi.labels.v1`. The labels move the allocation (a `policy:bandit` plan revision on
`michi.model-rollouts.v1`, strategy BANDIT); the same labels delivered again change nothing; a new controller on
the same database (a restart) resumes exactly the same posteriors and publishes nothing new."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from michi.bus.catalog import LABEL_REQUESTS, LABELS, MODEL_ROLLOUTS
from michi.bus.producer import EventProducer
from michi.bus.reader import TopicReader
from michi.contracts.v1 import operations_pb2
from michi.infra.processes import wait_until
from michi.registry import ModelRegistry
from services.rollouts.adapters.store import RolloutsStore
from services.rollouts.entrypoints.consumer import RolloutsConsumer
from services.rollouts.settings import RolloutsSettings
from services.rollouts.wiring import build_consumer

from ..fakes import RecordingPlanPublisher
from ..unit.test_rollouts_controller import CANDIDATE, CHAMPION, MODEL, outcomes


@contextmanager
def running(settings: RolloutsSettings, producer: EventProducer) -> Iterator[RolloutsConsumer]:
    consumer = build_consumer(settings, producer=producer)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield consumer
    finally:
        stop.set()
        thread.join(30)
        consumer.close()


def labels_kept(consumer: RolloutsConsumer) -> float:
    return consumer.metrics.qa_records.labels("label")._value.get()


def test_delayed_labels_move_a_bandit_redeliveries_do_not_and_a_restart_resumes_the_posteriors(
    kafka_bootstrap: str, topic_prefix: str, producer: EventProducer, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'michi.db'}"
    settings = RolloutsSettings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        home=tmp_path / ".michi",
        database_url=database_url,
        rollouts_interval_s=0.3,
        rollouts_bandit_interval_s=0.5,
        rollouts_bandit_minimum_labels=10_000,  # keep allocating: this test is about the allocation
    )
    registry = ModelRegistry.from_url(database_url, RecordingPlanPublisher())
    for number in (1, 2):
        registry.register(MODEL, f"file:///{number}.onnx", f"{number}" * 64, "code", "data", {}, {}, created_by="test")
    registry.promote(MODEL, CHAMPION, actor="test", reason="bootstrap")
    registry.close()
    registry = ModelRegistry.from_url(database_url, producer)
    registry.start_rollout(MODEL, CANDIDATE, actor="person", reason="let labels decide", strategy="bandit")
    rollout = registry.rollouts(MODEL)[0]
    store = RolloutsStore.from_url(database_url)

    def look() -> dict[str, Any]:
        state = store.load(rollout.rollout_id) or {}
        return dict(state.get("bandit") or {})

    def posteriors() -> dict[str, tuple[float, float, int]]:
        arms = look()["arms"]
        return {version: (arm["alpha"], arm["beta"], arm["labelled"]) for version, arm in arms.items()}

    at = max(rollout.started_at.timestamp(), time.time()) + 0.5
    pairs = [
        *outcomes(CANDIDATE, correct=45, wrong=5, at=at),
        *outcomes(CHAMPION, correct=30, wrong=20, at=at),
    ]
    for request, _ in pairs:
        producer.publish(LABEL_REQUESTS, request.lineage.window_id, request)
    producer.flush()
    try:
        with running(settings, producer) as consumer:
            # The predictions are in, no label yet: the prior's even shares stay, nothing is published.
            assert wait_until(lambda: consumer.metrics.qa_records.labels("prediction")._value.get() == 100, 45.0, 0.2)
            first_look = time.time()
            assert wait_until(lambda: look().get("at", 0) > first_look + 1.0, 30.0, 0.2)
            assert posteriors() == {CANDIDATE: (1.0, 1.0, 0), CHAMPION: (1.0, 1.0, 0)}
            assert len(registry.rollout_history(MODEL)) == 1

            for _, label in pairs:  # people label hours later
                producer.publish(LABELS, label.lineage.window_id, label)
            producer.flush()
            assert wait_until(lambda: len(registry.rollout_history(MODEL)) >= 2, 45.0, 0.2), "no allocation"
            allocation = registry.rollout_history(MODEL)[0]
            assert (allocation.action, allocation.actor) == ("set-weight", "policy:bandit")
            assert allocation.evidence["arms"][CANDIDATE]["share"] == {"from": 0.5, "to": 0.95}
            assert posteriors() == {CANDIDATE: (46.0, 6.0, 50), CHAMPION: (31.0, 21.0, 50)}

            for _, label in pairs:  # delivered again
                producer.publish(LABELS, label.lineage.window_id, label)
            producer.flush()
            assert wait_until(lambda: labels_kept(consumer) == 200, 45.0, 0.2), "the redelivery was not read"
            redelivered = time.time()
            assert wait_until(lambda: look().get("at", 0) > redelivered + 1.0, 30.0, 0.2)
            assert posteriors() == {CANDIDATE: (46.0, 6.0, 50), CHAMPION: (31.0, 21.0, 50)}
            assert len(registry.rollout_history(MODEL)) == 2
        before = posteriors()

        restarted = time.time()
        with running(settings, producer):  # a new controller on the same SQL: the same posteriors
            assert wait_until(lambda: look().get("at", 0) > restarted + 1.0, 45.0, 0.2)
            assert posteriors() == before
            assert len(registry.rollout_history(MODEL)) == 2, "nothing published again"
    finally:
        store.close()

    with TopicReader(kafka_bootstrap, MODEL_ROLLOUTS, topic_prefix) as reader:
        plans = [record.message for record in reader.read_to_end(timeout=30)]
    registry.close()
    assert all(isinstance(plan, operations_pb2.RolloutPlan) for plan in plans)
    assert [plan.strategy for plan in plans] == [operations_pb2.ROLLOUT_STRATEGY_BANDIT] * 2  # type: ignore[attr-defined]
    assert [round(plan.arms[0].traffic_share, 6) for plan in plans] == [0.5, 0.95]  # type: ignore[attr-defined]
    assert len({plan.rollout_id for plan in plans}) == 1  # type: ignore[attr-defined]
    assert "bandit allocation: candidate 2 95.00%" in plans[1].reason  # type: ignore[attr-defined]
