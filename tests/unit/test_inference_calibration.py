"""Mount calibration recovers known rotations from synthetic drives, and notices a moved mount."""

from __future__ import annotations

import math

import numpy as np
import pytest

from michi.windows.calibration import IN_QUESTION_METHOD, CalibrationSums, update_calibration
from michi.windows.signals import angle_between_deg
from michi.windows.upload import upload_from_proto

from ..scripted_drive import ScriptedDrive, ScriptedEvent, mount_matrix


def rotation_error_deg(estimated: np.ndarray, mount: np.ndarray) -> float:
    """Angle of the rotation left over after undoing the mount with the estimate."""
    residual = estimated @ mount
    return math.degrees(math.acos(float(np.clip((np.trace(residual) - 1.0) / 2.0, -1.0, 1.0))))


def calibrate(drive: ScriptedDrive) -> list:
    sums = CalibrationSums()
    results = []
    for received in drive.uploads():
        sums, calibration = update_calibration(sums, upload_from_proto(received))
        results.append(calibration)
    return results


@pytest.mark.parametrize("seed", range(6))
def test_random_mount_recovered_within_five_degrees(seed: int) -> None:
    random = np.random.default_rng(seed)
    tilt, direction = random.uniform(3.0, 20.0), random.uniform(0.0, 2 * math.pi)
    mount = (float(random.uniform(0.0, 360.0)), float(tilt * math.cos(direction)), float(tilt * math.sin(direction)))
    drive = ScriptedDrive(duration_s=120.0, mount=mount, seed=seed)
    final = calibrate(drive)[-1]
    assert rotation_error_deg(final.rotation, mount_matrix(*mount)) < 5.0
    # Gentle driving (≤ 0.3 m/s²) is thin forward evidence: some, not full, confidence.
    assert final.confidence > 0.3
    # Right-handed (forward, left, up): left = up x forward.
    np.testing.assert_allclose(np.cross(final.rotation[2], final.rotation[0]), final.rotation[1], atol=1e-9)
    assert np.linalg.det(final.rotation) == pytest.approx(1.0, abs=1e-9)


def test_confidence_grows_with_data() -> None:
    results = calibrate(ScriptedDrive(duration_s=90.0, seed=3))
    assert results[0].confidence < results[-1].confidence


def test_moved_mount_is_detected_and_re_estimated() -> None:
    drive = ScriptedDrive(
        duration_s=200.0,
        mount=(20.0, 8.0, -3.0),
        moved_mount=(55.0, 2.0, 3.0),
        events=[ScriptedEvent("mount_moved", 95.0)],
        seed=4,
    )
    results = calibrate(drive)
    changed = [index for index, calibration in enumerate(results) if calibration.orientation_changed]
    assert changed and 9 <= changed[0] <= 10
    assert rotation_error_deg(results[8].rotation, mount_matrix(*drive.mount)) < 5.0
    assert rotation_error_deg(results[-1].rotation, mount_matrix(*drive.moved_mount)) < 5.0


def test_no_mount_change_on_a_steady_device() -> None:
    drive = ScriptedDrive(
        duration_s=150.0,
        seed=5,
        events=[
            ScriptedEvent("turn", 40.0, 6.0, 1.6),
            ScriptedEvent("stop", 80.0, 4.0, 2.0),
            ScriptedEvent("pothole", 110.0, 0.6, 9.0),
        ],
    )
    assert not any(calibration.orientation_changed for calibration in calibrate(drive))


def test_the_first_upload_of_a_remounted_phone_is_read_with_its_own_gravity_and_no_forward_axis() -> None:
    """Between trips the phone went back into its holder at another tilt (18° away), no hand seen in the data.
    Its first upload is in question: not read with the old mount's forward axis (which would turn 3 m/s² of
    gravity into braking), but with its own gravity; the second confirms the move."""
    gravity = np.array([0.0, 0.0, 9.81])
    first_trip = ScriptedDrive(trip_id="trip-1", duration_s=90.0, mount=(20.0, 8.0, -3.0), seed=3)
    second_trip = ScriptedDrive(
        trip_id="trip-2", duration_s=30.0, mount=(200.0, 26.0, -3.0), start_time_s=first_trip.start_time_s + 1200.0
    )
    sums, results = CalibrationSums(), []
    for received in first_trip.uploads() + second_trip.uploads():
        sums, calibration = update_calibration(sums, upload_from_proto(received))
        results.append(calibration)
    settled, in_question, confirmed = results[8], results[9], results[10]
    assert settled.state == "calibrated" and not settled.mount_in_question
    assert in_question.mount_in_question and not in_question.orientation_changed
    assert in_question.state == "gravity-only" and in_question.forward_method == IN_QUESTION_METHOD
    assert in_question.confidence == 0.0 == in_question.forward_confidence
    new_up = mount_matrix(*second_trip.mount) @ gravity
    assert angle_between_deg(in_question.rotation[2], new_up) < 3.0
    assert confirmed.orientation_changed and not confirmed.mount_in_question
    assert angle_between_deg(confirmed.rotation[2], new_up) < 3.0
    np.testing.assert_allclose(np.cross(in_question.rotation[2], in_question.rotation[0]), in_question.rotation[1])


def test_gravity_away_for_one_upload_only_leaves_the_mount_as_it_was() -> None:
    """One upload's gravity 18° away (a steep ramp), then back: that upload is in question, the mount never
    moved, and the next upload is read with the calibration from before."""
    steady = ScriptedDrive(duration_s=150.0, mount=(20.0, 8.0, -3.0), seed=3)
    tilted = ScriptedDrive(duration_s=150.0, mount=(20.0, 26.0, -3.0), seed=3)
    uploads = steady.uploads()
    uploads[10] = tilted.uploads()[10]
    sums, results = CalibrationSums(), []
    for received in uploads:
        sums, calibration = update_calibration(sums, upload_from_proto(received))
        results.append(calibration)
    assert [index for index, calibration in enumerate(results) if calibration.mount_in_question] == [10]
    assert not any(calibration.orientation_changed for calibration in results)
    assert results[11].state == "calibrated"
    assert rotation_error_deg(results[11].rotation, mount_matrix(*steady.mount)) < 5.0


@pytest.mark.parametrize("gps", [True, False])
def test_a_mount_turned_round_without_its_gravity_moving_is_noticed_within_a_minute(gps: bool) -> None:
    """A phone lying flat, or put back in its holder facing the other way: gravity where it was, forward reversed.
    The old trip's evidence (ten minutes of it) said forward at full confidence for minutes; now the new trip's
    own evidence pointing backward for two uploads in a row restarts the calibration, which finds the new axis."""
    turns = [ScriptedEvent("turn", 32.0 + 20.0 * index, 5.0, 2.2 if index % 2 else -2.2) for index in range(28)]
    first_trip = ScriptedDrive(trip_id="trip-1", duration_s=600.0, mount=(20.0, 8.0, -3.0), events=turns, seed=3)
    second_trip = ScriptedDrive(
        trip_id="trip-2",
        duration_s=300.0,
        mount=(200.0, 8.0, -3.0),
        start_time_s=first_trip.start_time_s + 1200.0,
        events=[ScriptedEvent("turn", 12.0 + 20.0 * index, 5.0, 2.2 if index % 2 else -2.2) for index in range(14)],
        seed=5,
    )
    gravity = np.array([0.0, 0.0, 9.81])
    assert angle_between_deg(
        mount_matrix(*first_trip.mount) @ gravity, mount_matrix(*second_trip.mount) @ gravity
    ) == pytest.approx(0.0, abs=1e-6)
    sums, results = CalibrationSums(), []
    for received in first_trip.uploads() + second_trip.uploads():
        sums, calibration = update_calibration(sums, upload_from_proto(received if gps else _no_gps(received)))
        results.append(calibration)
    first, second = results[:60], results[60:]
    assert first[-1].state == "calibrated" and not any(calibration.orientation_changed for calibration in first)
    moved = [index for index, calibration in enumerate(second) if calibration.orientation_changed]
    assert len(moved) == 1 and moved[0] <= 6
    assert rotation_error_deg(second[-1].rotation, mount_matrix(*second_trip.mount)) < 10.0
    assert second[-1].forward_confidence > 0.3


def _no_gps(received):  # type: ignore[no-untyped-def]
    stripped = type(received)()
    stripped.CopyFrom(received)
    del stripped.upload.gps[:]
    return stripped


@pytest.mark.parametrize("mount", [(35.0, 6.0, -4.0), (-140.0, 12.0, 5.0), (90.0, -8.0, 20.0)])
def test_turns_alone_find_the_forward_axis_without_gps(mount: tuple[float, float, float]) -> None:
    turns = [ScriptedEvent("turn", 3.0 + 9.0 * index, 6.0, 3.0 if index % 2 else -3.0) for index in range(9)]
    drive = ScriptedDrive(duration_s=90.0, mount=mount, events=turns, seed=9)
    sums, results = CalibrationSums(), []
    for received in drive.uploads():
        sums, calibration = update_calibration(sums, upload_from_proto(_no_gps(received)))
        results.append(calibration)
    final = results[-1]
    assert final.state == "calibrated" and "yaw" in final.forward_method
    assert rotation_error_deg(final.rotation, mount_matrix(*mount)) < 5.0
    assert not any(result.orientation_changed for result in results)
