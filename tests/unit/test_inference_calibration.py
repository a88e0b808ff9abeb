"""Mount calibration recovers known rotations from synthetic drives, and notices a moved mount."""

from __future__ import annotations

import math

import numpy as np
import pytest

from michi.windows.calibration import CalibrationSums, update_calibration
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
