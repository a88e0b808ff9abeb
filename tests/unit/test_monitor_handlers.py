"""The monitor's handler with fakes: windows, insufficient data, episodes, alert ids, commit points, redelivery."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import pytest

from michi.contracts.v1 import inference_pb2, labels_pb2, operations_pb2
from michi.kit.consumer import Rejected
from services.monitor.domain.drift import INSUFFICIENT_DATA
from services.monitor.domain.performance import Calibration
from services.monitor.domain.profiles import FeatureGrid, ReferenceProfile, read_profile
from services.monitor.domain.windows import MAX_COHORT_VALUE, DriftWindow, cohort_value
from services.monitor.handlers import (
    EDGE,
    FULL,
    IDLE,
    NO_PROFILE,
    NOT_CHAMPION,
    RETIRED,
    ClosedWindow,
    DriftEpisode,
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
        self.requests: list[labels_pb2.LabelRequest] = []

    def publish_alert(self, alert: operations_pb2.Alert) -> None:
        self.alerts.append(alert)

    def publish_label_requests(self, requests: list[labels_pb2.LabelRequest]) -> None:
        self.requests.extend(requests)


class History:
    """The drift history in memory (`tests/unit/test_monitor_store.py` holds the SQL one to the same behaviour)."""

    def __init__(self) -> None:
        self.windows: dict[str, ClosedWindow] = {}
        self.episodes: dict[str, DriftEpisode] = {}
        self.progresses: dict[tuple[str, str, str], dict[tuple[str, int], int]] = {}

    def record_close(self, closed: ClosedWindow, latest_s: float, episode: DriftEpisode | None) -> None:
        self.windows.setdefault(closed.window_id, closed)
        progress = self.progresses.setdefault((closed.model_name, closed.model_version, closed.cohort), {})
        for partition, offset in closed.ends.items():
            progress[partition] = max(progress.get(partition, -1), offset)
        if episode is not None:
            self.save_episode(episode)

    def progress(self, model_name: str, model_version: str, cohort: str) -> dict[tuple[str, int], int]:
        return dict(self.progresses.get((model_name, model_version, cohort), {}))

    def open_episode(self, model_name: str, model_version: str, cohort: str) -> DriftEpisode | None:
        found = [
            episode
            for episode in self.episodes.values()
            if (episode.model_name, episode.model_version, episode.cohort, episode.status)
            == (model_name, model_version, cohort, "open")
        ]
        return copy.deepcopy(found[-1]) if found else None

    def save_episode(self, episode: DriftEpisode) -> None:
        self.episodes[episode.episode_id] = copy.deepcopy(episode)


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


def build(
    clock: Callable[[], float] = lambda: 0.0,
    history: History | None = None,
    calibrations: Callable[[str, str], Calibration | None] | None = None,
    **policy: object,
) -> tuple[DriftMonitor, Publisher, Reports]:
    publisher, reports = Publisher(), Reports()
    monitor = DriftMonitor(
        profiles=Profiles(),
        publisher=publisher,
        history=history or History(),
        reports=reports,
        policy=DriftPolicy(**{"window_rows": 1000, "min_rows": 1000, "sustain_windows": 1, **policy}),  # type: ignore[arg-type]
        clock=clock,
        calibrations=calibrations,
    )
    monitor.assigned({(TOPIC, 0): -1, (TOPIC, 1): -1})
    return monitor, publisher, reports


def prediction(
    random: np.random.Generator,
    *,
    shift: float = 0.0,
    version: str = "v1",
    variant: int = 1,
    index: int = 0,
    vehicle: str = "",
    firmware: str = "",
) -> inference_pb2.Prediction:
    message = inference_pb2.Prediction(variant=variant, vehicle_type=vehicle, firmware_version=firmware)  # type: ignore[arg-type]
    message.lineage.model_name, message.lineage.model_version = "risk", version
    message.lineage.window_id = f"window-{index}"
    message.lineage.device_id = f"device-{index % 7}"  # 7: coprime with every 10th row
    # Mostly normal, one in ten a harsh brake (an alert), all said with 0.92.
    message.predicted = 2 if index % 10 == 0 else 1  # type: ignore[assignment]
    message.confidence = 0.92
    message.features["speed"] = float(random.normal(15.0 + shift, 5.0))
    message.features["braking"] = float(random.normal(-1.0, 0.5))
    message.occurred_at.seconds = 1_700_000_000
    return message


def feed(monitor: DriftMonitor, rows: int, *, start: int = 0, shift: float = 0.0, seed: int = 3, **kw: object) -> None:
    random = np.random.default_rng(seed)
    for index in range(start, start + rows):
        message = prediction(random, shift=shift, index=index, **kw)  # type: ignore[arg-type]
        monitor.handle(message, (TOPIC, index % 2), index // 2)


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
    assert alert.attributes["status"] == "firing" and alert.attributes["episode"] == reports.closed[0].episode_id
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
    # A crash before that commit and before the episode was saved: a new monitor reads from the first window's
    # end (the last commit point) and publishes the same alert and requests again, with the same ids.
    second, second_alerts, _ = build()
    second.assigned({(TOPIC, 0): 500, (TOPIC, 1): 500})
    feed(second, 1000, start=1000, shift=5.0)
    assert len(first_alerts.alerts) == len(second_alerts.alerts) == 1
    assert first_alerts.alerts[0].event_id == second_alerts.alerts[0].event_id
    assert [r.event_id for r in first_alerts.requests] == [r.event_id for r in second_alerts.requests]
    assert committed == {(TOPIC, 0): 1000, (TOPIC, 1): 1000}


def test_a_window_read_again_after_its_episode_was_saved_publishes_nothing_more() -> None:
    history = History()
    first, first_alerts, _ = build(history=history)
    feed(first, 1000, shift=5.0)
    assert len(first_alerts.alerts) == 1
    # A crash after the window and its episode were saved, before the commit: its rows are read again and
    # skipped (judged already), nothing is published, and they become committable.
    second, second_alerts, second_reports = build(history=history)
    feed(second, 1000, shift=5.0)
    assert second_alerts.alerts == [] and second_alerts.requests == [] and second_reports.closed == []
    assert second.windows == {} and second.committable() == {(TOPIC, 0): 500, (TOPIC, 1): 500}
    (episode,) = history.episodes.values()
    assert len(episode.windows) == 1  # counted once


def test_edge_predictions_are_skipped_as_edge_record_by_record_and_in_batches() -> None:
    random = np.random.default_rng(1)
    edge, shadow = inference_pb2.VARIANT_EDGE, inference_pb2.VARIANT_SHADOW
    by_record, _, record_reports = build()
    by_record.handle(prediction(random, variant=edge), (TOPIC, 0), 0)
    by_record.handle(prediction(random, variant=shadow, index=1), (TOPIC, 0), 1)
    assert record_reports.skipped == [EDGE, NOT_CHAMPION] and by_record.windows == {}
    by_batch, _, batch_reports = build()
    batch = [prediction(random, variant=variant, index=index) for index, variant in enumerate([edge, 1, edge, shadow])]
    assert by_batch.handle_batch(batch, [(TOPIC, 0)] * 4, [0, 1, 2, 3]) == []
    assert sorted(batch_reports.skipped) == sorted([EDGE, EDGE, NOT_CHAMPION])
    # The champion's row alone is windowed.
    assert [window.rows for window in by_batch.windows.values()] == [1]


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


def test_a_rollouts_canary_and_champion_arms_are_windowed_each_against_its_own_version() -> None:
    monitor, _, reports = build()
    random = np.random.default_rng(1)
    for index in range(40):
        # A 50/50 canary of v2 beside the champion v1: every window served by one arm, and shadowed by none.
        arm = (inference_pb2.VARIANT_CANARY, "v2") if index % 2 else (inference_pb2.VARIANT_CHAMPION, "v1")
        monitor.handle(prediction(random, variant=arm[0], version=arm[1], index=index), (TOPIC, 0), index)
    assert reports.skipped == []
    assert {key[:2]: window.rows for key, window in monitor.windows.items() if key[2] == "all"} == {
        ("risk", "v1"): 20,
        ("risk", "v2"): 20,
    }


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


def test_one_alert_per_episode_and_sustained_drift_asks_the_trainer_to_retrain_once() -> None:
    monitor, publisher, reports = build(retrain_after_windows=3)
    feed(monitor, 2000, shift=5.0)  # two drifting windows: one episode, one drift alert, no retrain yet
    assert [alert.kind for alert in publisher.alerts] == ["drift"]
    feed(monitor, 1000, start=2000, shift=5.0)  # the third of the episode
    assert [alert.kind for alert in publisher.alerts] == ["drift", "retrain"]
    request = publisher.alerts[-1]
    assert request.attributes["drift_windows"] == ",".join(closed.window_id for closed in reports.closed)
    assert request.attributes["features"] == "speed" and request.figures["windows"] == 3.0
    assert request.attributes["episode"] == publisher.alerts[0].attributes["episode"]
    assert reports.closed[-1].retrain == request
    # More drifting windows of the same episode ask nothing more.
    feed(monitor, 2000, start=3000, shift=5.0)
    assert [alert.kind for alert in publisher.alerts] == ["drift", "retrain"]


def test_a_clean_window_resolves_the_episode_and_one_with_too_little_data_does_not() -> None:
    now = [0.0]
    monitor, publisher, reports = build(clock=lambda: now[0], retrain_after_windows=2, idle_s=60.0)
    feed(monitor, 1000, shift=5.0)
    feed(monitor, 300, start=1000)
    now[0] = 60.0
    monitor.close_idle()  # 300 rows: insufficient data, the episode stands
    assert [alert.attributes["status"] for alert in publisher.alerts] == ["firing"]
    feed(monitor, 1000, start=1300)  # enough data, no drift: resolved
    firing, resolved = publisher.alerts
    assert (resolved.kind, resolved.attributes["status"]) == ("drift", "resolved")
    assert resolved.severity == operations_pb2.ALERT_SEVERITY_INFO
    assert resolved.attributes["episode"] == firing.attributes["episode"]
    assert resolved.attributes["drift_windows"] == reports.closed[0].window_id
    # The next drift is a new episode: a new alert with a new id, and its retrain counts from zero.
    feed(monitor, 1000, start=2300, shift=5.0)
    assert [alert.attributes["status"] for alert in publisher.alerts] == ["firing", "resolved", "firing"]
    assert publisher.alerts[2].attributes["episode"] != firing.attributes["episode"]
    assert "retrain" not in [alert.kind for alert in publisher.alerts]


def test_an_episode_alerts_once_its_drift_lasts_the_sustain_windows_and_a_lone_window_stays_silent() -> None:
    history = History()
    monitor, publisher, reports = build(history=history, sustain_windows=2, retrain_after_windows=3)
    feed(monitor, 1000, shift=5.0)  # one drifting window: an episode, no alert yet
    assert publisher.alerts == [] and reports.closed[0].verdict == "drift"
    feed(monitor, 1000, start=1000)  # clean: the lone window's episode ends without a word
    assert publisher.alerts == [] and publisher.requests == []
    (quiet,) = history.episodes.values()
    assert quiet.status == "resolved" and quiet.firing_event_id == "" and quiet.resolved_event_id is None
    feed(monitor, 2000, start=2000, shift=5.0)  # two drifting windows in a row: one alert, at the second
    (firing,) = publisher.alerts
    assert firing.attributes["status"] == "firing" and firing.attributes["window_id"] == reports.closed[-1].window_id
    assert publisher.requests  # the drift sample of the window that completed the run
    feed(monitor, 1000, start=4000, shift=5.0)  # the third: the fleet asks to retrain, once
    assert [alert.kind for alert in publisher.alerts] == ["drift", "retrain"]
    feed(monitor, 1000, start=5000)
    assert [alert.attributes.get("status") for alert in publisher.alerts][-1] == "resolved"


def test_the_same_episode_read_again_asks_with_the_same_id() -> None:
    requests = []
    for _ in range(2):
        monitor, publisher, _ = build(retrain_after_windows=2)
        feed(monitor, 2000, shift=5.0)
        requests += [alert for alert in publisher.alerts if alert.kind == "retrain"]
    assert len(requests) == 2 and requests[0].event_id == requests[1].event_id


def test_an_episode_asks_people_to_label_a_sample_of_its_window_per_predicted_class() -> None:
    monitor, publisher, reports = build(drift_sample_per_class=5)
    feed(monitor, 1000, shift=5.0)
    requests = publisher.requests
    assert reports.closed[0].drift_samples == len(requests) == 10
    assert {request.reason for request in requests} == {labels_pb2.LABEL_REASON_DRIFT_SAMPLE}
    # Stratified: five normal windows and five of the rare harsh brakes (one row in ten).
    assert sorted(request.suggested for request in requests) == [1] * 5 + [2] * 5
    assert len({request.event_id for request in requests}) == 10
    assert all(request.lineage.model_version == "v1" and request.lineage.window_id for request in requests)
    # The same rows in another order make the same sample.
    shuffled, shuffled_publisher, _ = build(drift_sample_per_class=5)
    random = np.random.default_rng(3)
    rows = [prediction(random, shift=5.0, index=index) for index in range(1000)]
    for position in np.random.default_rng(9).permutation(1000):
        shuffled.handle(rows[position], (TOPIC, int(position) % 2), int(position) // 2)
    assert {r.event_id for r in shuffled_publisher.requests} == {r.event_id for r in requests}
    # Later drifting windows of the episode ask for no more.
    feed(monitor, 1000, start=1000, shift=5.0)
    assert len(publisher.requests) == 10


def test_a_closed_window_carries_reference_and_current_histograms_for_people() -> None:
    monitor, _, reports = build()
    feed(monitor, 1000, shift=5.0)
    shape = reports.closed[0].shapes["speed"]
    assert len(shape["edges"]) == 31 and len(shape["reference"]) == len(shape["current"]) == 30
    assert sum(shape["reference"]) == pytest.approx(1.0, abs=1e-4) and sum(shape["current"]) == pytest.approx(
        1.0, abs=1e-4
    )
    # The current mass sits to the right of the reference's: the shift is visible.
    centres = np.diff(shape["edges"]) / 2 + np.array(shape["edges"][:-1])
    assert np.dot(centres, shape["current"]) > np.dot(centres, shape["reference"]) + 3.0


def cohort_feed(monitor: DriftMonitor, rows: int, *, start: int = 0, truck_shift: float = 0.0) -> None:
    """Cars and trucks alternating; the trucks' speed shifted by `truck_shift`."""
    random = np.random.default_rng(start + 7)
    for index in range(start, start + rows):
        truck = index % 2 == 1
        message = prediction(
            random,
            shift=truck_shift if truck else 0.0,
            index=index,
            vehicle="truck" if truck else "car",
            firmware="2.1",
        )
        monitor.handle(message, (TOPIC, index % 2), index // 2)


def test_each_cohort_has_its_windows_and_a_drift_in_one_cohort_is_its_own_episode() -> None:
    monitor, publisher, reports = build(window_rows=500, min_rows=500, retrain_after_windows=1)
    random = np.random.default_rng(7)
    for index in range(6000):  # one vehicle in ten a truck, the trucks' speed shifted by one standard deviation
        truck = index % 10 == 1
        message = prediction(
            random, shift=5.0 if truck else 0.0, index=index, vehicle="truck" if truck else "car", firmware="2.1"
        )
        monitor.handle(message, (TOPIC, index % 2), index // 2)
    verdicts = {(window.cohort, window.verdict) for window in reports.closed}
    assert ("vehicle:truck", "drift") in verdicts and ("all", "drift") not in verdicts
    assert [(alert.kind, alert.attributes["cohort"]) for alert in publisher.alerts] == [("drift", "vehicle:truck")]


def test_while_the_fleet_drifts_its_cohorts_open_no_episode_of_their_own() -> None:
    monitor, publisher, reports = build(window_rows=1000, retrain_after_windows=1)
    cohort_feed(monitor, 2000, truck_shift=8.0)
    closed = {(window.cohort, window.verdict) for window in reports.closed}
    assert ("all", "drift") in closed and ("firmware:2.1", "drift") in closed  # the same rows as all
    drift_cohorts = [alert.attributes["cohort"] for alert in publisher.alerts if alert.kind == "drift"]
    assert drift_cohorts == ["all"]
    # Only the fleet as a whole asks the trainer to retrain.
    assert [alert.attributes["cohort"] for alert in publisher.alerts if alert.kind == "retrain"] == ["all"]


def test_cohorts_per_dimension_are_capped_and_device_text_is_bounded() -> None:
    monitor, _, reports = build(max_cohorts=2, window_rows=10, min_rows=10)
    random = np.random.default_rng(1)
    for index, firmware in enumerate(["1.0", "2.0", "3.0", "<script>" + "x" * 100]):
        monitor.handle(prediction(random, index=index, firmware=firmware), (TOPIC, 0), index)
    cohorts = {key[2] for key in monitor.windows}
    assert cohorts == {"all", "firmware:1.0", "firmware:2.0"}
    assert reports.skipped == ["cohort-limit", "cohort-limit"]
    assert cohort_value("\x1b[31mred\n" + "y" * 200) == ("?[31mred?" + "y" * 200)[:MAX_COHORT_VALUE]


def test_a_window_open_too_long_closes_on_what_it_holds() -> None:
    now = [0.0]
    monitor, _, reports = build(clock=lambda: now[0], idle_s=60.0, max_age_s=600.0)
    for step in range(20):
        now[0] = step * 40.0  # a row every 40 s: never idle
        feed(monitor, 10, start=step * 10)
        monitor.close_idle()
    assert [(closed.reason, closed.rows) for closed in reports.closed] == [("aged", 160)]


def test_a_closed_window_carries_its_expected_accuracy_and_false_alert_rate() -> None:
    calibration = Calibration()
    for index in range(500):  # labelled at random: the model says 0.92 and is right 70 % of the time
        calibration.add(0.92, index % 10 < 7)
    asked: list[tuple[str, str]] = []

    def calibrations(name: str, version: str) -> Calibration:
        asked.append((name, version))
        return calibration

    monitor, _, reports = build(calibrations=calibrations)
    feed(monitor, 1000)
    performance = reports.closed[0].performance
    assert performance is not None and performance.calibrated and performance.alerts == 100
    assert performance.accuracy == pytest.approx(0.7, abs=0.01)
    assert performance.false_alert_rate == pytest.approx(0.3, abs=0.01)
    assert asked == [("risk", "v1")]


def test_alerts_link_to_their_evidence_on_the_monitor_page_when_its_address_is_set() -> None:
    monitor, publisher, reports = build(page_url="https://monitor.example.org", retrain_after_windows=1)
    feed(monitor, 1000, shift=5.0)
    firing, retrain = publisher.alerts
    window, episode = reports.closed[0].window_id, firing.attributes["episode"]
    assert firing.attributes["evidence"] == f"https://monitor.example.org/?window={window}&episode={episode}"
    assert retrain.attributes["evidence"] == f"https://monitor.example.org/?episode={episode}"
    unlinked, unlinked_publisher, _ = build()
    feed(unlinked, 1000, shift=5.0)
    assert "evidence" not in unlinked_publisher.alerts[0].attributes


def test_rows_pushed_and_flushed_in_batches_count_as_rows_added_one_by_one() -> None:
    profile = make_profile()
    grid = FeatureGrid(profile)
    one_by_one = DriftWindow("risk", "v1", "all", profile, grid)
    batched = DriftWindow("risk", "v1", "all", profile, grid)
    random = np.random.default_rng(8)
    for index in range(2500):
        values = np.array([random.normal(15.0, 9.0), math.nan if index % 7 == 0 else random.normal(-1.0, 2.0)])
        predicted, confidence = (2 if index % 5 == 0 else 1), float(random.random())
        one_by_one.add(values, (TOPIC, 0), index, (index, 0))
        one_by_one.count_call(predicted, confidence)
        batched.push(values, (TOPIC, 0), index, (index, 0), predicted, confidence)
        if index % 997 == 0:
            batched.flush()
    batched.flush()
    assert np.array_equal(one_by_one.counts, batched.counts)
    assert np.array_equal(one_by_one.lows, batched.lows) and np.array_equal(one_by_one.highs, batched.highs)
    assert np.array_equal(one_by_one.calls, batched.calls) and np.array_equal(one_by_one.alerts, batched.alerts)
    assert (one_by_one.rows, one_by_one.id, one_by_one.latest) == (batched.rows, batched.id, batched.latest)
