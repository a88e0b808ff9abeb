"""The `Label` a decided task becomes (consensus or adjudication), with every fact behind it.

The event id depends only on the window, so a label re-sent after a crash (at-least-once) carries
the same id and consumers drop the duplicate; a window is labeled once.

A label says why its window was asked for (`request_reasons`): every reason of the requests merged into
its task, so a consumer measuring a model on the unbiased streams can tell a window that was also
sampled at random (`RANDOM_QA`) from one asked for only because the model was unsure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from michi.contracts import stable_event_id, timestamp_from_datetime
from michi.contracts.v1 import common_pb2, labels_pb2
from services.annotation.domain.quality import Quality


@dataclass(frozen=True)
class CountedVote:
    annotator: str
    event_type: int
    weight: float
    quality: Quality
    voted_at: datetime


def label_event_id(window_id: str) -> str:
    return stable_event_id("label", window_id)


def request_reasons(first: int, recorded: Iterable[int]) -> list[int]:
    """Each reason once: `first` (the request that made the task), then the others of `recorded` in its order."""
    return list(dict.fromkeys([first, *recorded]))


def build_label(
    request: labels_pb2.LabelRequest,
    *,
    event_type: int,
    source: int,
    votes: Sequence[CountedVote],
    agreement: float,
    decided_at: datetime,
    location: tuple[float, float] | None,
    reasons: Sequence[int],
    adjudicator: str = "",
) -> labels_pb2.Label:
    """The label of `request`'s window; lineage, window and detection id are copied from the request (the
    first one for the window), `reasons` are why the window was asked for (`request_reasons`)."""
    lineage = labels_pb2.Label().lineage
    lineage.CopyFrom(request.lineage)
    measured = [vote.quality.accuracy for vote in votes if vote.quality.accuracy is not None]
    label = labels_pb2.Label(
        event_id=label_event_id(request.lineage.window_id),
        occurred_at=timestamp_from_datetime(decided_at),
        lineage=lineage,
        event_type=event_type,  # type: ignore[arg-type]
        source=source,  # type: ignore[arg-type]
        annotators=[vote.annotator for vote in votes] + ([adjudicator] if adjudicator else []),
        agreement=agreement,
        # Every voter's quality was measured on enough gold answers.
        gold_checked=bool(votes) and len(measured) == len(votes),
        detection_event_id=request.detection_event_id,
        window=request.window,
        adjudicator=adjudicator,
        min_gold_accuracy=min(measured) if measured else 0.0,
        request_reasons=list(reasons),  # type: ignore[arg-type]
        votes=[
            labels_pb2.LabelVote(
                annotator=vote.annotator,
                event_type=vote.event_type,  # type: ignore[arg-type]
                weight=vote.weight,
                gold_accuracy=vote.quality.accuracy or 0.0,
                gold_answers=vote.quality.answers,
                voted_at=timestamp_from_datetime(vote.voted_at),
            )
            for vote in votes
        ],
    )
    if location is not None:
        label.location.CopyFrom(common_pb2.GeoPoint(latitude=location[0], longitude=location[1]))
    return label
