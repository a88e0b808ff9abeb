"""The shared random-QA rules (`michi/labels/outcomes.py`): which label requests and labels are outcomes of a
model version, the monitor's rules read by the rollout controller too."""

from __future__ import annotations

from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import common_pb2, labels_pb2
from michi.labels.outcomes import (
    INCOMPLETE,
    NOT_RANDOM,
    REASONS_UNKNOWN,
    QaLabel,
    QaPrediction,
    Skipped,
    qa_label,
    qa_prediction,
)

RANDOM_QA = labels_pb2.LABEL_REASON_RANDOM_QA
UNCERTAIN = labels_pb2.LABEL_REASON_UNCERTAIN
BRAKING = common_pb2.EVENT_TYPE_HARSH_BRAKING


def request(reason: int = RANDOM_QA, **lineage: str) -> labels_pb2.LabelRequest:
    message = labels_pb2.LabelRequest(
        event_id="req-1",
        reason=reason,  # type: ignore[arg-type]
        suggested=BRAKING,
        confidence=0.75,
        occurred_at=timestamp_from_seconds(1_700_000_000.5),
    )
    fields = {"window_id": "w-1", "model_name": "risk", "model_version": "2", **lineage}
    for key, value in fields.items():
        setattr(message.lineage, key, value)
    return message


def label(reasons: tuple[int, ...] = (UNCERTAIN, RANDOM_QA), **lineage: str) -> labels_pb2.Label:
    message = labels_pb2.Label(event_id="lab-1", event_type=common_pb2.EVENT_TYPE_NORMAL)
    message.request_reasons.extend(reasons)  # type: ignore[arg-type]
    fields = {"window_id": "w-1", "model_name": "risk", "model_version": "2", **lineage}
    for key, value in fields.items():
        setattr(message.lineage, key, value)
    return message


def test_a_random_qa_request_is_the_arms_prediction_with_its_time() -> None:
    assert qa_prediction(request()) == QaPrediction("w-1", "risk", "2", BRAKING, 0.75, 1_700_000_000.5)


def test_other_requests_and_incomplete_ones_are_skipped_with_their_reason() -> None:
    assert qa_prediction(request(UNCERTAIN)) == Skipped(NOT_RANDOM)
    assert qa_prediction(request(model_version="")) == Skipped(INCOMPLETE)
    no_class = request()
    no_class.suggested = common_pb2.EVENT_TYPE_UNSPECIFIED
    assert qa_prediction(no_class) == Skipped(INCOMPLETE)


def test_a_label_counts_when_random_qa_is_among_its_reasons() -> None:
    assert qa_label(label()) == QaLabel("w-1", "risk", "2", common_pb2.EVENT_TYPE_NORMAL, "lab-1")
    assert qa_label(label((UNCERTAIN,))) == Skipped(NOT_RANDOM)
    assert qa_label(label(())) == Skipped(REASONS_UNKNOWN)
    assert qa_label(label(window_id="")) == Skipped(INCOMPLETE)
