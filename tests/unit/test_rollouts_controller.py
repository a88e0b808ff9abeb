"""The rollout controller's decisions (`services/rollouts/handlers.py`) on SQLite, with a real model registry whose
plans go to a recording publisher and a clock the tests move.

A canary by a two-step document (10 % -> analyse -> 50 % -> analyse -> promote, at least 20 labelled windows per
arm) steps and promotes a good candidate, rolls a worse one back with the failing condition as the reason, never
promotes without labels, and after a restart (a new controller on the same SQL, also after a crash between the
registry's action and the saved progress) goes on from its stored progress without taking a decision twice. An
A/B test with a clearly better candidate is promoted once the always-valid test decides. Time a canary spends
paused counts toward none of its step's deadlines. A bandit moves traffic to the better arm as labels come in
late, counts a redelivered label never, resumes the same posteriors after a restart, publishes at most once per
allocation interval, and ends by its policy (promoted, rolled back, or left allocating when the policy says so).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, update
from sqlmodel import Session, col

from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2, operations_pb2
from michi.registry import ModelRegistry, Stage
from michi.registry.tables import RolloutDecisionRow
from michi.rollouts.bandit import BanditPolicy
from services.rollouts.adapters.metrics import RolloutsMetrics
from services.rollouts.adapters.store import RolloutsStore
from services.rollouts.handlers import (
    AB_ACTOR,
    BANDIT_ACTOR,
    STEPS_ACTOR,
    AbPolicy,
    OutcomeRecorder,
    RolloutController,
)

from ..fakes import RecordingPlanPublisher

MODEL = "risk"
CHAMPION, CANDIDATE = "1", "2"
NORMAL = common_pb2.EVENT_TYPE_NORMAL
BRAKING = common_pb2.EVENT_TYPE_HARSH_BRAKING
RANDOM_QA = labels_pb2.LABEL_REASON_RANDOM_QA
MINUTE = 60.0
BANDIT_POLICY = BanditPolicy(
    minimum_share=0.05,
    allocation_interval_seconds=10 * MINUTE,
    minimum_change=0.02,
    end_probability=0.95,
    minimum_rewards_per_arm=100,
)
DOCUMENT: dict[str, Any] = {
    "analyses": {
        "quality": {
            "interval": "10m",
            "deadline": "1h",
            "minimum_predictions": 20,
            "minimum_labelled_windows": 20,
            "success": ["agreement_with_labels >= champion - 0.02"],
            "failure": ["agreement_with_labels < champion - 0.05"],
        }
    },
    "steps": [{"set_weight": 10}, {"analyse": "quality"}, {"set_weight": 50}, {"analyse": "quality"}],
}
_windows = itertools.count()


def qa_request(window_id: str, version: str, predicted: int, at: float) -> labels_pb2.LabelRequest:
    request = labels_pb2.LabelRequest(
        event_id=f"req-{window_id}",
        reason=RANDOM_QA,
        suggested=predicted,  # type: ignore[arg-type]
        confidence=0.9,
        occurred_at=timestamp_from_seconds(at),
    )
    request.lineage.window_id, request.lineage.model_name, request.lineage.model_version = window_id, MODEL, version
    return request


def qa_label(window_id: str, version: str, labelled: int) -> labels_pb2.Label:
    label = labels_pb2.Label(event_id=f"label-{window_id}", event_type=labelled)  # type: ignore[arg-type]
    label.request_reasons.append(RANDOM_QA)
    label.lineage.window_id, label.lineage.model_name, label.lineage.model_version = window_id, MODEL, version
    return label


def outcomes(
    version: str, *, correct: int, wrong: int, at: float
) -> list[tuple[labels_pb2.LabelRequest, labels_pb2.Label]]:
    """`correct + wrong` random-QA windows the version served at `at`, with their labels."""
    pairs = []
    for index in range(correct + wrong):
        window = f"w-{version}-{next(_windows)}"
        pairs.append(
            (
                qa_request(window, version, BRAKING, at),
                qa_label(window, version, BRAKING if index < correct else NORMAL),
            )
        )
    return pairs


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Platform:
    """The registry, the controller's store and a controller on them (`restart` makes a new one on the same SQL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.bandit_policy = BANDIT_POLICY
        self.plans = RecordingPlanPublisher()
        self.registry = ModelRegistry.from_url(url, self.plans)
        for number in (1, 2):
            self.registry.register(
                MODEL, f"file:///{number}.onnx", f"{number}" * 64, "code", f"data-{number}", {}, {}, created_by="test"
            )
        self.registry.promote(MODEL, CHAMPION, actor="test", reason="bootstrap")
        self.store = RolloutsStore.from_url(url)
        self.clock = Clock(time.time())
        self.metrics = RolloutsMetrics()
        self.recorder = OutcomeRecorder(windows=self.store, reports=self.metrics)
        self.controller = self.new_controller()

    def new_controller(self) -> RolloutController:
        return RolloutController(
            registry=self.registry,
            windows=self.store,
            progress=self.store,
            reports=self.metrics,
            interval_s=30.0,
            signals=self.store,
            ab_policy=AbPolicy(alpha=0.05, tau_squared=0.0025, minimum_labels=100),
            bandit_policy=self.bandit_policy,
            clock=self.clock,
        )

    def restart(self) -> None:
        self.store.close()
        self.store = RolloutsStore.from_url(self.url)
        self.controller = self.new_controller()

    def feed(self, pairs: list[tuple[labels_pb2.LabelRequest, labels_pb2.Label]]) -> None:
        for request, label in pairs:
            self.recorder.request(request)
            self.recorder.label(label)
        self.recorder.flush()

    def at(self, minutes: float) -> None:
        """Move the clock to `minutes` after the rollout started and look at the rollouts."""
        self.clock.now = self.started + minutes * MINUTE
        self.controller.tick()

    def start_canary(self) -> None:
        self.registry.start_rollout(MODEL, CANDIDATE, actor="person", reason="try it", document=DOCUMENT)
        self.started = self.registry.rollouts(MODEL)[0].started_at.timestamp()

    def start_bandit(self) -> str:
        self.registry.start_rollout(MODEL, CANDIDATE, actor="person", reason="let labels decide", strategy="bandit")
        rollout = self.registry.rollouts(MODEL)[0]
        self.started = rollout.started_at.timestamp()
        return rollout.rollout_id

    def backdate_last_decision(self, minutes: float) -> None:
        """The registry stamps decisions with the wall clock: put the newest at `minutes` of the test's clock."""
        newest = self.registry.rollout_history(MODEL)[0]
        with Session(self.registry.engine) as session:
            session.exec(
                update(RolloutDecisionRow)  # type: ignore[call-overload]
                .where(col(RolloutDecisionRow.model_name) == MODEL, col(RolloutDecisionRow.revision) == newest.revision)
                .values(created_at=datetime.fromtimestamp(self.started + minutes * MINUTE, UTC))
            )
            session.commit()

    def decisions(self) -> list[tuple[str, str]]:
        """(action, actor) of every decision of the model, oldest first."""
        return [(decision.action, decision.actor) for decision in reversed(self.registry.rollout_history(MODEL))]

    def close(self) -> None:
        self.store.close()
        self.registry.close()


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    built = Platform(f"sqlite:///{tmp_path / 'michi.db'}")
    try:
        yield built
    finally:
        built.close()


def test_a_good_canary_steps_to_50_percent_and_is_promoted(platform: Platform) -> None:
    platform.start_canary()
    platform.at(1)
    assert platform.decisions() == [("start", "person")], "no analysis is due before its interval"
    platform.feed(outcomes(CANDIDATE, correct=29, wrong=1, at=platform.started + 2 * MINUTE))
    platform.feed(outcomes(CHAMPION, correct=27, wrong=3, at=platform.started + 2 * MINUTE))
    platform.at(11)
    assert platform.decisions() == [("start", "person"), ("set-weight", STEPS_ACTOR)]
    plan = platform.plans.plans[-1]
    assert [(arm.model.version, round(arm.traffic_share, 6)) for arm in plan.arms] == [("2", 0.5), ("1", 0.5)]
    weight = platform.registry.rollout_history(MODEL)[0]
    assert weight.evidence["analysis"]["outcome"] == "pass"
    assert weight.evidence["analysis"]["candidate"] == {
        "version": "2",
        "requested": 30,
        "labelled": 30,
        "correct": 29,
        # Nothing served but random-QA windows in this test: no segments, detections, errors or drift.
        "uploads": 0,
        "km": 0.0,
        "detections": 0,
        "false_alerts": 0,
        "errors": 0,
        "latency_p99_ms": None,
        "drift_alerts": 0,
    }

    # The second analysis reads only what came after the weight changed: the first step's labels do not count.
    platform.at(22)
    assert platform.decisions()[-1] == ("set-weight", STEPS_ACTOR)
    platform.feed(outcomes(CANDIDATE, correct=24, wrong=1, at=platform.started + 23 * MINUTE))
    platform.feed(outcomes(CHAMPION, correct=22, wrong=3, at=platform.started + 23 * MINUTE))
    platform.at(33)
    assert platform.decisions()[-1] == ("promote", STEPS_ACTOR)
    assert platform.registry.champion(MODEL).version == CANDIDATE  # type: ignore[union-attr]
    assert platform.registry.active_rollouts() == []
    assert platform.store.load(platform.registry.rollouts(MODEL)[0].rollout_id) is None, "progress forgotten"
    platform.at(60)
    assert [action for action, _ in platform.decisions()] == ["start", "set-weight", "promote"]


def test_a_worse_canary_is_rolled_back_once_with_the_failing_condition(platform: Platform) -> None:
    platform.start_canary()
    platform.feed(outcomes(CANDIDATE, correct=21, wrong=9, at=platform.started + MINUTE))
    platform.feed(outcomes(CHAMPION, correct=29, wrong=1, at=platform.started + MINUTE))
    platform.at(11)
    assert platform.decisions() == [("start", "person"), ("rollback", STEPS_ACTOR)]
    rollback = platform.registry.rollout_history(MODEL)[0]
    assert "failed: agreement_with_labels < champion - 0.05: candidate 0.7" in rollback.reason
    assert rollback.evidence["analysis"]["outcome"] == "fail"
    assert platform.registry.get(MODEL, CANDIDATE).stage == Stage.CANDIDATE
    assert not platform.plans.plans[-1].rollout_id, "the champion alone serves again"
    platform.at(30)
    assert len(platform.decisions()) == 2


def test_without_labels_it_waits_and_never_promotes(platform: Platform) -> None:
    platform.start_canary()
    for minutes in range(1, 60, 5):
        platform.at(minutes)
    assert platform.decisions() == [("start", "person")], "no data: inconclusive, wait"
    state = platform.store.load(platform.registry.rollouts(MODEL)[0].rollout_id)
    assert state is not None and {verdict["outcome"] for verdict in state["verdicts"]} == {"inconclusive"}
    platform.at(61)  # the analysis step's deadline: rolled back, never promoted
    assert platform.decisions() == [("start", "person"), ("rollback", STEPS_ACTOR)]
    assert "still inconclusive" in platform.registry.rollout_history(MODEL)[0].reason
    assert platform.registry.champion(MODEL).version == CHAMPION  # type: ignore[union-attr]


def test_a_restarted_controller_goes_on_from_its_stored_progress(platform: Platform) -> None:
    platform.start_canary()
    platform.feed(outcomes(CANDIDATE, correct=30, wrong=0, at=platform.started + MINUTE))
    platform.feed(outcomes(CHAMPION, correct=28, wrong=2, at=platform.started + MINUTE))
    platform.at(11)
    assert [action for action, _ in platform.decisions()] == ["start", "set-weight"]
    platform.restart()
    platform.at(12)
    platform.at(15)
    assert [action for action, _ in platform.decisions()] == ["start", "set-weight"], "nothing taken twice"
    platform.feed(outcomes(CANDIDATE, correct=25, wrong=0, at=platform.started + 13 * MINUTE))
    platform.feed(outcomes(CHAMPION, correct=24, wrong=1, at=platform.started + 13 * MINUTE))
    platform.restart()
    platform.at(21)  # the second analysis is due 10 minutes after the weight was set (minute 11)
    assert [action for action, _ in platform.decisions()] == ["start", "set-weight", "promote"]


def test_a_crash_after_the_registry_acted_takes_no_decision_twice(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.start_canary()
    platform.feed(outcomes(CANDIDATE, correct=30, wrong=0, at=platform.started + MINUTE))
    platform.feed(outcomes(CHAMPION, correct=28, wrong=2, at=platform.started + MINUTE))
    real_set_weight = platform.registry.set_rollout_weight

    def set_weight_then_crash(*args: Any, **kwargs: Any) -> Any:
        real_set_weight(*args, **kwargs)
        raise SystemExit("killed after the registry committed")

    monkeypatch.setattr(platform.registry, "set_rollout_weight", set_weight_then_crash)
    with pytest.raises(SystemExit):
        platform.at(11)
    monkeypatch.undo()
    assert [action for action, _ in platform.decisions()] == ["start", "set-weight"]
    platform.restart()
    platform.at(12)
    assert [action for action, _ in platform.decisions()] == ["start", "set-weight"], "the weight is not set again"
    state = platform.store.load(platform.registry.rollouts(MODEL)[0].rollout_id)
    assert state is not None and state["progress"]["step_index"] == 3, "on the last analysis, after the weight"


def test_a_paused_rollout_is_left_alone_and_one_ended_by_hand_is_forgotten(platform: Platform) -> None:
    platform.start_canary()
    platform.at(1)
    rollout_id = platform.registry.rollouts(MODEL)[0].rollout_id
    assert platform.store.load(rollout_id) is not None
    platform.registry.pause_rollout(MODEL, actor="person", reason="weekend")
    platform.feed(outcomes(CANDIDATE, correct=10, wrong=20, at=platform.started + 2 * MINUTE))
    platform.feed(outcomes(CHAMPION, correct=30, wrong=0, at=platform.started + 2 * MINUTE))
    platform.at(30)
    assert [action for action, _ in platform.decisions()] == ["start", "pause"]
    platform.registry.abort_rollout(MODEL, actor="person", reason="not now")
    platform.at(31)
    assert platform.store.load(rollout_id) is None
    assert [action for action, _ in platform.decisions()] == ["start", "pause", "abort"]


def test_an_ab_test_promotes_a_clearly_better_candidate_once_the_sequential_test_decides(platform: Platform) -> None:
    platform.registry.start_rollout(MODEL, CANDIDATE, actor="person", reason="a/b", strategy="ab", weight=50)
    platform.started = platform.registry.rollouts(MODEL)[0].started_at.timestamp()
    platform.feed(outcomes(CANDIDATE, correct=45, wrong=5, at=platform.started + MINUTE))
    platform.feed(outcomes(CHAMPION, correct=35, wrong=15, at=platform.started + MINUTE))
    platform.at(2)
    assert platform.decisions() == [("start", "person")], "fewer than 100 labels per arm: no look counts"
    state = platform.store.load(platform.registry.rollouts(MODEL)[0].rollout_id)
    assert state is not None and state["test"]["decision"] == "continue"
    platform.feed(outcomes(CANDIDATE, correct=190, wrong=10, at=platform.started + 3 * MINUTE))
    platform.feed(outcomes(CHAMPION, correct=155, wrong=45, at=platform.started + 3 * MINUTE))
    platform.restart()  # the test's state comes back from SQL: the labels before are not counted twice
    platform.at(4)
    assert platform.decisions() == [("start", "person"), ("promote", AB_ACTOR)]
    promotion = platform.registry.rollout_history(MODEL)[0]
    assert promotion.evidence["decision"] == "candidate-better"
    assert promotion.evidence["p_value"] <= 0.05
    assert promotion.evidence["candidate"] == {"correct": 235.0, "labelled": 250.0}
    assert promotion.evidence["interval"][0] > 0
    assert "always-valid p" in promotion.reason
    assert platform.registry.champion(MODEL).version == CANDIDATE  # type: ignore[union-attr]


def test_redelivered_requests_and_labels_change_nothing_and_the_first_label_counts(platform: Platform) -> None:
    pairs = outcomes(CANDIDATE, correct=1, wrong=0, at=1000.0)
    platform.feed(pairs)
    platform.feed(pairs)
    _, label = pairs[0]
    platform.recorder.label(qa_label(label.lineage.window_id, CANDIDATE, NORMAL))  # a later, different label
    platform.recorder.flush()
    counts = platform.store.arm_counts(MODEL, CANDIDATE, 0.0)
    assert (counts.requested, counts.labelled, counts.correct) == (1, 1, 1)
    other = qa_request("w-uncertain", CANDIDATE, BRAKING, 1000.0)
    other.reason = labels_pb2.LABEL_REASON_UNCERTAIN
    platform.recorder.request(other)
    platform.recorder.flush()
    assert platform.store.arm_counts(MODEL, CANDIDATE, 0.0).requested == 1, "only random-QA windows count"
    assert platform.store.arm_counts(MODEL, CANDIDATE, 1000.5).requested == 0, "predicted before the period"


def test_a_batch_whose_transaction_fails_keeps_nothing_and_is_kept_once_when_read_again(platform: Platform) -> None:
    """A poll's requests and labels are one transaction: a commit that fails keeps none of them (the consumer then
    reads the batch again, and drops what the recorder buffered), and the batch read again is kept once."""
    pairs = outcomes(CANDIDATE, correct=3, wrong=1, at=1000.0)
    failures = [RuntimeError("the database went away after the rows were written")]

    def fail_once(session: Any) -> None:
        if failures and session.get_bind() is platform.store.engine:
            raise failures.pop()

    event.listen(Session, "before_commit", fail_once)
    try:
        for request, label in pairs:
            platform.recorder.request(request)
            platform.recorder.label(label)
        with pytest.raises(RuntimeError, match="went away"):
            platform.recorder.flush()
        assert (platform.recorder.predictions, platform.recorder.labels) == ([], [])
        counts = platform.store.arm_counts(MODEL, CANDIDATE, 0.0)
        assert (counts.requested, counts.labelled) == (0, 0), "nothing of the batch was kept"
        platform.feed(pairs)  # read again from the last committed offset
        platform.feed(pairs[:2])  # and part of it once more
        counts = platform.store.arm_counts(MODEL, CANDIDATE, 0.0)
        assert (counts.requested, counts.labelled, counts.correct) == (4, 4, 3)
    finally:
        event.remove(Session, "before_commit", fail_once)


def test_paused_time_counts_toward_no_step_deadline(platform: Platform) -> None:
    platform.start_canary()
    platform.at(5)
    platform.registry.pause_rollout(MODEL, actor="person", reason="weekend")
    platform.backdate_last_decision(5)
    platform.at(40)
    platform.registry.resume_rollout(MODEL, actor="person", reason="monday")
    platform.backdate_last_decision(65)
    # 66 minutes after the analysis step began, 60 of them paused: 6 count, far from the 1 h deadline.
    platform.at(66)
    assert [action for action, _ in platform.decisions()] == ["start", "pause", "resume"]
    platform.at(119)
    assert [action for action, _ in platform.decisions()] == ["start", "pause", "resume"], "59 minutes count"
    platform.at(121)
    assert platform.decisions()[-1] == ("rollback", STEPS_ACTOR)
    assert "still inconclusive after 3660 s (deadline 3600 s)" in platform.registry.rollout_history(MODEL)[0].reason


def bandit_state(platform: Platform, rollout_id: str) -> dict[str, Any]:
    """Each arm's posterior and rewards at the controller's last look (kept in SQL)."""
    state = platform.store.load(rollout_id)
    assert state is not None
    kept = ("alpha", "beta", "correct", "labelled", "probability_best")
    return {version: {key: arm[key] for key in kept} for version, arm in state["bandit"]["arms"].items()}


def test_a_bandit_moves_traffic_to_the_arm_people_agree_with_as_late_labels_come(platform: Platform) -> None:
    rollout_id = platform.start_bandit()
    plan = platform.plans.plans[-1]
    assert [(arm.model.version, round(arm.traffic_share, 6)) for arm in plan.arms] == [("2", 0.5), ("1", 0.5)]
    pairs = [
        *outcomes(CANDIDATE, correct=45, wrong=5, at=platform.started + MINUTE),
        *outcomes(CHAMPION, correct=30, wrong=20, at=platform.started + MINUTE),
    ]
    for request, _ in pairs:  # the predictions first; people label hours later
        platform.recorder.request(request)
    platform.recorder.flush()
    platform.at(11)
    assert platform.decisions() == [("start", "person")], "no label yet: the prior's even shares stay"
    for _, label in pairs:
        platform.recorder.label(label)
    platform.recorder.flush()
    platform.at(12)
    assert platform.decisions() == [("start", "person"), ("set-weight", BANDIT_ACTOR)]
    allocation = platform.registry.rollout_history(MODEL)[0]
    assert allocation.evidence["arms"]["2"] | {"share": None} == {
        "arm": "candidate",
        "alpha": 46.0,
        "beta": 6.0,
        "mean": round(46 / 52, 6),
        "correct": 45,
        "labelled": 50,
        "probability_best": allocation.evidence["arms"]["2"]["probability_best"],
        "share": None,
    }
    assert allocation.evidence["arms"]["2"]["share"] == {"from": 0.5, "to": 0.95}
    assert allocation.evidence["arms"]["1"]["share"] == {"from": 0.5, "to": 0.05}, "the exploration floor"
    assert "candidate 2 95.00% (P(best) 1.000, 45/50 labels agree, Beta(46, 6))" in allocation.reason
    plan = platform.plans.plans[-1]
    assert plan.strategy == operations_pb2.ROLLOUT_STRATEGY_BANDIT and plan.rollout_id == rollout_id
    assert [(arm.model.version, round(arm.traffic_share, 6)) for arm in plan.arms] == [("2", 0.95), ("1", 0.05)]
    before = bandit_state(platform, rollout_id)

    # Redelivered labels (and requests) change nothing; a restart resumes the same posteriors.
    platform.feed(pairs)
    platform.restart()
    platform.at(30)
    assert len(platform.decisions()) == 2
    assert bandit_state(platform, rollout_id) == before

    # Enough labels on every arm: the candidate is the best with probability >= 0.95 and is promoted.
    platform.feed(outcomes(CANDIDATE, correct=46, wrong=4, at=platform.started + 31 * MINUTE))
    platform.feed(outcomes(CHAMPION, correct=35, wrong=15, at=platform.started + 31 * MINUTE))
    platform.at(32)
    assert platform.decisions()[-1] == ("promote", BANDIT_ACTOR)
    promotion = platform.registry.rollout_history(MODEL)[0]
    assert promotion.evidence["arms"]["2"]["labelled"] == 100 and promotion.evidence["step"] == "promote"
    assert promotion.reason.startswith("bandit: 2 is the best arm with probability 1.000 >= 0.95")
    assert platform.registry.champion(MODEL).version == CANDIDATE  # type: ignore[union-attr]
    assert platform.store.load(rollout_id) is None


def test_a_bandit_publishes_at_most_once_per_interval_and_only_real_moves(platform: Platform) -> None:
    platform.start_bandit()
    platform.feed(outcomes(CANDIDATE, correct=20, wrong=5, at=platform.started + MINUTE))
    platform.feed(outcomes(CHAMPION, correct=17, wrong=8, at=platform.started + MINUTE))
    platform.at(5)
    assert len(platform.decisions()) == 1, "within 10 minutes of the start"
    platform.at(10.5)
    assert [action for action, _ in platform.decisions()] == ["start", "set-weight"]
    first = platform.registry.active_rollout(MODEL).weight_percent  # type: ignore[union-attr]
    assert 80 < first < 85
    platform.feed(outcomes(CANDIDATE, correct=24, wrong=1, at=platform.started + 11 * MINUTE))
    platform.feed(outcomes(CHAMPION, correct=12, wrong=13, at=platform.started + 11 * MINUTE))
    platform.at(15)
    assert len(platform.decisions()) == 2, "a move, but within the interval of the last allocation"
    platform.at(21)
    assert len(platform.decisions()) == 3
    assert platform.registry.active_rollout(MODEL).weight_percent == 95.0  # type: ignore[union-attr]
    platform.at(40)
    assert len(platform.decisions()) == 3, "no new label: the same shares, nothing published"


def test_a_bandit_whose_champion_is_better_rolls_back_or_keeps_allocating_by_policy(platform: Platform) -> None:
    platform.bandit_policy = BanditPolicy(
        minimum_share=0.1, allocation_interval_seconds=600, minimum_rewards_per_arm=100, automatic_rollback=False
    )
    platform.restart()
    platform.start_bandit()
    platform.feed(outcomes(CANDIDATE, correct=70, wrong=30, at=platform.started + MINUTE))
    platform.feed(outcomes(CHAMPION, correct=90, wrong=10, at=platform.started + MINUTE))
    platform.at(11)
    assert [action for action, _ in platform.decisions()] == ["start", "set-weight"]
    assert platform.registry.active_rollout(MODEL).weight_percent == 10.0, "the floor"  # type: ignore[union-attr]
    assert "automatic rollback is off" in platform.registry.rollout_history(MODEL)[0].evidence["reasons"][0]
    platform.bandit_policy = BANDIT_POLICY
    platform.restart()
    platform.at(12)
    assert platform.decisions()[-1] == ("rollback", BANDIT_ACTOR)
    assert platform.registry.champion(MODEL).version == CHAMPION  # type: ignore[union-attr]
    assert platform.registry.get(MODEL, CANDIDATE).stage == Stage.CANDIDATE


CHALLENGER = "3"


def start_three_arm_bandit(platform: Platform) -> str:
    """A bandit of candidates 2 and 3 against champion 1 (version 3 registered, then put in shadow: a shadow may be
    a candidate too)."""
    platform.registry.register(MODEL, "file:///3.onnx", "3" * 64, "code", "data-3", {}, {}, created_by="test")
    platform.registry.transition(MODEL, CHALLENGER, Stage.SHADOW, actor="trainer", reason="passed the gate")
    platform.registry.start_rollout(
        MODEL, CANDIDATE, actor="person", reason="three arms", strategy="bandit", more_versions=[CHALLENGER]
    )
    rollout = platform.registry.rollouts(MODEL)[0]
    platform.started = rollout.started_at.timestamp()
    return rollout.rollout_id


def test_a_bandit_over_three_arms_allocates_over_all_of_them_and_promotes_the_best_candidate(
    platform: Platform,
) -> None:
    rollout_id = start_three_arm_bandit(platform)
    plan = platform.plans.plans[-1]
    assert [(arm.model.version, arm.variant, round(arm.traffic_share, 6)) for arm in plan.arms] == [
        ("2", inference_pb2.VARIANT_TREATMENT, 0.333333),
        ("3", inference_pb2.VARIANT_TREATMENT, 0.333333),
        ("1", inference_pb2.VARIANT_CHAMPION, 0.333334),
    ]
    assert {version.version: version.stage for version in platform.registry.list(MODEL)} == {
        "1": Stage.CHAMPION,
        "2": Stage.CANARY,
        "3": Stage.CANARY,
    }
    first = [
        *outcomes(CANDIDATE, correct=42, wrong=8, at=platform.started + MINUTE),
        *outcomes(CHALLENGER, correct=48, wrong=2, at=platform.started + MINUTE),
        *outcomes(CHAMPION, correct=40, wrong=10, at=platform.started + MINUTE),
    ]
    platform.feed(first)
    platform.at(11)
    assert platform.decisions() == [("start", "person"), ("set-weight", BANDIT_ACTOR)]
    allocation = platform.registry.rollout_history(MODEL)[0]
    shares = {version: arm["share"]["to"] for version, arm in allocation.evidence["arms"].items()}
    assert list(shares) == ["2", "3", "1"] and shares["3"] > 0.8
    assert min(shares.values()) >= 0.05, "every arm keeps its floor"
    assert {version: arm["arm"] for version, arm in allocation.evidence["arms"].items()} == {
        "2": "candidate",
        "3": "candidate",
        "1": "champion",
    }
    assert allocation.evidence["arms"]["3"]["share"]["from"] == 0.333333
    assert "candidate 3 " in allocation.reason and "champion 1 " in allocation.reason
    plan = platform.plans.plans[-1]
    assert plan.rollout_id == rollout_id
    assert [(arm.model.version, round(arm.traffic_share, 6)) for arm in plan.arms] == [
        ("2", shares["2"]),
        ("3", shares["3"]),
        ("1", shares["1"]),
    ]
    rollout = platform.registry.active_rollout(MODEL)
    assert rollout is not None and rollout.candidates == ("2", "3") and rollout.arms == ("2", "3", "1")
    assert dict(rollout.weights) == {"2": shares["2"] * 100, "3": shares["3"] * 100}
    before = bandit_state(platform, rollout_id)
    assert set(before) == {"1", "2", "3"}

    # Redelivered labels change nothing; a restarted controller resumes exactly the same posteriors.
    platform.feed(first)
    platform.restart()
    platform.at(30)
    assert len(platform.decisions()) == 2 and bandit_state(platform, rollout_id) == before

    # Every arm at its minimum labels and 3 the best with probability >= 0.95: 3 is promoted, 2 steps back.
    platform.feed(outcomes(CANDIDATE, correct=42, wrong=8, at=platform.started + 31 * MINUTE))
    platform.feed(outcomes(CHALLENGER, correct=48, wrong=2, at=platform.started + 31 * MINUTE))
    platform.feed(outcomes(CHAMPION, correct=41, wrong=9, at=platform.started + 31 * MINUTE))
    platform.at(32)
    assert platform.decisions()[-1] == ("promote", BANDIT_ACTOR)
    promotion = platform.registry.rollout_history(MODEL)[0]
    assert promotion.reason.startswith("bandit: 3 is the best arm with probability")
    assert {version.version: version.stage for version in platform.registry.list(MODEL)} == {
        "1": Stage.RETIRED,
        "2": Stage.CANDIDATE,
        "3": Stage.CHAMPION,
    }
    # One decision, one revision: the three stage changes share it.
    changes = [change for change in platform.registry.history(MODEL) if change.revision == promotion.revision]
    assert sorted((change.version, change.to_stage) for change in changes) == [
        ("1", Stage.RETIRED),
        ("2", Stage.CANDIDATE),
        ("3", Stage.CHAMPION),
    ]
    final = platform.plans.plans[-1]
    assert final.rollout_id == "" and [arm.model.version for arm in final.arms] == ["3"]
    assert platform.store.load(rollout_id) is None


def test_a_bandit_over_three_arms_whose_champion_is_best_sends_every_candidate_back(platform: Platform) -> None:
    start_three_arm_bandit(platform)
    platform.feed(outcomes(CANDIDATE, correct=70, wrong=30, at=platform.started + MINUTE))
    platform.feed(outcomes(CHALLENGER, correct=75, wrong=25, at=platform.started + MINUTE))
    platform.feed(outcomes(CHAMPION, correct=95, wrong=5, at=platform.started + MINUTE))
    platform.at(11)
    assert platform.decisions()[-1] == ("rollback", BANDIT_ACTOR)
    assert {version.version: version.stage for version in platform.registry.list(MODEL)} == {
        "1": Stage.CHAMPION,
        "2": Stage.CANDIDATE,
        "3": Stage.CANDIDATE,
    }
    assert platform.registry.active_rollout(MODEL) is None


def test_a_paused_bandit_is_left_alone(platform: Platform) -> None:
    platform.start_bandit()
    platform.registry.pause_rollout(MODEL, actor="person", reason="hold")
    platform.feed(outcomes(CANDIDATE, correct=100, wrong=0, at=platform.started + MINUTE))
    platform.feed(outcomes(CHAMPION, correct=50, wrong=50, at=platform.started + MINUTE))
    platform.at(30)
    assert [action for action, _ in platform.decisions()] == ["start", "pause"]
