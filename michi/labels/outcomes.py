"""Which label requests and labels are random-QA outcomes of a model version (pure: no I/O).

    prediction = qa_prediction(request)    # QaPrediction(window, model, version, predicted, confidence, at) | Skipped
    label = qa_label(label_message)        # QaLabel(window, model, version, labelled, label event id) | Skipped

Only windows asked for at random (`LABEL_REASON_RANDOM_QA`) are an unbiased sample of what a model sees:
uncertain, disagreed-on and drifted windows were chosen because the model is likely wrong there. So:

- a `LabelRequest` counts when its reason is `RANDOM_QA` and its lineage names the window, the model and its
  version, and it says what the model predicted (`suggested`, the prediction's class); its `occurred_at` is
  when the model predicted;
- a `Label` counts when its `request_reasons` contain `RANDOM_QA` (empty reasons: published before labels said
  why, not known to be random) and its lineage names the window, the model and its version, and it has a class.

The lineage's model version is the serving arm's (inference asks for labels from the arm's prediction), so a
window's outcome belongs to the version that served it. The monitor's concept drift and the rollout
controller's per-arm agreement both read outcomes through these two functions.
"""

from __future__ import annotations

from dataclasses import dataclass

from michi.contracts.v1 import labels_pb2

# Why a request or a label is not a random-QA outcome.
REASONS_UNKNOWN = "reasons-unknown"
NOT_RANDOM = "not-random"
INCOMPLETE = "incomplete"


@dataclass(frozen=True)
class Skipped:
    """Not a random-QA outcome, and why (`REASONS_UNKNOWN`, `NOT_RANDOM`, `INCOMPLETE`)."""

    reason: str


@dataclass(frozen=True)
class QaPrediction:
    """What a model version said for a window asked for at random, how sure it was and when."""

    window_id: str
    model_name: str
    model_version: str
    predicted: int
    confidence: float
    predicted_at_s: float


@dataclass(frozen=True)
class QaLabel:
    """What people said for a window asked for at random (the label's class and its event id)."""

    window_id: str
    model_name: str
    model_version: str
    labelled: int
    label_event_id: str


def qa_prediction(request: labels_pb2.LabelRequest) -> QaPrediction | Skipped:
    """The model's side of a random-QA window, or why the request is not one (`NOT_RANDOM`, `INCOMPLETE`)."""
    if request.reason != labels_pb2.LABEL_REASON_RANDOM_QA:
        return Skipped(NOT_RANDOM)
    lineage = request.lineage
    if not (lineage.window_id and lineage.model_name and lineage.model_version and request.suggested):
        return Skipped(INCOMPLETE)
    return QaPrediction(
        window_id=lineage.window_id,
        model_name=lineage.model_name,
        model_version=lineage.model_version,
        predicted=int(request.suggested),
        confidence=float(request.confidence),
        predicted_at_s=request.occurred_at.seconds + request.occurred_at.nanos / 1e9,
    )


def qa_label(label: labels_pb2.Label) -> QaLabel | Skipped:
    """People's side of a random-QA window, or why the label is not one (`REASONS_UNKNOWN`, `NOT_RANDOM`,
    `INCOMPLETE`)."""
    if not label.request_reasons:
        return Skipped(REASONS_UNKNOWN)  # published before labels said why: not known to be random
    if labels_pb2.LABEL_REASON_RANDOM_QA not in label.request_reasons:
        return Skipped(NOT_RANDOM)
    lineage = label.lineage
    if not (lineage.window_id and lineage.model_name and lineage.model_version and label.event_type):
        return Skipped(INCOMPLETE)
    return QaLabel(
        window_id=lineage.window_id,
        model_name=lineage.model_name,
        model_version=lineage.model_version,
        labelled=int(label.event_type),
        label_event_id=label.event_id,
    )
