"""The monitor on real Kafka: reference-like predictions raise nothing, a shifted feature raises exactly one drift
alert and one drift sample for people to label, a monitor stopped mid-window without a commit (as kill -9 leaves
it) still yields exactly one of each, and reference-like predictions again resolve the episode."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from michi.blobs import BlobStore
from michi.bus.catalog import ALERTS, LABEL_REQUESTS, LABELS, PREDICTIONS
from michi.bus.producer import EventProducer
from michi.bus.reader import TopicReader, end_offsets
from michi.contracts.v1 import inference_pb2, labels_pb2
from michi.registry.layout import reference_profile_key
from services.monitor.settings import MonitorSettings
from services.monitor.wiring import build_consumer
from services.trainer.domain.profile import PROFILE_VERSION, histogram
from tests.integration.test_warehouse_sink import caught_up, wait_for

WINDOW_ROWS = 1000


def store_profile(blob_url: str) -> None:
    random = np.random.default_rng(0)
    document = {
        "version": PROFILE_VERSION,
        "data_version": "ds-1",
        "features": {
            "gps_speed_mps": histogram(random.normal(15.0, 5.0, 20_000)),
            "longitudinal_min_mps2": histogram(random.normal(-1.0, 0.5, 20_000)),
        },
    }
    asyncio.run(BlobStore(blob_url).put_bytes(reference_profile_key("risk", "v1"), json.dumps(document).encode()))


def publish_predictions(producer: EventProducer, rows: int, *, start: int, speed_shift: float) -> None:
    random = np.random.default_rng(start + 1)
    futures = []
    for index in range(start, start + rows):
        message = inference_pb2.Prediction(event_id=f"prediction-{index}", variant=inference_pb2.VARIANT_CHAMPION)
        message.occurred_at.seconds = 1_790_000_000 + index
        message.lineage.model_name, message.lineage.model_version = "risk", "v1"
        message.lineage.device_id = f"device-{index % 7}"
        message.lineage.window_id = f"window-{index}"
        message.predicted = 2 if index % 10 == 0 else 1  # type: ignore[assignment]
        message.features["gps_speed_mps"] = float(random.normal(15.0 + speed_shift, 5.0))
        message.features["longitudinal_min_mps2"] = float(random.normal(-1.0, 0.5))
        futures.append(producer.publish(PREDICTIONS, message.lineage.device_id, message))
    for future in futures:
        future.result(30)


def run_until_caught_up(settings: MonitorSettings, producer: EventProducer, specs: tuple = (PREDICTIONS,)) -> None:
    consumer = build_consumer(settings, producer=producer)
    stop = threading.Event()
    worker = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    worker.start()
    topics = [spec.name(settings.topic_prefix) for spec in specs]
    try:
        wait_for(lambda: caught_up(settings.resolved_kafka_bootstrap(), f"{settings.topic_prefix}monitor", topics))
    finally:
        stop.set()
        worker.join(30)
        consumer.close()
    assert not worker.is_alive()


def drift_alerts(bootstrap: str, prefix: str) -> list[Any]:
    with TopicReader(bootstrap, ALERTS, prefix) as reader:
        return [record.message for record in reader.read_to_end(timeout=30)]


def label_requests(bootstrap: str, prefix: str) -> list[Any]:
    with TopicReader(bootstrap, LABEL_REQUESTS, prefix) as reader:
        return [record.message for record in reader.read_to_end(timeout=30)]


def test_one_drift_alert_for_a_shift_even_after_a_restart_mid_window(
    kafka_bootstrap: str, topic_prefix: str, producer: EventProducer, tmp_path: Path
) -> None:
    blob_url = f"file://{tmp_path / 'blobs'}"
    store_profile(blob_url)
    settings = MonitorSettings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        home=tmp_path / ".michi",
        blob_url=blob_url,
        monitor_window_rows=WINDOW_ROWS,
        monitor_sustain_windows=1,  # the shift is one window long: it alerts at once
    )

    # Two windows from the reference distribution: closed, committed, no alert.
    publish_predictions(producer, 2 * WINDOW_ROWS, start=0, speed_shift=0.0)
    run_until_caught_up(settings, producer)
    assert sum(end_offsets(kafka_bootstrap, ALERTS.name(topic_prefix)).values()) == 0

    # A shifted speed. The first monitor reads part of the window and stops without committing (kill -9).
    publish_predictions(producer, WINDOW_ROWS, start=2 * WINDOW_ROWS, speed_shift=4.0)
    first = build_consumer(settings, producer=producer)
    first.loop.batch_size = 100
    for _ in range(600):
        first.poll_once(0.5)
        open_rows = [window.rows for window in first.monitor.windows.values()]
        if open_rows and open_rows[0] >= 300:
            break
    assert open_rows and 300 <= open_rows[0] < WINDOW_ROWS
    assert first.monitor.committable() == {}  # nothing of the open window may be committed
    first.consumer.close()

    # The next monitor reads the whole window again: exactly one alert.
    run_until_caught_up(settings, producer)
    alerts = drift_alerts(kafka_bootstrap, topic_prefix)
    assert [(alert.kind, alert.attributes["features"]) for alert in alerts] == [("drift", "gps_speed_mps")]
    assert alerts[0].figures["rows"] == WINDOW_ROWS and alerts[0].attributes["status"] == "firing"
    # Its sample for people: five windows per predicted class, each asked for once in effect (same ids).
    requests = label_requests(kafka_bootstrap, topic_prefix)
    assert {request.reason for request in requests} == {labels_pb2.LABEL_REASON_DRIFT_SAMPLE}
    assert len({request.event_id for request in requests}) == 10
    assert {request.lineage.window_id for request in requests} <= {
        f"window-{index}" for index in range(2 * WINDOW_ROWS, 3 * WINDOW_ROWS)
    }

    # The fleet is back to what the model knows: the episode resolves.
    publish_predictions(producer, WINDOW_ROWS, start=3 * WINDOW_ROWS, speed_shift=0.0)
    run_until_caught_up(settings, producer)
    alerts = drift_alerts(kafka_bootstrap, topic_prefix)
    assert [(alert.kind, alert.attributes["status"]) for alert in alerts] == [
        ("drift", "firing"),
        ("drift", "resolved"),
    ]
    assert alerts[1].attributes["episode"] == alerts[0].attributes["episode"]


def test_one_concept_drift_alert_and_retrain_from_random_labels_even_after_a_restart(
    kafka_bootstrap: str, topic_prefix: str, producer: EventProducer, tmp_path: Path
) -> None:
    settings = MonitorSettings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        home=tmp_path / ".michi",
        blob_url=f"file://{tmp_path / 'blobs'}",
    )
    random = np.random.default_rng(11)
    errors = np.concatenate([random.random(600) < 0.05, random.random(600) < 0.40])
    requests, labels = [], []
    for index, wrong in enumerate(errors):
        request = labels_pb2.LabelRequest(
            event_id=f"request-{index}", reason=labels_pb2.LABEL_REASON_RANDOM_QA, suggested=1
        )
        request.lineage.window_id, request.lineage.model_name, request.lineage.model_version = (
            f"w-{index}",
            "risk",
            "v1",
        )
        request.occurred_at.seconds = 1_790_000_000 + index
        requests.append(producer.publish(LABEL_REQUESTS, request.lineage.window_id, request))
        label = labels_pb2.Label(event_id=f"label-{index}", event_type=2 if wrong else 1)  # type: ignore[arg-type]
        label.request_reasons.append(labels_pb2.LABEL_REASON_RANDOM_QA)
        label.lineage.CopyFrom(request.lineage)
        labels.append(label)
    for future in requests:
        future.result(30)
    topics = (PREDICTIONS, LABEL_REQUESTS, LABELS)
    run_until_caught_up(settings, producer, topics)
    # People answer later.
    for future in [producer.publish(LABELS, label.lineage.window_id, label) for label in labels]:
        future.result(30)
    run_until_caught_up(settings, producer, topics)
    alerts = drift_alerts(kafka_bootstrap, topic_prefix)
    changes = sorted((a for a in alerts if a.kind == "concept-drift"), key=lambda alert: alert.figures["labels"])
    retrains = [alert for alert in alerts if alert.kind == "retrain"]
    # The first change found is the rise, after the step; each rise (not a fall) asks for one retrain.
    assert changes and changes[0].attributes["direction"] == "worse", [alert.message for alert in alerts]
    assert changes[0].figures["labels"] > 600
    worse = [change.event_id for change in changes if change.attributes["direction"] == "worse"]
    assert sorted(retrain.attributes["concept_drift"] for retrain in retrains) == sorted(worse)
    assert len(alerts) == len(changes) + len(retrains) == len({alert.event_id for alert in alerts})
    # A restarted monitor replays what it kept: nothing more.
    run_until_caught_up(settings, producer, topics)
    assert len(drift_alerts(kafka_bootstrap, topic_prefix)) == len(alerts)
