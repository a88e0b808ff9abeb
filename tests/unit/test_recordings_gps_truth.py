"""Judging detections by a drive's own GPS (`michi.recordings.gps_truth`, `michi evaluate --gps-truth`) and the
firm labels of the matching rule (`UNCERTAIN_LABELS`): synthetic 1 Hz GPS traces of known manoeuvres."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from michi.cli import app
from michi.recordings import Recording
from michi.recordings.evaluation import DetectedEvent, LabelledEvent, evaluate_detections, read_labels
from michi.recordings.gps_truth import THRESHOLDS, gps_manoeuvres, gps_motion

ANNOTATIONS = Path(__file__).resolve().parents[2] / "datasets/real-driving/quat-orient-auckland/annotations.csv"
CRUISE_MPS = 15.0


def drive(times: np.ndarray, speed: np.ndarray, heading: np.ndarray) -> Recording:
    """A recording whose IMU is a still phone: only its GPS fixes matter here."""
    imu_times = np.arange(0.0, float(times[-1]) + 1.0, 0.1)
    accel = np.tile([0.0, 0.0, 9.81], (imu_times.size, 1))
    zeros = np.zeros(times.size)
    return Recording("synthetic", imu_times, accel, None, times, zeros, zeros, speed, heading % 360.0)


def braking_speed(times: np.ndarray, start_s: float, deceleration_mps2: float, hold_s: float) -> np.ndarray:
    """Cruising, then braking at a constant rate for `hold_s`, then cruising slower."""
    braked = np.clip(times - start_s, 0.0, hold_s) * deceleration_mps2
    return CRUISE_MPS - braked


def test_a_brake_of_known_strength_becomes_harsh_braking_at_its_time() -> None:
    times = np.arange(0.0, 60.0, 1.0)
    # 3 m/s² held 3 s from 30 s: the 2 s fit reads it fully in the middle of the brake.
    recording = drive(times, braking_speed(times, 30.0, 3.0, 3.0), np.full(times.size, 90.0))
    truth = gps_manoeuvres(recording)
    assert [event.label for event in truth.events] == ["harsh_braking"]
    event = truth.events[0]
    assert event.strength_mps2 == pytest.approx(3.0, abs=0.01)
    assert 29.0 <= event.start_s <= 30.5 and 32.5 <= event.end_s <= 34.0
    assert truth.covered == [(0.0, 59.0)] and truth.covered_s == pytest.approx(59.0)


def test_a_firm_brake_is_grey_and_a_gentle_drive_gives_nothing() -> None:
    times = np.arange(0.0, 60.0, 1.0)
    bars = THRESHOLDS["braking"]
    firm = (bars.firm_mps2 + bars.harsh_mps2) / 2
    recording = drive(times, braking_speed(times, 30.0, firm, 3.0), np.full(times.size, 90.0))
    assert [event.label for event in gps_manoeuvres(recording).events] == ["firm_braking"]
    # Gentle driving: speed waving by 2 m/s over 20 s, a slow 90° bend at 15 m/s (0.4 m/s² lateral).
    gentle_speed = CRUISE_MPS + 2.0 * np.sin(2 * math.pi * times / 20.0)
    bend = np.clip(times - 20.0, 0.0, 60.0) * 1.5
    assert gps_manoeuvres(drive(times, gentle_speed, 90.0 + bend)).events == []


def test_a_quick_turn_is_harsh_cornering_and_the_course_is_unwrapped() -> None:
    times = np.arange(0.0, 40.0, 1.0)
    # 15 m/s turning at 0.3 rad/s (4.5 m/s² lateral) for 4 s, across north (350° to 59°).
    rate_deg = math.degrees(0.3)
    heading = 350.0 + np.clip(times - 20.0, 0.0, 4.0) * rate_deg
    truth = gps_manoeuvres(drive(times, np.full(times.size, CRUISE_MPS), heading))
    assert [event.label for event in truth.events] == ["harsh_cornering"]
    assert truth.events[0].strength_mps2 == pytest.approx(4.5, abs=0.05)
    motion = gps_motion(times, np.full(times.size, CRUISE_MPS), heading % 360.0)
    assert np.nanmax(motion.lateral_mps2) == pytest.approx(4.5, abs=0.05)  # right turn, right positive


def test_a_gap_in_the_fixes_yields_no_labels_across_it() -> None:
    # A hard stop hidden in a 10 s gap: the fixes either side differ by 15 m/s, but nothing is derived across it.
    before = np.arange(0.0, 20.0, 1.0)
    after = np.arange(30.0, 50.0, 1.0)
    times = np.concatenate([before, after])
    speed = np.concatenate([np.full(before.size, CRUISE_MPS), np.zeros(after.size)])
    truth = gps_manoeuvres(drive(times, speed, np.full(times.size, 90.0)))
    assert truth.events == []
    assert truth.covered == [(0.0, 19.0), (30.0, 49.0)]


def test_heading_noise_at_low_speed_gives_no_cornering() -> None:
    times = np.arange(0.0, 60.0, 1.0)
    # Creeping at 2 m/s in a queue: the course jumps 60-120° between fixes, as GPS courses do when slow.
    heading = np.random.default_rng(7).uniform(0.0, 360.0, times.size)
    truth = gps_manoeuvres(drive(times, np.full(times.size, 2.0), heading))
    assert truth.events == []
    # The same course at cruising speed would be a turn every second: the bar is the speed, not luck.
    assert gps_manoeuvres(drive(times, np.full(times.size, CRUISE_MPS), heading)).events


def test_a_recording_without_gps_cannot_be_judged_by_it() -> None:
    times = np.arange(0.0, 10.0, 1.0)
    recording = drive(times, np.full(times.size, CRUISE_MPS), np.zeros(times.size)).without_gps()
    with pytest.raises(ValueError, match="needs the recording's GPS fixes"):
        gps_manoeuvres(recording)


# --- the matching rule's firm labels and covered time


def test_a_firm_label_absorbs_a_detection_and_is_no_miss() -> None:
    detections = [
        DetectedEvent(10.0, 12.0, "harsh_braking"),  # on a harsh label: a hit
        DetectedEvent(30.0, 32.0, "harsh_braking"),  # on a firm label only: absorbed
        DetectedEvent(50.0, 52.0, "harsh_cornering"),  # on nothing: another detection
    ]
    labels = [
        LabelledEvent(11.0, 11.0, "harsh_braking"),
        LabelledEvent(31.0, 31.0, "firm_braking"),
        LabelledEvent(70.0, 71.0, "firm_cornering"),  # undetected: no miss
        LabelledEvent(90.0, 90.0, "turn_left", "lateral"),
    ]
    figures = evaluate_detections(detections, labels, duration_s=120.0)
    assert (figures.aggressive_labels, figures.uncertain_labels, figures.normal_labels) == (1, 2, 1)
    assert (figures.matched_aggressive, figures.matched_uncertain, figures.matched_normal) == (1, 1, 0)
    assert figures.recall == 1.0
    assert figures.judged_detections == 2 and figures.precision == 0.5
    assert figures.other_detections == 1 and figures.normal_overlapped == 0
    assert (figures.axis_agreeing, figures.axis_pairs) == (2, 2)


def test_aggressive_labels_are_matched_before_firm_ones_and_firm_before_normal() -> None:
    # One detection on a harsh brake, a firm brake and a roundabout at once: the harsh label takes it.
    detection = DetectedEvent(20.0, 24.0, "harsh_braking")
    harsh, firm = LabelledEvent(23.0, 23.0, "harsh_braking"), LabelledEvent(21.0, 22.0, "firm_braking")
    roundabout = LabelledEvent(22.0, 22.0, "roundabout", "lateral")
    figures = evaluate_detections([detection], [roundabout, firm, harsh], duration_s=60.0)
    assert [pair.label for pair in figures.pairs] == [harsh]
    # Without the harsh label the firm one takes it before the roundabout, which is then no false alarm pair.
    figures = evaluate_detections([detection], [roundabout, firm], duration_s=60.0)
    assert [pair.label for pair in figures.pairs] == [firm]
    assert (figures.matched_uncertain, figures.matched_normal, figures.other_detections) == (1, 0, 0)
    assert figures.precision is None  # nothing left to judge


def test_firm_labels_and_their_axis_come_from_a_hand_labels_file(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("t_start_s,t_end_s,label\n10,12,firm_cornering\n20,21,Firm_Braking\n30,30,harsh_braking\n")
    labels = read_labels(path)
    assert [(label.uncertain, label.aggressive, label.axis) for label in labels] == [
        (True, False, "lateral"),
        (True, False, "longitudinal"),
        (False, True, "longitudinal"),
    ]


def test_a_detection_outside_the_covered_time_is_not_judged() -> None:
    covered = [(0.0, 100.0), (130.0, 190.0)]
    detections = [
        DetectedEvent(50.0, 52.0, "harsh_braking"),  # covered, matching nothing: another detection
        DetectedEvent(110.0, 112.0, "harsh_braking"),  # in the gap: not judged
        DetectedEvent(98.0, 103.0, "harsh_braking"),  # straddling the gap's edge: not judged
        DetectedEvent(185.0, 195.0, "harsh_cornering"),  # reaching past the end, but matching a label
    ]
    labels = [LabelledEvent(188.0, 189.0, "harsh_cornering")]
    figures = evaluate_detections(detections, labels, duration_s=200.0, covered=covered)
    assert (figures.matched_aggressive, figures.other_detections, figures.not_judged) == (1, 1, 2)
    assert figures.covered_s == pytest.approx(160.0) and figures.duration_s == pytest.approx(160.0)
    assert figures.other_per_minute == pytest.approx(1 / (160.0 / 60.0))
    assert figures.precision == 0.5
    # Without `covered` every detection is judged, over the whole recording.
    plain = evaluate_detections(detections, labels, duration_s=200.0)
    assert (plain.other_detections, plain.not_judged, plain.covered_s) == (3, 0, None)


# --- michi evaluate --gps-truth


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    return {"MICHI_HOME": str(tmp_path / ".michi"), "MICHI_DATABASE_URL": f"sqlite:///{tmp_path / 'michi.db'}"}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["auckland-forward", "--gps-truth", "--labels", str(ANNOTATIONS)],
            "--gps-truth judges the drive by its own GPS instead of a labels file",
        ),
        (["{recording}", "--gps-truth"], "--gps-truth needs GPS fixes and the recording has none"),
        (["{recording}", "--gps-truth", "--no-gps"], "--gps-truth needs GPS fixes and the recording has none"),
    ],
)
def test_evaluate_refuses_gps_truth_it_cannot_give(
    environment: dict[str, str], tmp_path: Path, arguments: list[str], message: str
) -> None:
    imu_only = tmp_path / "drive.csv"
    imu_only.write_text("t_s,acc_x,acc_y,acc_z\n" + "".join(f"{index / 10},0,0,9.81\n" for index in range(50)))
    arguments = [argument.replace("{recording}", str(imu_only)) for argument in arguments]
    result = CliRunner().invoke(app, ["evaluate", *arguments, "--model", "physics"], env=environment)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_evaluate_judges_an_imu_only_run_by_the_drive_s_gps(environment: dict[str, str]) -> None:
    result = CliRunner().invoke(
        app, ["evaluate", "auckland-backwards", "--no-gps", "--gps-truth", "--model", "physics"], env=environment
    )
    assert result.exit_code == 0, result.output
    assert "GPS          no" in result.output  # the model was given none
    assert "GPS truth    " in result.output and "harsh_braking" in result.output
    assert "matches harsh_braking at 165" in result.output  # the 3 m/s² brake at 166 s
    assert "  not judged " in result.output and "  on firm manoeuvres " in result.output
    result = CliRunner().invoke(
        app,
        ["evaluate", "auckland-backwards", "--no-gps", "--gps-truth", "--model", "physics", "--json", "--reference"],
        env=environment,
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["labels"] is None and document["recording"]["gps"] is False
    truth = document["gps_truth"]
    assert truth["aggressive_labels"] == sum(event["label"].startswith("harsh_") for event in truth["events"]) > 0
    assert truth["uncertain_labels"] == sum(event["label"].startswith("firm_") for event in truth["events"])
    assert truth["covered_s"] < document["recording"]["duration_s"]
    detections = document["detections"]["count"]
    judged = truth["matched_aggressive"] + truth["matched_uncertain"] + truth["matched_normal"]
    assert judged + truth["other_detections"] + truth["not_judged_detections"] == detections
    assert document["reference"]["labels"] is None and document["reference"]["gps_truth"]["detections"] > 0
