"""The monitor's consumer on the kit's batch loop: a poll batch of records goes to `DriftMonitor.handle_batch` at once,
decoded without the `features` map, and bad records go to the dead letters with the reasons they always had."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import numpy as np
from confluent_kafka import Message, TopicPartition

from michi.bus.catalog import PREDICTIONS
from michi.bus.headers import build_headers
from michi.contracts.v1 import common_pb2, inference_pb2
from michi.windows.features import FEATURE_NAMES, pack_features
from services.monitor.adapters.metrics import MonitorMetrics
from services.monitor.adapters.prediction_view import PredictionView
from services.monitor.entrypoints.consumer import MonitorConsumer
from services.monitor.handlers import ConceptDriftMonitor, ConceptPolicy, DriftMonitor, DriftPolicy
from tests.fakes import ScriptedPolls

from .test_monitor_handlers import History, Publisher, Reports
from .test_monitor_traffic_profile import TrafficProfiles, profile_read

PREFIX = "test."
TOPIC = PREDICTIONS.name(PREFIX)


class Records(ScriptedPolls):
    def __init__(self, batches: list[list[Any]]) -> None:
        super().__init__(batches)
        self.commits: list[list[tuple[int, int]]] = []

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        callbacks["on_assign"](self, [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])

    def committed(self, partitions: list[TopicPartition], timeout: float = 0.0) -> list[TopicPartition]:
        return [TopicPartition(item.topic, item.partition, -1001) for item in partitions]

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append([(item.partition, item.offset) for item in offsets])

    def close(self) -> None:
        pass


class Letters:
    def __init__(self) -> None:
        self.letters: list[tuple[int, int, str]] = []

    def dead_letter_record(self, **fields: Any) -> concurrent.futures.Future[None]:
        self.letters.append((fields["record"].partition(), fields["record"].offset(), fields["reason"]))
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        future.set_result(None)
        return future


class NoOutcomes:
    def sequence_ready(self) -> list[Any]:
        return []

    def outcomes(self) -> list[Any]:
        return []

    def concept_drift_ids(self) -> set[str]:
        return set()


def record(partition: int, offset: int, message: inference_pb2.Prediction | None) -> Message:
    return Message(
        topic=TOPIC,
        partition=partition,
        offset=offset,
        value=message.SerializeToString() if message is not None else b"",
        headers=list(build_headers(PREDICTIONS.schema)),
    )


def prediction(index: int, random: np.random.Generator) -> inference_pb2.Prediction:
    message = inference_pb2.Prediction(
        event_id=f"prediction-{index}", variant=inference_pb2.VARIANT_CHAMPION, vehicle_type="van", sample_rate_hz=50
    )
    message.lineage.model_name, message.lineage.model_version = "risk", "v1"
    message.lineage.window_id, message.lineage.device_id = f"window-{index}", f"device-{index % 6}"
    message.calibration.state = common_pb2.CALIBRATION_STATE_CALIBRATED
    values = random.normal(1.0, 0.3, len(FEATURE_NAMES)).astype(np.float32)
    message.features.update(zip(FEATURE_NAMES, values.tolist(), strict=True))
    message.packed_features = pack_features(values[np.newaxis, :])[0]
    return message


def test_a_poll_batch_is_windowed_at_once_and_its_bad_records_are_dead_lettered_with_their_reasons() -> None:
    random = np.random.default_rng(0)
    bad = prediction(3, random)
    bad.packed_features = b"\x00" * 5
    batch = [record(0, 0, prediction(0, random)), record(1, 0, prediction(1, random)), record(0, 1, None)]
    batch += [record(1, 1, bad), record(0, 2, prediction(4, random)), record(1, 2, prediction(5, random))]
    consumer = Records([batch])
    letters = Letters()
    reports = Reports()
    handed: list[list[Any]] = []
    monitor = DriftMonitor(
        profiles=TrafficProfiles(profile_read()),
        publisher=Publisher(),
        history=History(),
        reports=reports,
        policy=DriftPolicy(window_rows=3, min_rows=1, cohorts=()),
        clock=lambda: 0.0,
    )
    original = monitor.handle_batch
    monitor.handle_batch = lambda *arguments: handed.append(arguments[0]) or original(*arguments)  # type: ignore[method-assign]
    metrics = MonitorMetrics()
    concept = ConceptDriftMonitor(outcomes=NoOutcomes(), publisher=Publisher(), reports=metrics, policy=ConceptPolicy())  # type: ignore[arg-type]
    monitor_consumer = MonitorConsumer(
        consumer=consumer,  # type: ignore[arg-type]
        producer=letters,  # type: ignore[arg-type]
        monitor=monitor,
        concept=concept,
        metrics=metrics,
        prefix=PREFIX,
    )

    assert monitor_consumer.poll_once(0) == 6

    (given,) = handed
    assert len(given) == 5 and all(isinstance(message, PredictionView) for message in given)
    assert letters.letters == [(0, 1, "empty-value"), (1, 1, "schema-violation")]
    # Three rows filled a window, which closed; the fourth opened the next one, which holds partition 1's commit
    # at its first row (the bad record before it is committed: it was dead-lettered).
    assert [closed.rows for closed in reports.closed] == [3]
    assert consumer.commits == [[(0, 3), (1, 2)]]
