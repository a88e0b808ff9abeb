"""How well detections on a real recording agree with a person's labels of it (`michi evaluate --labels`).

    labels = read_labels("annotations.csv", ["accel_2020-10-15-21", "auckland-forward"])  # rows of this drive
    figures = evaluate_detections(detections, labels, duration_s=355.4)
    figures.recall, figures.precision, figures.axis_agreement

Everything here is pure computation on `DetectedEvent`s and `LabelledEvent`s, except `read_labels`,
which reads the labels CSV.

Times are seconds on the recording's clock (from its first IMU sample). A label is *aggressive*
when it names a harsh event (`AGGRESSIVE_LABELS`), which must be detected; *uncertain* when it names
a firm manoeuvre that may or may not be harsh (`UNCERTAIN_LABELS`: `firm_braking`,
`firm_acceleration`, `firm_cornering`; what 1 Hz GPS cannot tell, `michi.recordings.gps_truth`, or
a labeller unsure), on which a detection is neither right nor wrong; any other label is a normal
manoeuvre (a turn, a roundabout, a gentle stop), on which a detection is a false alarm.

The matching rule (docs/recordings.md):

* a detection and a label *overlap* when their time spans overlap once the label is widened by
  `WIDEN_S` on each side (labels are set by eye, often as a single instant);
* matching is one to one: each label matches at most one detection and each detection at most one
  label, pairing as many as possible — aggressive labels first, then uncertain labels with the
  detections left over, then normal labels with those left after that; among equally large
  matchings, the one whose pairs are closest in time;
* a detection matched to an uncertain label is *absorbed*: it counts in neither recall, precision,
  false alarms nor other detections (it is a matched pair, judged for axis agreement); an unmatched
  uncertain label is no miss;
* with `covered` (the stretches of the recording where the labels' source could see, such as a GPS
  without gaps), a detection matched to no label that does not lie wholly in covered time is *not
  judged*: nothing could say it was wrong. It is counted apart and left out of precision and other
  detections, and per-minute figures are over the covered time;
* recall = matched aggressive labels / aggressive labels; precision = detections matched to an
  aggressive label / judged detections not absorbed; false alarms on normal manoeuvres = normal
  labels overlapped by any detection / normal labels; other detections = judged detections matched
  to no label (a second detection of one labelled manoeuvre is one of them), per minute of recording
  (of covered time); axis agreement = matched pairs whose axes agree / matched pairs whose label has a
  known axis (braking and acceleration are longitudinal, cornering lateral, harsh or firm; a normal
  label's axis comes from an `axis` column: x or longitudinal, y or lateral). A detection that claims
  no event type (`UNTYPED_EVENT`: the reference rule, `threshold_rule.py`, on a mount whose forward
  axis is not known) counts for recall and precision like any other and is not judged for axis
  agreement.

A figure whose denominator is zero is None (nothing to measure), never 0 or 1.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from michi.recordings import clock_seconds, csv_reader, parsed_number

WIDEN_S = 1.0
LONGITUDINAL = "longitudinal"
LATERAL = "lateral"
# The labels that name a harsh event and the axis each lies on.
AGGRESSIVE_LABELS = {
    "harsh_braking": LONGITUDINAL,
    "harsh_acceleration": LONGITUDINAL,
    "harsh_cornering": LATERAL,
}
# The labels of a firm manoeuvre that may or may not be harsh, and their axes: a detection there is
# neither a hit nor a false alarm (module docstring).
UNCERTAIN_LABELS = {
    "firm_braking": LONGITUDINAL,
    "firm_acceleration": LONGITUDINAL,
    "firm_cornering": LATERAL,
}
# What a detection's event type says about its axis (speeding has none).
DETECTION_AXES = dict(AGGRESSIVE_LABELS)
# The event type of a detection that names no axis: something harsh happened, which way is not known.
UNTYPED_EVENT = "untyped"
AXIS_NAMES = {"x": LONGITUDINAL, LONGITUDINAL: LONGITUDINAL, "y": LATERAL, LATERAL: LATERAL}
SECONDS_PER_MINUTE = 60.0
SECONDS_PER_HOUR = 3600.0


class LabelsError(ValueError):
    """A labels file that cannot be read, with the reason."""


@dataclass(frozen=True)
class LabelledEvent:
    """One labelled moment or interval of the recording."""

    start_s: float
    end_s: float
    label: str
    # From an `axis` column, when the file has one (AXIS_NAMES); an aggressive label's own axis wins.
    stated_axis: str | None = None

    @property
    def aggressive(self) -> bool:
        return self.label in AGGRESSIVE_LABELS

    @property
    def uncertain(self) -> bool:
        return self.label in UNCERTAIN_LABELS

    @property
    def axis(self) -> str | None:
        return AGGRESSIVE_LABELS.get(self.label) or UNCERTAIN_LABELS.get(self.label) or self.stated_axis


@dataclass(frozen=True)
class DetectedEvent:
    """One detection: its span on the recording's clock and its event type (`harsh_braking`, ...)."""

    start_s: float
    end_s: float
    event_type: str
    # Decided after its window, once the mount's calibration was known (`Detection.hindsight`).
    hindsight: bool = False

    @property
    def axis(self) -> str | None:
        return DETECTION_AXES.get(self.event_type)


@dataclass(frozen=True)
class MatchedPair:
    detection: DetectedEvent
    label: LabelledEvent

    @property
    def axes_agree(self) -> bool | None:
        """None when the label's axis is unknown or the detection claims no type (`UNTYPED_EVENT`)."""
        if self.label.axis is None or self.detection.event_type == UNTYPED_EVENT:
            return None
        return self.detection.axis == self.label.axis


@dataclass(frozen=True)
class Figures:
    """Every figure of one evaluation (see the module docstring for the rule)."""

    duration_s: float
    # How far each label was widened on each side before matching.
    widen_s: float
    detections: int
    aggressive_labels: int
    normal_labels: int
    matched_aggressive: int
    matched_normal: int
    normal_overlapped: int
    other_detections: int
    axis_pairs: int
    axis_agreeing: int
    pairs: list[MatchedPair] = field(default_factory=list)
    # Firm labels (`UNCERTAIN_LABELS`) and the detections they absorbed.
    uncertain_labels: int = 0
    matched_uncertain: int = 0
    # Detections matched to no label outside the covered time (`covered`), which nothing could judge.
    not_judged: int = 0
    # The covered time per-minute figures are over (`duration_s` then is that), None when all was covered.
    covered_s: float | None = None

    @property
    def judged_detections(self) -> int:
        """The detections precision is over: neither absorbed by a firm label nor outside the covered time."""
        return self.detections - self.matched_uncertain - self.not_judged

    @property
    def recall(self) -> float | None:
        return _ratio(self.matched_aggressive, self.aggressive_labels)

    @property
    def precision(self) -> float | None:
        return _ratio(self.matched_aggressive, self.judged_detections)

    @property
    def normal_false_alarm_rate(self) -> float | None:
        return _ratio(self.normal_overlapped, self.normal_labels)

    @property
    def other_per_minute(self) -> float | None:
        return _ratio(self.other_detections, self.duration_s / SECONDS_PER_MINUTE)

    @property
    def axis_agreement(self) -> float | None:
        return _ratio(self.axis_agreeing, self.axis_pairs)

    def to_json(self) -> dict[str, Any]:
        return {
            "widen_s": self.widen_s,
            "detections": self.detections,
            "aggressive_labels": self.aggressive_labels,
            "normal_labels": self.normal_labels,
            "matched_aggressive": self.matched_aggressive,
            "matched_normal": self.matched_normal,
            "recall": self.recall,
            "precision": self.precision,
            "normal_overlapped": self.normal_overlapped,
            "normal_false_alarm_rate": self.normal_false_alarm_rate,
            "other_detections": self.other_detections,
            "other_detections_per_minute": self.other_per_minute,
            "axis_pairs": self.axis_pairs,
            "axis_agreeing": self.axis_agreeing,
            "axis_agreement": self.axis_agreement,
            "uncertain_labels": self.uncertain_labels,
            "matched_uncertain": self.matched_uncertain,
            "not_judged_detections": self.not_judged,
            "covered_s": self.covered_s,
            "pairs": [
                {
                    "detection": pair.detection.event_type,
                    "detection_start_s": round(pair.detection.start_s, 3),
                    "detection_end_s": round(pair.detection.end_s, 3),
                    "label": pair.label.label,
                    "label_start_s": pair.label.start_s,
                    "label_end_s": pair.label.end_s,
                    "axes_agree": pair.axes_agree,
                }
                for pair in self.pairs
            ],
        }


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def overlaps(detection: DetectedEvent, label: LabelledEvent, widen_s: float = WIDEN_S) -> bool:
    return detection.start_s <= label.end_s + widen_s and detection.end_s >= label.start_s - widen_s


def match_events(
    detections: Sequence[DetectedEvent], labels: Sequence[LabelledEvent], widen_s: float = WIDEN_S
) -> list[tuple[int, int]]:
    """A largest one-to-one matching as (detection index, label index) pairs, sorted by label index.

    Among the largest matchings, the one whose paired detections and labels are closest in time
    (sum of the distances between their centres): a detection inside a short roundabout label that
    also lies in a coarse "driving downhill for 50 s" label pairs with the roundabout. Solved exactly
    per cluster of mutually reachable events (they are local in time, so clusters stay small).
    """
    pairs: list[tuple[int, int]] = []
    for cluster_detections, cluster_labels in _clusters(detections, labels, widen_s):
        distances = [
            [
                abs(_centre(detections[detection]) - _centre(labels[label]))
                if overlaps(detections[detection], labels[label], widen_s)
                else None
                for label in cluster_labels
            ]
            for detection in cluster_detections
        ]
        # A forbidden pair costs more than every allowed pair together: more pairs always win.
        forbidden = 1.0 + sum(distance for row in distances for distance in row if distance is not None)
        costs = [[forbidden if distance is None else distance for distance in row] for row in distances]
        for row, column in _cheapest_assignment(costs):
            if distances[row][column] is not None:
                pairs.append((cluster_detections[row], cluster_labels[column]))
    return sorted(pairs, key=lambda pair: pair[1])


def _centre(event: DetectedEvent | LabelledEvent) -> float:
    return (event.start_s + event.end_s) / 2.0


def _clusters(
    detections: Sequence[DetectedEvent], labels: Sequence[LabelledEvent], widen_s: float
) -> list[tuple[list[int], list[int]]]:
    """Groups of detections and labels (indices, in time order) whose widened spans chain together."""
    spans = sorted(
        [(event.start_s, event.end_s, 0, index) for index, event in enumerate(detections)]
        + [(event.start_s - widen_s, event.end_s + widen_s, 1, index) for index, event in enumerate(labels)]
    )
    clusters: list[tuple[list[int], list[int]]] = []
    reach = -math.inf
    for start, end, kind, index in spans:
        if start > reach or not clusters:
            clusters.append(([], []))
        clusters[-1][kind].append(index)
        reach = max(reach, end)
    return [(found, labelled) for found, labelled in clusters if found and labelled]


def _cheapest_assignment(costs: list[list[float]]) -> list[tuple[int, int]]:
    """(row, column) pairs pairing every row (or every column, if fewer) at the least total cost.

    The Hungarian algorithm with potentials, O(rows² x columns).
    """
    if not costs or not costs[0]:
        return []
    if len(costs) > len(costs[0]):
        transposed = [list(column) for column in zip(*costs, strict=True)]
        return [(row, column) for column, row in _cheapest_assignment(transposed)]
    rows, columns = len(costs), len(costs[0])
    row_potential = [0.0] * (rows + 1)
    column_potential = [0.0] * (columns + 1)
    # owner[j]: the row (1-based) assigned to column j; column 0 is the search's virtual start.
    owner = [0] * (columns + 1)
    previous = [0] * (columns + 1)
    for row in range(1, rows + 1):
        owner[0] = row
        current = 0
        slack = [math.inf] * (columns + 1)
        visited = [False] * (columns + 1)
        while owner[current] != 0:
            visited[current] = True
            at = owner[current]
            delta, following = math.inf, 0
            for column in range(1, columns + 1):
                if visited[column]:
                    continue
                reduced = costs[at - 1][column - 1] - row_potential[at] - column_potential[column]
                if reduced < slack[column]:
                    slack[column], previous[column] = reduced, current
                if slack[column] < delta:
                    delta, following = slack[column], column
            for column in range(columns + 1):
                if visited[column]:
                    row_potential[owner[column]] += delta
                    column_potential[column] -= delta
                else:
                    slack[column] -= delta
            current = following
        while current:
            before = previous[current]
            owner[current] = owner[before]
            current = before
    return sorted((owner[column] - 1, column - 1) for column in range(1, columns + 1) if owner[column])


def evaluate_detections(
    detections: Sequence[DetectedEvent],
    labels: Sequence[LabelledEvent],
    *,
    duration_s: float,
    widen_s: float = WIDEN_S,
    covered: Sequence[tuple[float, float]] | None = None,
) -> Figures:
    """Recall, precision, false alarms, other detections and axis agreement (module docstring).

    `covered`: the (start, end) stretches where the labels' source could see (GPS without gaps); a
    detection matched to no label outside them is not judged, and per-minute figures are over them.
    """
    aggressive = [label for label in labels if label.aggressive]
    uncertain = [label for label in labels if label.uncertain]
    normal = [label for label in labels if not label.aggressive and not label.uncertain]
    pairs: list[MatchedPair] = []
    left = list(detections)
    counts = []
    # Aggressive labels first, then firm ones with the detections left over, then normal ones.
    for group in (aggressive, uncertain, normal):
        matched = match_events(left, group, widen_s)
        pairs += [MatchedPair(left[detection], group[label]) for detection, label in matched]
        counts.append(len(matched))
        used = {detection for detection, _ in matched}
        left = [detection for index, detection in enumerate(left) if index not in used]
    matched_aggressive, matched_uncertain, _ = counts
    not_judged = 0
    covered_s: float | None = None
    if covered is not None:
        not_judged = sum(1 for detection in left if not _inside(detection, covered))
        covered_s = sum(max(0.0, min(end, duration_s) - max(start, 0.0)) for start, end in covered)
    judged = [pair.axes_agree for pair in pairs if pair.axes_agree is not None]
    return Figures(
        duration_s=covered_s if covered_s is not None else duration_s,
        widen_s=widen_s,
        detections=len(detections),
        aggressive_labels=len(aggressive),
        normal_labels=len(normal),
        matched_aggressive=matched_aggressive,
        matched_normal=len(pairs) - matched_aggressive - matched_uncertain,
        normal_overlapped=sum(
            1 for label in normal if any(overlaps(detection, label, widen_s) for detection in detections)
        ),
        other_detections=len(left) - not_judged,
        axis_pairs=len(judged),
        axis_agreeing=sum(judged),
        pairs=pairs,
        uncertain_labels=len(uncertain),
        matched_uncertain=matched_uncertain,
        not_judged=not_judged,
        covered_s=covered_s,
    )


def _inside(detection: DetectedEvent, covered: Sequence[tuple[float, float]]) -> bool:
    return any(start <= detection.start_s and detection.end_s <= end for start, end in covered)


def detections_per_hour(detections: Sequence[DetectedEvent], duration_s: float) -> dict[str, float]:
    """Detections per hour of recording, by event type (sorted by name)."""
    if duration_s <= 0:
        return {}
    counts = Counter(detection.event_type for detection in detections)
    return {event_type: counts[event_type] * SECONDS_PER_HOUR / duration_s for event_type in sorted(counts)}


def trip_matches(trip: str, names: Sequence[str]) -> bool:
    """Whether a labels file's `trip` value names this recording: equal to one of `names` (file stem,
    short name), or a whole part of one (`2020-10-15-21` in `accel_2020-10-15-21`, not `2020-10-15-2`)."""
    trip = trip.strip()
    if not trip:
        return False
    pattern = re.compile(rf"(?<![A-Za-z0-9]){re.escape(trip)}(?![A-Za-z0-9])")
    return any(trip == name or pattern.search(name) for name in names)


def _label_seconds(value: str) -> float:
    """A label's time: seconds ("83.5", "83,5"), or as a video player shows it: "1:23.5", "0:01:23.5"."""
    try:
        return parsed_number(value)
    except ValueError:
        clock = clock_seconds(value)
        if clock is None or clock[1] == 0.0:  # a date-time is no time on the recording's clock
            raise ValueError(f"could not read {value!r}") from None
        return clock[0]


def read_labels(path: str | Path, names: Sequence[str] = ()) -> list[LabelledEvent]:
    """The labels of a CSV with `t_start_s,t_end_s,label` (extra columns ignored).

    When the file has a `trip` column, only the rows whose trip names the recording (`names`: its
    file stem and short name, see `trip_matches`) are kept; none matching is an error, since figures
    against no labels would look like a perfect or a hopeless model.
    """
    path = Path(path)
    if not path.exists():
        raise LabelsError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: a spreadsheet's byte-order mark
        reader = csv_reader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in ("t_start_s", "t_end_s", "label") if name not in header]
        if missing:
            raise LabelsError(f"{path}: columns missing: {', '.join(missing)} (have {', '.join(header) or 'none'})")
        # Line numbers (the header is line 1) for the messages, kept through the trip filter.
        rows = [
            (line, {key.strip(): (value or "").strip() for key, value in row.items() if isinstance(key, str)})
            for line, row in enumerate(reader, start=2)
        ]
    if "trip" in header:
        trips = sorted({row["trip"] for _, row in rows})
        rows = [(line, row) for line, row in rows if trip_matches(row["trip"], names)]
        if not rows:
            raise LabelsError(
                f"{path}: no row's trip names this recording ({', '.join(names)}); trips in the file: {', '.join(trips)}"
            )
    labels = []
    for line, row in rows:
        try:
            start, end = _label_seconds(row["t_start_s"]), _label_seconds(row["t_end_s"])
        except ValueError as error:
            raise LabelsError(
                f"{path}: row {line}: times must be seconds, or minutes:seconds as a video player shows them ({error})"
            ) from error
        if end < start:
            raise LabelsError(f"{path}: row {line}: t_end_s {end} is before t_start_s {start}")
        axis = AXIS_NAMES.get(row.get("axis", "").lower())
        labels.append(LabelledEvent(start, end, row["label"].lower(), axis))
    return labels
