"""The label set annotators answer with: one key per answer, shown on screen.

A window is judged from its motion (IMU traces, speed, GPS track) or, for a camera detection's review, from its
camera frames; each kind of task has its own answers, and `normal` belongs to both. Keys stay the same whatever
the task, so a key always means one answer. Speeding is not in the set: it is a map rule (speed against the zone
limit), not something a person judges from the traces. The numbers are `michi.v1.EventType` values.
"""

from __future__ import annotations

from dataclasses import dataclass

from michi.contracts.v1 import common_pb2

# The kinds of task: judged from the motion traces, or from a camera detection's evidence frames.
MOTION = "motion"
CAMERA = "camera"
TASK_KINDS = (MOTION, CAMERA)


@dataclass(frozen=True)
class LabelChoice:
    key: str
    event_type: int
    # Wire name in the API (kebab-case) and the words on the page.
    name: str
    title: str
    # The kinds of task this answer is offered (and accepted) for.
    tasks: tuple[str, ...] = (MOTION,)


LABEL_SET: tuple[LabelChoice, ...] = (
    LabelChoice("1", common_pb2.EVENT_TYPE_NORMAL, "normal", "normal driving", (MOTION, CAMERA)),
    LabelChoice("2", common_pb2.EVENT_TYPE_HARSH_BRAKING, "harsh-braking", "harsh braking"),
    LabelChoice("3", common_pb2.EVENT_TYPE_HARSH_ACCELERATION, "harsh-acceleration", "harsh acceleration"),
    LabelChoice("4", common_pb2.EVENT_TYPE_HARSH_CORNERING, "harsh-cornering", "harsh cornering"),
    LabelChoice("5", common_pb2.EVENT_TYPE_CONFOUNDER, "confounder", "confounder (bump, pothole, phone moved)"),
    LabelChoice("6", common_pb2.EVENT_TYPE_DISTRACTION, "distraction", "distraction (eyes off the road)", (CAMERA,)),
    LabelChoice("7", common_pb2.EVENT_TYPE_DROWSINESS, "drowsiness", "drowsiness (eyes closing)", (CAMERA,)),
    LabelChoice("8", common_pb2.EVENT_TYPE_TAILGATING, "tailgating", "tailgating (too close behind)", (CAMERA,)),
)
_BY_NAME = {choice.name: choice for choice in LABEL_SET}
_BY_TYPE = {choice.event_type: choice for choice in LABEL_SET}
# Names of event types outside the label set (a model may suggest speeding).
_OTHER_NAMES: dict[int, str] = {common_pb2.EVENT_TYPE_UNSPECIFIED: "", common_pb2.EVENT_TYPE_SPEEDING: "speeding"}


class UnknownAnswer(ValueError):
    """An answer outside the label set."""


def choice_by_name(name: str) -> LabelChoice:
    choice = _BY_NAME.get(name)
    if choice is None:
        raise UnknownAnswer(f"answer must be one of {', '.join(_BY_NAME)}")
    return choice


def choices_for(kind: str) -> tuple[LabelChoice, ...]:
    """The answers a task of this kind offers."""
    return tuple(choice for choice in LABEL_SET if kind in choice.tasks)


def answer_fits(kind: str, event_type: int) -> bool:
    """Whether an answer (event type) is one a task of this kind offers."""
    choice = _BY_TYPE.get(event_type)
    return choice is not None and kind in choice.tasks


def event_type_name(event_type: int) -> str:
    """The API name of any event type ('' for unspecified)."""
    choice = _BY_TYPE.get(event_type)
    if choice is not None:
        return choice.name
    return _OTHER_NAMES.get(event_type, f"event-type-{event_type}")


def in_label_set(event_type: int) -> bool:
    return event_type in _BY_TYPE
