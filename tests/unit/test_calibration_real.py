"""Mount calibration on the real recordings shipped in datasets/real-driving, GPS removed.

Truth per recording (`gps_truth`, shared with the trainer's real-data evaluation in
`services/trainer/domain/real_data.py`): over the whole recording, the 1 s means of the device's
horizontal acceleration are regressed on the GPS speed derivative (longitudinal) and on speed x
GPS heading rate (lateral, left positive), with the GPS delay (0-2 s) that fits best; the
longitudinal coefficient's horizontal direction is the true forward axis in device axes. It agrees
with what the dataset's README states: auckland-forward has device x ≈ forward (≈3-5° off),
auckland-backwards x ≈ backward, comma2k19 acc_fwd ≈ forward.

Rules checked (issue: real-world detection): whenever calibration reports high confidence without
GPS, the forward axis is within 10° of the truth in the horizontal plane (so also of the right
sign); a recording holding stops and starts reaches high confidence without GPS — the phone turned
backwards too, whose only clean stop is its last (its speed dips confirm it); a mount that never
moved is never reported as moved, with or without GPS; an arbitrary mount rotation changes nothing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from michi.recordings import Recording, received, recording_uploads, shared_recording
from michi.windows.calibration import (
    DIP_MAX_CONFIDENCE,
    RELIABLE_CONFIDENCE,
    Calibration,
    CalibrationSums,
    update_calibration,
)
from michi.windows.upload import upload_from_proto
from services.trainer.domain.real_data import gps_truth, yaw_error_deg

from ..scripted_drive import mount_matrix

START = 1_767_225_600.0


def calibrate(recording: Recording) -> list[Calibration]:
    sums, results = CalibrationSums(), []
    for upload in recording_uploads(recording, device_id="real-1", trip_id="trip-1", started_at_s=START):
        data = upload_from_proto(received(upload))
        if data.degenerate_reason() is None:  # as serving does
            sums, calibration = update_calibration(sums, data)
            results.append(calibration)
    return results


def rotated(recording: Recording, rotation: np.ndarray) -> Recording:
    """The same drive seen by a device mounted with `rotation` applied (device' = rotation @ device)."""
    return Recording(
        name=f"{recording.name} rotated",
        times_s=recording.times_s,
        accel=recording.accel @ rotation.T,
        gyro=None if recording.gyro is None else recording.gyro @ rotation.T,
        gps_times_s=recording.gps_times_s,
        latitude=recording.latitude,
        longitude=recording.longitude,
        speed_mps=recording.speed_mps,
        heading_deg=recording.heading_deg,
    )


@pytest.mark.parametrize(
    ("name", "device_forward"),
    [("auckland-forward", (1, 0, 0)), ("auckland-backwards", (-1, 0, 0)), ("comma2k19", (1, 0, 0))],
)
def test_the_gps_truth_agrees_with_the_dataset_notes(name: str, device_forward: tuple[int, int, int]) -> None:
    forward, _ = gps_truth(shared_recording(name))
    assert math.degrees(math.acos(float(np.dot(forward, device_forward)))) < 10.0


@pytest.mark.parametrize("name", ["auckland-forward", "auckland-backwards", "comma2k19"])
def test_confident_calibration_without_gps_is_within_ten_degrees(name: str) -> None:
    recording = shared_recording(name)
    forward, up = gps_truth(recording)
    results = calibrate(recording.without_gps())
    confident = [result for result in results if result.forward_confidence >= RELIABLE_CONFIDENCE]
    for result in confident:
        assert yaw_error_deg(result, forward, up) <= 10.0, result
    assert not any(result.orientation_changed for result in results)


@pytest.mark.parametrize(
    ("name", "within_s"),
    [
        # The car leaves its first stop after 11 s and stops again at 36 s: calibrated within a minute.
        ("auckland-forward", 60),
        # A parking-lot departure (no clean stop), a stop at 309-313 s that rocks, then the trip's end
        # at 342 s: one clean braking into a stop, which the speed dips of 5 minutes confirm.
        ("auckland-backwards", 350),
    ],
)
def test_stops_and_starts_give_high_confidence_without_gps_or_gyroscope(name: str, within_s: int) -> None:
    recording = shared_recording(name)
    forward, up = gps_truth(recording)
    results = calibrate(recording.without_gps())
    first = next(index for index, result in enumerate(results) if result.state == "calibrated")
    assert first * 10 <= within_s
    assert results[-1].state == "calibrated"
    assert "stops" in results[-1].forward_method
    assert yaw_error_deg(results[-1], forward, up) <= 10.0


def test_speed_dips_alone_never_make_the_mount_reliable() -> None:
    # Before its last stop the backwards trip has only its dips: they point forward but stay below reliable.
    recording = shared_recording("auckland-backwards")
    forward, up = gps_truth(recording)
    results = calibrate(recording.without_gps())[:33]
    assert DIP_MAX_CONFIDENCE < RELIABLE_CONFIDENCE
    assert all(result.state != "calibrated" for result in results)
    assert "dips" in results[-1].forward_method
    assert yaw_error_deg(results[-1], forward, up) <= 10.0


@pytest.mark.parametrize("name", ["auckland-forward", "auckland-backwards", "comma2k19"])
def test_gps_confirms_and_no_mount_is_reported_moved(name: str) -> None:
    recording = shared_recording(name)
    forward, up = gps_truth(recording)
    results = calibrate(recording)
    assert not any(result.orientation_changed for result in results)
    assert results[-1].state == "calibrated"
    assert yaw_error_deg(results[-1], forward, up) <= 10.0


@pytest.mark.parametrize("name", ["auckland-forward", "auckland-backwards"])
@pytest.mark.parametrize("mount", [(120.0, 10.0, -5.0), (-75.0, -20.0, 15.0), (180.0, 0.0, 90.0)])
def test_an_arbitrary_mount_rotation_changes_nothing(name: str, mount: tuple[float, float, float]) -> None:
    rotation = mount_matrix(*mount)
    recording = rotated(shared_recording(name), rotation)
    forward, up = gps_truth(recording)
    results = calibrate(recording.without_gps())
    assert results[-1].state == "calibrated"
    for result in results:
        if result.forward_confidence >= RELIABLE_CONFIDENCE:
            assert yaw_error_deg(result, forward, up) <= 10.0
    assert not any(result.orientation_changed for result in results)
