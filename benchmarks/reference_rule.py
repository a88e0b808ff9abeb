"""The served models against the reference rule on the shipped real recordings (issue 13's target).

    .venv/bin/python -m benchmarks reference-rule

Issue 13 asks the served champion to be better than a smoothed-threshold rule on every figure
(`michi.recordings.threshold_rule`: a 0.5 s-smoothed horizontal-acceleration magnitude above
2.5 m/s²). This prints, for `physics-3` (a fresh platform's champion, docs/training.md), the built-in
`baseline-1` (what `michi evaluate` falls back to without a champion) and the rule, measured in the
same run on the same uploads through the product's preprocessing and calibration:

* every shipped recording as recorded and without its GPS, with the figures of `michi evaluate`
  (`michi.recordings.evaluation`; auckland-forward against its annotations, the others as normal
  driving throughout, on which every detection is an "other" one);
* the drives with real-strength harsh manoeuvres added, built as the trainer's real-data section
  builds them (`services.trainer.adapters.recordings.with_added_manoeuvres`: no GPS, the manoeuvres
  in the drive's true axes from `gps_truth`): manoeuvres found (one-to-one matching, labels widened
  by 1 s, whatever the detection's type), found by a detection of the manoeuvre's own type (what the
  trainer counts as found), found with the wrong axis, found untyped, and false alerts (detections
  matching no added manoeuvre) per hour of the drive;
* the drives with GPS judged against their own GPS, the detectors given none (`michi evaluate
  --no-gps --gps-truth`, `michi.recordings.gps_truth`): the harsh and firm manoeuvres the GPS shows,
  harsh ones found (recall), detections on firm ones (neither right nor wrong), other detections per
  minute of the time the GPS covers, detections not judged (outside it), and axis agreement.

The models run through inference's own pipeline in process (`michi.cli.recordings.evaluate_recording`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import print_table
from michi.cli.recordings import evaluate_recording, load_detector
from michi.recordings import DATASETS, SHARED_RECORDINGS, Recording, shared_recording
from michi.recordings.evaluation import (
    SECONDS_PER_HOUR,
    SECONDS_PER_MINUTE,
    UNTYPED_EVENT,
    DetectedEvent,
    Figures,
    LabelledEvent,
    evaluate_detections,
    read_labels,
)
from michi.recordings.gps_truth import gps_manoeuvres
from michi.recordings.threshold_rule import ThresholdRule, recording_rule_detections
from services.inference.adapters.onnx_model import OnnxDetector, install_baseline_model
from services.inference.handlers import Detector
from services.trainer.adapters.recordings import SHIPPED_LABELS, with_added_manoeuvres
from services.trainer.domain.real_data import gps_truth

RULE = "reference rule"


def _figure(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _detectors(models_dir: Path) -> list[tuple[str, Detector]]:
    physics = load_detector("physics").detector
    baseline = OnnxDetector(install_baseline_model(models_dir))
    return [(physics.model_version, physics), (baseline.model_version, baseline)]


def _detections(
    recording: Recording, detectors: Sequence[tuple[str, Detector]]
) -> list[tuple[str, list[DetectedEvent]]]:
    found = [(name, evaluate_recording(recording, detector).detections) for name, detector in detectors]
    return [*found, (RULE, recording_rule_detections(recording, ThresholdRule()))]


def _plain_row(recording: str, variant: str, who: str, figures: Figures, labelled: bool) -> list[object]:
    hours = figures.duration_s / SECONDS_PER_HOUR
    return [
        f"{recording} {variant}",
        who,
        figures.detections,
        f"{figures.detections / hours:.1f}",
        f"{_figure(figures.precision)}" if labelled else "n/a",
        f"{figures.normal_overlapped}/{figures.normal_labels}" if labelled else "n/a",
        _figure(figures.other_per_minute),
        f"{figures.axis_agreeing}/{figures.axis_pairs}" if labelled else "n/a",
    ]


def _gps_truth_row(drive: str, who: str, harsh: int, firm: int, figures: Figures) -> list[object]:
    return [
        drive,
        who,
        f"{harsh} / {firm}",
        f"{figures.matched_aggressive} of {figures.aggressive_labels}",
        _figure(figures.recall),
        figures.matched_uncertain,
        figures.other_detections,
        _figure(figures.other_per_minute),
        figures.not_judged,
        f"{figures.axis_agreeing}/{figures.axis_pairs}",
    ]


def run(*, quick: bool = False) -> None:
    """Print the three tables (`quick` changes nothing: the whole run takes under a minute)."""
    del quick
    with tempfile.TemporaryDirectory(prefix="michi-reference-") as models_dir:
        detectors = _detectors(Path(models_dir))
        plain_rows: list[list[object]] = []
        added_rows: list[list[object]] = []
        truth_rows: list[list[object]] = []
        # Per detector: harsh, firm, found, on firm, other, not judged, axis agreeing, axis pairs, covered seconds.
        truth_totals: dict[str, list[float]] = {}
        totals: dict[str, list[float]] = {}
        # Every plain variant of every drive is normal driving: its detections are the trainer's false alerts.
        plain_totals: dict[str, list[float]] = {}
        for name in SHARED_RECORDINGS:
            recording = shared_recording(name)
            labels: list[LabelledEvent] = []
            if name in SHIPPED_LABELS:
                stem = Path(SHARED_RECORDINGS[name]["path"]).stem
                labels = read_labels(DATASETS / SHIPPED_LABELS[name], [stem, name])
            # The GPS judges the detectors that were not given it (`michi evaluate --no-gps --gps-truth`).
            truth = gps_manoeuvres(recording) if recording.has_gps else None
            for variant, seen in (("gps", recording), ("no-gps", recording.without_gps())):
                for who, detections in _detections(seen, detectors):
                    figures = evaluate_detections(detections, labels, duration_s=seen.duration_s)
                    plain_rows.append(_plain_row(name, variant, who, figures, bool(labels)))
                    pooled = plain_totals.setdefault(who, [0.0, 0.0])
                    pooled[0] += figures.detections
                    pooled[1] += seen.duration_s / SECONDS_PER_HOUR
                    if truth is None or variant != "no-gps":
                        continue
                    judged = evaluate_detections(
                        detections, truth.labels, duration_s=seen.duration_s, covered=truth.covered
                    )
                    drive = f"{name} ({truth.covered_s:.0f} s covered)"
                    truth_rows.append(_gps_truth_row(drive, who, truth.harsh, truth.firm, judged))
                    total_judged = truth_totals.setdefault(who, [0.0] * 9)
                    for index, value in enumerate(
                        (
                            truth.harsh,
                            truth.firm,
                            judged.matched_aggressive,
                            judged.matched_uncertain,
                            judged.other_detections,
                            judged.not_judged,
                            judged.axis_agreeing,
                            judged.axis_pairs,
                            truth.covered_s,
                        )
                    ):
                        total_judged[index] += value
            added = with_added_manoeuvres(recording, gps_truth(recording))
            if added is None:
                continue
            injected, manoeuvres = added
            for who, detections in _detections(injected, detectors):
                figures = evaluate_detections(detections, manoeuvres, duration_s=injected.duration_s)
                right = sum(1 for pair in figures.pairs if pair.detection.event_type == pair.label.label)
                wrong = sum(1 for pair in figures.pairs if pair.axes_agree is False)
                untyped = sum(1 for pair in figures.pairs if pair.detection.event_type == UNTYPED_EVENT)
                hours = injected.duration_s / SECONDS_PER_HOUR
                total = totals.setdefault(who, [0.0] * 7)
                for index, value in enumerate(
                    (
                        figures.matched_aggressive,
                        figures.aggressive_labels,
                        right,
                        wrong,
                        untyped,
                        figures.other_detections,
                        hours,
                    )
                ):
                    total[index] += value
                added_rows.append(
                    [
                        f"{name} no-gps+manoeuvres",
                        who,
                        f"{figures.matched_aggressive} of {figures.aggressive_labels}",
                        right,
                        wrong,
                        untyped,
                        figures.other_detections,
                        f"{figures.other_detections / hours:.1f}",
                    ]
                )
        for who, (count, hours) in plain_totals.items():
            plain_rows.append(["all", who, f"{count:.0f}", f"{count / hours:.1f}", "", "", "", ""])
        for who, pooled_added in totals.items():
            found, labelled, right_type, wrong_axis, without_type, other, drive_hours = pooled_added
            added_rows.append(
                [
                    "all",
                    who,
                    f"{found:.0f} of {labelled:.0f}",
                    f"{right_type:.0f}",
                    f"{wrong_axis:.0f}",
                    f"{without_type:.0f}",
                    f"{other:.0f}",
                    f"{other / drive_hours:.1f}",
                ]
            )
        for who, pooled_truth in truth_totals.items():
            harsh, firm, found, on_firm, other, not_judged, agreeing, axis_pairs, covered_s = pooled_truth
            truth_rows.append(
                [
                    f"all ({covered_s / SECONDS_PER_MINUTE:.1f} min covered)",
                    who,
                    f"{harsh:.0f} / {firm:.0f}",
                    f"{found:.0f} of {harsh:.0f}",
                    _figure(found / harsh if harsh else None),
                    f"{on_firm:.0f}",
                    f"{other:.0f}",
                    _figure(other / (covered_s / SECONDS_PER_MINUTE) if covered_s else None),
                    f"{not_judged:.0f}",
                    f"{agreeing:.0f}/{axis_pairs:.0f}",
                ]
            )
    print_table(
        "Shipped recordings, as recorded and without GPS (auckland-forward against its 20 annotations of normal manoeuvres)",
        ["recording", "detector", "detections", "per hour", "precision", "normal alerted", "other/min", "axis agrees"],
        plain_rows,
    )
    print_table(
        "Drives with real-strength harsh manoeuvres added (no GPS), as the trainer's real-data section builds them",
        ["drive", "detector", "found", "right type", "wrong axis", "untyped", "false alerts", "per hour"],
        added_rows,
    )
    print_table(
        "Shipped drives judged against their own GPS (no GPS given to the detectors)",
        [
            "drive",
            "detector",
            "GPS harsh / firm",
            "found",
            "recall",
            "on firm",
            "other",
            "other/min",
            "not judged",
            "axis agrees",
        ],
        truth_rows,
    )
