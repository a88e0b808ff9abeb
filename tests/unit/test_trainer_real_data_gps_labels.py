"""The real-data section judges a recording without a labels file by what its own GPS says the vehicle did.

Covers: on a recording with GPS and no labels file, a detection over a harsh brake its GPS shows is
found and no false alert, one over a firm brake is neither (and a detection of another class there
is still a false alert), the label source is recorded; a labels file wins over the GPS; a recording
with neither is normal driving throughout. The drive is the first three minutes of the shipped
auckland-backwards, whose GPS shows harsh brakes at 154 s and 165 s and a firm one at 114 s
(`michi.recordings.gps_truth`).

Run: .venv/bin/python -m pytest tests/unit/test_trainer_real_data_gps_labels.py -q
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from michi.recordings import shared_recording
from michi.recordings.evaluation import LabelledEvent
from services.trainer.adapters.recordings import RealRecordings
from services.trainer.domain.labels import CLASS_NAMES
from services.trainer.domain.real_data import (
    LABELS_FROM_ADDED_MANOEUVRES,
    LABELS_FROM_FILE,
    LABELS_FROM_GPS,
    NO_LABELS,
    RealWindows,
    real_data_section,
    recording_figures,
)

SECONDS = 180.0
BRAKING = CLASS_NAMES.index("harsh_braking")
CORNERING = CLASS_NAMES.index("harsh_cornering")


def write_drive(path: Path, *, gps: bool = True) -> None:
    """The first `SECONDS` of auckland-backwards as a JSON recording a user would add."""
    recording = shared_recording("auckland-backwards")
    imu = recording.times_s < SECONDS
    fixes = recording.gps_times_s < SECONDS
    document: dict[str, object] = {
        "imu": {"time_s": recording.times_s[imu].tolist(), "accel": recording.accel[imu].tolist(), "gyro": None}
    }
    if gps:
        document["gps"] = {
            "time_s": recording.gps_times_s[fixes].tolist(),
            "latitude": recording.latitude[fixes].tolist(),
            "longitude": recording.longitude[fixes].tolist(),
            "speed_mps": recording.speed_mps[fixes].tolist(),
            "heading_deg": recording.heading_deg[fixes].tolist(),
        }
    path.write_text(json.dumps(document))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("evaluation")
    write_drive(folder / "drive.json")
    return folder


def deciding(windows: RealWindows, spans: list[tuple[float, float, int]]) -> np.ndarray:
    """Probabilities deciding each span's class for the windows overlapping it, normal elsewhere."""
    probabilities = np.full((windows.count, len(CLASS_NAMES)), 0.05, dtype=np.float32)
    probabilities[:, 0] = 0.8
    for start, end, kind in spans:
        rows = (windows.starts_s < end) & (windows.ends_s > start)
        probabilities[rows] = 0.05
        probabilities[rows, kind] = 0.8
    return probabilities


def only(recordings: list[RealWindows], variant: str) -> RealWindows:
    (found,) = [windows for windows in recordings if windows.variant == variant]
    # Every window allowed: what is judged here is the labels, not the serving rule.
    return replace(found, allowed=np.ones(found.count, dtype=bool))


def test_without_a_labels_file_a_harsh_brake_the_gps_shows_is_found_and_a_firm_one_is_neither(folder: Path) -> None:
    recordings, skipped = RealRecordings(evaluation_folder=folder, shipped=False).evaluation_windows()
    assert not skipped
    assert {windows.variant: windows.label_source for windows in recordings} == {
        "gps": LABELS_FROM_GPS,
        "no-gps": LABELS_FROM_GPS,
        "no-gps+manoeuvres": LABELS_FROM_ADDED_MANOEUVRES,
    }
    windows = only(recordings, "gps")
    brakes = [label for label in windows.labels if label.label == "harsh_braking"]
    assert [label.start_s for label in brakes] == pytest.approx([154.31, 165.31])
    harsh = brakes[1]  # 3.1 m/s² by GPS
    firm = next(label for label in windows.labels if label.label == "firm_braking")
    assert firm.start_s == pytest.approx(114.33)
    # The added-manoeuvres variant keeps its own labels only.
    added = next(windows for windows in recordings if windows.variant == "no-gps+manoeuvres")
    assert {label.label for label in added.labels} <= {"harsh_braking", "harsh_acceleration", "harsh_cornering"}
    assert all(label not in added.labels for label in windows.labels)

    braking = [(harsh.start_s, harsh.end_s, BRAKING), (firm.start_s, firm.end_s, BRAKING)]
    figures = recording_figures(deciding(windows, braking), windows)
    assert len(figures.detections) == 2
    assert windows.labels.index(harsh) in figures.aggressive_found
    # The firm brake: no false alert and no recall target.
    assert figures.false_alerts == 0 and figures.uncertain_detections == 1
    assert figures.aggressive_labels == sum(1 for label in windows.labels if label.aggressive)
    assert windows.labels.index(firm) not in figures.aggressive_found
    # A detection of another class over the firm brake is a false alert as anywhere.
    swerve = recording_figures(deciding(windows, [(firm.start_s, firm.end_s, CORNERING)]), windows)
    assert (swerve.false_alerts, swerve.uncertain_detections) == (1, 0)
    # Normal driving leaves out the harsh labels (widened by 1 s), not the firm ones.
    harsh_seconds = sum(label.end_s - label.start_s + 2.0 for label in windows.labels if label.aggressive)
    assert figures.normal_hours * 3600.0 == pytest.approx(windows.duration_s - harsh_seconds, abs=0.5)

    section = real_data_section(lambda features, signals: deciding(windows, braking), [windows])
    assert section["label_sources"] == {"drive": LABELS_FROM_GPS}
    assert section["recordings"][0]["label_source"] == LABELS_FROM_GPS
    assert section["metrics"]["real_false_alerts"] == 0 and section["metrics"]["real_uncertain_detections"] == 1


def test_a_labels_file_wins_over_the_gps_and_without_either_the_drive_is_normal_throughout(tmp_path: Path) -> None:
    write_drive(tmp_path / "labelled.json")
    (tmp_path / "labelled.labels.csv").write_text("t_start_s,t_end_s,label\n100.0,100.0,turn_left\n")
    write_drive(tmp_path / "no-gps.json", gps=False)
    recordings, skipped = RealRecordings(evaluation_folder=tmp_path, shipped=False).evaluation_windows()
    assert not skipped
    sources = {windows.key: windows.label_source for windows in recordings}
    assert sources == {
        "labelled/gps": LABELS_FROM_FILE,
        "labelled/no-gps": LABELS_FROM_FILE,
        "labelled/no-gps+manoeuvres": LABELS_FROM_ADDED_MANOEUVRES,
        "no-gps/no-gps": NO_LABELS,
    }
    windows = only(recordings, "gps")
    assert windows.labels == (LabelledEvent(100.0, 100.0, "turn_left"),)
    # The GPS's harsh brake at 165 s is no label here: the person's labels say ordinary driving.
    figures = recording_figures(deciding(windows, [(165.31, 168.31, BRAKING)]), windows)
    assert (figures.false_alerts, figures.aggressive_labels) == (1, 0)
    assert figures.normal_hours * 3600.0 == pytest.approx(windows.duration_s)
    unlabelled = next(windows for windows in recordings if windows.recording == "no-gps")
    assert unlabelled.labels == ()
