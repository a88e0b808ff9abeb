"""What one key of scoring's state may hold, and whether one more input still fits (docs/scoring.md, "Bounds").

A trip's or driver's state is one record of a compacted changelog topic: it is rewritten on every change
and recovered after every restart, so a record the broker refuses (over 1 MB) would stop scoring for
every trip on the worker, again after every restart. Every state therefore has bounds on what it holds:

| bound | value | what meets it |
|---|---|---|
| `MAX_STATE_BYTES` | 256 KiB | the JSON of one trip or driver state, as the changelog stores it |
| `MAX_SEQUENCE_RANGES_PER_TRIP` | 256 | runs of consecutive upload sequences a trip received (gaps + 1) |
| `MAX_DETECTIONS_PER_TRIP` | 400 | detections recorded, plus detection ids segments listed that have not arrived |
| `MAX_LABELLED_WINDOWS_PER_TRIP` | 128 | windows with a verdict (each remembers at most 16 label ids) |
| `MAX_ID_LENGTH` | 128 | characters of every id and lineage value scoring stores (longer: a schema violation) |
| `MAX_MISSING_SEQUENCES_LISTED` | 1000 | missing sequences a TripScore and a log line list (the lowest) |
| `MAX_DRIVER_TRIPS` | 500 | highest `MICHI_SCORING_DRIVER_MAX_TRIPS` accepted |

An input that would take a trip over a bound is not applied: it goes to dead letters with reason
`state-limit` and the bound in its error, `michi_scoring_state_limits_total{bound}` counts it, and an
open trip closes at once with reason `closed-at-limit` and what it holds. A driver keeps its newest
trips within `MICHI_SCORING_DRIVER_MAX_TRIPS` and `MAX_STATE_BYTES` (older ones leave the window, as
they always did past the trip count). Nothing here allocates in proportion to a sequence number.

The byte bound is kept without serializing the state for every input: `StateBudget` measures a state
once (when a batch first touches it, or when it comes near the bound) and adds, per input, an upper
bound of what that input can add (`*_growth`); room for the trip's closure stays free.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import orjson

from services.scoring.domain import sequences

if TYPE_CHECKING:
    from services.scoring.domain.trip import DetectionFacts, LabelFacts, SegmentFacts, TripState

MAX_STATE_BYTES = 256 * 1024
MAX_SEQUENCE_RANGES_PER_TRIP = 256
# With the platform's ids (UUIDs) a detection record takes about 330 bytes and a verdict about 820, so
# these counts are met before the byte bound (400 x 330 + 128 x 820 + 256 ranges = about 245 KB);
# longer ids meet the byte bound first.
MAX_DETECTIONS_PER_TRIP = 400
MAX_LABELLED_WINDOWS_PER_TRIP = 128
MAX_ID_LENGTH = 128
MAX_MISSING_SEQUENCES_LISTED = 1000
MAX_DRIVER_TRIPS = 500
# Label ids remembered per window (redeliveries recognised); a window rarely gets more than two labels.
MAX_LABEL_IDS_PER_WINDOW = 16

BOUND_BYTES = "state-bytes"
BOUND_SEQUENCE_RANGES = "sequence-ranges"
BOUND_DETECTIONS = "detections"
BOUND_LABELLED_WINDOWS = "labelled-windows"

# The widest numbers JSON can hold here: a float needs at most 24 characters, an int at most 20.
_WIDE_FLOAT = -2.2250738585072014e-308
_WIDE_INT = -(2**63)
_UUID = "00000000-0000-0000-0000-000000000000"
# The worst an id can cost in JSON: every character escaped as \u00XX.
_WORST_ID = "\x00" * MAX_ID_LENGTH


@dataclass(frozen=True)
class LimitReached:
    """An input refused because the state would cross `bound`; `detail` says how (the dead letter's error)."""

    bound: str
    detail: str


def json_size(value: object) -> int:
    """Bytes of `value` in the changelog's JSON (faust's codec is orjson, same bytes)."""
    return len(orjson.dumps(value))


def encoded_size(state: TripState) -> int:
    return json_size(state.to_dict())


def _strings(values: Iterable[str]) -> int:
    # Each string, quoted and escaped, plus the comma or colon next to it.
    return sum(json_size(value) + 1 for value in values)


@dataclass(frozen=True)
class Overheads:
    """What a detection record, a segment, a verdict and a closure add to a state besides their own strings."""

    detection: int
    segment: int
    verdict: int
    closure: int


@functools.cache
def overheads() -> Overheads:
    """Measured once on records holding the widest numbers (so they follow the dataclasses' fields)."""
    from services.scoring.domain.trip import (
        REASON_LABEL_CONFIRMED,
        STATUS_NOT_SCORED,
        DetectionRecord,
        LabelVerdict,
        SegmentTotals,
        TripClosure,
    )

    wide_float = {"weight", "points", "occurred_at", "peak_value", "speed_mps", "speed_limit_mps"}
    record = DetectionRecord("", _WIDE_INT, STATUS_NOT_SCORED, scored_event_id=_UUID)
    for name in asdict(record):
        if name in wide_float:
            setattr(record, name, _WIDE_FLOAT)
        elif name in {"severity", "revision"}:
            setattr(record, name, _WIDE_INT)
    detection = json_size({"": asdict(record)})
    totals = SegmentTotals(_WIDE_INT, _WIDE_FLOAT, _WIDE_FLOAT, _WIDE_FLOAT, _WIDE_FLOAT)
    # The totals object itself (the first segment creates it), one new range of two 20-digit numbers,
    # and the trip-end sequence, trip-end time and activity time that go from null to their widest.
    segment = json_size(asdict(totals)) + len(",[,]") + 2 * 20 + 3 * 24
    verdict = LabelVerdict("", "", _WIDE_INT, "", _WIDE_FLOAT, _WIDE_INT, _WIDE_FLOAT, _WIDE_FLOAT)
    verdict.window_started_at = verdict.window_ended_at = verdict.latitude = verdict.longitude = _WIDE_FLOAT
    # The verdict and the trip's label counter going from one digit to its widest.
    labelled = json_size({"": asdict(verdict)}) + 20
    closure = TripClosure(_WIDE_INT, f"{REASON_LABEL_CONFIRMED}:{_WORST_ID}", _WIDE_FLOAT, _UUID, _WIDE_INT)
    # Closing also gives a trip without segments its (empty) totals.
    closing = json_size(asdict(closure)) + json_size(asdict(totals))
    return Overheads(detection, segment, labelled, closing)


# Per input: the activity time, and the driver and device ids the first input of a trip sets.
INPUT_BYTES = 24


def _lineage_ids(driver_id: str, device_id: str, state: TripState) -> int:
    added = [value for value, known in ((driver_id, state.driver_id), (device_id, state.device_id)) if not known]
    return _strings(added)


def detection_growth(state: TripState, facts: DetectionFacts, driver_id: str = "", device_id: str = "") -> int:
    """At most what applying the detection adds to the state's JSON."""
    return (
        INPUT_BYTES + _lineage_ids(driver_id, device_id, state) + overheads().detection + 2 * _strings([facts.event_id])
    )


def segment_growth(state: TripState, facts: SegmentFacts, driver_id: str = "", device_id: str = "") -> int:
    """At most what applying the segment adds: totals and one range, and the listed ids still awaited."""
    return (
        INPUT_BYTES
        + _lineage_ids(driver_id, device_id, state)
        + overheads().segment
        + _strings(set(facts.detection_event_ids))
    )


def label_growth(state: TripState, facts: LabelFacts, driver_id: str = "", device_id: str = "") -> int:
    """At most what applying the label adds: a whole new verdict (a replaced one is not subtracted)."""
    current = state.verdicts.get(facts.window_id)
    seen = list(current.seen_label_ids) if current is not None else []
    strings = [facts.window_id, facts.window_id, facts.event_id, facts.detection_event_id, facts.event_id, *seen]
    lineage = [text for pair in facts.lineage for text in pair]
    return (
        INPUT_BYTES
        + _lineage_ids(driver_id, device_id, state)
        + overheads().verdict
        + _strings(strings)
        + _strings(lineage)
    )


def detection_limit(state: TripState, facts: DetectionFacts) -> LimitReached | None:
    if facts.event_id in state.detections or facts.event_id in state.awaited_detections:
        return None  # a duplicate, or one the count already holds
    held = len(state.detections) + len(state.awaited_detections)
    if held >= MAX_DETECTIONS_PER_TRIP:
        return LimitReached(BOUND_DETECTIONS, f"trip holds {held} detections, the most one trip may hold")
    return None


def segment_limit(state: TripState, facts: SegmentFacts) -> LimitReached | None:
    received = state.totals.received if state.totals is not None else []
    if sequences.contains(received, facts.sequence):
        return None  # a duplicate
    if len(received) >= MAX_SEQUENCE_RANGES_PER_TRIP and sequences.opens_range(received, facts.sequence):
        return LimitReached(
            BOUND_SEQUENCE_RANGES,
            f"sequence {facts.sequence} would open run {len(received) + 1} of received sequences; "
            f"a trip holds at most {MAX_SEQUENCE_RANGES_PER_TRIP}",
        )
    if state.closed:
        return None  # a closed trip no longer waits for the detections its segments list
    held = len(state.detections) + len(state.awaited_detections)
    awaited = set(state.awaited_detections)
    listed = {
        detection_id
        for detection_id in facts.detection_event_ids
        if detection_id not in state.detections and detection_id not in awaited
    }
    if held + len(listed) > MAX_DETECTIONS_PER_TRIP:
        return LimitReached(
            BOUND_DETECTIONS,
            f"segment {facts.sequence} lists {len(listed)} new detections; the trip holds {held} "
            f"of at most {MAX_DETECTIONS_PER_TRIP}",
        )
    return None


def label_limit(state: TripState, facts: LabelFacts) -> LimitReached | None:
    if facts.window_id in state.verdicts or len(state.verdicts) < MAX_LABELLED_WINDOWS_PER_TRIP:
        return None
    return LimitReached(
        BOUND_LABELLED_WINDOWS,
        f"trip holds verdicts on {len(state.verdicts)} windows, the most one trip may hold",
    )


class StateBudget:
    """A conservative running size of each trip state one batch changes, exact when first seen or near the bound.

    The limit leaves room for a closure (`overheads().closure`), so a trip closed at the bound still
    fits `MAX_STATE_BYTES`.
    """

    def __init__(self, max_bytes: int = MAX_STATE_BYTES) -> None:
        self.limit = max_bytes - overheads().closure
        # Per trip: its size in bytes, and whether that is measured (True) or an upper bound (False).
        self._sizes: dict[str, tuple[int, bool]] = {}

    def admit(self, state: TripState, growth: int) -> LimitReached | None:
        """None when `growth` more bytes still fit the state (then counted), else why not.

        The state is measured when first seen and when the upper bound says it might not fit; a
        refused input changes nothing, so the next one is judged on the same measurement.
        """
        size, measured = self._sizes.get(state.trip_id, (0, False))
        if state.trip_id not in self._sizes or (size + growth > self.limit and not measured):
            size, measured = encoded_size(state), True
        if size + growth > self.limit:
            self._sizes[state.trip_id] = (size, measured)
            return LimitReached(
                BOUND_BYTES,
                f"trip state is {size} bytes and this input may add {growth}; a state holds at most "
                f"{MAX_STATE_BYTES} bytes",
            )
        self._sizes[state.trip_id] = (size + growth, False)
        return None
