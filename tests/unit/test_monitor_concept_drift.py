"""Concept drift: ADWIN over random-QA labels joined to the model's calls, fed in order, replayed after a restart."""

from __future__ import annotations

import numpy as np
import pytest

from michi.contracts.v1 import labels_pb2, operations_pb2
from services.monitor.adapters.store import MonitorStore
from services.monitor.domain.performance import Calibration, RealisedPerformance
from services.monitor.handlers import (
    INCOMPLETE,
    NOT_RANDOM,
    REASONS_UNKNOWN,
    ConceptDriftMonitor,
    ConceptPolicy,
    LabelOutcome,
)

NORMAL, BRAKING = 1, 2
# Labels before the error rate steps from 5 % to 40 %.
STEP_AT = 600


class Publisher:
    def __init__(self, fail_on_kind: str | None = None) -> None:
        self.alerts: list[operations_pb2.Alert] = []
        self.fail_on_kind = fail_on_kind

    def publish_alert(self, alert: operations_pb2.Alert) -> None:
        if alert.kind == self.fail_on_kind:
            raise RuntimeError("the broker did not acknowledge")
        self.alerts.append(alert)

    def publish_label_requests(self, requests: list[labels_pb2.LabelRequest]) -> None:
        raise AssertionError("concept drift asks for no labels")


class Reports:
    def __init__(self) -> None:
        self.skipped: list[str] = []
        self.error_rates: list[float] = []

    def label_skipped(self, reason: str) -> None:
        self.skipped.append(reason)

    def outcome(
        self,
        outcome: LabelOutcome,
        error_rate: float,
        window: int,
        realised: RealisedPerformance,
        calibration: Calibration,
    ) -> None:
        self.error_rates.append(error_rate)
        self.realised_accuracy = realised.accuracy


@pytest.fixture
def store() -> MonitorStore:
    # In memory (one connection per thread, the test's): the SQL is the same, without a disk sync per write.
    store = MonitorStore.from_url("sqlite://")
    yield store  # type: ignore[misc]
    store.close()


def build(store: MonitorStore, publisher: Publisher | None = None) -> tuple[ConceptDriftMonitor, Publisher, Reports]:
    publisher, reports = publisher or Publisher(), Reports()
    monitor = ConceptDriftMonitor(outcomes=store, publisher=publisher, reports=reports, policy=ConceptPolicy())
    return monitor, publisher, reports


def request(
    index: int, *, reason: int = labels_pb2.LABEL_REASON_RANDOM_QA, version: str = "v1"
) -> labels_pb2.LabelRequest:
    message = labels_pb2.LabelRequest(event_id=f"request-{index}", reason=reason, suggested=NORMAL, confidence=0.9)  # type: ignore[arg-type]
    message.lineage.window_id, message.lineage.model_name, message.lineage.model_version = f"w-{index}", "risk", version
    message.occurred_at.seconds = 1_790_000_000 + index
    return message


def label(
    index: int, *, wrong: bool, reasons: tuple[int, ...] = (labels_pb2.LABEL_REASON_RANDOM_QA,)
) -> labels_pb2.Label:
    message = labels_pb2.Label(event_id=f"label-{index}", event_type=BRAKING if wrong else NORMAL)  # type: ignore[arg-type]
    message.request_reasons.extend(reasons)  # type: ignore[arg-type]
    message.lineage.window_id, message.lineage.model_name, message.lineage.model_version = f"w-{index}", "risk", "v1"
    return message


def feed(monitor: ConceptDriftMonitor, errors: np.ndarray, *, start: int = 0, batch: int = 100) -> None:
    for first in range(0, len(errors), batch):
        for offset, wrong in enumerate(errors[first : first + batch]):
            index = start + first + offset
            monitor.request(request(index))
            monitor.label(label(index, wrong=bool(wrong)))
        monitor.settle()


def stream(seed: int = 5) -> np.ndarray:
    random = np.random.default_rng(seed)
    return np.concatenate([random.random(STEP_AT) < 0.05, random.random(STEP_AT) < 0.40])


def test_a_rise_in_the_error_rate_on_random_labels_raises_one_concept_drift_alert_and_a_retrain(
    store: MonitorStore,
) -> None:
    monitor, publisher, reports = build(store)
    feed(monitor, stream())
    kinds = [alert.kind for alert in publisher.alerts]
    assert kinds[:2] == ["concept-drift", "retrain"], kinds
    alert, retrain = publisher.alerts[:2]
    assert alert.severity == operations_pb2.ALERT_SEVERITY_WARNING and alert.attributes["direction"] == "worse"
    assert alert.figures["error_rate_before"] < 0.15 < alert.figures["error_rate_after"]
    # Found within a few hundred labels of the step, not before it.
    assert STEP_AT < alert.figures["labels"] < STEP_AT + 300
    assert retrain.attributes == {"reason": "concept-drift", "concept_drift": alert.event_id}
    assert alert.lineage.model_version == "v1"
    # The current estimate is reported (a metric), near the new error rate by the end.
    assert reports.error_rates[-1] == pytest.approx(0.40, abs=0.1)


def test_a_restart_replays_the_kept_outcomes_and_publishes_nothing_twice(store: MonitorStore) -> None:
    first, first_publisher, _ = build(store)
    feed(first, stream())
    assert first_publisher.alerts
    second, second_publisher, _ = build(store)
    second.settle()
    assert second_publisher.alerts == []
    assert second.detectors[("risk", "v1")].width == first.detectors[("risk", "v1")].width


def test_a_change_whose_alerts_were_not_acknowledged_is_published_again_with_the_same_ids(store: MonitorStore) -> None:
    refused = Publisher(fail_on_kind="retrain")
    first, _, _ = build(store, refused)
    with pytest.raises(RuntimeError):
        feed(first, stream())
    # The batch failed after its outcomes were kept: the restarted monitor replays them and publishes the change.
    second, publisher, _ = build(store)
    second.settle()
    reference, reference_publisher, _ = build(MonitorStore.from_url("sqlite://"))
    feed(reference, stream())
    assert [alert.event_id for alert in publisher.alerts] == [a.event_id for a in reference_publisher.alerts[:2]]


def test_biased_unknown_and_incomplete_labels_are_no_outcome(store: MonitorStore) -> None:
    monitor, publisher, reports = build(store)
    monitor.request(request(1))
    monitor.label(label(1, wrong=True, reasons=(labels_pb2.LABEL_REASON_UNCERTAIN,)))
    monitor.label(label(1, wrong=True, reasons=()))
    monitor.request(request(2, reason=labels_pb2.LABEL_REASON_UNCERTAIN))  # not random: not kept
    monitor.label(label(2, wrong=True))
    incomplete = label(3, wrong=True)
    incomplete.lineage.model_version = ""
    monitor.label(incomplete)
    monitor.settle()
    assert reports.skipped == [NOT_RANDOM, REASONS_UNKNOWN, INCOMPLETE]
    assert store.outcomes() == [] and publisher.alerts == []
    # A random-QA label that also was uncertain is random: it counts.
    monitor.label(label(1, wrong=True, reasons=(labels_pb2.LABEL_REASON_UNCERTAIN, labels_pb2.LABEL_REASON_RANDOM_QA)))
    monitor.settle()
    assert [(outcome.window_id, outcome.correct) for outcome in store.outcomes()] == [("w-1", False)]


def test_outcomes_wait_for_both_sides_and_take_their_place_in_prediction_time_order(store: MonitorStore) -> None:
    monitor, _, _ = build(store)
    monitor.label(label(7, wrong=False))  # the label read before its request (a new monitor reading both topics)
    monitor.settle()
    assert store.outcomes() == []
    for index in (9, 8, 7):
        monitor.request(request(index))
    monitor.label(label(9, wrong=True))
    monitor.label(label(8, wrong=False))
    monitor.label(label(8, wrong=True))  # a second label of the window: the first counts
    monitor.settle()
    assert [(o.window_id, o.sequence, o.correct) for o in store.outcomes()] == [
        ("w-7", 1, True),
        ("w-8", 2, True),
        ("w-9", 3, False),
    ]
    monitor.request(request(7))  # redelivered: nothing changes
    monitor.settle()
    assert len(store.outcomes()) == 3


def test_the_confidence_calibration_and_realised_figures_follow_the_outcomes_and_survive_a_restart(
    store: MonitorStore,
) -> None:
    monitor, _, reports = build(store)
    feed(monitor, stream())
    calibration = monitor.calibration("risk", "v1")
    assert calibration is not None and calibration.labels == 2 * STEP_AT
    curve, calibrated = calibration.curve()
    # The model says 0.9 and is right about 78 % of the time over both halves.
    assert calibrated and curve[18] == pytest.approx(0.775, abs=0.05)
    assert reports.realised_accuracy == pytest.approx(0.60, abs=0.06)  # the latest 500: mostly after the step
    restarted, _, _ = build(store)
    again = restarted.calibration("risk", "v1")
    assert (
        again is not None
        and list(again.calls) == list(calibration.calls)
        and list(again.right) == list(calibration.right)
    )
