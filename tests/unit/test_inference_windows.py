"""Windowing offsets and ids, and features on synthetic braking, pothole and mount signals."""

from __future__ import annotations

import numpy as np
import pytest

from michi.contracts import stable_event_id, timestamp_to_seconds
from michi.windows.calibration import CalibrationSums, update_calibration
from michi.windows.features import FEATURE_INDEX, extract_windows, window_offsets
from michi.windows.upload import upload_from_proto

from ..scripted_drive import ScriptedDrive, ScriptedEvent


def test_ten_second_upload_has_nine_two_second_windows_hopping_one_second() -> None:
    starts, ends = window_offsets(10.0)
    np.testing.assert_allclose(starts, np.arange(9.0))
    np.testing.assert_allclose(ends - starts, 2.0)
    assert window_offsets(1.5)[0].size == 0
    assert window_offsets(9.98 + 0.02)[0].size == 9


# Two ordinary stops early on: speed changes the calibration learns the forward axis from.
WARM_UP = [ScriptedEvent("stop", 8.0, 3.0, 2.0), ScriptedEvent("stop", 24.0, 3.0, 2.0)]


def features_around(drive: ScriptedDrive, time_s: float, strongest: str) -> dict[str, float]:
    """Features of the window holding `time_s` (drive seconds) where `strongest` is largest."""
    sums = CalibrationSums()
    best: dict[str, float] = {}
    for received in drive.uploads():
        data = upload_from_proto(received)
        sums, calibration = update_calibration(sums, data)
        windows = extract_windows(data, calibration)
        origin = timestamp_to_seconds(received.upload.started_at) - drive.start_time_s
        for position in range(windows.count):
            start = origin + windows.starts_s[position]
            if start <= time_s < start + 2.0:
                row = {name: float(windows.features[position, index]) for name, index in FEATURE_INDEX.items()}
                if not best or row[strongest] > best[strongest]:
                    best = row
    return best


def test_harsh_brake_features_agree_between_imu_and_gps() -> None:
    drive = ScriptedDrive(duration_s=60.0, events=[*WARM_UP, ScriptedEvent("harsh_braking", 42.3, 1.5, 5.5)])
    features = features_around(drive, 42.8, "braking_evidence")
    assert features["longitudinal_min_mps2"] < -4.5
    assert features["gps_dvdt_mps2"] < -1.0  # the window of the IMU peak sees the start of the GPS drop
    assert features["braking_evidence"] > 1.2
    assert features["braking_seconds"] > 0.3
    assert features["confounder_evidence"] < 1.0


def test_pothole_is_vertical_without_gps_speed_change() -> None:
    drive = ScriptedDrive(duration_s=60.0, events=[*WARM_UP, ScriptedEvent("pothole", 42.3, 0.6, 10.0)])
    features = features_around(drive, 42.4, "vertical_peak_to_peak_mps2")
    assert features["vertical_peak_to_peak_mps2"] > 10.0
    assert features["vertical_jerk_max_mps3"] > 100.0
    assert abs(features["gps_dvdt_mps2"]) < 0.6
    assert features["braking_evidence"] < 0.6
    assert features["confounder_evidence"] > 1.0


def test_cornering_uses_gps_heading() -> None:
    drive = ScriptedDrive(duration_s=60.0, events=[*WARM_UP, ScriptedEvent("harsh_cornering", 42.0, 3.0, 5.5)])
    features = features_around(drive, 43.0, "cornering_evidence")
    assert features["lateral_abs_max_mps2"] > 4.5
    assert features["gps_lateral_mps2"] > 3.0  # a left turn is positive (ISO 8855)
    assert features["cornering_evidence"] > 1.2


def test_window_ids_are_stable_uuid5_of_upload_and_index() -> None:
    assert stable_event_id("upload-1", 3) == stable_event_id("upload-1", 3)
    assert stable_event_id("upload-1", 3) != stable_event_id("upload-1", 4)


@pytest.mark.parametrize("rate", [25, 50, 100])
def test_features_do_not_depend_much_on_sample_rate(rate: int) -> None:
    drive = ScriptedDrive(
        duration_s=60.0, sample_rate_hz=rate, events=[*WARM_UP, ScriptedEvent("harsh_braking", 42.3, 1.5, 5.5)]
    )
    features = features_around(drive, 42.8, "braking_evidence")
    assert features["sample_rate_hz"] == pytest.approx(rate, rel=0.01)
    assert features["braking_evidence"] > 1.2
