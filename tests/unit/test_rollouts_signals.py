"""The rollout controller's analyses on more than labels (`services/rollouts/domain/{signals,figures}.py`): km and
uploads from trip segments (each device placed on its arm by the plan's split), detections and the ones people
overturned, inference's dead letters, latency from the segments' broker timestamps, and the monitor's drift
episodes; on SQLite with a real registry and a clock the tests move.

A candidate with twice the champion's false alerts per 1,000 km, one erring on a tenth of its uploads, or one with
a drift episode open is rolled back with the failing condition; a healthy one is promoted with every figure in the
evidence; a canary whose uploads the controller never saw is never promoted; redelivered signals and a restart
change no figure.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from michi.bus.catalog import UPLOADS
from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2, operations_pb2, upload_pb2
from michi.rollouts.assignment import TrafficSplit
from services.rollouts.domain.figures import (
    LATENCY_RESOLUTION,
    ArmDetections,
    DeviceTotals,
    bucket_upper_ms,
    exposure_by_arm,
    latency_bucket,
    percentile_ms,
)
from services.rollouts.domain.signals import detection_seen, drift_seen, error_seen, segment_seen
from services.rollouts.handlers import STEPS_ACTOR, SignalRecorder, serving_split

from .test_rollouts_controller import CANDIDATE, CHAMPION, MINUTE, MODEL, Platform, outcomes

BRAKING = common_pb2.EVENT_TYPE_HARSH_BRAKING
NORMAL = common_pb2.EVENT_TYPE_NORMAL
PREFIX = "michi."
DEVICES = [f"device-{index:03d}" for index in range(120)]
DOCUMENT: dict[str, Any] = {
    "analyses": {
        "quality": {
            "interval": "10m",
            "deadline": "1h",
            "minimum_predictions": 20,
            "minimum_labelled_windows": 20,
            "minimum_km": 5,
            "minimum_uploads": 50,
            "success": [
                "agreement_with_labels >= champion - 0.02",
                "false_alerts_per_1000_km <= champion * 1.2",
                "errors_per_1000_uploads <= 20",
                "latency_p99_ms <= champion * 1.5",
                "drift_alerts == 0",
            ],
            "failure": [
                "agreement_with_labels < champion - 0.05",
                "false_alerts_per_1000_km > champion * 1.5",
                "errors_per_1000_uploads > 50",
                "drift_alerts > 0",
            ],
        }
    },
    "steps": [{"set_weight": 50}, {"analyse": "quality"}],
}
_ids = itertools.count()


def segment(device: str, ended_at: float, metres: float, latency_ms: float) -> tuple[inference_pb2.TripSegment, int]:
    number = next(_ids)
    message = inference_pb2.TripSegment(
        event_id=f"segment-{number}",
        occurred_at=timestamp_from_seconds(ended_at),
        distance_m=metres,
        duration_s=10.0,
        span=common_pb2.TimeSpan(
            started_at=timestamp_from_seconds(ended_at - 10.0), ended_at=timestamp_from_seconds(ended_at)
        ),
    )
    message.lineage.device_id, message.lineage.upload_id = device, f"upload-{number}"
    return message, round(ended_at * 1000 + latency_ms)


def detection(version: str, rollout_id: str, at: float) -> inference_pb2.Detection:
    number = next(_ids)
    message = inference_pb2.Detection(
        event_id=f"detection-{number}",
        event_type=BRAKING,
        rollout_id=rollout_id,
        variant=inference_pb2.VARIANT_CANARY if version == CANDIDATE else inference_pb2.VARIANT_CHAMPION,
        window=common_pb2.TimeSpan(started_at=timestamp_from_seconds(at - 5), ended_at=timestamp_from_seconds(at)),
    )
    lineage = message.lineage
    lineage.window_id, lineage.model_name, lineage.model_version = f"window-{number}", MODEL, version
    return message


def label_of(window_id: str, event_type: int) -> labels_pb2.Label:
    label = labels_pb2.Label(event_id=f"label-{window_id}", event_type=event_type)  # type: ignore[arg-type]
    label.lineage.window_id = window_id
    return label


def dead_letter(device: str, at: float, reason: str = "processing-failed") -> operations_pb2.DeadLetter:
    received = upload_pb2.UploadReceived()
    received.upload.upload_id, received.upload.device_id = f"upload-{next(_ids)}", device
    received.upload.started_at.CopyFrom(timestamp_from_seconds(at))
    return operations_pb2.DeadLetter(
        event_id=f"dead-letter-{next(_ids)}",
        source_topic=UPLOADS.name(PREFIX),
        service="inference",
        reason=reason,
        key=device.encode(),
        value=received.SerializeToString(),
    )


def drift_alert(version: str, episode: str, status: str, at: float) -> operations_pb2.Alert:
    alert = operations_pb2.Alert(event_id=f"{episode}-{status}", kind="drift", occurred_at=timestamp_from_seconds(at))
    alert.attributes.update({"status": status, "episode": episode})
    alert.lineage.model_name, alert.lineage.model_version = MODEL, version
    return alert


class Fleet:
    """What inference would emit for the devices of a running rollout, handed to the controller's recorder."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.recorder = SignalRecorder(
            signals=platform.store, reports=platform.metrics, uploads_topic=UPLOADS.name(PREFIX)
        )
        self.sent: list[tuple[str, Any, int | None]] = []

    @property
    def split(self) -> TrafficSplit:
        split = serving_split(self.platform.registry.current_plan(MODEL))
        assert split is not None
        return split

    def drive(
        self,
        *,
        at: float,
        false_alert_share: dict[str, float],
        latency_ms: dict[str, float] | None = None,
        error_share: dict[str, float] | None = None,
    ) -> None:
        """Each device drives 5 uploads of 200 m; each arm detects in every second upload, a share overturned."""
        split, rollout_id = self.split, self.split.rollout_id
        counts: dict[str, int] = {}
        for device in DEVICES:
            version = split.route(device).arm
            for upload in range(5):
                message, broker_ms = segment(device, at + upload * 10.0, 200.0, (latency_ms or {}).get(version, 300.0))
                self._send("segment", message, broker_ms)
                counts[version] = counts.get(version, 0) + 1
                sequence = counts[version]
                if sequence % 2 == 0:
                    found = detection(version, rollout_id, at + upload * 10.0)
                    self._send("detection", found)
                    share, number = false_alert_share[version], sequence // 2
                    overturned = math.floor(number * share) > math.floor((number - 1) * share)
                    self._send("label", label_of(found.lineage.window_id, NORMAL if overturned else BRAKING))
                erring = (error_share or {}).get(version, 0.0)
                if math.floor(sequence * erring) > math.floor((sequence - 1) * erring):
                    self._send("dead_letter", dead_letter(device, at + upload * 10.0))
        self.recorder.flush()

    def _send(self, kind: str, message: Any, broker_ms: int | None = None) -> None:
        self.sent.append((kind, message, broker_ms))
        if kind == "segment":
            self.recorder.segment(message, broker_ms)
        else:
            getattr(self.recorder, kind)(message)

    def redeliver(self) -> None:
        for kind, message, broker_ms in self.sent:
            if kind == "segment":
                self.recorder.segment(message, broker_ms)
            else:
                getattr(self.recorder, kind)(message)
        self.recorder.flush()


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    built = Platform(f"sqlite:///{tmp_path / 'michi.db'}")
    try:
        yield built
    finally:
        built.close()


def start(platform: Platform) -> Fleet:
    platform.registry.start_rollout(MODEL, CANDIDATE, actor="person", reason="try it", document=DOCUMENT)
    platform.started = platform.registry.rollouts(MODEL)[0].started_at.timestamp()
    platform.feed(outcomes(CANDIDATE, correct=29, wrong=1, at=platform.started + 2 * MINUTE))
    platform.feed(outcomes(CHAMPION, correct=28, wrong=2, at=platform.started + 2 * MINUTE))
    return Fleet(platform)


def last_analysis(platform: Platform) -> dict[str, Any]:
    return dict(platform.registry.rollout_history(MODEL)[0].evidence["analysis"])


def test_a_healthy_candidate_is_promoted_with_every_figure_measured(platform: Platform) -> None:
    fleet = start(platform)
    fleet.drive(at=platform.started + 2 * MINUTE, false_alert_share={CANDIDATE: 0.2, CHAMPION: 0.2})
    platform.at(11)
    assert platform.decisions() == [("start", "person"), ("promote", STEPS_ACTOR)]
    analysis = last_analysis(platform)
    assert analysis["outcome"] == "pass"
    # 1 km per device (5 uploads of 200 m), each device on the arm the plan's split gave it.
    candidate, champion = analysis["candidate"], analysis["champion"]
    assert candidate["uploads"] + champion["uploads"] == 5 * len(DEVICES)
    assert candidate["km"] + champion["km"] == pytest.approx(len(DEVICES) * 1.0)
    assert candidate["km"] == pytest.approx(candidate["uploads"] * 0.2)
    assert 0.3 < candidate["uploads"] / (5 * len(DEVICES)) < 0.7
    assert candidate["detections"] == candidate["uploads"] // 2
    assert candidate["false_alerts"] == pytest.approx(candidate["detections"] * 0.2, abs=1)
    assert candidate["errors"] == 0 and candidate["drift_alerts"] == 0
    assert candidate["latency_p99_ms"] == pytest.approx(300.0, rel=LATENCY_RESOLUTION - 1)
    assert any(reason.startswith("met: false_alerts_per_1000_km <= champion * 1.2") for reason in analysis["reasons"])


def test_double_the_false_alerts_per_km_is_rolled_back_with_its_reason(platform: Platform) -> None:
    fleet = start(platform)
    fleet.drive(at=platform.started + 2 * MINUTE, false_alert_share={CANDIDATE: 0.4, CHAMPION: 0.2})
    platform.at(11)
    assert platform.decisions() == [("start", "person"), ("rollback", STEPS_ACTOR)]
    decision = platform.registry.rollout_history(MODEL)[0]
    assert "failed: false_alerts_per_1000_km > champion * 1.5" in decision.reason


def test_an_erring_candidate_is_rolled_back_before_labels_matter(platform: Platform) -> None:
    fleet = start(platform)
    fleet.drive(
        at=platform.started + 2 * MINUTE,
        false_alert_share={CANDIDATE: 0.2, CHAMPION: 0.2},
        error_share={CANDIDATE: 0.1},
    )
    platform.at(11)
    assert platform.decisions()[-1] == ("rollback", STEPS_ACTOR)
    analysis = last_analysis(platform)
    assert analysis["candidate"]["errors"] > 0 and analysis["champion"]["errors"] == 0
    assert any(reason.startswith("failed: errors_per_1000_uploads > 50") for reason in analysis["reasons"])


def test_drift_episodes_outside_the_step_or_of_the_champion_do_not_fail_the_candidate(platform: Platform) -> None:
    fleet = start(platform)
    recorder = fleet.recorder
    # An episode of the candidate that opened and ended before the rollout: not in the period.
    recorder.alert(drift_alert(CANDIDATE, "old", "firing", platform.started - 3600))
    recorder.alert(drift_alert(CANDIDATE, "old", "resolved", platform.started - 1800))
    # The champion drifting says nothing about the candidate.
    recorder.alert(drift_alert(CHAMPION, "champion-episode", "firing", platform.started + 60))
    fleet.drive(at=platform.started + 2 * MINUTE, false_alert_share={CANDIDATE: 0.2, CHAMPION: 0.2})
    platform.at(11)
    assert platform.decisions() == [("start", "person"), ("promote", STEPS_ACTOR)]


def test_a_drift_episode_open_on_the_candidate_rolls_it_back(platform: Platform) -> None:
    fleet = start(platform)
    fleet.recorder.alert(drift_alert(CANDIDATE, "new", "firing", platform.started + 5 * MINUTE))
    fleet.drive(at=platform.started + 2 * MINUTE, false_alert_share={CANDIDATE: 0.2, CHAMPION: 0.2})
    platform.at(11)
    assert platform.decisions()[-1] == ("rollback", STEPS_ACTOR)
    assert "failed: drift_alerts > 0: candidate 1" in platform.registry.rollout_history(MODEL)[0].reason


def test_without_trip_segments_a_canary_is_never_promoted(platform: Platform) -> None:
    start(platform)  # labels only: km, uploads, latency and drift are too little data
    for minutes in (11, 21, 31, 41, 51):
        platform.at(minutes)
        assert [action for action, _ in platform.decisions()] == ["start"]
    analysis = platform.controller.progress.load(platform.registry.rollouts(MODEL)[0].rollout_id)
    assert analysis is not None
    reasons = analysis["last_analysis"]["reasons"]
    assert any("false_alerts_per_1000_km <= champion * 1.2: too little data on the candidate" in r for r in reasons)
    platform.at(61)
    assert platform.decisions()[-1] == ("rollback", STEPS_ACTOR), "inconclusive at the deadline: rolled back"


def test_redelivered_signals_and_a_restart_change_no_figure(platform: Platform) -> None:
    fleet = start(platform)
    at = platform.started + 2 * MINUTE
    fleet.drive(at=at, false_alert_share={CANDIDATE: 0.2, CHAMPION: 0.2}, error_share={CANDIDATE: 0.01})
    versions = (CANDIDATE, CHAMPION)
    rollout_id = fleet.split.rollout_id

    def figures() -> tuple[Any, ...]:
        store = platform.store
        return (
            store.device_totals(at - 1),
            store.arm_detections(MODEL, rollout_id, versions, at - 1),
            store.drift_alerts(MODEL, versions, at - 1, at + 3600),
        )

    before = figures()
    fleet.redeliver()
    # A second label of a window already labelled: the first one counts.
    for kind, message, _ in fleet.sent:
        if kind == "label":
            fleet.recorder.label(
                label_of(message.lineage.window_id, BRAKING if message.event_type == NORMAL else NORMAL)
            )
    fleet.recorder.flush()
    assert figures() == before
    platform.restart()
    assert figures() == before


def test_signals_older_than_the_retention_are_pruned(platform: Platform) -> None:
    fleet = start(platform)
    at = platform.started + 2 * MINUTE
    fleet.drive(at=at, false_alert_share={CANDIDATE: 0.2, CHAMPION: 0.2})
    assert sum(platform.store.device_totals(0).uploads.values()) == 5 * len(DEVICES)
    assert platform.store.prune_signals(at + 3600) > 0
    assert platform.store.device_totals(0).uploads == {}


# --- the pure parts


def test_latency_buckets_and_percentiles() -> None:
    assert latency_bucket(0.0) == 0 and latency_bucket(1.0) == 0
    for milliseconds in (2.0, 37.0, 300.0, 12_345.0):
        upper = bucket_upper_ms(latency_bucket(milliseconds))
        assert milliseconds <= upper < milliseconds * LATENCY_RESOLUTION
    histogram = {latency_bucket(100.0): 98, latency_bucket(1000.0): 2}
    assert percentile_ms(histogram) == pytest.approx(1000.0, rel=0.02)
    assert percentile_ms({latency_bucket(100.0): 99, latency_bucket(1000.0): 1}) == pytest.approx(100.0, rel=0.02)
    assert percentile_ms({}) is None


def test_exposure_sums_devices_by_the_arm_they_are_placed_on() -> None:
    totals = DeviceTotals(
        uploads={"a": 3, "b": 2, "c": 1},
        metres={"a": 3000.0, "b": 500.0, "c": 100.0},
        errors={"b": 1, "c": 1},
        latency=[("a", latency_bucket(100.0), 3), ("b", latency_bucket(400.0), 2)],
    )
    arms = {"a": "2", "b": "1", "c": None}
    exposure = exposure_by_arm(
        totals,
        arms.get,
        detections={"2": ArmDetections(detections=4, false_alerts=1)},
        drift_alerts={"1": 1},
        arms=("2", "1"),
    )
    assert exposure["2"].uploads == 3 and exposure["2"].km == 3.0 and exposure["2"].errors == 0
    assert exposure["2"].detections == 4 and exposure["2"].false_alerts == 1
    assert exposure["1"].uploads == 2 and exposure["1"].km == 0.5 and exposure["1"].errors == 1
    assert exposure["1"].drift_alerts == 1 and exposure["1"].latency_p99_ms == pytest.approx(400.0, rel=0.02)


def test_what_is_and_is_not_an_arm_signal() -> None:
    message, broker_ms = segment("d", 1_000.0, 150.0, 250.0)
    seen = segment_seen(message, broker_ms)
    assert not hasattr(seen, "reason") and seen.latency_bucket == latency_bucket(250.0)  # type: ignore[union-attr]
    assert segment_seen(message, None).latency_bucket is None  # type: ignore[union-attr]
    failed = inference_pb2.TripSegment(event_id="s", occurred_at=timestamp_from_seconds(1000.0))
    failed.lineage.device_id = "d"
    assert segment_seen(failed, 1_000_500).latency_bucket is None  # type: ignore[union-attr]
    decided_on_device = inference_pb2.TripSegment()
    decided_on_device.CopyFrom(message)
    decided_on_device.variant = inference_pb2.VARIANT_EDGE  # an events-only upload: no arm's exposure
    assert getattr(segment_seen(decided_on_device, broker_ms), "reason", None) == "decided-on-device"

    speeding = detection(CANDIDATE, "", 1000.0)  # a map rule: no rollout id
    assert getattr(detection_seen(speeding), "reason", None) == "no-rollout"

    uploads = UPLOADS.name(PREFIX)
    assert error_seen(dead_letter("d", 1000.0), uploads).device_id == "d"  # type: ignore[union-attr]
    assert getattr(error_seen(dead_letter("d", 1000.0, "decode-error"), uploads), "reason", "") == (
        "not-processing-failed"
    )
    other = dead_letter("d", 1000.0)
    other.service = "scoring"
    assert getattr(error_seen(other, uploads), "reason", "") == "not-inference"

    assert getattr(drift_seen(drift_alert(CANDIDATE, "e", "firing", 1.0)), "episode_id", "") == "e"
    cost = operations_pb2.Alert(kind="cost")
    assert getattr(drift_seen(cost), "reason", "") == "not-drift"
