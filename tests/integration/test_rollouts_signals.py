"""The rollout controller's analyses on more than labels, on the session's real Kafka broker: trip segments (each
published twice), detections, their labels and the monitor's drift alert for the candidate go through
`michi.trip-segments.v1`, `michi.detections.v1`, `michi.labels.v1` and `michi.alerts.v1`; the controller measures
each arm's uploads, km, detections, false alerts and latency (from the segments' broker timestamps) and rolls the
candidate back for its open drift episode, once, with that reason."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from michi.bus.catalog import ALERTS, DETECTIONS, LABEL_REQUESTS, LABELS, TRIP_SEGMENTS
from michi.bus.producer import EventProducer
from michi.contracts.v1 import common_pb2
from michi.infra.processes import wait_until
from michi.registry import ModelRegistry
from services.rollouts.adapters.store import RolloutsStore
from services.rollouts.handlers import serving_split
from services.rollouts.settings import RolloutsSettings
from services.rollouts.wiring import build_consumer

from ..fakes import RecordingPlanPublisher
from ..unit.test_rollouts_controller import CANDIDATE, CHAMPION, MODEL, outcomes
from ..unit.test_rollouts_signals import DEVICES, detection, drift_alert, label_of, segment

DOCUMENT = {
    "analyses": {
        "quality": {
            "interval": "1s",
            "deadline": "10m",
            "minimum_predictions": 20,
            "minimum_labelled_windows": 20,
            "minimum_km": 5,
            "minimum_uploads": 50,
            # Never met (a count: inconclusive, never a failure) so the rollout waits for the drift alert.
            "success": ["agreement_with_labels >= champion - 0.02", "drift_alerts == 0", "uploads >= 1000000"],
            "failure": ["drift_alerts > 0"],
        }
    },
    "steps": [{"set_weight": 50}, {"analyse": "quality"}],
}


def test_segments_detections_and_a_drift_alert_on_kafka_roll_a_drifting_candidate_back(
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
    registry = ModelRegistry.from_url(database_url, RecordingPlanPublisher())
    for number in (1, 2):
        registry.register(MODEL, f"file:///{number}.onnx", f"{number}" * 64, "code", "data", {}, {}, created_by="test")
    registry.promote(MODEL, CHAMPION, actor="test", reason="bootstrap")
    registry.start_rollout(MODEL, CANDIDATE, actor="person", reason="try it", document=DOCUMENT)
    started = registry.rollouts(MODEL)[0].started_at.timestamp()
    split = serving_split(registry.current_plan(MODEL))
    assert split is not None

    at = max(started, time.time()) + 0.5
    for request, label in [
        *outcomes(CANDIDATE, correct=29, wrong=1, at=at),
        *outcomes(CHAMPION, correct=28, wrong=2, at=at),
    ]:
        producer.publish(LABEL_REQUESTS, request.lineage.window_id, request)
        producer.publish(LABELS, label.lineage.window_id, label)
    uploads = {CANDIDATE: 0, CHAMPION: 0}
    for device in DEVICES:
        version = split.route(device).arm
        for upload in range(5):
            message, _ = segment(device, at + upload, 200.0, 0.0)
            message.lineage.trip_id = f"trip-{device}"
            for _ in range(2):  # delivered twice: counted once
                producer.publish(TRIP_SEGMENTS, message.lineage.trip_id, message)
            uploads[version] += 1
            if upload % 2 == 0:
                found = detection(version, split.rollout_id, at + upload)
                found.lineage.trip_id = message.lineage.trip_id
                producer.publish(DETECTIONS, found.lineage.trip_id, found)
                verdict = common_pb2.EVENT_TYPE_NORMAL if upload == 0 else common_pb2.EVENT_TYPE_HARSH_BRAKING
                producer.publish(LABELS, found.lineage.window_id, label_of(found.lineage.window_id, verdict))
    producer.flush()

    consumer = build_consumer(settings, producer=producer)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    store = RolloutsStore.from_url(database_url)
    try:
        assert wait_until(lambda: sum(store.device_totals(at - 1).uploads.values()) == 5 * len(DEVICES), 45.0, 0.2), (
            "the segments were not all kept within 45 s"
        )
        assert [decision.action for decision in registry.rollout_history(MODEL)] == ["start"]
        producer.publish(ALERTS, "drift", drift_alert(CANDIDATE, "episode-1", "firing", at + 1))
        producer.flush()
        assert wait_until(lambda: len(registry.rollout_history(MODEL)) >= 2, 45.0, 0.2), "no decision within 45 s"
        for _ in range(3):  # three more looks of the controller: none may decide again
            looked = consumer.controller._last_tick
            assert wait_until(lambda looked=looked: consumer.controller._last_tick != looked, 10.0, 0.05)
    finally:
        stop.set()
        thread.join(30)
        consumer.close()
        store.close()
    history = registry.rollout_history(MODEL)
    registry.close()
    assert [(decision.action, decision.actor) for decision in reversed(history)] == [
        ("start", "person"),
        ("rollback", "policy:rollout-steps"),
    ]
    decision = history[0]
    assert "failed: drift_alerts > 0: candidate 1" in decision.reason
    candidate, champion = decision.evidence["analysis"]["candidate"], decision.evidence["analysis"]["champion"]
    assert (candidate["uploads"], champion["uploads"]) == (uploads[CANDIDATE], uploads[CHAMPION])
    assert candidate["km"] == round(uploads[CANDIDATE] * 0.2, 6)
    assert candidate["detections"] > 0 and 0 < candidate["false_alerts"] < candidate["detections"]
    assert candidate["latency_p99_ms"] is not None and champion["latency_p99_ms"] is not None
    assert (candidate["drift_alerts"], champion["drift_alerts"]) == (1, 0)
