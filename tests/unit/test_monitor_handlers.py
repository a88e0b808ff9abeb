"""The monitor's handler with fakes: windows, insufficient data, alert ids, commit points, redelivery."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from michi.contracts.v1 import inference_pb2, operations_pb2
from michi.kit.consumer import Rejected
from services.monitor.domain.drift import INSUFFICIENT_DATA
from services.monitor.domain.profiles import ReferenceProfile, read_profile
from services.monitor.handlers import (
    FULL,
    IDLE,
    NO_PROFILE,
    NOT_CHAMPION,
    RETIRED,
    ClosedWindow,
    DriftMonitor,
    DriftPolicy,
)
from services.trainer.domain.profile import histogram

TOPIC = "michi.predictions.v1"
FEATURES = ("speed", "braking")


def make_profile(seed: int = 0) -> ReferenceProfile:
    random = np.random.default_rng(seed)
    return read_profile(
        {
            "version": "reference-profile-2",
            "data_version": "ds-1",
            "features": {
                "speed": histogram(random.normal(15.0, 5.0, 20_000)),
                "braking": histogram(random.normal(-1.0, 0.5, 20_000)),
            },
        }
    )


class Profiles:
    def __init__(self) -> None:
        self.profiles = {("risk", "v1"): make_profile(), ("risk", "v2"): make_profile(1)}

    def profile(self, model_name: str, model_version: str) -> ReferenceProfile | None:
        return self.profiles.get((model_name, model_version))


class Publisher:
    def __init__(self) -> None:
        self.alerts: list[operations_pb2.Alert] = []

    def publish_alert(self, alert: operations_pb2.Alert) -> None:
        self.alerts.append(alert)


class Reports:
    def __init__(self) -> None:
        self.closed: list[ClosedWindow] = []
        self.skipped: list[str] = []

    def window_closed(self, closed: ClosedWindow) -> None:
        self.closed.append(closed)

    def prediction_skipped(self, reason: str) -> None:
        self.skipped.append(reason)

    def open_rows(self, model_version: str, rows: int) -> None:
        pass


def build(clock: Callable[[], float] = lambda: 0.0, **policy: object) -> tuple[DriftMonitor, Publisher, Reports]:
    publisher, reports = Publisher(), Reports()
    monitor = DriftMonitor(
        profiles=Profiles(),
        publisher=publisher,
        reports=reports,
        policy=DriftPolicy(**{"window_rows": 1000, "min_rows": 1000, **policy}),  # type: ignore[arg-type]
        clock=clock,
    )
    monitor.assigned({(TOPIC, 0): -1, (TOPIC, 1): -1})
    return monitor, publisher, reports


def prediction(
    random: np.random.Generator, *, shift: float = 0.0, version: str = "v1", variant: int = 1
) -> inference_pb2.Prediction:
    message = inference_pb2.Prediction(variant=variant)  # type: ignore[arg-type]
    message.lineage.model_name, message.lineage.model_version = "risk", version
    message.features["speed"] = float(random.normal(15.0 + shift, 5.0))
    message.features["braking"] = float(random.normal(-1.0, 0.5))
    message.occurred_at.seconds = 1_700_000_000
    return message


def feed(monitor: DriftMonitor, rows: int, *, start: int = 0, shift: float = 0.0, seed: int = 3, **kw: object) -> None:
    random = np.random.default_rng(seed)
    for index in range(start, start + rows):
        monitor.handle(prediction(random, shift=shift, **kw), (TOPIC, index % 2), index // 2)  # type: ignore[arg-type]


def test_a_window_from_the_reference_distribution_raises_no_alert() -> None:
    monitor, publisher, reports = build()
    feed(monitor, 1000)
    assert [closed.reason for closed in reports.closed] == [FULL]
    assert publisher.alerts == []
    assert all(result.psi < 0.05 for result in reports.closed[0].features)


def test_a_shifted_feature_raises_one_drift_alert_naming_it() -> None:
    monitor, publisher, reports = build()
    feed(monitor, 1000, shift=5.0)
    (alert,) = publisher.alerts
    assert alert.kind == "drift" and alert.attributes["features"] == "speed"
    assert alert.lineage.model_version == "v1" and alert.lineage.data_version == "ds-1"
    assert alert.figures["psi.speed"] >= 0.2 and "psi.braking" not in alert.figures
    assert alert.attributes["window_id"] == reports.closed[0].window_id
    assert alert.attributes["profile_resolution"] == "high"


def test_alerts_need_the_configured_number_of_drifting_features() -> None:
    monitor, publisher, _ = build(min_drifted_features=2)
    feed(monitor, 1000, shift=5.0)
    assert publisher.alerts == []


def test_a_window_under_the_minimum_is_insufficient_data_never_drift() -> None:
    monitor, publisher, reports = build(window_rows=500, min_rows=1000)
    feed(monitor, 500, shift=20.0)
    (closed,) = reports.closed
    assert {result.status for result in closed.features} == {INSUFFICIENT_DATA}
    assert publisher.alerts == []


def test_the_same_window_read_again_after_a_crash_has_the_same_alert_id() -> None:
    first, first_alerts, _ = build()
    feed(first, 700)
    feed(first, 300, start=700, shift=0.0)
    feed(first, 1000, start=1000, shift=5.0)  # the second window drifts
    committed = first.committable()
    # A crash before that commit: a new monitor reads from the first window's end (the last commit point).
    second, second_alerts, _ = build()
    second.assigned({(TOPIC, 0): 500, (TOPIC, 1): 500})
    feed(second, 1000, start=1000, shift=5.0)
    assert len(first_alerts.alerts) == len(second_alerts.alerts) == 1
    assert first_alerts.alerts[0].event_id == second_alerts.alerts[0].event_id
    assert committed == {(TOPIC, 0): 1000, (TOPIC, 1): 1000}


def test_offsets_are_committable_only_up_to_closed_windows() -> None:
    monitor, _, _ = build()
    feed(monitor, 600)
    assert monitor.committable() == {}  # an open window holds everything back
    feed(monitor, 500, start=600)  # the first window closes at row 1000; 100 rows open the next
    assert monitor.committable() == {(TOPIC, 0): 500, (TOPIC, 1): 500}
    monitor.confirm_commit()
    monitor.rewind()  # a failed batch: back to the last commit, windows dropped
    assert monitor.windows == {} and monitor.committable() == {}


def test_shadow_predictions_and_versions_without_a_profile_are_skipped() -> None:
    monitor, _, reports = build()
    random = np.random.default_rng(1)
    monitor.handle(prediction(random, variant=2), (TOPIC, 0), 0)
    monitor.handle(prediction(random, version="v9"), (TOPIC, 0), 1)
    assert reports.skipped == [NOT_CHAMPION, NO_PROFILE] and monitor.windows == {}
    # Nothing open: what was handled may be committed.
    assert monitor.committable() == {(TOPIC, 0): 2}


def test_a_prediction_without_model_version_is_refused() -> None:
    monitor, _, _ = build()
    with pytest.raises(Rejected, match="model_version"):
        monitor.handle(inference_pb2.Prediction(features={"speed": 1.0}), (TOPIC, 0), 0)


def test_a_version_no_longer_served_closes_its_window() -> None:
    monitor, _, reports = build()
    feed(monitor, 300, version="v1")
    feed(monitor, 1000, start=300, version="v2")
    assert [(closed.model_version, closed.reason) for closed in reports.closed] == [("v1", RETIRED), ("v2", FULL)]
    assert {result.status for result in reports.closed[0].features} == {INSUFFICIENT_DATA}


def test_a_window_without_new_rows_closes_and_its_offsets_become_committable() -> None:
    now = [0.0]
    monitor, _, reports = build(clock=lambda: now[0], idle_s=60.0)
    feed(monitor, 300)
    assert monitor.close_idle() == [] and monitor.committable() == {}
    now[0] = 59.0
    assert monitor.close_idle() == []
    now[0] = 60.0
    (closed,) = monitor.close_idle()
    assert (closed.reason, closed.rows) == (IDLE, 300)
    assert {result.status for result in closed.features} == {INSUFFICIENT_DATA}  # 300 rows: never drift
    assert reports.closed == [closed] and monitor.windows == {}
    assert monitor.committable() == {(TOPIC, 0): 150, (TOPIC, 1): 150}


def test_sustained_drift_asks_the_trainer_to_retrain_once_per_streak() -> None:
    monitor, publisher, reports = build(retrain_after_windows=3)
    feed(monitor, 2000, shift=5.0)  # two drifting windows: drift alerts, no retrain yet
    assert [alert.kind for alert in publisher.alerts] == ["drift", "drift"]
    feed(monitor, 1000, start=2000, shift=5.0)  # the third in a row
    assert [alert.kind for alert in publisher.alerts] == ["drift", "drift", "drift", "retrain"]
    request = publisher.alerts[-1]
    assert request.attributes["drift_windows"] == ",".join(closed.window_id for closed in reports.closed)
    assert request.attributes["features"] == "speed" and request.figures["windows"] == 3.0
    assert reports.closed[-1].retrain == request
    # A fourth drifting window starts the next streak: no second request yet.
    feed(monitor, 1000, start=3000, shift=5.0)
    assert [alert.kind for alert in publisher.alerts].count("retrain") == 1


def test_a_window_without_drift_ends_the_streak_and_one_with_too_little_data_does_not() -> None:
    now = [0.0]
    monitor, publisher, _ = build(clock=lambda: now[0], retrain_after_windows=2, idle_s=60.0)
    feed(monitor, 1000, shift=5.0)
    feed(monitor, 1000, start=1000)  # no drift: the streak ends
    feed(monitor, 1000, start=2000, shift=5.0)
    assert "retrain" not in [alert.kind for alert in publisher.alerts]
    feed(monitor, 300, start=3000, shift=5.0)
    now[0] = 60.0
    monitor.close_idle()  # 300 rows: insufficient data, the streak stands
    feed(monitor, 1000, start=3300, shift=5.0)
    assert [alert.kind for alert in publisher.alerts].count("retrain") == 1


def test_the_same_streak_read_again_asks_with_the_same_id() -> None:
    requests = []
    for _ in range(2):
        monitor, publisher, _ = build(retrain_after_windows=2)
        feed(monitor, 2000, shift=5.0)
        requests += [alert for alert in publisher.alerts if alert.kind == "retrain"]
    assert len(requests) == 2 and requests[0].event_id == requests[1].event_id
