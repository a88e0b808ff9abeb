"""Tasks and queues: one task per window, in the queue named after why it was requested.

A task's place in its queue is its score (lowest first): higher priority first, then older first.
Gold tasks (reason GOLD, known answer) live in one gold pool mixed into every queue.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from michi.contracts.v1 import labels_pb2

# Priorities are clamped into this range; the score orders by priority, then age.
MAX_PRIORITY = 100_000
PRIORITY_STEP = 10_000_000_000.0  # beyond any epoch second for centuries
GOLD_POOL = "gold"
QUEUE_PATTERN = re.compile(r"[a-z0-9-]{1,40}")

QUEUE_OF_REASON: dict[int, str] = {
    labels_pb2.LABEL_REASON_UNSPECIFIED: "general",
    labels_pb2.LABEL_REASON_UNCERTAIN: "uncertain",
    labels_pb2.LABEL_REASON_SHADOW_DISAGREEMENT: "shadow-disagreement",
    labels_pb2.LABEL_REASON_DRIFT_SAMPLE: "drift-sample",
    labels_pb2.LABEL_REASON_RANDOM_QA: "random-qa",
    labels_pb2.LABEL_REASON_CAMERA_REVIEW: "camera-review",
}


class TaskStatus(enum.StrEnum):
    OPEN = "open"  # waiting for votes
    ADJUDICATION = "adjudication"  # votes stayed split: a lead decides
    LABELED = "labeled"  # consensus or adjudication reached; the label is published
    GOLD = "gold"  # known answer: measures annotators, never labeled by them


class InvalidRequest(ValueError):
    """A LabelRequest the service cannot turn into a task (goes to dead letters)."""


def queue_for(reason: int) -> str:
    """The queue a request's reason puts its window in (gold requests go to the gold pool)."""
    if reason == labels_pb2.LABEL_REASON_GOLD:
        return GOLD_POOL
    queue = QUEUE_OF_REASON.get(reason)
    if queue is None:
        raise InvalidRequest(f"unknown label reason {reason}")
    return queue


def queue_score(priority: int, created_at_s: float) -> float:
    """Lower is served first: priority descending, then creation time ascending."""
    clamped = min(max(priority, 0), MAX_PRIORITY)
    return (MAX_PRIORITY - clamped) * PRIORITY_STEP + created_at_s


def check_request(request: labels_pb2.LabelRequest) -> None:
    """Raise `InvalidRequest` for a request without what a task needs."""
    window_id = request.lineage.window_id
    if not request.event_id or len(request.event_id) > 128:
        raise InvalidRequest("request without an event_id (or one longer than 128 characters)")
    if not window_id or len(window_id) > 128:
        raise InvalidRequest("request without a window_id (or one longer than 128 characters)")
    queue_for(request.reason)
    if request.reason == labels_pb2.LABEL_REASON_GOLD and request.known_answer == 0:
        raise InvalidRequest("gold request without a known_answer")
    if request.reason == labels_pb2.LABEL_REASON_CAMERA_REVIEW and not request.camera.media_name:
        raise InvalidRequest("camera review without the camera reference (its media item and frames)")
    window = request.window
    spanned = window.HasField("started_at") and window.HasField("ended_at")
    if spanned and window.ended_at.ToNanoseconds() < window.started_at.ToNanoseconds():
        raise InvalidRequest("window ends before it starts")


@dataclass(frozen=True)
class LiveTask:
    """What the live queues need to know of a task (rebuilt from SQL after a Redis loss)."""

    task_id: str
    queue: str
    pool: str  # the queue name, or GOLD_POOL
    score: float
    # Annotators who answered or skipped it: never served it again.
    excluded: frozenset[str] = frozenset()
