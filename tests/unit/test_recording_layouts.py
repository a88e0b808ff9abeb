"""The layouts of common sensor-logger apps read as recordings: Android per-sensor files in nanoseconds
(Sensor Logger), phyphox exports, iOS SensorLog in g, time units inferred from the sample rate, a
gyroscope in its own file on `michi evaluate` and `michi replay`, and a logger's whole export (a folder
or a .zip) with its files found by name.

    .venv/bin/python -m pytest tests/unit/test_recording_layouts.py
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from michi.cli import app
from michi.cli.recordings import load_recording
from michi.infra.processes import free_port
from michi.recordings import (
    STANDARD_GRAVITY,
    Recording,
    RecordingError,
    _time_seconds,
    normalised_column_name,
    read_recording,
    recording_uploads,
    time_unit_in_name,
)

EPOCH_NS = 1_700_000_000_000_000_000  # Sensor Logger's "time": nanoseconds since 1970


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    path.write_text(",".join(header) + "\n" + "".join(",".join(str(value) for value in row) + "\n" for row in rows))
    return path


def gyroscope_at(time_s: float) -> tuple[float, float, float]:
    """A rotation linear in time: interpolation onto other sample times is then exact."""
    return 0.01 * time_s, -0.02 * time_s, 0.1


def sensor_logger_accelerometer(
    path: Path, *, seconds: float = 20.0, rate_hz: float = 200.0, gravity: bool = True
) -> Path:
    """Sensor Logger's TotalAcceleration.csv (gravity: True) or Accelerometer.csv: time in ns, z, y, x."""
    rows = []
    for index in range(round(seconds * rate_hz)):
        time_s = index / rate_hz
        x = 0.5 * math.sin(time_s)
        rows.append((EPOCH_NS + round(time_s * 1e9), f"{time_s:.6f}", STANDARD_GRAVITY if gravity else 0.05, 0.2, x))
    return write_csv(path, ("time", "seconds_elapsed", "z", "y", "x"), rows)


def sensor_logger_gyroscope(path: Path, *, start_s: float, end_s: float, rate_hz: float = 100.0) -> Path:
    rows = []
    time_s = start_s
    while time_s <= end_s + 1e-9:
        x, y, z = gyroscope_at(time_s)
        rows.append((EPOCH_NS + round(time_s * 1e9), f"{time_s:.6f}", z, y, x))
        time_s += 1.0 / rate_hz
    return write_csv(path, ("time", "seconds_elapsed", "z", "y", "x"), rows)


def sensor_logger_location(path: Path, *, seconds: int = 20, start_ns: int = EPOCH_NS) -> Path:
    header = ["time", "seconds_elapsed", "bearingAccuracy", "speedAccuracy", "horizontalAccuracy", "speed"]
    header += ["bearing", "altitude", "longitude", "latitude"]
    rows = [
        (start_ns + second * 1_000_000_000, second, 5, 0.5, 4, 10.0 + second, 90, 30, 13.4 + second * 1e-4, 52.5)
        for second in range(seconds)
    ]
    return write_csv(path, header, rows)


# --- time units


@pytest.mark.parametrize(
    ("name", "unit"),
    [
        ("Time (s)", "s"),
        ("seconds_elapsed", "s"),
        ("accelerometerTimestamp_sinceReboot(s)", "s"),
        ("timestamp (ns)", "ns"),
        ("t_ns", "ns"),
        ("uptimeNanos", "ns"),
        ("time_us", "us"),
        ("t_ms", "ms"),
        ("t_boot_s", "s"),
        ("time", None),
        ("timestamp", None),
    ],
)
def test_the_time_unit_a_name_states(name: str, unit: str | None) -> None:
    assert time_unit_in_name(name) == unit


@pytest.mark.parametrize(("unit", "scale"), [("s", 1.0), ("ms", 1e3), ("us", 1e6), ("ns", 1e9)])
def test_a_time_unit_not_stated_is_inferred_from_the_sample_rate(unit: str, scale: float) -> None:
    for rate_hz in (10.0, 100.0, 400.0):
        seconds = np.arange(200) / rate_hz
        raw = 1_000.0 + seconds * scale
        np.testing.assert_allclose(_time_seconds("time", raw, None) - 1_000.0 / scale, seconds, atol=1e-9)


def test_a_time_unit_that_fits_no_sample_rate_is_refused_with_the_column_and_its_step() -> None:
    steps = (
        np.arange(100, dtype=np.float64) * 0.3
    )  # 3.3 Hz in seconds, 3333 Hz in milliseconds: neither is an IMU's rate
    with pytest.raises(RecordingError, match=r"time column 'timestamp' states no unit and its median step 0\.3 fits"):
        _time_seconds("timestamp", steps, None)
    with pytest.raises(RecordingError, match="no increasing samples"):
        _time_seconds("time", np.zeros(5), None)
    # A unit given or stated is taken as it is, whatever the rate.
    np.testing.assert_allclose(_time_seconds("timestamp", steps, "s"), steps)
    np.testing.assert_allclose(_time_seconds("Time (ms)", steps, None), steps / 1000)


def test_a_refused_unit_names_the_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "drive.csv", ("time", "x", "y", "z"), [(index * 0.3, 0, 0, 9.8) for index in range(50)])
    with pytest.raises(RecordingError, match=r"drive\.csv: time column 'time' states no unit"):
        read_recording(path)
    assert read_recording(path, columns={"time_unit": "s"}).sample_rate_hz == pytest.approx(1 / 0.3)


def test_headers_are_matched_without_their_units() -> None:
    assert normalised_column_name("Linear Acceleration x (m/s^2)") == "linear_acceleration_x"
    assert normalised_column_name("gyroRotationX(rad/s)") == "gyrorotationx"
    assert normalised_column_name("locationCourse(°)") == "locationcourse"


# --- Android per-sensor files (Sensor Logger)


def test_android_per_sensor_files_in_nanoseconds(tmp_path: Path) -> None:
    accelerometer = sensor_logger_accelerometer(tmp_path / "TotalAcceleration.csv")
    gyroscope = sensor_logger_gyroscope(tmp_path / "Gyroscope.csv", start_s=0.0, end_s=20.0, rate_hz=100.0)
    location = sensor_logger_location(tmp_path / "Location.csv")
    recording = read_recording(accelerometer, gyro=gyroscope, gps=location)
    assert recording.times_s[0] == 0.0 and recording.times_s.size == 4000
    assert recording.sample_rate_hz == pytest.approx(200.0, rel=1e-3)
    assert recording.linear_acceleration is False
    np.testing.assert_allclose(recording.accel[:, 2], STANDARD_GRAVITY)
    np.testing.assert_allclose(recording.accel[:, 0], 0.5 * np.sin(recording.times_s), atol=1e-5)
    assert recording.gyro is not None
    expected = np.array([gyroscope_at(float(time)) for time in recording.times_s])
    np.testing.assert_allclose(recording.gyro, expected, atol=1e-5)
    np.testing.assert_allclose(recording.gps_times_s, np.arange(20.0), atol=1e-6)
    np.testing.assert_allclose(recording.speed_mps, 10.0 + np.arange(20.0))
    assert recording.notes == ()


def test_android_accelerometer_without_gravity_is_linear_acceleration(tmp_path: Path) -> None:
    accelerometer = sensor_logger_accelerometer(tmp_path / "Accelerometer.csv", gravity=False)
    assert read_recording(accelerometer).linear_acceleration is True
    assert read_recording(accelerometer, linear_acceleration=False).linear_acceleration is False


def test_a_gyroscope_that_starts_late_trims_the_samples_it_does_not_cover(tmp_path: Path) -> None:
    accelerometer = sensor_logger_accelerometer(tmp_path / "TotalAcceleration.csv")
    gyroscope = sensor_logger_gyroscope(tmp_path / "Gyroscope.csv", start_s=0.5, end_s=20.0)
    recording = read_recording(accelerometer, gyro=gyroscope)
    assert recording.gyro is not None and recording.times_s.size == 4000 - 100
    assert recording.times_s[0] == 0.0  # the recording starts where both sensors have data
    assert recording.notes == (f"{gyroscope}: 100 accelerometer samples the gyroscope does not cover were left out",)


def test_a_gyroscope_with_a_gap_does_not_bridge_it(tmp_path: Path) -> None:
    accelerometer = sensor_logger_accelerometer(tmp_path / "TotalAcceleration.csv")
    gyroscope = sensor_logger_gyroscope(tmp_path / "Gyroscope.csv", start_s=0.0, end_s=20.0)
    lines = gyroscope.read_text().splitlines()
    del lines[1 + 1000 : 1 + 1050]  # 10.00-10.49 s: a half-second gap
    gyroscope.write_text("\n".join(lines) + "\n")
    recording = read_recording(accelerometer, gyro=gyroscope)
    assert recording.gyro is not None
    assert not np.any((recording.times_s > 9.995) & (recording.times_s < 10.5))


def test_a_gyroscope_covering_too_little_is_left_out_and_said_so(tmp_path: Path) -> None:
    accelerometer = sensor_logger_accelerometer(tmp_path / "TotalAcceleration.csv")
    gyroscope = sensor_logger_gyroscope(tmp_path / "Gyroscope.csv", start_s=10.0, end_s=20.0)
    recording = read_recording(accelerometer, gyro=gyroscope)
    assert recording.gyro is None and recording.times_s.size == 4000
    assert recording.notes == (
        f"{gyroscope}: the gyroscope covers 50% of the accelerometer's samples (less than 90%): "
        "read without a gyroscope",
    )


def test_files_on_other_clocks_are_refused(tmp_path: Path) -> None:
    accelerometer = sensor_logger_accelerometer(tmp_path / "TotalAcceleration.csv")
    gyroscope = sensor_logger_gyroscope(tmp_path / "Gyroscope.csv", start_s=100.0, end_s=120.0)
    with pytest.raises(RecordingError, match=r"the gyroscope's times .* do not overlap .* on the same clock"):
        read_recording(accelerometer, gyro=gyroscope)
    location = sensor_logger_location(tmp_path / "Location.csv", start_ns=EPOCH_NS + 3600 * 10**9)
    with pytest.raises(RecordingError, match=r"the GPS's times .* do not overlap the IMU's .* on the same clock"):
        read_recording(accelerometer, gps=location)


def test_a_separate_gyroscope_for_a_recording_with_one_is_refused(tmp_path: Path) -> None:
    drive = write_csv(
        tmp_path / "drive.csv",
        ("t_ms", "acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"),
        [(index * 10, 0, 0, 9.8, 0, 0, 0) for index in range(100)],
    )
    gyroscope = sensor_logger_gyroscope(tmp_path / "Gyroscope.csv", start_s=0.0, end_s=1.0)
    with pytest.raises(RecordingError, match="has gyroscope columns of its own"):
        read_recording(drive, gyro=gyroscope)


# --- phyphox


def test_phyphox_exports(tmp_path: Path) -> None:
    rows = [(f"{0.0123 + index / 100:.4f}", 0.3, -0.1, 9.79) for index in range(1000)]
    total = write_csv(
        tmp_path / "Accelerometer.csv",
        ("Time (s)", "Acceleration x (m/s^2)", "Acceleration y (m/s^2)", "Acceleration z (m/s^2)"),
        rows,
    )
    gyroscope = write_csv(
        tmp_path / "Gyroscope.csv",
        ("Time (s)", "Gyroscope x (rad/s)", "Gyroscope y (rad/s)", "Gyroscope z (rad/s)"),
        [(f"{index / 50:.4f}", *gyroscope_at(index / 50)) for index in range(520)],
    )
    recording = read_recording(total, gyro=gyroscope)
    assert recording.times_s[0] == 0.0 and recording.sample_rate_hz == pytest.approx(100.0)
    assert recording.linear_acceleration is False
    np.testing.assert_allclose(recording.accel[0], [0.3, -0.1, 9.79])
    assert recording.gyro is not None
    np.testing.assert_allclose(recording.gyro[0], gyroscope_at(0.0123), atol=1e-6)
    linear = write_csv(
        tmp_path / "Linear Acceleration.csv",
        (
            "Time (s)",
            "Linear Acceleration x (m/s^2)",
            "Linear Acceleration y (m/s^2)",
            "Linear Acceleration z (m/s^2)",
        ),
        rows,
    )
    assert read_recording(linear).linear_acceleration is True


def test_a_file_with_both_accelerations_reads_the_one_with_gravity(tmp_path: Path) -> None:
    linear = [f"Linear Acceleration {axis} (m/s^2)" for axis in "xyz"]
    path = write_csv(
        tmp_path / "both.csv",
        ["Time (s)", *linear, *(f"Acceleration {axis} (m/s^2)" for axis in "xyz")],
        [(index / 50, 0.1, 0.2, 0.0, 0.1, 0.2, 9.8) for index in range(100)],
    )
    recording = read_recording(path)
    assert recording.linear_acceleration is False and recording.sample_rate_hz == pytest.approx(50.0)
    np.testing.assert_allclose(recording.accel[0], [0.1, 0.2, 9.8])
    # Named explicitly, the gravity-removed columns are recognised as such.
    named = read_recording(path, columns={"accel": linear})
    assert named.linear_acceleration is True
    np.testing.assert_allclose(named.accel[0], [0.1, 0.2, 0.0])


# phyphox's CSV formats: comma, tab or semicolon separated, with a decimal point or (tab and semicolon)
# a decimal comma. Headers are quoted, as phyphox writes them.
PHYPHOX_FORMATS = [(",", "."), ("\t", "."), (";", "."), ("\t", ","), (";", ",")]


def write_phyphox_csv(
    path: Path, header: Sequence[str], rows: Sequence[Sequence[float]], delimiter: str, decimal: str
) -> Path:
    lines = [delimiter.join(f'"{name}"' for name in header)]
    lines += [delimiter.join(f"{value:.9E}".replace(".", decimal) for value in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(("delimiter", "decimal"), PHYPHOX_FORMATS)
def test_a_phyphox_export_reads_alike_in_every_csv_format_it_offers(
    tmp_path: Path, delimiter: str, decimal: str
) -> None:
    folder = tmp_path / "Acceleration with g 2024-05-03"
    folder.mkdir()
    rows = [(0.0123 + index / 100, 0.3 + 0.001 * index, -0.1, 9.79) for index in range(1000)]
    axes = [f"Acceleration {axis} (m/s^2)" for axis in "xyz"]
    write_phyphox_csv(folder / "Accelerometer.csv", ("Time (s)", *axes), rows, delimiter, decimal)
    location = [(second, 48.0 + second * 1e-4, 11.0, 8.0, 90.0) for second in range(10)]
    header = ("Time (s)", "Latitude (°)", "Longitude (°)", "Speed (m/s)", "Direction (°)")
    write_phyphox_csv(folder / "Location.csv", header, location, delimiter, decimal)
    recording = read_recording(folder)
    assert recording.sample_rate_hz == pytest.approx(100.0) and recording.linear_acceleration is False
    np.testing.assert_allclose(recording.accel, [row[1:] for row in rows])
    np.testing.assert_allclose(recording.speed_mps, 8.0)
    np.testing.assert_allclose(recording.heading_deg, 90.0)


def test_a_cell_that_is_not_a_number_is_refused_with_its_file_column_and_line(tmp_path: Path) -> None:
    rows: list[tuple[object, ...]] = [(index / 50, 0.1, 0.2, 9.8) for index in range(100)]
    rows[40] = (0.8, "0.1.2", 0.2, 9.8)
    path = write_csv(tmp_path / "drive.csv", ("t_s", "ax", "ay", "az"), rows)
    with pytest.raises(RecordingError, match=re.escape(f"{path}: column 'ax', line 42: '0.1.2' is not a number")):
        read_recording(path)
    # Through the CLI, the same words, and no traceback.
    result = CliRunner().invoke(app, ["evaluate", str(path)])
    assert result.exit_code == 1, result.output
    assert "line 42: '0.1.2' is not a number" in result.output and "Traceback" not in result.output


def test_a_file_without_a_header_is_refused_with_what_to_add(tmp_path: Path) -> None:
    path = tmp_path / "numbers.csv"
    path.write_text("".join(f"{index / 50:.2f},0.1,0.2,9.8\n" for index in range(100)))
    with pytest.raises(
        RecordingError, match=re.escape(f"{path}: no header row: its first line holds numbers (0.00, 0.1")
    ):
        read_recording(path)


@pytest.mark.parametrize("suffix", [".xlsx", ".xls", ".ods"])
def test_a_spreadsheet_is_refused_with_what_to_export_instead(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"Acceleration with g{suffix}"
    path.write_bytes(b"PK\x03\x04 not a CSV")
    with pytest.raises(RecordingError, match="a spreadsheet: export the recording as CSV"):
        read_recording(path)


# --- Physics Toolbox Sensor Suite


def physics_toolbox_rows(seconds: float = 30.0, rate_hz: float = 100.0) -> list[tuple[float, float, float, float]]:
    """(time, x, y, z) with gravity removed, at a jittery rate as the app writes it."""
    rng = np.random.default_rng(5)
    times = np.cumsum((1.0 + 0.3 * (rng.random(round(seconds * rate_hz)) - 0.5)) / rate_hz)
    return [(float(time), 0.5 * math.sin(time), 0.2, 0.05) for time in times]


def test_physics_toolbox_g_force_meter_in_g(tmp_path: Path) -> None:
    rows = [
        (
            f"{time:.4f}",
            f"{x / STANDARD_GRAVITY:.4f}",
            f"{y / STANDARD_GRAVITY:.4f}",
            f"{z / STANDARD_GRAVITY + 1:.4f}",
            1,
        )
        for time, x, y, z in physics_toolbox_rows()
    ]
    recording = read_recording(write_csv(tmp_path / "gforce.csv", ("time", "gFx", "gFy", "gFz", "TgF"), rows))
    assert recording.linear_acceleration is False and recording.gyro is None
    assert recording.sample_rate_hz == pytest.approx(100.0, rel=0.01)
    np.testing.assert_allclose(np.median(recording.accel, axis=0), [0.0, 0.2, 0.05 + STANDARD_GRAVITY], atol=0.1)


def test_physics_toolbox_linear_accelerometer_with_its_metadata_lines_and_units(tmp_path: Path) -> None:
    """Its ax, ay, az are gravity-removed: the values say so, though the names do not."""
    path = tmp_path / "linear.csv"
    lines = [
        "# sensor:linear_accelerometer",
        "# Requested Sample Rate: 100 Hz",
        "# Inertial correction: sensor=linear_acceleration; operation=add; unit=m/s^2; x=0.0; y=0.0; z=0.0",
        "",
        "time,ax (m/s^2),ay (m/s^2),az (m/s^2),aT (m/s^2)",
        *(f"{time:.6f},{x:.4f},{y:.4f},{z:.4f},1" for time, x, y, z in physics_toolbox_rows()),
    ]
    path.write_text("\n".join(lines) + "\n")
    recording = read_recording(path)
    assert recording.linear_acceleration is True
    np.testing.assert_allclose(recording.accel[0], [0.5 * math.sin(physics_toolbox_rows()[0][0]), 0.2, 0.05], atol=1e-4)
    # Semicolons and decimal commas, as the app writes in many locales: the same recording.
    semicolons = tmp_path / "linear-semicolons.csv"
    semicolons.write_text(
        "time;ax;ay;az;aT\n"
        + "".join(
            ";".join(f"{value:.6f}".replace(".", ",") for value in (*row, 1.0)) + "\n" for row in physics_toolbox_rows()
        )
    )
    again = read_recording(semicolons)
    assert again.linear_acceleration is True
    np.testing.assert_allclose(again.accel, recording.accel, atol=1e-4)
    np.testing.assert_allclose(again.times_s, recording.times_s, atol=1e-6)


def test_clock_times_are_read_across_midnight_and_date_times_as_they_are(tmp_path: Path) -> None:
    rows = physics_toolbox_rows()

    def clock(time: float) -> str:
        of_day = (23 * 3600 + 59 * 60 + 45 + time) % 86400  # midnight 15 s in
        hours, minutes, seconds = int(of_day // 3600), int(of_day % 3600 // 60), of_day % 60
        return f"{hours:02d}:{minutes:02d}:{int(seconds):02d}:{round(seconds % 1 * 1000) % 1000:03d}"

    path = write_csv(
        tmp_path / "clock.csv",
        ("time", "gFx", "gFy", "gFz"),
        [(clock(time), 0.0, 0.0, 1.0) for time, *_ in rows],
    )
    recording = read_recording(path)
    assert recording.duration_s == pytest.approx(rows[-1][0] - rows[0][0], abs=0.002)
    assert np.all(np.diff(recording.times_s) > 0)
    dated = write_csv(
        tmp_path / "dated.csv",
        ("timestamp", "x", "y", "z"),
        [(f"2026-09-23 16:53:{10 + time:06.3f}", 0.0, 0.0, 9.8) for time, *_ in rows[:3000:10]],
    )
    assert read_recording(dated).duration_s == pytest.approx(rows[2990][0] - rows[0][0], abs=0.002)
    broken = write_csv(
        tmp_path / "broken.csv", ("time", "gFx", "gFy", "gFz"), [("13:05:10:123", 0, 0, 1), ("13:05:xx", 0, 0, 1)]
    )
    with pytest.raises(RecordingError, match=re.escape("column 'time', line 3: '13:05:xx' is not a time")):
        read_recording(broken)


def test_physics_toolbox_multi_record_gives_each_sensor_rows_of_its_own(tmp_path: Path) -> None:
    lines = []
    for time, x, y, z in physics_toolbox_rows():
        g = [x / STANDARD_GRAVITY, y / STANDARD_GRAVITY, z / STANDARD_GRAVITY + 1]
        lines.append((f"{time:.4f}", *(f"{value:.4f}" for value in g), 1, "", "", ""))
        lines.append((f"{time + 0.002:.4f}", "", "", "", "", *gyroscope_at(time + 0.002)))
    path = write_csv(tmp_path / "multi.csv", ("time", "gFx", "gFy", "gFz", "TgF", "wx", "wy", "wz"), lines)
    recording = read_recording(path)
    assert recording.gyro is not None and recording.linear_acceleration is False
    assert recording.sample_rate_hz == pytest.approx(100.0, rel=0.01)
    # The first accelerometer sample comes before the gyroscope's first: left out, and said so.
    first_kept = float(lines[2][0])
    np.testing.assert_allclose(recording.gyro[1], gyroscope_at(first_kept + recording.times_s[1]), atol=1e-6)
    assert recording.notes == (
        f"{path}: the gyroscope's samples are on rows of their own: interpolated onto the accelerometer's",
        f"{path} (gyroscope rows): 1 accelerometer samples the gyroscope does not cover were left out",
    )


def test_a_recording_faster_than_ingest_takes_is_averaged_down_and_a_slower_one_refused(tmp_path: Path) -> None:
    """A phone logging at its fastest (500 Hz here) is averaged in pairs to 250 Hz, within ingest's 10-400 Hz, and
    said so; the same drive at 5 Hz cannot be cut into uploads ingest would take."""
    fast = sensor_logger_accelerometer(tmp_path / "TotalAcceleration.csv", seconds=12.0, rate_hz=500.0)
    recording = read_recording(fast)
    assert recording.sample_rate_hz == pytest.approx(250.0, rel=1e-4)
    assert recording.notes == (
        "TotalAcceleration: recorded at 500 Hz, above the 400 Hz ingest takes: every 2 samples averaged into one (250 Hz)",
    )
    np.testing.assert_allclose(recording.accel[1, 0], 0.5 * (0.5 * math.sin(2 / 500) + 0.5 * math.sin(3 / 500)))
    uploads = recording_uploads(recording, device_id="phone", trip_id="trip", started_at_s=0.0)
    assert {upload.sample_rate_hz for upload in uploads} == {250}
    # A 10 Hz logger whose clock measures 9.7 Hz is declared at the 10 Hz it is.
    nominal = read_recording(sensor_logger_accelerometer(tmp_path / "nominal.csv", seconds=30.0, rate_hz=9.7))
    uploads = recording_uploads(nominal, device_id="phone", trip_id="trip", started_at_s=0.0)
    assert {upload.sample_rate_exact_hz for upload in uploads} == {10.0}
    slow = read_recording(sensor_logger_accelerometer(tmp_path / "slow.csv", seconds=60.0, rate_hz=5.0))
    with pytest.raises(RecordingError, match="slow: recorded at 5 Hz: ingest takes 10-400 Hz"):
        recording_uploads(slow, device_id="phone", trip_id="trip", started_at_s=0.0)


# --- iOS SensorLog


SENSORLOG_HEADER = (
    "loggingTime(txt)",
    "loggingSample(N)",
    "locationTimestamp_since1970(s)",
    "locationLatitude(WGS84)",
    "locationLongitude(WGS84)",
    "locationSpeed(m/s)",
    "locationCourse(°)",
    "accelerometerTimestamp_sinceReboot(s)",
    "accelerometerAccelerationX(G)",
    "accelerometerAccelerationY(G)",
    "accelerometerAccelerationZ(G)",
    "gyroTimestamp_sinceReboot(s)",
    "gyroRotationX(rad/s)",
    "gyroRotationY(rad/s)",
    "gyroRotationZ(rad/s)",
    "motionUserAccelerationX(G)",
    "motionUserAccelerationY(G)",
    "motionUserAccelerationZ(G)",
)


def sensorlog_rows(seconds: int, rate_hz: int = 100) -> list[tuple[object, ...]]:
    """One row per logging sample, the last GPS fix repeated until the next (iOS speed -1: not valid)."""
    rows: list[tuple[object, ...]] = []
    for index in range(seconds * rate_hz):
        time_s = index / rate_hz
        fix = int(time_s)
        speed = -1.0 if fix == 0 else 5.0 + fix
        rows.append(
            (
                "2024-05-01 10:00:00.000",
                index,
                1_714_557_600.0 + fix,
                -36.85 + fix * 1e-4,
                174.76,
                speed,
                45.0,
                f"{5000.0 + time_s:.3f}",
                0.1,
                0.0,
                -1.0,
                f"{5000.0 + time_s:.3f}",
                *gyroscope_at(time_s),
                0.1,
                0.0,
                0.0,
            )
        )
    return rows


def test_sensorlog_in_g_with_its_gps_in_the_same_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "sensorlog.csv", SENSORLOG_HEADER, sensorlog_rows(10))
    recording = read_recording(path)
    assert recording.times_s[0] == 0.0 and recording.sample_rate_hz == pytest.approx(100.0)
    assert recording.linear_acceleration is False
    np.testing.assert_allclose(recording.accel[0], [0.1 * STANDARD_GRAVITY, 0.0, -STANDARD_GRAVITY])
    assert recording.gyro is not None
    np.testing.assert_allclose(recording.gyro[150], gyroscope_at(1.5), atol=1e-9)
    # A fix each second where the location's timestamp changes, at that row's time; the first (speed -1) dropped.
    np.testing.assert_allclose(recording.gps_times_s, np.arange(1.0, 10.0))
    np.testing.assert_allclose(recording.speed_mps, 5.0 + np.arange(1.0, 10.0))
    np.testing.assert_allclose(recording.heading_deg, 45.0)


def test_sensorlog_gravity_removed_columns_alone_are_linear_in_g(tmp_path: Path) -> None:
    header = SENSORLOG_HEADER[7:8] + SENSORLOG_HEADER[15:]
    rows = [(row[7], *row[15:]) for row in sensorlog_rows(2)]
    recording = read_recording(write_csv(tmp_path / "motion.csv", header, rows))
    assert recording.linear_acceleration is True and recording.gyro is None and not recording.has_gps
    np.testing.assert_allclose(recording.accel[0], [0.1 * STANDARD_GRAVITY, 0.0, 0.0])


# --- the command line


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    return {"MICHI_HOME": str(tmp_path / ".michi"), "MICHI_DATABASE_URL": f"sqlite:///{tmp_path / 'michi.db'}"}


@pytest.fixture
def android_drive(tmp_path: Path) -> Callable[[float, float], tuple[Path, Path]]:
    def write(gyro_start_s: float, gyro_end_s: float) -> tuple[Path, Path]:
        accelerometer = sensor_logger_accelerometer(tmp_path / "TotalAcceleration.csv", seconds=30.0, rate_hz=100.0)
        gyroscope = sensor_logger_gyroscope(tmp_path / "Gyroscope.csv", start_s=gyro_start_s, end_s=gyro_end_s)
        return accelerometer, gyroscope

    return write


def test_evaluate_with_a_gyroscope_file(
    environment: dict[str, str], android_drive: Callable[[float, float], tuple[Path, Path]]
) -> None:
    accelerometer, gyroscope = android_drive(0.0, 30.0)
    arguments = ["evaluate", str(accelerometer), "--model", "physics", "--json"]
    result = CliRunner().invoke(app, [*arguments, "--gyro-file", str(gyroscope)], env=environment)
    assert result.exit_code == 0, result.output
    recording = json.loads(result.stdout)["recording"]
    assert recording["gyroscope"] is True and recording["uploads"] == 3
    assert recording["sample_rate_hz"] == pytest.approx(100.0, rel=1e-3)
    without = CliRunner().invoke(app, arguments, env=environment)
    assert without.exit_code == 0, without.output
    assert json.loads(without.stdout)["recording"]["gyroscope"] is False


def test_evaluate_says_when_the_gyroscope_file_is_left_out(
    environment: dict[str, str], android_drive: Callable[[float, float], tuple[Path, Path]]
) -> None:
    accelerometer, gyroscope = android_drive(20.0, 30.0)
    result = CliRunner().invoke(
        app,
        ["evaluate", str(accelerometer), "--gyro-file", str(gyroscope), "--model", "physics", "--json"],
        env=environment,
    )
    assert result.exit_code == 0, result.output
    assert "michi: note: " in result.stderr and "read without a gyroscope" in result.stderr
    assert json.loads(result.stdout)["recording"]["gyroscope"] is False


@pytest.mark.parametrize("command", ["evaluate", "replay"])
def test_the_gyroscope_file_is_refused_where_it_cannot_be_used(
    command: str, environment: dict[str, str], android_drive: Callable[[float, float], tuple[Path, Path]]
) -> None:
    accelerometer, gyroscope = android_drive(100.0, 130.0)
    target = ["--target", "http://127.0.0.1:9"] if command == "replay" else []
    cases = [
        ([str(accelerometer), "--gyro-file", str(gyroscope)], "do not overlap the accelerometer's"),
        ([str(accelerometer), "--gyro-file", "missing.csv"], "--gyro-file missing.csv: no such file"),
        (["auckland-forward", "--gyro-file", str(gyroscope)], "and so is --gyro-file"),
    ]
    for arguments, message in cases:
        result = CliRunner().invoke(app, [command, *arguments, *target], env=environment)
        assert result.exit_code == 1, result.output
        assert message in result.output


def test_replay_reads_the_gyroscope_file_before_sending(
    environment: dict[str, str], android_drive: Callable[[float, float], tuple[Path, Path]]
) -> None:
    accelerometer, gyroscope = android_drive(0.0, 30.0)
    target = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        app,
        ["replay", str(accelerometer), "--gyro-file", str(gyroscope), "--target", target, "--speed", "0"],
        env=environment,
    )
    # Read, cut into uploads, then stopped at the unreachable target: the file and option were accepted.
    assert result.exit_code == 1
    assert f"no answer from {target}" in result.output


def test_the_gyroscope_files_columns_and_units_in_columns(tmp_path: Path) -> None:
    accelerometer = sensor_logger_accelerometer(tmp_path / "TotalAcceleration.csv", seconds=5.0)
    gyroscope = write_csv(
        tmp_path / "rotation.csv",
        ("stamp", "roll_rate", "pitch_rate", "yaw_rate"),
        [(EPOCH_NS // 1000 + index * 10_000, 0.0, 0.0, 57.2957795) for index in range(501)],
    )
    mapping = {"gyroscope": {"time": "stamp", "time_unit": "us", "gyro": ["roll_rate", "pitch_rate", "yaw_rate"]}}
    source = load_recording(str(accelerometer), columns=json.dumps(mapping), gyro_file=gyroscope)
    assert source.recording.gyro is not None
    np.testing.assert_allclose(source.recording.gyro[:, 2], 57.2957795)  # rad/s unless the name says degrees
    with pytest.raises(RecordingError, match='"gyroscope" must be an object'):
        load_recording(str(accelerometer), columns='{"gyroscope": 3}', gyro_file=gyroscope)


# --- a phone logger's export: a folder, or a .zip of one


def sensor_logger_export(folder: Path) -> Path:
    """Sensor Logger's export as the app writes it: one CSV per sensor, gravity-removed Accelerometer.csv too."""
    folder.mkdir(parents=True)
    sensor_logger_accelerometer(folder / "TotalAcceleration.csv")
    sensor_logger_accelerometer(folder / "Accelerometer.csv", gravity=False)
    sensor_logger_accelerometer(folder / "Gravity.csv")  # x, y, z with g, but no accelerometer by its name
    sensor_logger_gyroscope(folder / "Gyroscope.csv", start_s=0.0, end_s=20.0)
    sensor_logger_gyroscope(folder / "GyroscopeUncalibrated.csv", start_s=0.0, end_s=20.0)
    sensor_logger_location(folder / "Location.csv")
    write_csv(folder / "Metadata.csv", ("version", "device name", "platform"), [(3, "Pixel 7", "android")])
    return folder


def zipped(folder: Path, archive: Path, *, inside: str = "") -> Path:
    """The folder's files in a .zip, at its top or (`inside`) in one folder, as a phone's share sheet makes it."""
    with zipfile.ZipFile(archive, "w") as writer:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                writer.write(file, inside + file.relative_to(folder).as_posix())
    return archive


def assert_the_sensor_logger_drive(recording: Recording) -> None:
    assert recording.times_s.size == 4000 and recording.linear_acceleration is False
    np.testing.assert_allclose(recording.accel[:, 2], STANDARD_GRAVITY)  # TotalAcceleration.csv, not Gravity.csv
    np.testing.assert_allclose(recording.accel[:, 0], 0.5 * np.sin(recording.times_s), atol=1e-5)
    assert recording.gyro is not None
    np.testing.assert_allclose(recording.gyro, [gyroscope_at(float(time)) for time in recording.times_s], atol=1e-5)
    np.testing.assert_allclose(recording.gps_times_s, np.arange(20.0), atol=1e-6)


def test_a_sensor_logger_folder(tmp_path: Path) -> None:
    folder = sensor_logger_export(tmp_path / "Sensor Logger 2024-05-01")
    recording = read_recording(folder)
    assert recording.name == "Sensor Logger 2024-05-01"
    assert_the_sensor_logger_drive(recording)
    assert recording.notes == (
        f"{folder}: read TotalAcceleration.csv (accelerometer), Gyroscope.csv (gyroscope), Location.csv (GPS)",
    )


@pytest.mark.parametrize("inside", ["", "Sensor Logger 2024-05-01/"])
def test_a_zipped_sensor_logger_export_is_read_in_place(tmp_path: Path, inside: str) -> None:
    archive = zipped(sensor_logger_export(tmp_path / "export"), tmp_path / "drive.zip", inside=inside)
    before = sorted(tmp_path.rglob("*"))
    recording = read_recording(archive)
    assert sorted(tmp_path.rglob("*")) == before  # nothing extracted beside it
    assert recording.name == "drive"
    assert_the_sensor_logger_drive(recording)
    assert recording.notes[0].startswith(f"{archive}: read TotalAcceleration.csv (accelerometer)")


def test_an_export_without_a_gravity_included_file_reads_the_gravity_removed_one(tmp_path: Path) -> None:
    folder = sensor_logger_export(tmp_path / "drive")
    (folder / "TotalAcceleration.csv").unlink()
    recording = read_recording(folder)
    assert recording.linear_acceleration is True
    np.testing.assert_allclose(recording.accel[:, 2], 0.05)
    assert recording.notes[0].startswith(f"{folder}: read Accelerometer.csv (accelerometer, gravity removed)")


def test_a_phyphox_folder(tmp_path: Path) -> None:
    folder = tmp_path / "Acceleration with g 2024-05-01"
    (folder / "meta").mkdir(parents=True)
    write_csv(folder / "meta" / "device.csv", ("property", "value"), [("deviceModel", "Pixel 7")])
    axes = [f"Acceleration {axis} (m/s^2)" for axis in "xyz"]
    rows = [(f"{0.0123 + index / 100:.4f}", 0.3, -0.1, 9.79) for index in range(1000)]
    write_csv(folder / "Accelerometer.csv", ("Time (s)", *axes), rows)
    linear = [f"Linear Acceleration {axis} (m/s^2)" for axis in "xyz"]
    write_csv(folder / "Linear Accelerometer.csv", ("Time (s)", *linear), [(row[0], 0.3, -0.1, 0.0) for row in rows])
    write_csv(
        folder / "Gyroscope.csv",
        ("Time (s)", "Gyroscope x (rad/s)", "Gyroscope y (rad/s)", "Gyroscope z (rad/s)"),
        [(f"{index / 50:.4f}", *gyroscope_at(index / 50)) for index in range(520)],
    )
    write_csv(
        folder / "Location.csv",
        ("Time (s)", "Latitude (°)", "Longitude (°)", "Speed (m/s)", "Direction (°)"),
        [(second, 48.0 + second * 1e-4, 11.0, 8.0, 370.0) for second in range(10)],
    )
    recording = read_recording(folder)
    assert recording.name == "Acceleration with g 2024-05-01"
    assert recording.linear_acceleration is False and recording.sample_rate_hz == pytest.approx(100.0)
    np.testing.assert_allclose(recording.accel[0], [0.3, -0.1, 9.79])
    assert recording.gyro is not None
    np.testing.assert_allclose(recording.gyro[0], gyroscope_at(0.0123), atol=1e-6)
    np.testing.assert_allclose(recording.speed_mps, 8.0)
    np.testing.assert_allclose(recording.heading_deg, 10.0)
    # Without the gravity-included export, the linear one is read, and said to be.
    (folder / "Accelerometer.csv").unlink()
    without = read_recording(folder)
    assert without.linear_acceleration is True
    assert without.notes[0].startswith(f"{folder}: read Linear Accelerometer.csv (accelerometer, gravity removed)")


def test_a_phyphox_one_sensor_experiment_exports_raw_data(tmp_path: Path) -> None:
    folder = tmp_path / "Acceleration with g 2024-05-02"
    (folder / "meta").mkdir(parents=True)
    axes = [f"Acceleration {axis} (m/s^2)" for axis in "xyz"]
    rows = [(f"{index / 100:.4f}", 0.2, 0.1, 9.8) for index in range(600)]
    write_csv(folder / "Raw Data.csv", ("Time (s)", *axes), rows)
    write_csv(
        folder / "Location.csv",
        ("Time (s)", "Latitude (°)", "Longitude (°)", "Height (m)", "Velocity (m/s)", "Direction (°)"),
        [(second, 48.0 + second * 1e-4, 11.0, 500.0, 6.5, 90.0) for second in range(6)],
    )
    recording = read_recording(folder)
    np.testing.assert_allclose(recording.speed_mps, 6.5)
    assert recording.linear_acceleration is False and recording.gyro is None
    assert recording.sample_rate_hz == pytest.approx(100.0)
    assert recording.notes[0].startswith(f"{folder}: read Raw Data.csv (accelerometer")


def test_an_export_without_an_accelerometer_is_refused_with_its_files(tmp_path: Path) -> None:
    folder = sensor_logger_export(tmp_path / "drive")
    for name in ("TotalAcceleration.csv", "Accelerometer.csv"):
        (folder / name).unlink()
    expected = "no accelerometer file among its CSV files (Gravity.csv, Gyroscope.csv, GyroscopeUncalibrated.csv, "
    with pytest.raises(RecordingError, match=re.escape(expected + "Location.csv, Metadata.csv)")):
        read_recording(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RecordingError, match=r"no accelerometer file among its CSV files \(no CSV files\)"):
        read_recording(empty)


def test_two_files_of_one_rank_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "two drives"
    folder.mkdir()
    sensor_logger_accelerometer(folder / "accel_2024-05-01.csv")
    sensor_logger_accelerometer(folder / "accel_2024-05-02.csv")
    with pytest.raises(RecordingError, match=r"more than one accelerometer file .*accel_2024-05-01\.csv, accel_2024"):
        read_recording(folder)
    (folder / "accel_2024-05-02.csv").unlink()
    sensor_logger_location(folder / "gps_a.csv")
    sensor_logger_location(folder / "gps_b.csv")
    with pytest.raises(RecordingError, match=r"more than one GPS file \(gps_a\.csv, gps_b\.csv\)"):
        read_recording(folder)
    # A GPS file given explicitly is read instead of the export's own: no choice to make.
    recording = read_recording(folder, gps=folder / "gps_a.csv")
    assert recording.has_gps and recording.notes == (
        f"{folder}: read accel_2024-05-01.csv (accelerometer), {folder / 'gps_a.csv'} (GPS)",
    )


def test_a_zip_that_is_not_one_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "drive.zip"
    archive.write_text("not a zip")
    with pytest.raises(RecordingError, match=r"drive\.zip: not a readable \.zip"):
        read_recording(archive)


@pytest.mark.parametrize("packed", [False, True])
def test_evaluate_a_sensor_logger_export(environment: dict[str, str], tmp_path: Path, packed: bool) -> None:
    folder = sensor_logger_export(tmp_path / "my drive")
    recording = zipped(folder, tmp_path / "my drive.zip") if packed else folder
    result = CliRunner().invoke(app, ["evaluate", str(recording), "--model", "physics", "--json"], env=environment)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)["recording"]
    assert document["name"] == "my drive" and document["gyroscope"] is True and document["gps"] is True
    assert document["sample_rate_hz"] == pytest.approx(200.0, rel=1e-3) and document["uploads"] == 2
    assert f"michi: note: {recording}: read TotalAcceleration.csv (accelerometer)" in result.stderr
