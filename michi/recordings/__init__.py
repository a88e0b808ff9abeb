"""Real recordings as an input of the platform: read a drive, cut it into genuine device uploads.

    recording = read_recording("datasets/real-driving/quat-orient-auckland/accel_2020-10-15-21.csv")
    recording = read_recording("Sensor Logger 2024-05-01.zip")  # a phone logger's folder or zip
    recording = shared_recording("auckland-backwards")          # one of the recordings shipped in datasets/
    uploads = recording_uploads(recording, device_id="cam-1", trip_id="t-1", started_at_s=time.time())

A recording is an IMU stream (accelerometer in m/s², gravity included unless said otherwise;
gyroscope in rad/s when the device has one) plus optional GPS fixes, on one clock in seconds.
These layouts are read:

* **CSV** with a header. Columns are found by name (`COLUMN_NAMES`, case-insensitive, the unit in
  parentheses stripped: `t_ms`/`time`/`Time (s)`..., `acc_x_mps2`/`Acceleration x (m/s^2)`/
  `accelerometerAccelerationX(G)`..., `gyro_x`/`gyroRotationX(rad/s)`..., or only `x`, `y`, `z`), or given
  explicitly with `columns=` as `{"time": "...", "time_unit": "ms", "accel": ["...", "...", "..."],
  "gyro": [...]}`. Comma-, tab- or semicolon-separated, decimal commas read, "#" lines before the header
  passed over (`csv_reader`, `parsed_number`). Times in s, ms, us or ns: the unit given, else the one the
  name states, else the one that puts the median step at an IMU's rate (4-2000 Hz; a GPS's 0.1-50 Hz); or
  clock times and date-times (`_clock_column`). Accelerations in g are converted when the name says so
  (`(G)`, `_g`, `gFx`); gravity-removed columns (`Linear Acceleration`, `userAcceleration`), or any whose
  median magnitude is under half of g, make the recording linear acceleration. A gyroscope on rows of
  its own (the other sensors' cells empty) is interpolated onto the accelerometer's rows. A GPS CSV
  beside it (`gps=`) needs time, latitude, longitude, speed (m/s, or km/h in a `*_kmh` column) and
  heading/course columns; without one, GPS columns in the IMU's own file (SensorLog) are read. A
  gyroscope CSV beside it (`gyro=`, on the same clock) is interpolated onto the accelerometer's times
  (`_gyroscope_on_accelerometer_clock`).
* **JSON**: `{"imu": {"time_s": [...], "accel": [[x, y, z], ...], "gyro": [[...], ...] | null,
  "linear_acceleration": false}, "gps": {"time_s": [...], "latitude": [...], "longitude": [...],
  "speed_mps": [...], "heading_deg": [...]}}`.
* **NPZ** with the same names flattened: `imu_time_s`, `accel` (N, 3), optional `gyro` (N, 3),
  `gps_time_s`, `latitude`, `longitude`, `speed_mps`, `heading_deg`, optional `linear_acceleration`.
* **A phone logger's export**: a folder, or a .zip of one (read in place, nothing extracted), of one CSV
  per sensor (Sensor Logger, phyphox). Its CSVs are those at its top, or in its one subfolder when the
  top has none (`meta/` and hidden files aside). Each is known by its name, lowercased without ".csv"
  and without anything but letters and digits ("Linear Accelerometer.csv" -> "linearaccelerometer"),
  by ranks: the accelerometer `totalacceleration`; then `accelerometer`, `acceleration`, `accel`,
  `acc`; then `accel*`; then `linearacc*`, `useracc*`; then phyphox's `rawdata` (`ACCELEROMETER_FILES`). The first file read
  with gravity is taken (the ranks between decide it by the data: Sensor Logger's Accelerometer.csv is
  gravity-removed, phyphox's is not), else the best-ranked gravity-removed one. The gyroscope
  `gyroscope`, `gyro`, then `gyro*`; the GPS `location`, `gps`, then `location*`, `gps*`. Two files
  of the rank used are refused, as is an export without an accelerometer file (the message lists its
  CSVs). They are read as the same files given one by one: `columns=` applies to the accelerometer's
  file, `gps_columns=` and `gyro_columns=` to the others', and a `gps=` or `gyro=` file is read
  instead of the export's own. The recording is named after the folder or zip, and its notes say
  which files were read.

A stream faster than ingest's 400 Hz is averaged down as it is read (`_within_ingest_rate`, with a note).
`recording_uploads` cuts the stream into uploads of `upload_seconds` (10 s), numbered from 0 with
the device's own sequence, each carrying its samples' microsecond offsets, the measured (possibly
fractional) sample rate, the gyroscope's absence and the GPS fixes that fall inside it, with its
start rebased to `started_at_s` (ingest refuses uploads older than its window).
"""

from __future__ import annotations

import csv
import datetime
import fnmatch
import io
import itertools
import json
import math
import os
import re
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

import numpy as np

from michi.contracts import stable_event_id, timestamp_from_seconds
from michi.contracts.v1 import upload_pb2
from michi.windows.signals import FloatArray

STANDARD_GRAVITY = 9.80665
# The shipped recordings: beside the source tree, or where MICHI_DATASETS_DIR says (an installed package).
DATASETS = Path(
    os.environ.get("MICHI_DATASETS_DIR") or Path(__file__).resolve().parents[2] / "datasets" / "real-driving"
)

# Column names by role, in order of preference. A header matches when its lowercased name is listed, or
# once its unit in parentheses or brackets is stripped and every run of other characters than letters
# and digits is one "_" ("Acceleration x (m/s^2)" -> "acceleration_x", "gyroRotationX(rad/s)" ->
# "gyrorotationx"). The units stated that way are read too (`_stated_unit`).
COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "time": (
        "t_s",
        "time_s",
        "t_ms",
        "time_ms",
        "t_us",
        "time_us",
        "t_boot_s",
        "timestamp_s",
        "timestamp_ms",
        # Per-sensor loggers (Android SensorEvent.timestamp, Sensor Logger, phyphox, SensorLog).
        "t_ns",
        "time_ns",
        "timestamp_ns",
        "timestamp_us",
        "accelerometertimestamp_sincereboot",
        "gyrotimestamp_sincereboot",
        "motiontimestamp_sincereboot",
        "time",
        "timestamp",
        "uptimenanos",
        "seconds_elapsed",
        "elapsed_s",
    ),
    "accel_x": (
        "acc_x_mps2",
        "accel_x_mps2",
        "acc_x",
        "accel_x",
        "ax",
        "acc_fwd_mps2",
        "accel_x_g",
        "acc_x_g",
        "acceleration_x",
        "accelerometeraccelerationx",
        "total_acceleration_x",
        "gfx",
    ),
    "accel_y": (
        "acc_y_mps2",
        "accel_y_mps2",
        "acc_y",
        "accel_y",
        "ay",
        "acc_right_mps2",
        "accel_y_g",
        "acc_y_g",
        "acceleration_y",
        "accelerometeraccelerationy",
        "total_acceleration_y",
        "gfy",
    ),
    "accel_z": (
        "acc_z_mps2",
        "accel_z_mps2",
        "acc_z",
        "accel_z",
        "az",
        "acc_down_mps2",
        "accel_z_g",
        "acc_z_g",
        "acceleration_z",
        "accelerometeraccelerationz",
        "total_acceleration_z",
        "gfz",
    ),
    # Gravity removed: read when no gravity-included accelerometer is found, and the recording is then
    # linear acceleration unless the caller says otherwise.
    "linear_accel_x": ("linear_acceleration_x", "lin_acc_x", "useraccelerationx", "motionuseraccelerationx"),
    "linear_accel_y": ("linear_acceleration_y", "lin_acc_y", "useraccelerationy", "motionuseraccelerationy"),
    "linear_accel_z": ("linear_acceleration_z", "lin_acc_z", "useraccelerationz", "motionuseraccelerationz"),
    "gyro_x": (
        "gyro_x_rps",
        "gyro_x_radps",
        "gyro_x",
        "gx",
        "gyro_fwd_rps",
        "gyroscope_x",
        "gyrorotationx",
        "motionrotationratex",
        "wx",
    ),
    "gyro_y": (
        "gyro_y_rps",
        "gyro_y_radps",
        "gyro_y",
        "gy",
        "gyro_right_rps",
        "gyroscope_y",
        "gyrorotationy",
        "motionrotationratey",
        "wy",
    ),
    "gyro_z": (
        "gyro_z_rps",
        "gyro_z_radps",
        "gyro_z",
        "gz",
        "gyro_down_rps",
        "gyroscope_z",
        "gyrorotationz",
        "motionrotationratez",
        "wz",
    ),
    "latitude": ("lat_deg", "latitude", "lat", "gps_lat", "locationlatitude"),
    "longitude": ("lon_deg", "longitude", "lon", "lng", "gps_long", "locationlongitude"),
    "speed": ("speed_mps", "speed_kmh", "speed", "locationspeed", "velocity"),
    "heading": (
        "course_deg",
        "bearing_deg",
        "heading_deg",
        "heading",
        "course",
        "gps_heading",
        "bearing",
        "direction",
        "locationcourse",
    ),
    # The GPS's own time in a file whose rows are the IMU's (SensorLog): a new value is a new fix.
    "gps_time": ("locationtimestamp_since1970", "gps_time", "location_time"),
}
# The gravity-removed names, to recognise them among columns named with `columns=` too.
_LINEAR_NAMES = frozenset(
    COLUMN_NAMES["linear_accel_x"] + COLUMN_NAMES["linear_accel_y"] + COLUMN_NAMES["linear_accel_z"]
)
# Columns named only by their axis (Android loggers' per-sensor files): the accelerometer in the
# recording's file, the gyroscope in the gyroscope file.
BARE_AXES = ("x", "y", "z")

TIME_UNIT_SCALES = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
TIME_UNIT_WORDS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), "s"),
    **dict.fromkeys(("ms", "msec", "millis", "millisecond", "milliseconds"), "ms"),
    **dict.fromkeys(("us", "µs", "μs", "usec", "micros", "microsecond", "microseconds"), "us"),
    **dict.fromkeys(("ns", "nsec", "nanos", "nanosecond", "nanoseconds"), "ns"),
}
# The sample rates a time column without a stated unit is read against: each range spans less than a
# factor 1000, so at most one of s, ms, us, ns puts a file's median step inside it (a 1 Hz GPS in seconds
# would be a 1 kHz IMU in milliseconds).
IMU_RATES_HZ = (4.0, 2000.0)
GPS_RATES_HZ = (0.1, 50.0)
# A separate gyroscope file: interpolation does not bridge longer gaps, and a gyroscope that covers
# less of the accelerometer's samples than this is left out rather than cutting the recording.
MAX_GYROSCOPE_GAP_S = 0.2
MIN_GYROSCOPE_COVERAGE = 0.9
# Accelerometer columns not named gravity-removed may still be (bare x, y, z; Physics Toolbox's ax): a median
# magnitude under half of g is a gravity-removed stream (with gravity a device reads about 9.8 m/s² whatever
# the car does).
LINEAR_MEDIAN_BELOW_MPS2 = STANDARD_GRAVITY / 2
# The fastest IMU ingest takes by default (MICHI_INGEST_MAX_SAMPLE_RATE_HZ): a faster recording is averaged down.
MAX_RECORDING_RATE_HZ = 400.0
# The slowest it takes (MICHI_INGEST_MIN_SAMPLE_RATE_HZ): a slower recording cannot be sent, nor evaluated;
# one measured up to 5 % below it (a 10 Hz logger's jittery clock) is declared at it.
MIN_RECORDING_RATE_HZ = 10.0
MIN_RATE_TOLERANCE = 0.05


def median_rate_hz(times: FloatArray) -> float:
    """The rate of a clock from the median of its positive steps (robust to jitter and dropped samples); 0 with none."""
    steps = np.diff(times)
    steps = steps[steps > 0]
    return float(1.0 / np.median(steps)) if steps.size else 0.0


@dataclass(frozen=True)
class Recording:
    """One drive: IMU and optional GPS on one clock (seconds from the recording's start)."""

    name: str
    times_s: FloatArray
    accel: FloatArray  # (N, 3) m/s^2, device axes
    gyro: FloatArray | None  # (N, 3) rad/s, device axes; None without a gyroscope
    gps_times_s: FloatArray
    latitude: FloatArray
    longitude: FloatArray
    speed_mps: FloatArray
    heading_deg: FloatArray
    linear_acceleration: bool = False
    # What reading decided that the user should hear of (a gyroscope left out, samples trimmed).
    notes: tuple[str, ...] = ()

    @property
    def sample_rate_hz(self) -> float:
        """The median rate of the IMU clock (robust to jitter and dropped samples)."""
        return median_rate_hz(self.times_s)

    @property
    def duration_s(self) -> float:
        return float(self.times_s[-1] - self.times_s[0]) if self.times_s.size else 0.0

    @property
    def has_gps(self) -> bool:
        return self.gps_times_s.size >= 2

    def without_gps(self) -> Recording:
        empty = np.zeros(0)
        return replace(
            self,
            gps_times_s=empty,
            latitude=empty,
            longitude=empty,
            speed_mps=empty,
            heading_deg=empty,
            name=f"{self.name} (GPS removed)",
        )


class RecordingError(ValueError):
    """A recording that cannot be read, with the reason."""


@dataclass(frozen=True)
class ImuColumns:
    """What a CSV's IMU columns hold once read: times in seconds on the file's clock, m/s², rad/s."""

    times: FloatArray
    accel: FloatArray
    gyro: FloatArray | None
    linear_acceleration: bool | None  # None: the names and the values say nothing of gravity
    # What reading decided on its own (a gyroscope on rows of its own interpolated, samples left out).
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ZipMember:
    """A CSV inside a .zip export, read in place: nothing is extracted to disk, so nothing is left behind."""

    archive: zipfile.ZipFile
    member: str  # its name in the archive, "/"-separated
    shown: str  # how messages name it: "drive.zip/Gyroscope.csv"

    @property
    def name(self) -> str:
        return PurePosixPath(self.member).name

    def open(self, *, newline: str, encoding: str) -> io.TextIOWrapper:
        return io.TextIOWrapper(self.archive.open(self.member), encoding=encoding, newline=newline)

    def __str__(self) -> str:
        return self.shown


# A sensor's CSV: a file, or a member of a .zip export.
CsvFile = Path | ZipMember


# The separators a logger's CSV export may use: phyphox offers comma, tab and semicolon (the last two
# also with a decimal comma, which `parsed_number` reads); a spreadsheet saves labels with semicolons
# in many locales.
_DELIMITERS = (",", "\t", ";")


def csv_reader(handle: TextIO) -> csv.DictReader[str]:
    """A CSV's rows by header, separated by what its header line holds most of (a comma on a tie). Lines
    before the header that are blank or start with "#" (Physics Toolbox's metadata) are passed over."""
    header = handle.readline()
    while header and (not header.strip() or header.lstrip().startswith("#")):
        header = handle.readline()
    counts = {delimiter: header.count(delimiter) for delimiter in _DELIMITERS}
    delimiter = max(_DELIMITERS, key=lambda candidate: (counts[candidate], candidate == ","))
    return csv.DictReader(itertools.chain([header], handle), delimiter=delimiter)


def parsed_number(value: str) -> float:
    """A cell as a number, a decimal comma ("9,81") read as a point. ValueError if it is not one."""
    try:
        return float(value)
    except ValueError:
        if value.count(",") == 1 and "." not in value:
            return float(value.replace(",", "."))
        raise


# A logger's spreadsheet export (phyphox offers Excel) is not read: its CSV export is.
SPREADSHEET_SUFFIXES = (".xlsx", ".xls", ".ods")


class CsvColumns(dict[str, list[str]]):
    """A CSV's columns by header, each a list of its cells, and the file they came from."""

    def __init__(self, source: CsvFile, names: Sequence[str]) -> None:
        super().__init__((name, []) for name in names)
        self.source = source


def _read_csv(path: CsvFile) -> CsvColumns:
    with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: a spreadsheet's byte-order mark
        reader = csv_reader(handle)
        if reader.fieldnames is None:
            raise RecordingError(f"{path}: no header row")
        if all(_is_number(name) for name in reader.fieldnames):
            raise RecordingError(
                f"{path}: no header row: its first line holds numbers ({', '.join(reader.fieldnames[:4])}...); "
                "give it a header naming its columns, e.g. t_s,ax,ay,az (docs/recordings.md)"
            )
        columns = CsvColumns(path, reader.fieldnames)
        for row in reader:
            for name in reader.fieldnames:
                columns[name].append(row.get(name) or "")
    return columns


_MISSING = ("", "NA", "nan", "NaN")


def _is_number(value: str) -> bool:
    try:
        parsed_number(value.strip())
    except ValueError:
        return False
    return True


def _number(value: str, source: CsvFile, column: str, row: int) -> float:
    """One cell as a number; anything that is not one is refused, naming its file, column and line."""
    value = value.strip()
    if value in _MISSING:
        return math.nan
    try:
        return parsed_number(value)
    except ValueError:
        raise RecordingError(f"{source}: column {column!r}, line {row + 2}: {value!r} is not a number") from None


def _numbers(columns: CsvColumns, name: str) -> FloatArray:
    """Column `name` of a CSV as numbers (missing cells NaN)."""
    source = columns.source
    return np.array([_number(value, source, name, row) for row, value in enumerate(columns[name])], dtype=np.float64)


# A unit a header states in parentheses or brackets: "Time (s)", "accelerometerAccelerationX(G)".
_BRACKETED_UNIT = re.compile(r"[(\[]([^()\[\]]*)[)\]]")


def _stated_unit(name: str) -> str | None:
    """The unit a header states in parentheses or brackets: "Time (s)" -> "s", "accX(G)" -> "g"."""
    found = _BRACKETED_UNIT.findall(name)
    return found[-1].strip().lower() if found else None


def normalised_column_name(name: str) -> str:
    """A header as `COLUMN_NAMES` lists it: lowercase, the unit in parentheses gone, separators one "_"."""
    bare = _BRACKETED_UNIT.sub(" ", name).lower()
    return re.sub(r"[^0-9a-zµμ]+", "_", bare).strip("_")


def _find(columns: CsvColumns, role: str, explicit: str | None = None, extra: Sequence[str] = ()) -> str | None:
    if explicit is not None:
        if explicit not in columns:
            raise RecordingError(f"column {explicit!r} not found (have {', '.join(columns)})")
        return explicit
    lowered: dict[str, str] = {}
    normalised: dict[str, str] = {}
    for name in columns:
        lowered.setdefault(name.lower(), name)
        normalised.setdefault(normalised_column_name(name), name)
    for candidate in (*COLUMN_NAMES.get(role, ()), *extra):
        if candidate in lowered:
            return lowered[candidate]
        if candidate in normalised:
            return normalised[candidate]
    return None


def time_unit_in_name(name: str) -> str | None:
    """The time unit a column's name states, or None: "Time (s)", "t_ms", "timestamp_ns", "uptimeNanos"."""
    stated = _stated_unit(name)
    if stated is not None and stated in TIME_UNIT_WORDS:
        return TIME_UNIT_WORDS[stated]
    bare = _BRACKETED_UNIT.sub(" ", name)
    words = re.split(r"[^0-9A-Za-zµμ]+", re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", bare))
    for word in reversed(words):
        if word.lower() in TIME_UNIT_WORDS:
            return TIME_UNIT_WORDS[word.lower()]
    # Before words were read, a name ending in "us" or "ms" was enough ("stampms"): it still is.
    lowered = name.lower()
    return "us" if lowered.endswith("us") else "ms" if lowered.endswith("ms") else None


def inferred_time_unit(name: str, values: FloatArray, rates_hz: tuple[float, float], what: str) -> str:
    """The one unit among s, ms, us, ns that puts the median positive step at a rate in `rates_hz`."""
    finite = values[np.isfinite(values)]
    steps = np.diff(finite)
    steps = steps[steps > 0]
    low, high = rates_hz
    if not steps.size:
        raise RecordingError(f"time column {name!r} states no unit and has no increasing samples to infer it from")
    step = float(np.median(steps))
    rates = {unit: 1.0 / (step * scale) for unit, scale in TIME_UNIT_SCALES.items()}
    fitting = [unit for unit, rate in rates.items() if low <= rate <= high]
    if len(fitting) == 1:
        return fitting[0]
    readings = ", ".join(f"{unit}: {rate:.3g} Hz" for unit, rate in rates.items())
    raise RecordingError(
        f"time column {name!r} states no unit and its median step {step:g} fits "
        f"{'no unit' if not fitting else 'more than one unit'} for {what} at {low:g}-{high:g} Hz ({readings}): "
        'give it as "time_unit" in --columns (s, ms, us or ns)'
    )


def _time_seconds(
    name: str, values: FloatArray, unit: str | None, rates_hz: tuple[float, float] = IMU_RATES_HZ, what: str = "an IMU"
) -> FloatArray:
    """Times in seconds: the unit given, else the one the name states, else inferred from the sample rate."""
    unit = unit or time_unit_in_name(name) or inferred_time_unit(name, values, rates_hz, what)
    scale = TIME_UNIT_SCALES.get(unit)
    if scale is None:
        raise RecordingError(f"time unit must be s, ms, us or ns, not {unit!r}")
    return values * scale


# Physics Toolbox's g-force meter: the accelerometer with gravity, in g.
G_FORCE_NAMES = frozenset({"gfx", "gfy", "gfz"})


def _acceleration_scale(name: str) -> float:
    """m/s² per unit of a column: g when its name says so ("(G)", "(g)", "_g", "gFx"), else m/s²."""
    in_g = _stated_unit(name) == "g" or name.lower().endswith("_g") or normalised_column_name(name) in G_FORCE_NAMES
    return STANDARD_GRAVITY if in_g else 1.0


def _rotation_scale(name: str) -> float:
    """rad/s per unit of a column: degrees per second when its name says so ("(deg/s)", "(°/s)", "_dps")."""
    degrees = _stated_unit(name) in ("deg/s", "°/s", "dps") or name.lower().endswith(("_dps", "_degps"))
    return math.pi / 180.0 if degrees else 1.0


def _axes(columns: CsvColumns, sensor: str | None) -> list[str] | None:
    """Three columns of one sensor by role (`accel`, `linear_accel`, `gyro`), or with None the bare x, y, z."""
    if sensor is None:
        names = [_find(columns, "", extra=(axis,)) for axis in BARE_AXES]
    else:
        names = [_find(columns, f"{sensor}_{axis}") for axis in "xyz"]
    return None if None in names else [str(name) for name in names]


def _axis_values(columns: CsvColumns, names: Sequence[str], scale: Any) -> FloatArray:
    return np.column_stack([_numbers(columns, name) * scale(name) for name in names])


# A time of day as loggers write it: "13:05:10:123" (hours, minutes, seconds, milliseconds: Physics Toolbox),
# "13:05:10.123", or "05:10.123" (minutes and seconds), optionally after an ISO date ("2026-09-23 13:05:10.123").
# ("10:05:123" is minutes, seconds and milliseconds.)
_CLOCK_TIME = re.compile(
    r"(?:(?P<date>\d{4}-\d{2}-\d{2})[ T])?(?:(?P<hours>\d{1,2}):)?(?P<minutes>\d{1,2}):(?P<seconds>\d{1,2}(?:[.,]\d+)?)"
    r"(?::(?P<milliseconds>\d{1,3}))?(?:Z|[+-]\d{2}:?\d{2})?"
)


def clock_seconds(value: str) -> tuple[float, float] | None:
    """A clock time (`_CLOCK_TIME`) in seconds, and the period after which it wraps round (a day, an hour;
    0 with a date, which never wraps); None when the cell is not one."""
    match = _CLOCK_TIME.fullmatch(value.strip())
    if match is None:
        return None
    hours, minutes = int(match["hours"] or 0), int(match["minutes"])
    seconds = float(match["seconds"].replace(",", ".")) + int(match["milliseconds"] or 0) / 1000.0
    of_day = hours * 3600.0 + minutes * 60.0 + seconds
    if match["date"] is not None:
        days = (datetime.date.fromisoformat(match["date"]) - datetime.date(1970, 1, 1)).days
        return days * 86400.0 + of_day, 0.0
    return of_day, 86400.0 if match["hours"] is not None else 3600.0


def _clock_column(columns: CsvColumns, name: str) -> FloatArray | None:
    """A time column written as clock times or date-times, in seconds (a clock's wrap round midnight, or
    the hour, undone); None when its first cell is a number or empty, so it is read as numbers."""
    cells = columns[name]
    first = next((cell.strip() for cell in cells if cell.strip() not in _MISSING), None)
    if first is None or clock_seconds(first) is None:
        return None
    values, period = np.full(len(cells), math.nan), 0.0
    for row, cell in enumerate(cells):
        if cell.strip() in _MISSING:
            continue
        read = clock_seconds(cell)
        if read is None:
            raise RecordingError(f"{columns.source}: column {name!r}, line {row + 2}: {cell!r} is not a time")
        values[row], period = read[0], max(period, read[1])
    if period:
        finite = np.isfinite(values)
        steps = np.diff(values[finite], prepend=values[finite][0])
        values[finite] += np.cumsum(np.where(steps < -period / 2, period, 0.0))
    return values


def _column_seconds(
    path: CsvFile,
    columns: CsvColumns,
    time_name: str,
    unit: str | None,
    rates_hz: tuple[float, float] = IMU_RATES_HZ,
    what: str = "an IMU",
) -> FloatArray:
    """A file's time column in seconds on its own clock (`_time_seconds`, or clock times and date-times as
    they are), a refusal naming the file."""
    try:
        clock = _clock_column(columns, time_name)
        if clock is not None:
            return clock
        return _time_seconds(time_name, _numbers(columns, time_name), unit, rates_hz, what)
    except RecordingError as error:
        if str(path) in str(error):
            raise
        raise RecordingError(f"{path}: {error}") from error


def _sensor_times(path: CsvFile, columns: CsvColumns, mapping: Mapping[str, Any]) -> FloatArray:
    """A sensor file's sample times in seconds on its own clock (the time column by name or `columns=`)."""
    time_name = _find(columns, "time", mapping.get("time"))
    if time_name is None:
        raise RecordingError(f"{path}: no time column (one of {', '.join(COLUMN_NAMES['time'])}, or columns=)")
    return _column_seconds(path, columns, time_name, mapping.get("time_unit"))


def _read_csv_imu(path: CsvFile, mapping: Mapping[str, Any]) -> ImuColumns:
    columns = _read_csv(path)
    times = _sensor_times(path, columns, mapping)
    linear: bool | None = None
    if mapping.get("accel"):
        accel_names = [str(name) for name in mapping["accel"]]
        for name in accel_names:
            _find(columns, "accel_x", name)
        if all(normalised_column_name(name) in _LINEAR_NAMES for name in accel_names):
            linear = True
    else:
        # Gravity included first (calibration finds "up" from it), then gravity removed, then bare axes.
        found = _axes(columns, "accel")
        linear = False if found is not None else None
        if found is None:
            found = _axes(columns, "linear_accel")
            linear = True if found is not None else None
        accel_names = found or _axes(columns, None) or []
    if len(accel_names) != 3:
        raise RecordingError(f"{path}: three accelerometer columns are needed (columns= names them)")
    accel = _axis_values(columns, accel_names, _acceleration_scale)
    if not linear:
        # Names that do not say gravity is removed may still hold it removed (Physics Toolbox's "ax" is its
        # linear accelerometer): with gravity a device reads about 9.8 m/s² whatever the car does.
        magnitudes = np.linalg.norm(accel, axis=1)
        magnitudes = magnitudes[np.isfinite(magnitudes)]
        if magnitudes.size:
            linear = bool(np.median(magnitudes) < LINEAR_MEDIAN_BELOW_MPS2)
    gyro_names = list(mapping.get("gyro") or _axes(columns, "gyro") or [])
    gyro = None
    notes: tuple[str, ...] = ()
    if len(gyro_names) == 3 and None not in gyro_names:
        for name in gyro_names:
            _find(columns, "gyro_x", name)
        gyro = _axis_values(columns, gyro_names, _rotation_scale)
        gyro, notes = _gyroscope_rows_of_their_own(path, times, accel, gyro)
    return ImuColumns(times, accel, gyro, linear, notes)


def _gyroscope_rows_of_their_own(
    path: CsvFile, times: FloatArray, accel: FloatArray, gyro: FloatArray
) -> tuple[FloatArray | None, tuple[str, ...]]:
    """A file's gyroscope, on the accelerometer's rows. A logger writing each sensor's samples on rows of
    their own, the other sensors' cells empty (Physics Toolbox's multi-record), has its gyroscope rows
    interpolated onto the accelerometer's as a separate gyroscope file would be."""
    accel_rows = np.all(np.isfinite(accel), axis=1)
    gyro_rows = np.all(np.isfinite(gyro), axis=1)
    accel_count = int(np.count_nonzero(accel_rows))
    if not np.any(gyro_rows):
        return None, ()
    if np.count_nonzero(accel_rows & gyro_rows) >= MIN_GYROSCOPE_COVERAGE * accel_count:
        return gyro, ()
    values, note = _gyroscope_on_accelerometer_clock(
        np.where(accel_rows, times, math.nan), times[gyro_rows], gyro[gyro_rows], f"{path} (gyroscope rows)"
    )
    said = f"{path}: the gyroscope's samples are on rows of their own: interpolated onto the accelerometer's"
    return values, (said, *([note] if note is not None else []))


def _read_csv_gyroscope(path: CsvFile, mapping: Mapping[str, Any]) -> tuple[FloatArray, FloatArray]:
    """A gyroscope's own file: its times in seconds (on its clock) and rad/s; axes by name or bare x, y, z."""
    columns = _read_csv(path)
    times = _sensor_times(path, columns, mapping)
    names = list(mapping.get("gyro") or _axes(columns, "gyro") or _axes(columns, None) or [])
    if len(names) != 3:
        raise RecordingError(f"{path}: three gyroscope columns are needed (gyro_x..., x, y, z, or columns=)")
    for name in names:
        _find(columns, "gyro_x", name)
    return times, _axis_values(columns, names, _rotation_scale)


def _speed_values(columns: CsvColumns, name: str) -> FloatArray:
    """m/s; km/h when the name says so; iOS's -1 ("no valid speed") is no fix."""
    speed = _numbers(columns, name)
    if name.lower().endswith("kmh") or _stated_unit(name) in ("km/h", "kmh", "kph"):
        speed = speed / 3.6
    if normalised_column_name(name) == "locationspeed":
        speed = np.where(speed < 0, math.nan, speed)
    return speed


def _heading_values(columns: CsvColumns, name: str) -> FloatArray:
    heading = _numbers(columns, name)
    if normalised_column_name(name) == "locationcourse":  # iOS: -1 is "no valid course"
        heading = np.where(heading < 0, math.nan, heading)
    return heading % 360.0


def _gps_roles(columns: CsvColumns, mapping: Mapping[str, Any], roles: Sequence[str]) -> dict[str, str | None]:
    return {role: _find(columns, role, mapping.get(role)) for role in roles}


def _read_csv_gps(path: CsvFile, mapping: Mapping[str, Any]) -> dict[str, FloatArray]:
    columns = _read_csv(path)
    found = _gps_roles(columns, mapping, ("time", "latitude", "longitude", "speed", "heading"))
    missing = [role for role, name in found.items() if name is None]
    if missing:
        raise RecordingError(f"{path}: GPS columns not found: {', '.join(missing)}")
    names = {role: str(name) for role, name in found.items()}
    times = _column_seconds(path, columns, names["time"], mapping.get("time_unit"), GPS_RATES_HZ, "a GPS")
    return {"time": times, **_fix_values(columns, names)}


def _fix_values(columns: CsvColumns, names: Mapping[str, str]) -> dict[str, FloatArray]:
    """Latitude, longitude, speed (m/s) and heading of each row, from the columns `names` gives by role."""
    return {
        "latitude": _numbers(columns, names["latitude"]),
        "longitude": _numbers(columns, names["longitude"]),
        "speed": _speed_values(columns, names["speed"]),
        "heading": _heading_values(columns, names["heading"]),
    }


def _gps_in_imu_file(path: CsvFile, times: FloatArray) -> dict[str, FloatArray] | None:
    """GPS columns in the IMU's own file (SensorLog): a fix wherever the GPS changes, at that row's IMU time.

    Each row repeats the last fix until a new one comes, so a fix is a row whose GPS time column (SensorLog's
    locationTimestamp_since1970) differs from the row before, or without one whose latitude, longitude, speed
    or heading does. Its time is the row's, on the IMU's clock: the GPS's own time is on another clock.
    """
    columns = _read_csv(path)
    found = _gps_roles(columns, {}, ("latitude", "longitude", "speed", "heading"))
    if None in found.values():
        return None
    fixes = _fix_values(columns, {role: str(name) for role, name in found.items()})
    gps_time = _find(columns, "gps_time")
    keys = [_numbers(columns, gps_time)] if gps_time is not None else list(fixes.values())
    changed = np.zeros(times.size, dtype=bool)
    for key in keys:
        previous = np.concatenate([[math.nan], key[:-1]])
        changed |= np.isfinite(key) & (key != previous)
    if not np.any(changed):
        return None
    return {"time": times[changed], **{role: values[changed] for role, values in fixes.items()}}


def _gyroscope_on_accelerometer_clock(
    times: FloatArray, gyro_times: FloatArray, gyro: FloatArray, source: str
) -> tuple[FloatArray | None, str | None]:
    """A separate gyroscope interpolated (linearly) onto the accelerometer's times.

    An accelerometer sample outside the gyroscope's span, or inside a gap of its samples longer than
    `MAX_GYROSCOPE_GAP_S`, gets no value (NaN, so `_assemble` leaves it out). When that would leave out
    more than 1 - `MIN_GYROSCOPE_COVERAGE` of the samples the gyroscope is dropped instead, and said so.
    """
    usable = np.isfinite(gyro_times) & np.all(np.isfinite(gyro), axis=1)
    order = np.argsort(gyro_times[usable], kind="stable")
    gyro_times, gyro = gyro_times[usable][order], gyro[usable][order]
    unique = np.concatenate([[True], np.diff(gyro_times) > 0])
    gyro_times, gyro = gyro_times[unique], gyro[unique]
    accel_times = times[np.isfinite(times)]
    if gyro_times.size < 2 or accel_times.size < 2:
        raise RecordingError(f"{source}: fewer than 2 gyroscope samples with a time and three axes")
    start, end = float(accel_times.min()), float(accel_times.max())
    gyro_start, gyro_end = float(gyro_times[0]), float(gyro_times[-1])
    if gyro_end < start or gyro_start > end:
        raise RecordingError(
            f"{source}: the gyroscope's times ({gyro_start:g} to {gyro_end:g} s) do not overlap the "
            f"accelerometer's ({start:g} to {end:g} s): both files must be on the same clock"
        )
    values = np.column_stack([np.interp(times, gyro_times, gyro[:, axis]) for axis in range(3)])
    after = np.clip(np.searchsorted(gyro_times, times, side="left"), 1, gyro_times.size - 1)
    gap = gyro_times[after] - gyro_times[after - 1]
    covered = np.isfinite(times) & (times >= gyro_start) & (times <= gyro_end) & (gap <= MAX_GYROSCOPE_GAP_S)
    coverage = float(np.count_nonzero(covered)) / accel_times.size
    if coverage < MIN_GYROSCOPE_COVERAGE:
        return None, (
            f"{source}: the gyroscope covers {coverage:.0%} of the accelerometer's samples (less than "
            f"{MIN_GYROSCOPE_COVERAGE:.0%}): read without a gyroscope"
        )
    left_out = accel_times.size - int(np.count_nonzero(covered))
    values[~covered] = math.nan
    note = (
        f"{source}: {left_out} accelerometer samples the gyroscope does not cover were left out" if left_out else None
    )
    return values, note


def _overlapping_gps(gps: dict[str, FloatArray], times: FloatArray, source: str) -> None:
    """Refuse a GPS file on another clock than the IMU: its fixes would fall in no upload."""
    gps_times = gps["time"][np.isfinite(gps["time"])]
    imu_times = times[np.isfinite(times)]
    if not gps_times.size or not imu_times.size:
        return
    if gps_times.max() < imu_times.min() or gps_times.min() > imu_times.max():
        raise RecordingError(
            f"{source}: the GPS's times ({gps_times.min():g} to {gps_times.max():g} s) do not overlap the "
            f"IMU's ({imu_times.min():g} to {imu_times.max():g} s): both files must be on the same clock"
        )


def _gps_of(
    imu_file: CsvFile, times: FloatArray, gps_file: CsvFile | None, gps_columns: Mapping[str, Any]
) -> dict[str, FloatArray] | None:
    """A CSV recording's GPS: its GPS file's (on the IMU's clock), else the GPS columns of its own file, if any."""
    if gps_file is None:
        return _gps_in_imu_file(imu_file, times)
    gps_data = _read_csv_gps(gps_file, gps_columns)
    _overlapping_gps(gps_data, times, str(gps_file))
    return gps_data


def _gps_columns(fixes: Mapping[str, Any], time_name: str) -> dict[str, FloatArray]:
    """GPS arrays from the JSON or NPZ layout (same names but for the time)."""
    return {
        "time": np.asarray(fixes[time_name], dtype=np.float64),
        "latitude": np.asarray(fixes["latitude"], dtype=np.float64),
        "longitude": np.asarray(fixes["longitude"], dtype=np.float64),
        "speed": np.asarray(fixes["speed_mps"], dtype=np.float64),
        "heading": np.asarray(fixes["heading_deg"], dtype=np.float64) % 360.0,
    }


# The files of a phone logger's export (a folder or a .zip of one) by role, each a list of ranks of name
# patterns, matched against the file's lowercased name without ".csv" and without anything but letters and
# digits ("Linear Accelerometer.csv" -> "linearaccelerometer"). A file takes the first rank it matches.
# The accelerometer's ranks go from gravity-included by name, through the ones whose data decide
# (Sensor Logger's Accelerometer.csv is gravity-removed, phyphox's is not), to gravity-removed by name.
ACCELEROMETER_FILES: tuple[tuple[str, ...], ...] = (
    ("totalacceleration",),
    ("accelerometer", "acceleration", "accel", "acc"),
    ("accel*",),  # AccelerometerUncalibrated.csv, accel_2020-10-15-21.csv
    ("linearacc*", "useracc*"),
    # phyphox's one-sensor experiments export "Raw Data.csv": its columns say what it holds.
    ("rawdata",),
)
GYROSCOPE_FILES: tuple[tuple[str, ...], ...] = (("gyroscope", "gyro"), ("gyro*",))  # then GyroscopeUncalibrated
GPS_FILES: tuple[tuple[str, ...], ...] = (("location", "gps"), ("location*", "gps*"))
# Folders of an export that hold no recording (phyphox's meta/, macOS's zip leftovers).
IGNORED_EXPORT_FOLDERS = frozenset({"meta", "__macosx"})


def _file_key(name: str) -> str:
    """A file's name as the export patterns match it: "Linear Accelerometer.csv" -> "linearaccelerometer"."""
    return re.sub(r"[^0-9a-z]+", "", PurePosixPath(name).stem.lower())


def _file_rank(name: str, ranks: Sequence[Sequence[str]]) -> int | None:
    key = _file_key(name)
    for rank, patterns in enumerate(ranks):
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns):
            return rank
    return None


def _export_csv_names(names: Sequence[str]) -> list[str]:
    """The CSVs of an export among its "/"-separated names: those at its top, or, when there are none,
    those of its one folder (a zip of the export's folder). Hidden files and `IGNORED_EXPORT_FOLDERS` do
    not count."""
    csvs = [
        name
        for name in names
        if name.lower().endswith(".csv")
        and not any(part.startswith(".") or part.lower() in IGNORED_EXPORT_FOLDERS for part in name.split("/"))
    ]
    top = [name for name in csvs if "/" not in name]
    if top:
        return sorted(top)
    folders = {name.split("/")[0] for name in csvs if name.count("/") == 1}
    if len(folders) == 1:
        return sorted(name for name in csvs if name.count("/") == 1)
    return []


@contextmanager
def _export_files(path: Path) -> Iterator[list[CsvFile]]:
    """The CSVs of a folder or a .zip export, open while the caller reads them (a zip is read in place)."""
    if path.is_dir():
        found = [*path.glob("*"), *path.glob("*/*")]
        names = [entry.relative_to(path).as_posix() for entry in found if entry.is_file()]
        yield [path / name for name in _export_csv_names(names)]
        return
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise RecordingError(f"{path}: not a readable .zip: {error}") from error
    with archive:
        names = [info.filename for info in archive.infolist() if not info.is_dir()]
        try:
            yield [ZipMember(archive, name, f"{path}/{name}") for name in _export_csv_names(names)]
        except zipfile.BadZipFile as error:  # a member that fails its check while it is read
            raise RecordingError(f"{path}: a damaged .zip: {error}") from error


def _listed(files: Sequence[CsvFile]) -> str:
    return ", ".join(file.name for file in files) or "no CSV files"


def _export_file(
    path: Path, files: Sequence[CsvFile], ranks: Sequence[Sequence[str]], what: str
) -> tuple[CsvFile | None, list[list[CsvFile]]]:
    """The files of one role grouped by rank (best first); the best when its rank holds only it.

    Two files of the best rank are refused: which one the user meant cannot be told from their names.
    """
    grouped: list[list[CsvFile]] = [[] for _ in ranks]
    for file in files:
        rank = _file_rank(file.name, ranks)
        if rank is not None:
            grouped[rank].append(file)
    present = [group for group in grouped if group]
    if present and len(present[0]) > 1:
        raise RecordingError(
            f"{path}: more than one {what} file ({_listed(present[0])}): point at one of them and give the "
            "others with --gyro-file and --gps-file"
        )
    return (present[0][0] if present else None), present


def _decided_linear(read: ImuColumns, mapping: Mapping[str, Any], linear_acceleration: bool | None) -> bool:
    """Gravity removed or not: the caller's word, then `columns=`'s, then the file's names and values."""
    stated = mapping.get("linear_acceleration")
    chosen = linear_acceleration if linear_acceleration is not None else stated
    return bool(chosen if chosen is not None else read.linear_acceleration)


def _export_accelerometer(
    path: Path, files: Sequence[CsvFile], mapping: Mapping[str, Any], linear_acceleration: bool | None
) -> tuple[CsvFile, ImuColumns, bool]:
    """The export's accelerometer file, read: the first gravity-included one by rank, else the best-ranked
    gravity-removed one. A rank holding two files is refused when it is reached, since either could be
    the one meant."""
    _, present = _export_file(path, files, ACCELEROMETER_FILES, "accelerometer")
    if not present:
        raise RecordingError(
            f"{path}: no accelerometer file among its CSV files ({_listed(files)}): expected TotalAcceleration.csv, "
            "Accelerometer.csv, Linear Accelerometer.csv or accel*.csv (or give the accelerometer's CSV itself)"
        )
    linear_fallback: tuple[CsvFile, ImuColumns, bool] | None = None
    for group in present:
        if len(group) > 1:
            raise RecordingError(
                f"{path}: more than one accelerometer file of the same kind ({_listed(group)}): give the one meant"
            )
        try:
            read = _read_csv_imu(group[0], mapping)
        except RecordingError as error:  # say which of the export's files, unless the message does
            if str(group[0]) in str(error):
                raise
            raise RecordingError(f"{group[0]}: {error}") from error
        linear = _decided_linear(read, mapping, linear_acceleration)
        if not linear:
            return group[0], read, linear
        linear_fallback = linear_fallback or (group[0], read, linear)
    assert linear_fallback is not None  # every rank present was read, and each gave one
    return linear_fallback


def _read_export(
    path: Path,
    *,
    gps: Path | None,
    gyro: Path | None,
    columns: Mapping[str, Any],
    gps_columns: Mapping[str, Any],
    gyro_columns: Mapping[str, Any],
    name: str,
    linear_acceleration: bool | None,
) -> Recording:
    """A phone logger's export, a folder or a .zip: its accelerometer, gyroscope and GPS files by name
    (`ACCELEROMETER_FILES`, `GYROSCOPE_FILES`, `GPS_FILES`), read as the same files given one by one
    would be. An explicit `gps=` or `gyro=` file is read instead of the export's own; which files were
    read is said in the recording's notes, since the figures that follow depend on it."""
    with _export_files(path) as files:
        accelerometer, read, linear = _export_accelerometer(path, files, columns, linear_acceleration)
        used = [f"{accelerometer.name} (accelerometer{', gravity removed' if linear else ''})"]
        notes: list[str] = list(read.notes)
        gyro_values = read.gyro
        gyro_file: CsvFile | None = Path(gyro) if gyro is not None else None
        if gyro_file is None and gyro_values is None:
            gyro_file, _ = _export_file(path, files, GYROSCOPE_FILES, "gyroscope")
        if gyro_file is not None:
            gyro_values, note = _separate_gyroscope(accelerometer, read, gyro_file, gyro_columns)
            notes.extend([note] if note is not None else [])
            used.append(f"{gyro_file if gyro is not None else gyro_file.name} (gyroscope)")
        gps_file: CsvFile | None = Path(gps) if gps is not None else None
        if gps_file is None:
            gps_file, _ = _export_file(path, files, GPS_FILES, "GPS")
        gps_data = _gps_of(accelerometer, read.times, gps_file, gps_columns)
        if gps_file is not None:
            used.append(f"{gps_file if gps is not None else gps_file.name} (GPS)")
        notes.insert(0, f"{path}: read {', '.join(used)}")
    return _assemble(name, read.times, read.accel, gyro_values, gps_data, linear, tuple(notes))


def _separate_gyroscope(
    recording: CsvFile, read: ImuColumns, gyro: CsvFile, gyro_columns: Mapping[str, Any]
) -> tuple[FloatArray | None, str | None]:
    """A gyroscope file read onto the accelerometer's clock; refused for a recording with its own gyroscope."""
    if read.gyro is not None:
        raise RecordingError(
            f"{recording}: has gyroscope columns of its own; a separate gyroscope file is for one without"
        )
    gyro_times, gyro_read = _read_csv_gyroscope(gyro, gyro_columns)
    return _gyroscope_on_accelerometer_clock(read.times, gyro_times, gyro_read, str(gyro))


def _recording_name(path: Path) -> str:
    """A recording's name: its file's or folder's stem ("." is the working folder's name)."""
    return path.stem or path.resolve().name


def read_recording(
    path: str | Path,
    *,
    gps: str | Path | None = None,
    gyro: str | Path | None = None,
    columns: Mapping[str, Any] | None = None,
    gps_columns: Mapping[str, Any] | None = None,
    gyro_columns: Mapping[str, Any] | None = None,
    name: str | None = None,
    linear_acceleration: bool | None = None,
) -> Recording:
    """A recording from a CSV (with an optional GPS CSV and gyroscope CSV), a JSON or an NPZ file, or a
    phone logger's export (a folder or a .zip of its per-sensor CSVs, `_read_export`).

    `linear_acceleration` None takes it from the file: JSON's and NPZ's key, a CSV's column names
    ("Linear Acceleration", "userAcceleration") or, for columns named only x, y, z, their magnitude.
    """
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"{path}: no such file")
    if path.suffix.lower() in SPREADSHEET_SUFFIXES:
        raise RecordingError(f"{path}: a spreadsheet: export the recording as CSV (phyphox: any of its CSV formats)")
    if path.is_dir() or path.suffix.lower() == ".zip":
        return _read_export(
            path,
            gps=Path(gps) if gps is not None else None,
            gyro=Path(gyro) if gyro is not None else None,
            columns=columns or {},
            gps_columns=gps_columns or {},
            gyro_columns=gyro_columns or {},
            name=name or _recording_name(path),
            linear_acceleration=linear_acceleration,
        )
    gps_data: dict[str, FloatArray] | None = None
    notes: list[str] = []
    if path.suffix == ".json":
        document = json.loads(path.read_text())
        imu = document.get("imu") or {}
        times = np.asarray(imu.get("time_s", []), dtype=np.float64)
        accel = np.asarray(imu.get("accel", []), dtype=np.float64).reshape(-1, 3)
        gyro_values = np.asarray(imu["gyro"], dtype=np.float64).reshape(-1, 3) if imu.get("gyro") else None
        linear = bool(imu.get("linear_acceleration", bool(linear_acceleration)))
        if document.get("gps"):
            gps_data = _gps_columns(document["gps"], "time_s")
    elif path.suffix == ".npz":
        with np.load(path) as archive:
            times = np.asarray(archive["imu_time_s"], dtype=np.float64)
            accel = np.asarray(archive["accel"], dtype=np.float64).reshape(-1, 3)
            gyro_values = np.asarray(archive["gyro"], dtype=np.float64).reshape(-1, 3) if "gyro" in archive else None
            linear = (
                bool(archive["linear_acceleration"]) if "linear_acceleration" in archive else bool(linear_acceleration)
            )
            if "gps_time_s" in archive:
                gps_data = _gps_columns(archive, "gps_time_s")
    else:
        mapping = columns or {}
        read = _read_csv_imu(path, mapping)
        times, accel, gyro_values = read.times, read.accel, read.gyro
        notes.extend(read.notes)
        linear = _decided_linear(read, mapping, linear_acceleration)
        gps_data = _gps_of(path, times, Path(gps) if gps is not None else None, gps_columns or {})
    if gyro is not None:
        gyro_values, note = _separate_gyroscope(
            path, ImuColumns(times, accel, gyro_values, linear), Path(gyro), gyro_columns or {}
        )
        if note is not None:
            notes.append(note)
    return _assemble(name or path.stem, times, accel, gyro_values, gps_data, linear, tuple(notes))


def _within_ingest_rate(
    times: FloatArray, accel: FloatArray, gyro: FloatArray | None
) -> tuple[FloatArray, FloatArray, FloatArray | None, str | None]:
    """A stream faster than ingest takes (`MAX_RECORDING_RATE_HZ`, a phone logging at its fastest) brought
    under it: each run of k samples averaged into one at its mean time, k the least that does (a block mean is
    the low-pass the features' 2.5 Hz filter needs no more than). The note says so; slower streams are as read."""
    rate = median_rate_hz(times)
    if rate <= MAX_RECORDING_RATE_HZ:
        return times, accel, gyro, None
    block = math.ceil(rate / MAX_RECORDING_RATE_HZ)
    whole = times.size // block * block

    def averaged(values: FloatArray) -> FloatArray:
        return values[:whole].reshape(whole // block, block, *values.shape[1:]).mean(axis=1)

    note = (
        f"recorded at {rate:.0f} Hz, above the {MAX_RECORDING_RATE_HZ:.0f} Hz ingest takes: every {block} samples "
        f"averaged into one ({rate / block:.0f} Hz)"
    )
    return averaged(times), averaged(accel), averaged(gyro) if gyro is not None else None, note


def _assemble(
    name: str,
    times: FloatArray,
    accel: FloatArray,
    gyro: FloatArray | None,
    gps: dict[str, FloatArray] | None,
    linear_acceleration: bool,
    notes: tuple[str, ...] = (),
) -> Recording:
    if times.size < 2 or accel.shape != (times.size, 3) or (gyro is not None and gyro.shape != accel.shape):
        raise RecordingError(f"{name}: IMU time and axes must have the same length, at least 2 samples")
    keep = np.isfinite(times) & np.all(np.isfinite(accel), axis=1)
    if gyro is not None:
        keep &= np.all(np.isfinite(gyro), axis=1)
    if np.count_nonzero(keep) < 2:
        raise RecordingError(f"{name}: fewer than 2 IMU samples with a time and three axes")
    order = np.argsort(times[keep], kind="stable")
    times, accel = times[keep][order], accel[keep][order]
    gyro = gyro[keep][order] if gyro is not None else None
    # Repeated timestamps (a logger's coarse clock) keep their first sample.
    unique = np.concatenate([[True], np.diff(times) > 0])
    times, accel = times[unique], accel[unique]
    gyro = gyro[unique] if gyro is not None else None
    times, accel, gyro, averaged = _within_ingest_rate(times, accel, gyro)
    if averaged is not None:
        notes = (*notes, f"{name}: {averaged}")
    origin = float(times[0])
    empty = np.zeros(0)
    gps_times, latitude, longitude, speed, heading = empty, empty, empty, empty, empty
    if gps is not None and gps["time"].size:
        usable = np.isfinite(gps["time"]) & np.isfinite(gps["latitude"]) & np.isfinite(gps["speed"])
        fix_order = np.argsort(gps["time"][usable], kind="stable")
        gps_times = gps["time"][usable][fix_order] - origin
        latitude = gps["latitude"][usable][fix_order]
        longitude = gps["longitude"][usable][fix_order]
        speed = np.clip(gps["speed"][usable][fix_order], 0.0, None)
        heading = np.nan_to_num(gps["heading"][usable][fix_order])
    return Recording(
        name=name,
        times_s=times - origin,
        accel=accel,
        gyro=gyro,
        gps_times_s=gps_times,
        latitude=latitude,
        longitude=longitude,
        speed_mps=speed,
        heading_deg=heading,
        linear_acceleration=linear_acceleration,
        notes=notes,
    )


# The recordings shipped in datasets/real-driving (licences and caveats in its README).
SHARED_RECORDINGS: dict[str, dict[str, Any]] = {
    "auckland-forward": {
        "path": "quat-orient-auckland/accel_2020-10-15-21.csv",
        "gps": "quat-orient-auckland/gps_2020-10-15-21.csv",
    },
    "auckland-backwards": {
        "path": "quat-orient-auckland/accel_2020-10-15-22.csv",
        "gps": "quat-orient-auckland/gps_2020-10-15-22.csv",
    },
    "comma2k19": {
        "path": "comma2k19-example/imu.csv",
        "gps": "comma2k19-example/gnss_ublox.csv",
    },
}


def shared_recording(name: str, root: Path = DATASETS) -> Recording:
    """One of the recordings in datasets/real-driving by its short name (`SHARED_RECORDINGS`)."""
    if name not in SHARED_RECORDINGS:
        raise RecordingError(f"unknown recording {name!r}; shipped: {', '.join(SHARED_RECORDINGS)}")
    entry = SHARED_RECORDINGS[name]
    return read_recording(root / entry["path"], gps=root / entry["gps"], name=name)


def recording_uploads(
    recording: Recording,
    *,
    device_id: str,
    trip_id: str,
    started_at_s: float,
    driver_id: str = "",
    upload_seconds: float = 10.0,
    first_sequence: int = 0,
    firmware_version: str = "replay",
    vehicle_type: str = "",
) -> list[upload_pb2.Upload]:
    """The recording as the uploads a device would send (the last one ends the trip)."""
    if upload_seconds <= 0:
        raise RecordingError("upload_seconds must be > 0")
    rate = recording.sample_rate_hz
    if rate < MIN_RECORDING_RATE_HZ * (1.0 - MIN_RATE_TOLERANCE):
        raise RecordingError(
            f"{recording.name}: recorded at {rate:.3g} Hz: ingest takes {MIN_RECORDING_RATE_HZ:.0f}-"
            f"{MAX_RECORDING_RATE_HZ:.0f} Hz (record the IMU at 10 Hz or more)"
        )
    # A 10 Hz logger's jittery clock measures 9.9 Hz: declared as the 10 Hz it is, which its sample counts fit.
    declared_rate = max(rate, MIN_RECORDING_RATE_HZ)
    count = max(1, math.ceil((recording.duration_s + 1.0 / max(rate, 1.0)) / upload_seconds - 1e-9))
    uploads: list[upload_pb2.Upload] = []
    for index in range(count):
        begin, end = index * upload_seconds, (index + 1) * upload_seconds
        inside = (recording.times_s >= begin) & (recording.times_s < end)
        offsets_us = np.round((recording.times_s[inside] - begin) * 1e6).astype(np.uint64)
        accel = recording.accel[inside].astype(np.float32)
        imu = upload_pb2.ImuSamples(
            offset_us=offsets_us.tolist(),
            accel_x=accel[:, 0].tolist(),
            accel_y=accel[:, 1].tolist(),
            accel_z=accel[:, 2].tolist(),
        )
        if recording.gyro is not None:
            gyro = recording.gyro[inside].astype(np.float32)
            imu.gyro_x.extend(gyro[:, 0].tolist())
            imu.gyro_y.extend(gyro[:, 1].tolist())
            imu.gyro_z.extend(gyro[:, 2].tolist())
        fixes = (recording.gps_times_s >= begin) & (recording.gps_times_s < end)
        gps = [
            upload_pb2.GpsFix(
                offset_ms=round((float(time) - begin) * 1000.0),
                latitude=float(latitude),
                longitude=float(longitude),
                speed_mps=float(speed),
                heading_deg=float(heading),
                hdop=1.0,
            )
            for time, latitude, longitude, speed, heading in zip(
                recording.gps_times_s[fixes],
                recording.latitude[fixes],
                recording.longitude[fixes],
                recording.speed_mps[fixes],
                recording.heading_deg[fixes],
                strict=True,
            )
        ]
        if not np.any(inside) and not np.any(fixes):
            continue
        sequence = first_sequence + len(uploads)
        uploads.append(
            upload_pb2.Upload(
                upload_id=stable_event_id("replay", device_id, trip_id, sequence),
                device_id=device_id,
                driver_id=driver_id or device_id,
                trip_id=trip_id,
                sequence=sequence,
                trip_end=False,
                firmware_version=firmware_version,
                sample_rate_hz=round(declared_rate),
                sample_rate_exact_hz=round(declared_rate, 3),
                started_at=timestamp_from_seconds(started_at_s + begin),
                imu=imu,
                gps=gps,
                vehicle_type=vehicle_type,
                acceleration_kind=(
                    upload_pb2.ACCELERATION_KIND_LINEAR
                    if recording.linear_acceleration
                    else upload_pb2.ACCELERATION_KIND_GRAVITY_INCLUDED
                ),
                gyroscope=upload_pb2.GYROSCOPE_PRESENT if recording.gyro is not None else upload_pb2.GYROSCOPE_ABSENT,
            )
        )
    if uploads:
        uploads[-1].trip_end = True
    return uploads


def received(upload: upload_pb2.Upload) -> upload_pb2.UploadReceived:
    """The event ingest would publish for an accepted upload (for in-process evaluation)."""
    return upload_pb2.UploadReceived(event_id=stable_event_id("received", upload.upload_id), upload=upload)
