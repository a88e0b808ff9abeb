"""What a window is labelled as: the risk model's class, where the label came from, and which label wins.

Classes are the columns of `michi.windows.model_spec.CLASS_EVENT_TYPES` (normal, harsh braking,
harsh acceleration, harsh cornering, confounder). A label of `EVENT_TYPE_SPEEDING` counts as
*normal* for this model: speeding is found by the map rule, and the window's motion is ordinary
driving. A label without an event type names no class and is left out.

Simulator ground truth (`label_from_truth`): a window [start, end) takes the class of the harsh
event (one whose peak reaches `HARSH_THRESHOLD_MPS2`; a weaker one is ordinary driving, one just under it
ambiguous) it overlaps by at least `MIN_HARSH_OVERLAP_S` (the largest overlap when several), else of a
confounder it overlaps by at least `MIN_CONFOUNDER_OVERLAP_S`, else *normal* when it touches no
event at all. A window that only grazes an event (less overlap than that) is *ambiguous* and left
out of datasets: the onset or tail of a harsh brake is neither clearly harsh nor clearly normal.

Several labels for one window: human ones (consensus, gold, adjudication) beat simulator ground
truth; among the same kind the newest (`occurred_at`, then event id) wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from michi.contracts.v1 import common_pb2, labels_pb2
from michi.windows.model_spec import CLASS_EVENT_TYPES

NORMAL_CLASS = CLASS_EVENT_TYPES.index(common_pb2.EVENT_TYPE_NORMAL)
CONFOUNDER_CLASS = CLASS_EVENT_TYPES.index(common_pb2.EVENT_TYPE_CONFOUNDER)
CLASS_NAMES: tuple[str, ...] = tuple(
    common_pb2.EventType.Name(event_type).removeprefix("EVENT_TYPE_").lower() for event_type in CLASS_EVENT_TYPES
)
RISKY_CLASSES: tuple[int, ...] = tuple(
    index
    for index, event_type in enumerate(CLASS_EVENT_TYPES)
    if event_type
    in (
        common_pb2.EVENT_TYPE_HARSH_BRAKING,
        common_pb2.EVENT_TYPE_HARSH_ACCELERATION,
        common_pb2.EVENT_TYPE_HARSH_CORNERING,
    )
)
HARSH_KINDS = {
    "harsh_braking": CLASS_EVENT_TYPES.index(common_pb2.EVENT_TYPE_HARSH_BRAKING),
    "harsh_acceleration": CLASS_EVENT_TYPES.index(common_pb2.EVENT_TYPE_HARSH_ACCELERATION),
    "harsh_cornering": CLASS_EVENT_TYPES.index(common_pb2.EVENT_TYPE_HARSH_CORNERING),
}
CONFOUNDER_KINDS = frozenset({"pothole", "speed_bump", "mount_moved"})
MIN_HARSH_OVERLAP_S = 0.5
MIN_CONFOUNDER_OVERLAP_S = 0.25
# What makes a simulated harsh event harsh: the peak acceleration (m/s², vehicle frame) it reaches. 2.0 m/s²
# (0.2 g) for brakes and pull-aways and 2.5 m/s² for cornering: the low end of the thresholds fleet services
# publish for cars (0.2-0.45 g), where real harsh manoeuvres start (`michi.recordings.injection`: 2.1-3.5 m/s²).
# The simulator builds every harsh event at a harsh pace (12 m/s³ by default, 4-12 m/s³ when a recipe draws them;
# everyday driving changes its acceleration at 1-3 m/s³), so what tells a weak harsh event from firm ordinary
# driving is how fast it builds, as physics-3's onset rules say. An event under its threshold is ordinary driving;
# one within `UNCERTAIN_SHARE` under it is neither clearly harsh nor clearly ordinary: the windows it touches are
# ambiguous.
HARSH_THRESHOLD_MPS2 = {"harsh_braking": 2.0, "harsh_acceleration": 2.0, "harsh_cornering": 2.5}
UNCERTAIN_SHARE = 0.1

HUMAN_SOURCES = frozenset(
    {labels_pb2.LABEL_SOURCE_CONSENSUS, labels_pb2.LABEL_SOURCE_GOLD, labels_pb2.LABEL_SOURCE_ADJUDICATION}
)
# Labels imported from a labels file beside a real recording (`adapters/recordings.py`). The trainer's
# own value, outside `LabelSource`: such labels never travel as `Label` messages, only as dataset members.
LABEL_SOURCE_IMPORTED = 100


def source_name(source: int) -> str:
    if source == LABEL_SOURCE_IMPORTED:
        return "imported"
    return labels_pb2.LabelSource.Name(source).removeprefix("LABEL_SOURCE_").lower()  # type: ignore[arg-type]


def event_type_name(event_type: int) -> str:
    return common_pb2.EventType.Name(event_type).removeprefix("EVENT_TYPE_").lower()  # type: ignore[arg-type]


def class_of_event_type(event_type: int) -> int | None:
    """The model class a labelled event type trains as, or None when it names no class."""
    if event_type == common_pb2.EVENT_TYPE_SPEEDING:
        return NORMAL_CLASS
    if event_type in CLASS_EVENT_TYPES:
        return CLASS_EVENT_TYPES.index(event_type)  # type: ignore[arg-type]
    return None


@dataclass(frozen=True)
class TruthSpan:
    """One ground-truth event of a device, in absolute seconds."""

    kind: str
    started_at: float
    ended_at: float
    risky: bool
    # A harsh event's peak acceleration (m/s², vehicle frame), when known: under `HARSH_THRESHOLD_MPS2` it is
    # not harsh (see `harshness`).
    peak_mps2: float | None = None


def harshness(event: TruthSpan) -> str:
    """How harsh an event is: "harsh", "uncertain" or "ordinary", by its peak against `HARSH_THRESHOLD_MPS2` (a
    harsh kind's event of unknown peak is harsh; an event of any other kind is "ordinary": no harsh event)."""
    if event.kind not in HARSH_KINDS or not event.risky:
        return "ordinary"
    threshold = HARSH_THRESHOLD_MPS2[event.kind]
    if event.peak_mps2 is None or event.peak_mps2 >= threshold:
        return "harsh"
    return "uncertain" if event.peak_mps2 >= threshold * (1.0 - UNCERTAIN_SHARE) else "ordinary"


def label_from_truth(start_s: float, end_s: float, events: Sequence[TruthSpan]) -> int | None:
    """The class of window [start_s, end_s) given its device's events, or None when ambiguous."""
    best_harsh: tuple[float, int] | None = None
    best_confounder = 0.0
    touched = False
    for event in events:
        overlap = min(end_s, event.ended_at) - max(start_s, event.started_at)
        if overlap <= 0:
            continue
        grade = harshness(event)
        if grade == "uncertain":
            touched = True
            continue
        harsh_class = HARSH_KINDS.get(event.kind) if grade == "harsh" else None
        if harsh_class is not None:
            touched = True
            if best_harsh is None or overlap > best_harsh[0]:
                best_harsh = (overlap, harsh_class)
        elif event.kind in CONFOUNDER_KINDS:
            touched = True
            best_confounder = max(best_confounder, overlap)
    if best_harsh is not None and best_harsh[0] >= MIN_HARSH_OVERLAP_S:
        return best_harsh[1]
    if best_confounder >= MIN_CONFOUNDER_OVERLAP_S:
        return CONFOUNDER_CLASS
    return None if touched else NORMAL_CLASS


@dataclass(frozen=True)
class WindowLabel:
    """A label as the trainer keeps it (from `michi.labels.v1` or from simulator ground truth)."""

    event_id: str
    window_id: str
    upload_id: str
    device_id: str
    trip_id: str
    driver_id: str
    event_type: int
    source: int
    occurred_at_s: float
    window_started_at_s: float
    window_ended_at_s: float


def label_from_message(label: labels_pb2.Label) -> WindowLabel:
    from michi.contracts import timestamp_to_seconds

    return WindowLabel(
        event_id=label.event_id,
        window_id=label.lineage.window_id,
        upload_id=label.lineage.upload_id,
        device_id=label.lineage.device_id,
        trip_id=label.lineage.trip_id,
        driver_id=label.lineage.driver_id,
        event_type=int(label.event_type),
        source=int(label.source),
        occurred_at_s=timestamp_to_seconds(label.occurred_at),
        window_started_at_s=timestamp_to_seconds(label.window.started_at),
        window_ended_at_s=timestamp_to_seconds(label.window.ended_at),
    )


# Event types only the camera service detects (from frames, not motion): a label naming one trains no IMU class.
CAMERA_EVENT_TYPES = frozenset(
    {common_pb2.EVENT_TYPE_DISTRACTION, common_pb2.EVENT_TYPE_DROWSINESS, common_pb2.EVENT_TYPE_TAILGATING}
)


def is_camera_label(label: labels_pb2.Label) -> bool:
    """Whether `label` is a verdict on camera frames (a camera review's, or naming a camera event type): its
    window is a camera episode, not a window of IMU samples, so it never becomes a training label, even when it
    says *normal*."""
    return labels_pb2.LABEL_REASON_CAMERA_REVIEW in label.request_reasons or label.event_type in CAMERA_EVENT_TYPES


def label_problem(label: labels_pb2.Label) -> str | None:
    """Why a Label message cannot be used (it is dead-lettered), or None."""
    lineage = label.lineage
    missing = [name for name in ("window_id", "upload_id", "device_id") if not getattr(lineage, name)] + (
        ["window.started_at"] if not label.window.HasField("started_at") else []
    )
    if missing:
        return f"label without {', '.join(missing)}"
    if label.event_type not in common_pb2.EventType.values() or label.event_type == common_pb2.EVENT_TYPE_UNSPECIFIED:
        return f"label with event type {label.event_type}"
    return None


def precedence(label: WindowLabel) -> tuple[int, float, str]:
    """Sort key: the greatest key is the label that counts for its window."""
    return (1 if label.source in HUMAN_SOURCES else 0, label.occurred_at_s, label.event_id)


def winning_labels(labels: Iterable[WindowLabel]) -> dict[str, WindowLabel]:
    """window_id → the label that counts."""
    winners: dict[str, WindowLabel] = {}
    for label in labels:
        current = winners.get(label.window_id)
        if current is None or precedence(label) > precedence(current):
            winners[label.window_id] = label
    return winners
