"""The trainer's pure logic: labels, datasets and splits, evaluation, gate, triggers, profile, experiment record.

Run: .venv/bin/pytest tests/unit/test_trainer_domain.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import common_pb2, labels_pb2
from michi.windows.features import DATA_VERSION, FEATURE_NAMES, SIGNAL_CHANNELS, SIGNAL_STEPS
from services.trainer.domain.dataset import LabeledWindows, build_dataset, data_version_of, in_test_split, mount_bucket
from services.trainer.domain.evaluation import decided_classes, evaluate
from services.trainer.domain.experiment import RunFacts, compose_sections, render_markdown
from services.trainer.domain.gate import GatePolicy, decide
from services.trainer.domain.labels import (
    CONFOUNDER_CLASS,
    HARSH_KINDS,
    HARSH_THRESHOLD_MPS2,
    NORMAL_CLASS,
    UNCERTAIN_SHARE,
    TruthSpan,
    WindowLabel,
    class_of_event_type,
    label_from_message,
    label_from_truth,
    label_problem,
    winning_labels,
)
from services.trainer.domain.profile import reference_profile
from services.trainer.domain.triggers import ALERT, LABELS, SCHEDULE, Trigger, TriggerPolicy, TriggerState, due_trigger

BRAKING = HARSH_KINDS["harsh_braking"]
CORNERING = HARSH_KINDS["harsh_cornering"]


def windows(
    labels: list[int],
    trips: list[str] | None = None,
    starts: list[float] | None = None,
    sources: list[int] | None = None,
) -> LabeledWindows:
    count = len(labels)
    rng = np.random.default_rng(0)
    return LabeledWindows(
        features=rng.normal(size=(count, len(FEATURE_NAMES))).astype(np.float32),
        signals=rng.normal(size=(count, len(SIGNAL_CHANNELS), SIGNAL_STEPS)).astype(np.float32),
        labels=np.asarray(labels, dtype=np.int64),
        window_ids=[f"w{index:04d}" for index in range(count)],
        sources=sources or [labels_pb2.LABEL_SOURCE_SIMULATOR] * count,
        upload_ids=["u"] * count,
        trip_ids=trips or ["trip-a"] * count,
        device_ids=["d"] * count,
        driver_ids=["driver"] * count,
        vehicle_types=["sedan"] * count,
        sample_rates=np.full(count, 50),
        mount_buckets=["up+z/fwd+x"] * count,
        starts_s=np.asarray(starts if starts is not None else [float(index) for index in range(count)]),
        speeds_mps=np.full(count, 10.0),
        exposures_s=np.full(count, 1.0),
    )


def one_hot(classes: list[int], confidence: float = 0.9) -> np.ndarray:
    probabilities = np.full((len(classes), 5), (1.0 - confidence) / 4, dtype=np.float32)
    probabilities[np.arange(len(classes)), classes] = confidence
    return probabilities


# ---------------------------------------------------------------- labels


def test_truth_labels_need_real_overlap_and_leave_grazing_windows_out() -> None:
    braking = [TruthSpan("harsh_braking", 10.3, 12.0, True)]
    assert label_from_truth(10.0, 12.0, braking) == BRAKING
    assert label_from_truth(11.0, 13.0, braking) == BRAKING
    assert label_from_truth(11.8, 13.8, braking) is None  # 0.2 s of the tail: ambiguous
    assert label_from_truth(20.0, 22.0, braking) == NORMAL_CLASS
    pothole = [TruthSpan("pothole", 5.0, 5.5, False)]
    assert label_from_truth(4.0, 6.0, pothole) == CONFOUNDER_CLASS
    assert label_from_truth(5.4, 7.4, pothole) is None
    # Speeding is the map rule's job: the window is ordinary driving for this model.
    assert label_from_truth(0.0, 2.0, [TruthSpan("speeding", 0.0, 30.0, True)]) == NORMAL_CLASS
    # A harsh event beats a confounder in the same window.
    both = [TruthSpan("pothole", 1.0, 1.5, False), TruthSpan("harsh_cornering", 0.5, 3.0, True)]
    assert label_from_truth(0.0, 2.0, both) == CORNERING


def test_a_harsh_event_is_harsh_only_from_its_threshold_of_real_harshness() -> None:
    """Simulated harsh events drawn below real harshness are ordinary driving; just under the threshold, ambiguous."""
    threshold = HARSH_THRESHOLD_MPS2["harsh_braking"]
    assert 1.8 <= threshold <= 2.5  # the low end of what fleet services call a harsh brake in a car (0.2-0.25 g)

    def brake(peak: float | None) -> list[TruthSpan]:
        return [TruthSpan("harsh_braking", 10.5, 12.5, True, peak_mps2=peak)]

    assert label_from_truth(10.0, 12.0, brake(threshold)) == BRAKING
    assert label_from_truth(10.0, 12.0, brake(None)) == BRAKING  # a peak nobody measured: harsh, as before
    assert label_from_truth(10.0, 12.0, brake(threshold * (1.0 - UNCERTAIN_SHARE / 2))) is None
    assert label_from_truth(10.0, 12.0, brake(threshold * (1.0 - 2 * UNCERTAIN_SHARE))) == NORMAL_CLASS
    # An ordinary-strength event does not hide a confounder in the same window.
    pothole = [TruthSpan("pothole", 11.0, 11.5, False), *brake(1.0)]
    assert label_from_truth(10.0, 12.0, pothole) == CONFOUNDER_CLASS
    cornering = [TruthSpan("harsh_cornering", 0.5, 3.0, True, peak_mps2=HARSH_THRESHOLD_MPS2["harsh_cornering"] + 0.1)]
    assert label_from_truth(0.0, 2.0, cornering) == CORNERING


def test_event_types_map_to_classes() -> None:
    assert class_of_event_type(common_pb2.EVENT_TYPE_SPEEDING) == NORMAL_CLASS
    assert class_of_event_type(common_pb2.EVENT_TYPE_HARSH_BRAKING) == BRAKING
    assert class_of_event_type(common_pb2.EVENT_TYPE_UNSPECIFIED) is None


def _label(event_id: str, source: int, occurred: float, event_type: int = common_pb2.EVENT_TYPE_NORMAL) -> WindowLabel:
    return WindowLabel(
        event_id, "window-1", "upload", "device", "trip", "driver", event_type, source, occurred, 0.0, 2.0
    )


def test_newest_human_label_wins_over_older_ones_and_over_ground_truth() -> None:
    simulator = _label("a", labels_pb2.LABEL_SOURCE_SIMULATOR, 300.0, common_pb2.EVENT_TYPE_HARSH_BRAKING)
    older = _label("b", labels_pb2.LABEL_SOURCE_CONSENSUS, 100.0, common_pb2.EVENT_TYPE_HARSH_BRAKING)
    newer = _label("c", labels_pb2.LABEL_SOURCE_CONSENSUS, 200.0, common_pb2.EVENT_TYPE_CONFOUNDER)
    for order in ([simulator, older, newer], [newer, older, simulator]):
        assert winning_labels(order)["window-1"].event_id == "c"


def test_label_messages_are_checked_and_converted() -> None:
    message = labels_pb2.Label(
        event_id="label-1",
        occurred_at=timestamp_from_seconds(1000.0),
        lineage=common_pb2.Lineage(upload_id="u", window_id="w", trip_id="t", device_id="d"),
        event_type=common_pb2.EVENT_TYPE_HARSH_CORNERING,
        source=labels_pb2.LABEL_SOURCE_CONSENSUS,
        window=common_pb2.TimeSpan(started_at=timestamp_from_seconds(990.0), ended_at=timestamp_from_seconds(992.0)),
    )
    assert label_problem(message) is None
    label = label_from_message(message)
    assert (label.window_id, label.event_type, label.window_started_at_s) == (
        "w",
        common_pb2.EVENT_TYPE_HARSH_CORNERING,
        990.0,
    )
    broken = labels_pb2.Label()
    broken.CopyFrom(message)
    broken.lineage.window_id = ""
    assert "window_id" in (label_problem(broken) or "")
    broken.CopyFrom(message)
    broken.event_type = common_pb2.EVENT_TYPE_UNSPECIFIED
    assert label_problem(broken) is not None


# ---------------------------------------------------------------- datasets


def test_data_version_depends_on_members_and_not_on_their_order() -> None:
    ids, labels, sources = ["a", "b", "c"], [0, 1, 4], [1, 2, 2]
    version = data_version_of(ids, labels, sources)
    assert version == data_version_of(ids[::-1], labels[::-1], sources[::-1])
    assert version != data_version_of(ids, [0, 1, 0], sources)
    assert version != data_version_of(ids, labels, [1, 2, 3])
    assert version != data_version_of(ids, labels, sources, origin="simulation abc")
    assert version.startswith("ds-")


def test_split_by_trip_is_stable_and_never_splits_a_trip() -> None:
    trips = [f"trip-{index % 40}" for index in range(400)]
    dataset = build_dataset([windows([0] * 400, trips=trips)], split_by="trip", test_percent=25)
    for trip in set(trips):
        sides = {bool(dataset.test[row]) for row, value in enumerate(dataset.windows.trip_ids) if value == trip}
        assert len(sides) == 1
    share = float(dataset.test.mean())
    assert 0.05 < share < 0.5
    # The side of a trip depends on its id alone.
    assert all(bool(dataset.test[row]) == in_test_split(trip, 25) for row, trip in enumerate(dataset.windows.trip_ids))


def test_later_parts_replace_earlier_windows_and_rows_are_sorted() -> None:
    base = windows([0, 0, 0])
    override = base.take([1])
    override.labels = np.array([BRAKING])
    override.sources = [labels_pb2.LABEL_SOURCE_CONSENSUS]
    dataset = build_dataset([base, override])
    assert dataset.windows.window_ids == sorted(dataset.windows.window_ids)
    assert dataset.windows.count == 3
    assert dataset.windows.labels.tolist() == [0, BRAKING, 0]
    assert dataset.summary()["sources"] == {"consensus": 1, "simulator": 2}
    with pytest.raises(ValueError):
        build_dataset([base], split_by="device")


def test_mount_bucket_names_the_up_and_forward_axes() -> None:
    assert mount_bucket(np.eye(3), 0.9) == "up+z/fwd+x"
    flipped = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    assert mount_bucket(flipped, 0.9) == "up-z/fwd-y"
    assert mount_bucket(np.eye(3), 0.2) == "uncalibrated"


# ---------------------------------------------------------------- evaluation


def test_decisions_follow_the_serving_threshold() -> None:
    probabilities = np.array([[0.2, 0.45, 0.15, 0.1, 0.1], [0.1, 0.7, 0.1, 0.05, 0.05], [0.3, 0.1, 0.1, 0.1, 0.4]])
    assert decided_classes(probabilities).tolist() == [NORMAL_CLASS, BRAKING, CONFOUNDER_CLASS]


def test_evaluation_counts_per_class_alerts_and_distance() -> None:
    # One trip, windows 1 s apart: a braking run at 3-5 (found), a cornering run at 10-11 (missed),
    # a false braking alert at 20, everything else normal. 30 windows x 10 m/s x 1 s = 0.3 km.
    truth = [0] * 30
    truth[3:6] = [BRAKING] * 3
    truth[10:12] = [CORNERING] * 2
    decided = list(truth)
    decided[10:12] = [0, 0]
    decided[20] = BRAKING
    result = evaluate(one_hot(decided), windows(truth))
    metrics = result["metrics"]
    assert metrics["kilometres"] == pytest.approx(0.3)
    assert (metrics["alerts"], metrics["false_alerts"], metrics["harsh_events"], metrics["missed_harsh_events"]) == (
        2,
        1,
        2,
        1,
    )
    assert metrics["false_alerts_per_1000_km"] == pytest.approx(1000 / 0.3)
    assert metrics["harsh_recall"] == pytest.approx(3 / 5)
    assert metrics["harsh_precision"] == pytest.approx(3 / 4)
    assert result["per_class"]["harsh_cornering"]["recall"] == 0.0
    assert result["confusion"]["matrix"][CORNERING][NORMAL_CLASS] == 2
    assert set(result["slices"]) == {"vehicle_type", "sample_rate_hz", "mount"}
    assert result["slices"]["vehicle_type"]["sedan"]["windows"] == 30


def test_an_alert_next_to_its_event_is_not_false() -> None:
    truth = [0] * 10
    truth[4] = BRAKING
    decided = [0] * 10
    decided[5] = BRAKING  # one window later: within the tolerance of the labelled run
    metrics = evaluate(one_hot(decided), windows(truth))["metrics"]
    assert metrics["false_alerts"] == 0 and metrics["missed_harsh_events"] == 0


# ---------------------------------------------------------------- gate


def test_gate_applies_minimums_maximums_and_champion_margins_in_the_right_direction() -> None:
    policy = GatePolicy(
        minimums={"harsh_recall": 0.8},
        maximums={"false_alerts_per_1000_km": 10.0},
        not_behind_champion={"harsh_precision": 0.02, "missed_harsh_per_1000_km": 1.0},
    )
    good = {
        "harsh_recall": 0.9,
        "false_alerts_per_1000_km": 2.0,
        "harsh_precision": 0.95,
        "missed_harsh_per_1000_km": 3.0,
    }
    champion = {
        "harsh_recall": 0.9,
        "false_alerts_per_1000_km": 2.0,
        "harsh_precision": 0.96,
        "missed_harsh_per_1000_km": 2.5,
    }
    assert decide(policy, good, champion, "michi-risk 1").passed
    worse = {**good, "missed_harsh_per_1000_km": 4.0}
    decision = decide(policy, worse, champion, "michi-risk 1")
    assert not decision.passed
    assert [check.metric for check in decision.failures] == ["missed_harsh_per_1000_km"]
    assert "missed_harsh_per_1000_km" in decision.reason()
    # Without a champion only the absolute checks run.
    assert decide(policy, worse, None).passed
    assert not decide(policy, {**good, "harsh_recall": 0.5}, None).passed
    with pytest.raises(ValueError):
        GatePolicy.from_dict({"minimums": {"no_such_metric": 1.0}})


# ---------------------------------------------------------------- triggers


def test_triggers_fire_on_alert_first_then_labels_then_schedule() -> None:
    policy = TriggerPolicy(label_count=10, interval_s=3600.0)
    quiet = TriggerState(new_labels=3, last_run_started_at=1000.0, service_started_at=0.0)
    assert due_trigger(policy, quiet, 2000.0) is None
    labels = due_trigger(policy, TriggerState(10, 1000.0, 0.0), 2000.0)
    assert labels is not None and labels.kind == LABELS
    schedule = due_trigger(policy, quiet, 4700.0)
    assert schedule is not None and schedule.kind == SCHEDULE
    alert = Trigger(ALERT, "drift", alert_event_id="a-1")
    assert due_trigger(policy, TriggerState(50, 1000.0, 0.0, alert), 4700.0) == alert
    off = TriggerPolicy(label_count=0, interval_s=0)
    assert due_trigger(off, TriggerState(10_000, None, 0.0), 1e9) is None


# ---------------------------------------------------------------- profile and record


def test_reference_profile_has_fixed_bins_for_every_input() -> None:
    sample = windows([0] * 500)
    profile = reference_profile(sample.features, sample.signals, data_version="ds-x")
    assert set(profile["features"]) == set(FEATURE_NAMES)
    assert set(profile["signals"]) == set(SIGNAL_CHANNELS)
    for histogram in [*profile["features"].values(), *profile["signals"].values()]:
        assert len(histogram["counts"]) == len(histogram["edges"]) + 1
        assert sum(histogram["counts"]) == histogram["count"]
    assert profile["preprocessing_version"] == DATA_VERSION
    constant = reference_profile(
        np.ones((10, len(FEATURE_NAMES)), dtype=np.float32), sample.signals[:10], data_version="d"
    )
    assert sum(constant["features"][FEATURE_NAMES[0]]["counts"]) == 10


def test_experiment_record_has_every_section_filled_from_the_facts() -> None:
    from datetime import UTC, datetime

    truth = [0] * 20
    truth[5:7] = [BRAKING] * 2
    evaluation = evaluate(one_hot(truth), windows(truth))
    facts = RunFacts(
        run_id="run-1",
        model_name="michi-risk",
        trigger="labels",
        trigger_reason="120 new labels",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        code_version="src-abc",
        parameters={"epochs": 3, "threads": 1, "split_by": "trip", "test_percent": 20},
        finished_at=datetime(2026, 1, 1, 0, 5, tzinfo=UTC),
        status="succeeded",
        data={
            "data_version": "ds-1",
            "windows": 20,
            "train_windows": 16,
            "test_windows": 4,
            "sources": {"consensus": 4},
        },
        champion={"label": "michi-risk 1", "version": "1", "data_version": "ds-0", "metrics": {}},
        candidate_evaluation=evaluation,
        champion_evaluation=evaluation,
        gate=decide(GatePolicy(), evaluation["metrics"], evaluation["metrics"], "michi-risk 1").to_dict(),
        registered_version="2",
        stage="shadow",
    )
    sections = compose_sections(facts)
    markdown = render_markdown(facts, sections)
    for heading in ("Purpose", "Background", "Method", "Dataset", "Results", "Discussion", "Next action"):
        assert f"## {heading}" in markdown
    assert "120 new labels" in markdown and "ds-1" in markdown and "michi models promote michi-risk 2" in markdown
    assert "$" not in markdown.replace("$$", "")
    assert render_markdown(facts, sections, "$run_id: $next_action").startswith("run-1: michi-risk 2 runs in shadow")
