"""The trainer's `EventHandler`: what each consumed label and alert yields, with a fake `EventStore`."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from michi.contracts import timestamp_from_seconds, timestamp_now
from michi.contracts.v1 import common_pb2, labels_pb2, operations_pb2
from michi.kit.consumer import Rejected
from services.trainer.adapters.metrics import TrainerMetrics
from services.trainer.domain.labels import WindowLabel
from services.trainer.handlers import EventHandler


class FakeEventStore:
    """Keeps labels and alerts by event id, as `TrainerStore` does."""

    def __init__(self) -> None:
        self.labels: dict[str, WindowLabel] = {}
        self.alerts: dict[str, tuple[str, str]] = {}
        self.label_writes = 0

    def add_labels(self, labels: Sequence[WindowLabel]) -> int:
        self.label_writes += 1
        new = {label.event_id: label for label in labels if label.event_id not in self.labels}
        self.labels.update(new)
        return len(new)

    def add_alert(self, event_id: str, kind: str, message: str) -> bool:
        if event_id in self.alerts:
            return False
        self.alerts[event_id] = (kind, message)
        return True


class Wakes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def label(window: str, **changes: object) -> labels_pb2.Label:
    message = labels_pb2.Label(
        event_id=f"label-{window}",
        occurred_at=timestamp_now(),
        lineage=common_pb2.Lineage(upload_id="upload-1", window_id=window, device_id="device-1"),
        event_type=common_pb2.EVENT_TYPE_HARSH_BRAKING,
        source=labels_pb2.LABEL_SOURCE_CONSENSUS,
        window=common_pb2.TimeSpan(
            started_at=timestamp_from_seconds(1_764_000_000), ended_at=timestamp_from_seconds(1_764_000_002)
        ),
    )
    for name, value in changes.items():
        if name == "window_id":
            message.lineage.window_id = str(value)
        else:
            setattr(message, name, value)
    return message


def counted(metrics: TrainerMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


Parts = tuple[EventHandler, FakeEventStore, TrainerMetrics, Wakes]


@pytest.fixture
def parts() -> Parts:
    store, metrics, wakes = FakeEventStore(), TrainerMetrics(), Wakes()
    return EventHandler(store=store, metrics=metrics, wake=wakes), store, metrics, wakes


def run_batch(handler: EventHandler, *messages: labels_pb2.Label | operations_pb2.Alert) -> list[Rejected]:
    """One batch as the kit's loop runs it: a `Rejected` record is dead-lettered and the batch goes on."""
    rejected = []
    handler.start_batch()
    for message in messages:
        try:
            handler.handle(message)
        except Rejected as refusal:
            rejected.append(refusal)
            handler.dead_lettered()
    handler.end_batch()
    return rejected


def test_labels_are_stored_at_the_end_of_their_batch_and_wake_the_worker_once(parts: Parts) -> None:
    handler, store, metrics, wakes = parts
    handler.start_batch()
    handler.handle(label("w-1"))
    handler.handle(label("w-2"))
    assert store.labels == {} and wakes.count == 0
    handler.end_batch()
    assert set(store.labels) == {"label-w-1", "label-w-2"} and store.label_writes == 1
    assert wakes.count == 1
    assert counted(metrics, "michi_trainer_labels_total", outcome="stored") == 2

    # Redelivered: counted as duplicates, nothing new, no wake.
    assert run_batch(handler, label("w-1"), label("w-2")) == []
    assert wakes.count == 1
    assert counted(metrics, "michi_trainer_labels_total", outcome="duplicate") == 2


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"window_id": ""}, "label without window_id"),
        ({"event_type": common_pb2.EVENT_TYPE_UNSPECIFIED}, "label with event type 0"),
    ],
)
def test_a_label_a_dataset_cannot_use_is_refused_as_a_schema_violation(
    parts: Parts, changes: dict[str, object], problem: str
) -> None:
    handler, store, metrics, wakes = parts
    rejected = run_batch(handler, label("bad", **changes), label("good"))
    assert [(refusal.reason, refusal.detail) for refusal in rejected] == [("schema-violation", problem)]
    assert set(store.labels) == {"label-good"} and wakes.count == 1
    assert counted(metrics, "michi_trainer_labels_total", outcome="dead-letter") == 1


def test_every_alert_is_counted_and_only_a_new_retrain_alert_is_stored_and_wakes(parts: Parts) -> None:
    handler, store, metrics, wakes = parts
    drift = operations_pb2.Alert(event_id="a-drift", kind="drift", message="feature drift")
    assert run_batch(handler, drift, operations_pb2.Alert(event_id="a-none")) == []
    assert store.alerts == {} and wakes.count == 0
    assert counted(metrics, "michi_trainer_alerts_total", kind="drift") == 1
    assert counted(metrics, "michi_trainer_alerts_total", kind="unknown") == 1

    retrain = operations_pb2.Alert(event_id="a-retrain", kind="retrain", message="more winter labels")
    handler.start_batch()
    handler.handle(retrain)
    assert store.alerts == {"a-retrain": ("retrain", "more winter labels")}  # stored when read
    assert wakes.count == 0
    handler.end_batch()
    assert wakes.count == 1

    run_batch(handler, retrain)  # redelivered: counted, not new
    assert wakes.count == 1 and counted(metrics, "michi_trainer_alerts_total", kind="retrain") == 2
    assert store.label_writes == 0  # no labels, no label write


def test_a_camera_reviews_label_never_becomes_a_motion_training_label(parts: Parts) -> None:
    handler, store, metrics, wakes = parts
    # "normal" on a camera episode's frames says nothing of a window of IMU samples; nor does "drowsiness".
    reviewed_normal = label("camera-episode-1", event_type=common_pb2.EVENT_TYPE_NORMAL)
    reviewed_normal.request_reasons.append(labels_pb2.LABEL_REASON_CAMERA_REVIEW)
    drowsy = label("camera-episode-2", event_type=common_pb2.EVENT_TYPE_DROWSINESS)
    assert run_batch(handler, reviewed_normal, drowsy, label("w-imu")) == []
    assert set(store.labels) == {"label-w-imu"} and wakes.count == 1
    assert counted(metrics, "michi_trainer_labels_total", outcome="camera") == 2
