"""Annotation domain logic without servers: consensus, quality, credentials, tasks, windows, labels, roles."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import common_pb2, labels_pb2, upload_pb2
from services.annotation.domain.consensus import ConsensusPolicy, Outcome, WeightedVote, decide
from services.annotation.domain.credentials import (
    InvalidName,
    check_name,
    hash_password,
    looks_like_session_token,
    new_session_token,
    token_hash,
    verify_password,
)
from services.annotation.domain.labels import (
    CAMERA,
    LABEL_SET,
    MOTION,
    UnknownAnswer,
    answer_fits,
    choice_by_name,
    choices_for,
    event_type_name,
)
from services.annotation.domain.publication import CountedVote, build_label, label_event_id, request_reasons
from services.annotation.domain.quality import QualityPolicy, assess
from services.annotation.domain.roles import Permission, Role, allowed
from services.annotation.domain.tasks import GOLD_POOL, InvalidRequest, check_request, queue_for, queue_score
from services.annotation.domain.windows import cut_window, window_location

A, B, C = common_pb2.EVENT_TYPE_HARSH_BRAKING, common_pb2.EVENT_TYPE_NORMAL, common_pb2.EVENT_TYPE_CONFOUNDER
POLICY = ConsensusPolicy(votes_required=2, max_votes=3, min_share=0.6, min_support_weight=1.0)


def votes(*pairs: tuple[int, float]) -> list[WeightedVote]:
    return [WeightedVote(f"ann-{index}", event_type, weight) for index, (event_type, weight) in enumerate(pairs)]


@pytest.mark.parametrize(
    ("cast", "outcome", "winner"),
    [
        ((), Outcome.NEED_MORE, None),
        (((A, 0.8),), Outcome.NEED_MORE, None),
        (((A, 0.8), (A, 0.8)), Outcome.CONSENSUS, A),
        (((A, 0.8), (B, 0.8)), Outcome.NEED_MORE, None),  # split: a third vote
        (((A, 0.8), (B, 0.8), (A, 0.8)), Outcome.CONSENSUS, A),  # 2 of 3, share 0.67
        (((A, 0.8), (B, 0.8), (C, 0.8)), Outcome.ADJUDICATE, None),  # three ways
        (((A, 0.3), (A, 0.3)), Outcome.NEED_MORE, None),  # unanimous but too light
        (((A, 0.3), (A, 0.3), (B, 0.95)), Outcome.CONSENSUS, B),  # weight beats numbers
        (((A, 0.3), (A, 0.3), (A, 0.3)), Outcome.CONSENSUS, A),  # out of room: unanimous stands
        (((A, 0.5), (B, 0.5), (A, 0.4)), Outcome.CONSENSUS, A),
        (((A, 0.5), (B, 0.6), (A, 0.2)), Outcome.ADJUDICATE, None),  # 0.54 < 0.6
        (((A, 0.5), (B, 0.5), (C, 0.0)), Outcome.ADJUDICATE, None),  # tie
    ],
)
def test_decide(cast: tuple[tuple[int, float], ...], outcome: Outcome, winner: int | None) -> None:
    decision = decide(votes(*cast), POLICY)
    assert (decision.outcome, decision.event_type) == (outcome, winner)
    if outcome is Outcome.CONSENSUS:
        assert 0.6 <= decision.agreement <= 1.0


def test_consensus_policy_checks_itself() -> None:
    with pytest.raises(ValueError):
        ConsensusPolicy(votes_required=3, max_votes=2)
    with pytest.raises(ValueError):
        ConsensusPolicy(min_share=0.4)
    single = ConsensusPolicy(votes_required=1, max_votes=1, min_support_weight=0.0)
    assert decide(votes((C, 0.1)), single).event_type == C


def test_quality_from_gold_answers() -> None:
    policy = QualityPolicy(window=10, min_answers=5, threshold=0.7)
    new = assess([], policy)
    assert new.accuracy is None and new.weight == pytest.approx(0.8) and new.gold_rate == policy.new_annotator_gold_rate
    good = assess([True] * 10, policy)
    assert good.accuracy == 1.0 and good.weight == pytest.approx(14 / 15) and good.gold_rate == policy.gold_rate
    weak = assess([False] * 6 + [True] * 4, policy)
    assert weak.accuracy == pytest.approx(0.4) and weak.below_threshold
    assert weak.weight == pytest.approx((4 + 4) / 15 * 0.5) and weak.gold_rate == policy.low_accuracy_gold_rate
    # Only the rolling window counts: old mistakes are forgotten.
    recovered = assess([True] * 10 + [False] * 20, policy)
    assert recovered.accuracy == 1.0 and recovered.answers == 10
    with pytest.raises(ValueError):
        QualityPolicy(gold_rate=1.5)


def test_passwords_and_session_tokens() -> None:
    stored = hash_password("correct horse battery", n=2**10)
    assert stored.startswith("scrypt$1024$") and "correct" not in stored
    assert verify_password("correct horse battery", stored)
    assert not verify_password("correct horse batterx", stored)
    assert not verify_password("anything at all here", "not-a-hash")
    assert not verify_password("anything at all here", "scrypt$1024$8$1$@@@$@@@")
    assert hash_password("correct horse battery", n=2**10) != stored  # salted
    with pytest.raises(ValueError):
        hash_password("short")
    token = new_session_token()
    assert looks_like_session_token(token) and not looks_like_session_token("mdt1.device.token")
    assert token_hash(token) != token and len(token_hash(token)) == 64
    assert check_name("alice.b-2") == "alice.b-2"
    with pytest.raises(InvalidName):
        check_name("alice smith")


def test_roles() -> None:
    assert allowed(Role.ANNOTATOR, Permission.WORK) and not allowed(Role.ANNOTATOR, Permission.OVERSEE)
    assert allowed(Role.LEAD, Permission.OVERSEE) and not allowed(Role.LEAD, Permission.ADMINISTER)
    assert all(allowed(Role.ADMIN, permission) for permission in Permission)


def test_label_set() -> None:
    assert [choice.key for choice in LABEL_SET] == ["1", "2", "3", "4", "5", "6", "7", "8"]
    # Keys mean one answer whatever the task; motion tasks keep their five, camera reviews get normal + three.
    assert [choice.key for choice in choices_for(MOTION)] == ["1", "2", "3", "4", "5"]
    assert [choice.name for choice in choices_for(CAMERA)] == ["normal", "distraction", "drowsiness", "tailgating"]
    assert answer_fits(CAMERA, common_pb2.EVENT_TYPE_DROWSINESS) and answer_fits(MOTION, common_pb2.EVENT_TYPE_NORMAL)
    assert not answer_fits(MOTION, common_pb2.EVENT_TYPE_TAILGATING)
    assert not answer_fits(CAMERA, common_pb2.EVENT_TYPE_HARSH_BRAKING)
    assert choice_by_name("confounder").event_type == common_pb2.EVENT_TYPE_CONFOUNDER
    with pytest.raises(UnknownAnswer):
        choice_by_name("speeding")
    assert event_type_name(common_pb2.EVENT_TYPE_SPEEDING) == "speeding"
    assert event_type_name(common_pb2.EVENT_TYPE_UNSPECIFIED) == ""


def _request(**fields: object) -> labels_pb2.LabelRequest:
    values: dict[str, object] = {"event_id": "event-1", "reason": labels_pb2.LABEL_REASON_UNCERTAIN, **fields}
    request = labels_pb2.LabelRequest(**values)  # type: ignore[arg-type]
    request.lineage.window_id = "window-1"
    return request


def test_tasks_and_queues() -> None:
    assert queue_for(labels_pb2.LABEL_REASON_SHADOW_DISAGREEMENT) == "shadow-disagreement"
    assert queue_for(labels_pb2.LABEL_REASON_GOLD) == GOLD_POOL
    with pytest.raises(InvalidRequest):
        queue_for(99)
    assert queue_score(90, 2000.0) < queue_score(10, 1000.0)  # priority first
    assert queue_score(50, 1000.0) < queue_score(50, 2000.0)  # then age
    assert queue_score(10**9, 0) == queue_score(100_000, 0)  # clamped
    check_request(_request())
    with pytest.raises(InvalidRequest):
        check_request(labels_pb2.LabelRequest(event_id="x"))
    with pytest.raises(InvalidRequest):
        check_request(_request(reason=labels_pb2.LABEL_REASON_GOLD))  # gold without its answer
    backwards = _request(
        window=common_pb2.TimeSpan(started_at=timestamp_from_seconds(10), ended_at=timestamp_from_seconds(5))
    )
    with pytest.raises(InvalidRequest):
        check_request(backwards)


def _upload(start: float) -> upload_pb2.Upload:
    upload = upload_pb2.Upload(
        upload_id="u-1", device_id="d-1", started_at=timestamp_from_seconds(start), sample_rate_hz=100
    )
    for index in range(1000):  # 10 s at 100 Hz
        upload.imu.offset_ms.append(index * 10)
        for axis in ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z"):
            getattr(upload.imu, axis).append(math.sin(index / 50))
    for second in range(10):
        upload.gps.append(
            upload_pb2.GpsFix(offset_ms=second * 1000, latitude=35 + second / 1000, longitude=139.0, speed_mps=second)
        )
    return upload


def test_cut_window_keeps_the_span_with_context_and_thins_long_series() -> None:
    start = 1_700_000_000.0
    traces = cut_window(_upload(start), start + 4, start + 6, context_s=1.0, max_points=1000)
    assert traces.imu_times_s[0] == pytest.approx(-1.0) and traces.imu_times_s[-1] == pytest.approx(3.0)
    assert len(traces.imu_times_s) == len(traces.accel["x"]) == 401
    assert traces.gps_times_s == [-1.0, 0.0, 1.0, 2.0, 3.0] and traces.speed_mps == [3.0, 4.0, 5.0, 6.0, 7.0]
    thinned = cut_window(_upload(start), start, start + 10, context_s=0, max_points=100)
    assert len(thinned.imu_times_s) == 100 and thinned.imu_times_s == sorted(thinned.imu_times_s)
    outside = cut_window(_upload(start), start + 100, start + 102)
    assert outside.empty
    assert window_location(_upload(start), start + 4, start + 6) == (pytest.approx(35.005), 139.0)


def test_cut_window_reads_microsecond_offsets_and_a_device_without_gyroscope() -> None:
    start = 1_700_000_000.0
    upload = upload_pb2.Upload(
        upload_id="u-2",
        device_id="d-1",
        started_at=timestamp_from_seconds(start),
        sample_rate_exact_hz=16.7,
        gyroscope=upload_pb2.GYROSCOPE_ABSENT,
    )
    for index in range(167):  # 10 s at 16.7 Hz
        upload.imu.offset_us.append(round(index * 1e6 / 16.7))
        for axis in ("accel_x", "accel_y", "accel_z"):
            getattr(upload.imu, axis).append(1.0)
    traces = cut_window(upload, start + 4, start + 6, context_s=0.0)
    expected = [index / 16.7 - 4 for index in range(167) if 4 <= index / 16.7 <= 6]
    assert traces.imu_times_s == pytest.approx(expected, abs=1e-3)
    assert len(traces.accel["x"]) == len(expected) == 34
    assert traces.gyro == {"x": [], "y": [], "z": []}
    assert traces.sample_rate_hz == 17


def test_labels_carry_lineage_votes_and_gold_facts() -> None:
    request = _request(detection_event_id="detection-1")
    request.lineage.upload_id = "upload-1"
    request.lineage.model_version = "7"
    request.window.started_at.FromSeconds(100)
    request.window.ended_at.FromSeconds(102)
    policy = QualityPolicy(min_answers=2)
    measured, unmeasured = assess([True, True, False], policy), assess([], policy)
    moment = datetime(2025, 1, 2, tzinfo=UTC)
    cast = [
        CountedVote("ann-1", A, measured.weight, measured, moment),
        CountedVote("ann-2", A, unmeasured.weight, unmeasured, moment),
    ]
    label = build_label(
        request,
        event_type=A,
        source=labels_pb2.LABEL_SOURCE_CONSENSUS,
        votes=cast,
        agreement=1.0,
        decided_at=moment,
        location=(35.1, 139.2),
        reasons=[labels_pb2.LABEL_REASON_UNCERTAIN, labels_pb2.LABEL_REASON_RANDOM_QA],
    )
    assert (
        label.event_id
        == label_event_id("window-1")
        == build_label(
            request,
            event_type=B,
            source=labels_pb2.LABEL_SOURCE_CONSENSUS,
            votes=cast,
            agreement=0.5,
            decided_at=moment,
            location=None,
            reasons=[labels_pb2.LABEL_REASON_UNCERTAIN],
        ).event_id
    )
    assert label.lineage == request.lineage and label.window == request.window
    assert label.detection_event_id == "detection-1" and list(label.annotators) == ["ann-1", "ann-2"]
    assert not label.gold_checked  # ann-2 was not measured yet
    assert label.min_gold_accuracy == pytest.approx(2 / 3)
    assert [vote.gold_answers for vote in label.votes] == [3, 0]
    assert label.location.latitude == pytest.approx(35.1)
    assert list(label.request_reasons) == [labels_pb2.LABEL_REASON_UNCERTAIN, labels_pb2.LABEL_REASON_RANDOM_QA]
    adjudicated = build_label(
        request,
        event_type=B,
        source=labels_pb2.LABEL_SOURCE_ADJUDICATION,
        votes=cast[:1],
        agreement=0.0,
        decided_at=moment,
        location=None,
        reasons=[labels_pb2.LABEL_REASON_DRIFT_SAMPLE],
        adjudicator="lead-1",
    )
    assert adjudicated.gold_checked and list(adjudicated.annotators) == ["ann-1", "lead-1"]
    assert list(adjudicated.request_reasons) == [labels_pb2.LABEL_REASON_DRIFT_SAMPLE]


def test_request_reasons_are_each_once_the_first_request_first() -> None:
    uncertain, random_qa, drift = (
        labels_pb2.LABEL_REASON_UNCERTAIN,
        labels_pb2.LABEL_REASON_RANDOM_QA,
        labels_pb2.LABEL_REASON_DRIFT_SAMPLE,
    )
    assert request_reasons(random_qa, [uncertain, random_qa, uncertain, drift]) == [random_qa, uncertain, drift]
    assert request_reasons(labels_pb2.LABEL_REASON_UNSPECIFIED, []) == [labels_pb2.LABEL_REASON_UNSPECIFIED]
