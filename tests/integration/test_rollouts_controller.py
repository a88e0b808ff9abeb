"""The rollout controller's consumer on the session's real Kafka broker: random-QA label requests and labels of
both arms of a canary go through `michi.label-requests.v1` and `michi.labels.v1`, the controller's loop analyses
the step and its decision reaches `michi.model-rollouts.v1` as a plan revision (50 % on the candidate, by
`policy:rollout-steps`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from michi.bus.catalog import LABEL_REQUESTS, LABELS, MODEL_ROLLOUTS
from michi.bus.producer import EventProducer
from michi.bus.reader import TopicReader
from michi.contracts.v1 import operations_pb2
from michi.infra.processes import wait_until
from michi.registry import ModelRegistry
from services.rollouts.settings import RolloutsSettings
from services.rollouts.wiring import build_consumer

from ..fakes import RecordingPlanPublisher
from ..unit.test_rollouts_controller import CANDIDATE, CHAMPION, MODEL, outcomes

DOCUMENT = {
    "analyses": {
        "quality": {
            "interval": "1s",
            "deadline": "10m",
            "minimum_predictions": 20,
            "minimum_labelled_windows": 20,
            "success": ["agreement_with_labels >= champion - 0.02"],
        }
    },
    "steps": [{"set_weight": 10}, {"analyse": "quality"}, {"set_weight": 50}, {"analyse": "quality"}],
}


def test_labels_of_both_arms_on_kafka_step_a_canary_to_50_percent(
    kafka_bootstrap: str, topic_prefix: str, producer: EventProducer, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'michi.db'}"
    settings = RolloutsSettings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        home=tmp_path / ".michi",
        database_url=database_url,
        rollouts_interval_s=0.5,
    )
    # The champion is set without Kafka; the start and every later revision go to the topic.
    registry = ModelRegistry.from_url(database_url, RecordingPlanPublisher())
    for number in (1, 2):
        registry.register(MODEL, f"file:///{number}.onnx", f"{number}" * 64, "code", "data", {}, {}, created_by="test")
    registry.promote(MODEL, CHAMPION, actor="test", reason="bootstrap")
    registry.close()
    registry = ModelRegistry.from_url(database_url, producer)
    registry.start_rollout(MODEL, CANDIDATE, actor="person", reason="try it", document=DOCUMENT)
    started = registry.rollouts(MODEL)[0].started_at.timestamp()

    at = max(started, time.time()) + 0.5
    for request, label in [
        *outcomes(CANDIDATE, correct=29, wrong=1, at=at),
        *outcomes(CHAMPION, correct=28, wrong=2, at=at),
    ]:
        producer.publish(LABEL_REQUESTS, request.lineage.window_id, request)
        producer.publish(LABELS, label.lineage.window_id, label)
    producer.flush()

    consumer = build_consumer(settings, producer=producer)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: len(registry.rollout_history(MODEL)) >= 2, 45.0, 0.2), "no decision within 45 s"
    finally:
        stop.set()
        thread.join(30)
        consumer.close()
    decision = registry.rollout_history(MODEL)[0]
    assert (decision.action, decision.actor) == ("set-weight", "policy:rollout-steps")
    assert decision.evidence["analysis"]["candidate"]["labelled"] == 30
    assert decision.evidence["analysis"]["champion"]["labelled"] == 30

    with TopicReader(kafka_bootstrap, MODEL_ROLLOUTS, topic_prefix) as reader:
        plans = [record.message for record in reader.read_to_end(timeout=30)]
    registry.close()
    assert all(isinstance(plan, operations_pb2.RolloutPlan) for plan in plans)
    assert [round(plan.arms[0].traffic_share, 6) for plan in plans] == [0.1, 0.5]  # type: ignore[attr-defined]
    assert len({plan.rollout_id for plan in plans}) == 1  # type: ignore[attr-defined]
    assert "policy" not in plans[0].reason and "step 3: 50% of devices" in plans[1].reason  # type: ignore[attr-defined]
