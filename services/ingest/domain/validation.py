"""Validation rules for one device upload, as pure functions returning `Violation`s.

The rules read the protobuf `Upload` directly rather than a dataclass copy: an
upload carries thousands of floats, which numpy reads from the repeated fields
in microseconds while a Python loop over them takes the better part of a millisecond.
Each rule returns the violations it found (at most one per field, the first bad
index), so the device gets a precise, machine-readable reason.

The IMU rules, in docs/devices.md ("IMU samples") for device makers: any rate in
[`min_sample_rate_hz`, `max_sample_rate_hz`] (fractional ones in `sample_rate_exact_hz`),
sample times in `offset_us` or `offset_ms`, strictly increasing, spanning at most
`max_upload_duration_s`, and about as many samples as the rate gives over that span.

Every value is checked against its range here, so nothing downstream meets one it cannot handle:
each Timestamp or Duration in the upload holds what its type can (`ToDatetime` raised on others, in
the raw archive's batch), every sample time (IMU and GPS) lies within the upload and not in the
future, and `sequence` is at most `max_sequence` (its jump past the trip is checked with the claim).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from michi.contracts.v1 import common_pb2, upload_pb2
from michi.edge.calibration_state import StateRefused, sums_from_json

# Ids become Redis keys and blob paths, so a name made only of dots ("." or "..") is refused too.
ID_PATTERN = re.compile(r"(?!\.+$)[A-Za-z0-9._:-]{1,128}")
# Media names in an upload must be names `PUT /v1/uploads/{upload_id}/media/{name}` accepts.
MEDIA_NAME_PATTERN = re.compile(r"(?!\.+$)[A-Za-z0-9._-]{1,64}")
MAX_ID_LENGTH = 128
MAX_TEXT_LENGTH = 128
MAX_MEDIA_NAMES = 32

REQUIRED_IDS = ("upload_id", "device_id", "trip_id", "driver_id")
# Every other string of an upload is free text the device controls (`firmware_version`, `vehicle_type`, and
# any added later, found from the schema so none is forgotten); `media_names` has its own pattern. Free text
# reaches logs, tables, Parquet and people's screens, so it is bounded and printable (`str.isprintable`: no
# control, format, separator other than the space, surrogate, private-use or unassigned code points).
TEXT_FIELDS = tuple(
    field.name
    for field in upload_pb2.Upload.DESCRIPTOR.fields
    if field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated and field.name not in REQUIRED_IDS
)
ACCELEROMETER_ARRAYS = ("accel_x", "accel_y", "accel_z")
GYROSCOPE_ARRAYS = ("gyro_x", "gyro_y", "gyro_z")
IMU_ARRAYS = ACCELEROMETER_ARRAYS + GYROSCOPE_ARRAYS
# Up to this many GPS fixes (10 in a 10 s upload at 1 Hz) a plain loop checks them faster than numpy.
FEW_GPS_FIXES = 64
# Proto3 keeps enum numbers it does not know; ingest refuses them rather than guess what the arrays hold.
ACCELERATION_KINDS = {number: name for name, number in upload_pb2.AccelerationKind.items()}
GYROSCOPE_STATES = {number: name for name, number in upload_pb2.Gyroscope.items()}
# The sample count must fit the declared rate over the samples' span: expected = span x rate + 1, and
# the count may be up to 1.25 x expected + 2 (a clock running fast, ±5 % timestamp jitter) and down to
# 0.5 x expected - 2 (dropped samples, up to half of them). Outside that the rate or the times are wrong.
MOST_SAMPLES_PER_EXPECTED = 1.25
FEWEST_SAMPLES_PER_EXPECTED = 0.5
SAMPLE_COUNT_SLACK = 2
# offset_ms sent next to offset_us (for readers that know only it) may be truncated or rounded.
OFFSET_AGREEMENT_US = 1000
# offset_us counts the times offset_ms counts, finer: no later than offset_ms can say (2^32 - 1 ms, 49 days),
# so readers may add it to started_at in int64 nanoseconds.
MAX_OFFSET_US = (2**32 - 1) * 1000
MICROSECONDS_PER = {"offset_us": 1_000_000, "offset_ms": 1_000}
UNITS = {"offset_us": "µs", "offset_ms": "ms"}
# Sample times (IMU and GPS) lie within the longest upload after started_at, plus this much: the first
# sample may come a little after started_at. Beyond it an offset says a time the upload does not cover.
FIRST_SAMPLE_DELAY_S = 10.0

# Events-only uploads (`Upload.edge`, docs/edge.md): a window is 2 s and windows start every second, so an
# upload of at most `max_upload_duration_s` holds at most that many windows, and calls are among them.
EDGE_WINDOW_S = 2.0
EDGE_WINDOW_HOP_S = 1.0
# The risk model's classes (normal, braking, acceleration, cornering, confounder): probabilities per call and
# windows_per_class have one value per class.
EDGE_CLASS_COUNT = 5
# The widest packed feature row (features-4's 26 float32); a narrower one is a device on an older list.
EDGE_MAX_FEATURES = 26
EDGE_CALL_TYPES = {
    common_pb2.EVENT_TYPE_UNSPECIFIED,
    common_pb2.EVENT_TYPE_HARSH_BRAKING,
    common_pb2.EVENT_TYPE_HARSH_ACCELERATION,
    common_pb2.EVENT_TYPE_HARSH_CORNERING,
}
CALIBRATION_STATES = {number: name for name, number in common_pb2.CalibrationState.items()}
# The report's strings: ids (the registry's model name and version) and bounded printable text.
EDGE_IDS = ("edge.model.name", "edge.model.version")
EDGE_TEXT_FIELDS = (
    "edge.model.data_version",
    "edge.model.bundle_sha256",
    "edge.model.precision",
    "edge.calibration.forward_method",
)
# Strings that hold a document of their own, checked by their own rule (`check_device_calibration`).
DOCUMENT_FIELDS = ("device_calibration.sums_json",)

# The protobuf well-known types' own ranges (google/protobuf/timestamp.proto, duration.proto): a value
# outside them cannot be converted (ToDatetime raises), so it is refused at the door, in any field.
TIMESTAMP_TYPE = "google.protobuf.Timestamp"
DURATION_TYPE = "google.protobuf.Duration"
MIN_TIMESTAMP_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_DURATION_SECONDS = 315_576_000_000  # 10,000 years
MAX_NANOS = 999_999_999


@dataclass(frozen=True)
class Violation:
    """One broken rule: the proto field path (or None), a kebab-case reason, a human detail."""

    field: str | None
    reason: str
    detail: str


@dataclass(frozen=True)
class UploadLimits:
    """The bounds an upload must respect (from `IngestSettings`)."""

    # Any IMU rate in this range is accepted, fractional ones included.
    min_sample_rate_hz: float = 10.0
    max_sample_rate_hz: float = 400.0
    # An operator's allow-list of whole rates within the range; empty: any rate in the range.
    sample_rates_hz: frozenset[int] = frozenset()
    # The longest span of one upload's IMU samples, and the most samples (that span at the highest rate).
    max_upload_duration_s: float = 240.0
    max_samples: int = 400 * 60
    max_gps_fixes: int = 10 * 60
    max_future_skew_s: float = 5 * 60
    max_age_s: float = 7 * 24 * 60 * 60
    # The highest `sequence` of a trip: 8,640 is a day of 10 s uploads (a far sequence is also an
    # incomplete trip with that many missing uploads; scoring's state stays bounded whatever it is).
    max_sequence: int = 8_640
    # Per axis. A vehicle crash peaks around 100 m/s^2; beyond this the sensor is broken.
    max_abs_accel_mps2: float = 160.0
    max_abs_gyro_radps: float = 35.0
    max_speed_mps: float = 90.0
    sample_rates_text: str = field(init=False, default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "sample_rates_text", ", ".join(str(rate) for rate in sorted(self.sample_rates_hz)))


def declared_sample_rate_hz(upload: upload_pb2.Upload) -> float:
    """The IMU rate an upload declares: `sample_rate_exact_hz` when set (> 0), else `sample_rate_hz`."""
    exact = upload.sample_rate_exact_hz
    return exact if exact > 0 else float(upload.sample_rate_hz)


def imu_times_field(imu: upload_pb2.ImuSamples) -> str:
    """The array holding the sample times: `offset_us` when the device sent it, else `offset_ms`."""
    return "offset_us" if imu.offset_us else "offset_ms"


def imu_sample_count(imu: upload_pb2.ImuSamples) -> int:
    """How many IMU samples an upload carries (the length of its time array)."""
    return len(imu.offset_us) or len(imu.offset_ms)


def check_ids(upload: upload_pb2.Upload) -> list[Violation]:
    violations = []
    for name in REQUIRED_IDS:
        value: str = getattr(upload, name)
        if not value:
            violations.append(Violation(name, "required-field-missing", f"{name} is required"))
        elif ID_PATTERN.fullmatch(value) is None:
            violations.append(
                Violation(name, "invalid-id", f"{name} must be 1-{MAX_ID_LENGTH} characters of A-Z a-z 0-9 . _ : -")
            )
    return violations


def text_problem(value: str, max_length: int = MAX_TEXT_LENGTH) -> tuple[str, str] | None:
    """(reason, detail) when free text is too long (`value-too-long`) or not printable (`invalid-text`)."""
    if len(value) > max_length:
        return "value-too-long", f"exceeds {max_length} characters"
    if not value.isprintable():
        index, character = next((i, c) for i, c in enumerate(value) if not c.isprintable())
        # The code point, never the character itself: it may be a terminal escape or invisible.
        return "invalid-text", f"character {index} (U+{ord(character):04X}) is not printable"
    return None


def check_text_fields(upload: upload_pb2.Upload) -> list[Violation]:
    violations = []
    for name in TEXT_FIELDS:
        problem = text_problem(getattr(upload, name))
        if problem is not None:
            violations.append(Violation(name, problem[0], f"{name} {problem[1]}"))
    if len(upload.media_names) > MAX_MEDIA_NAMES:
        violations.append(Violation("media_names", "too-many-media-names", f"at most {MAX_MEDIA_NAMES} media names"))
    for index, name in enumerate(upload.media_names):
        if MEDIA_NAME_PATTERN.fullmatch(name) is None:
            violations.append(
                Violation(f"media_names[{index}]", "invalid-id", "media names are 1-64 characters of A-Z a-z 0-9 . _ -")
            )
            break
    return violations


def _well_known_paths(descriptor: Any, outer: frozenset[str] = frozenset()) -> list[tuple[FieldDescriptor, ...]]:
    """Every path of fields from `descriptor` down to a Timestamp or Duration field (recursive types once)."""
    paths: list[tuple[FieldDescriptor, ...]] = []
    for field_descriptor in descriptor.fields:
        inner = field_descriptor.message_type
        if inner is None:
            continue
        if inner.full_name in (TIMESTAMP_TYPE, DURATION_TYPE):
            paths.append((field_descriptor,))
        elif inner.full_name not in outer:
            for path in _well_known_paths(inner, outer | {descriptor.full_name}):
                paths.append((field_descriptor, *path))
    return paths


# Found once from the schema: today only `started_at`, but a Timestamp or Duration added anywhere in
# an Upload (or in a message it holds) is checked without anyone remembering to.
WELL_KNOWN_PATHS = _well_known_paths(upload_pb2.Upload.DESCRIPTOR)


def _present(message: Message, path: tuple[FieldDescriptor, ...], prefix: str = "") -> Iterator[tuple[str, Message]]:
    """(proto path, message) of each value present at `path` (repeated fields give one per element)."""
    head, rest = path[0], path[1:]
    name = f"{prefix}{head.name}"
    if head.is_repeated:
        values: list[tuple[str, Message]] = [
            (f"{name}[{index}]", value) for index, value in enumerate(getattr(message, head.name))
        ]
    elif message.HasField(head.name):
        values = [(name, getattr(message, head.name))]
    else:
        values = []
    for value_path, value in values:
        if rest:
            yield from _present(value, rest, f"{value_path}.")
        else:
            yield value_path, value


def timestamp_problem(stamp: Message) -> tuple[str, str] | None:
    """(sub-field, detail) when a Timestamp is outside what Timestamp can hold, else None."""
    seconds, nanos = stamp.seconds, stamp.nanos  # type: ignore[attr-defined]
    if not 0 <= nanos <= MAX_NANOS:
        return "nanos", f"nanos {nanos} is outside 0-{MAX_NANOS}"
    if not MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS:
        return "seconds", f"seconds {seconds} is outside {MIN_TIMESTAMP_SECONDS}-{MAX_TIMESTAMP_SECONDS} (years 1-9999)"
    return None


def duration_problem(duration: Message) -> tuple[str, str] | None:
    """(sub-field, detail) when a Duration is outside what Duration can hold, else None."""
    seconds, nanos = duration.seconds, duration.nanos  # type: ignore[attr-defined]
    if not -MAX_NANOS <= nanos <= MAX_NANOS:
        return "nanos", f"nanos {nanos} is outside -{MAX_NANOS}-{MAX_NANOS}"
    if not -MAX_DURATION_SECONDS <= seconds <= MAX_DURATION_SECONDS:
        return "seconds", f"seconds {seconds} is outside ±{MAX_DURATION_SECONDS} (10,000 years)"
    if (seconds < 0 < nanos) or (nanos < 0 < seconds):
        return "nanos", f"nanos {nanos} and seconds {seconds} have different signs"
    return None


def check_well_known_types(upload: upload_pb2.Upload) -> list[Violation]:
    """Every Timestamp and Duration present in the upload is one its type can hold."""
    violations = []
    for path in WELL_KNOWN_PATHS:
        is_timestamp = path[-1].message_type is not None and path[-1].message_type.full_name == TIMESTAMP_TYPE
        for value_path, value in _present(upload, path):
            problem = timestamp_problem(value) if is_timestamp else duration_problem(value)
            if problem is not None:
                part, detail = problem
                kind = "timestamp" if is_timestamp else "duration"
                violations.append(Violation(f"{value_path}.{part}", f"invalid-{kind}", f"{value_path}: {detail}"))
    return violations


def check_started_at(upload: upload_pb2.Upload, now_s: float, limits: UploadLimits) -> list[Violation]:
    if not upload.HasField("started_at"):
        return [Violation("started_at", "required-field-missing", "started_at is required")]
    if timestamp_problem(upload.started_at) is not None:
        return []  # invalid-timestamp (check_well_known_types)
    started = upload.started_at.seconds + upload.started_at.nanos / 1e9
    if started > now_s + limits.max_future_skew_s:
        return [
            Violation(
                "started_at",
                "started-at-in-future",
                f"started_at is {started - now_s:.0f} s ahead of the server clock"
                f" (limit {limits.max_future_skew_s:.0f} s)",
            )
        ]
    if started < now_s - limits.max_age_s:
        return [Violation("started_at", "started-at-too-old", f"started_at is older than {limits.max_age_s:.0f} s")]
    return []


def check_sequence(upload: upload_pb2.Upload, limits: UploadLimits) -> list[Violation]:
    """At most `max_sequence` (the jump past the trip's highest accepted sequence is the claim's to check)."""
    if upload.sequence > limits.max_sequence:
        return [
            Violation(
                "sequence",
                "sequence-too-high",
                f"sequence {upload.sequence} is above {limits.max_sequence}, the most uploads one trip may have;"
                " start a new trip_id",
            )
        ]
    return []


def check_upload_end(upload: upload_pb2.Upload, now_s: float, limits: UploadLimits) -> list[Violation]:
    """The last sample (IMU or GPS) was recorded before the server's now (with the clock skew allowed).

    A device sends an upload once it is recorded, so its last sample is in the device's past; the
    same skew as for started_at is allowed. Times out of order or beyond the upload are refused by
    their own rules; this reads the last times only.
    """
    if not upload.HasField("started_at") or timestamp_problem(upload.started_at) is not None:
        return []
    started = upload.started_at.seconds + upload.started_at.nanos / 1e9
    if started > now_s + limits.max_future_skew_s:
        return []  # started-at-in-future says it already
    imu = upload.imu
    times_name = imu_times_field(imu)
    times = getattr(imu, times_name)
    ends: list[tuple[float, str]] = []
    if times:
        ends.append((int(times[-1]) / MICROSECONDS_PER[times_name], f"imu.{times_name}[{len(times) - 1}]"))
    if upload.gps:
        ends.append((upload.gps[-1].offset_ms / 1000, f"gps[{len(upload.gps) - 1}].offset_ms"))
    if upload.HasField("edge") and math.isfinite(upload.edge.duration_s):
        ends.append((float(upload.edge.duration_s), "edge.duration_s"))
    # An offset beyond the upload is refused as such (offset-too-large, value-out-of-range).
    ends = [
        (offset_s, path) for offset_s, path in ends if offset_s <= limits.max_upload_duration_s + FIRST_SAMPLE_DELAY_S
    ]
    if not ends:
        return []
    offset_s, path = max(ends)
    ahead_s = started + offset_s - now_s
    if ahead_s > limits.max_future_skew_s:
        return [
            Violation(
                path,
                "sample-in-future",
                f"this sample is {ahead_s:.0f} s ahead of the server clock (limit {limits.max_future_skew_s:.0f} s)",
            )
        ]
    return []


def check_sample_rate(upload: upload_pb2.Upload, limits: UploadLimits) -> list[Violation]:
    """The declared rate: finite, in range, on the allow-list if there is one, both fields agreeing."""
    exact = upload.sample_rate_exact_hz
    whole = upload.sample_rate_hz
    if exact != 0:
        if not math.isfinite(exact):
            return [Violation("sample_rate_exact_hz", "non-finite-value", f"{exact} is not a finite number")]
        if exact < 0:
            return [
                Violation(
                    "sample_rate_exact_hz",
                    "unsupported-sample-rate",
                    f"sample_rate_exact_hz {exact:g} is negative; send 0 to use sample_rate_hz",
                )
            ]
        # sample_rate_hz is for readers that know only whole rates: the exact rate rounded, or 0.
        if whole != 0 and abs(whole - exact) > 1:
            return [
                Violation(
                    "sample_rate_hz",
                    "sample-rate-mismatch",
                    f"sample_rate_hz {whole} disagrees with sample_rate_exact_hz {exact:g};"
                    f" send {round(exact)} (the exact rate rounded) or 0",
                )
            ]
    name = "sample_rate_exact_hz" if exact > 0 else "sample_rate_hz"
    rate = declared_sample_rate_hz(upload)
    if not limits.min_sample_rate_hz <= rate <= limits.max_sample_rate_hz:
        return [
            Violation(
                name,
                "unsupported-sample-rate",
                f"{name} {rate:g} Hz is outside {limits.min_sample_rate_hz:g}-{limits.max_sample_rate_hz:g} Hz",
            )
        ]
    # A float equal to a whole number finds it in the set (50.0 in {50}); 16.7 does not.
    if limits.sample_rates_hz and rate not in limits.sample_rates_hz:
        return [
            Violation(
                name,
                "unsupported-sample-rate",
                f"{name} {rate:g} Hz is not one of the rates this ingest accepts: {limits.sample_rates_text}",
            )
        ]
    return []


def check_sensor_kinds(upload: upload_pb2.Upload) -> list[Violation]:
    """`acceleration_kind` and `gyroscope` hold values this ingest knows."""
    violations = []
    for name, known in (("acceleration_kind", ACCELERATION_KINDS), ("gyroscope", GYROSCOPE_STATES)):
        number: int = getattr(upload, name)
        if number not in known:
            choices = ", ".join(f"{value} ({label})" for value, label in known.items())
            violations.append(Violation(name, "unknown-enum-value", f"{name} {number} is not one of {choices}"))
    return violations


def check_imu(upload: upload_pb2.Upload, limits: UploadLimits) -> list[Violation]:
    """Lengths, count, strictly increasing times, span, count against rate, finite values, plausible magnitudes."""
    return check_imu_samples(upload, upload.imu, "imu", limits)


def check_imu_samples(
    upload: upload_pb2.Upload, imu: upload_pb2.ImuSamples, path: str, limits: UploadLimits
) -> list[Violation]:
    """The IMU rules for `imu` at proto path `path`: the upload's samples, or an edge call's snippet.

    The upload gives the declared rate and whether it has a gyroscope; times count from its started_at.
    """
    times_name = imu_times_field(imu)
    times = getattr(imu, times_name)
    count = len(times)
    # A device without a gyroscope may leave the three gyro arrays empty (all three, not one of them).
    without_gyroscope = upload.gyroscope == upload_pb2.GYROSCOPE_ABSENT and not (imu.gyro_x or imu.gyro_y or imu.gyro_z)
    arrays = ACCELEROMETER_ARRAYS if without_gyroscope else IMU_ARRAYS
    # offset_ms may ride along offset_us for readers that know only it; then it has every sample.
    companion = ("offset_ms",) if times_name == "offset_us" and imu.offset_ms else ()
    for name in (*companion, *arrays):
        length = len(getattr(imu, name))
        if length != count:
            hint = (
                " (a device without a gyroscope sends gyroscope = GYROSCOPE_ABSENT)"
                if length == 0 and name in GYROSCOPE_ARRAYS
                else ""
            )
            return [
                Violation(
                    f"{path}.{name}",
                    "imu-length-mismatch",
                    f"{path}.{name} has {length} values, {path}.{times_name} has {count}{hint}",
                )
            ]
    if count > limits.max_samples:
        return [
            Violation(f"{path}.{times_name}", "too-many-samples", f"{count} IMU samples, at most {limits.max_samples}")
        ]
    if count == 0:
        return []
    violations = _check_sample_times(upload, imu, path, times_name, limits)
    # One row per axis (the fields are float32 already): one reduction per row when all is well.
    # NaN fails the comparison, so a row with one is looked into.
    values = np.array([getattr(imu, name) for name in arrays], dtype=np.float32)
    bounds = [limits.max_abs_accel_mps2] * 3 + [limits.max_abs_gyro_radps] * 3
    peaks = np.abs(values).max(axis=1)
    for row, (name, limit) in enumerate(zip(arrays, bounds[: len(arrays)], strict=True)):
        if peaks[row] <= limit:
            continue
        violation = _check_bounded_floats(f"{path}.{name}[{{index}}]", values[row], -limit, limit)
        if violation is not None:
            violations.append(violation)
    return violations


def check_edge(upload: upload_pb2.Upload, limits: UploadLimits) -> list[Violation]:
    """An events-only upload's `edge` report (docs/edge.md): without samples, bounded, consistent.

    Each call's snippet of raw samples follows the IMU rules of an upload (`check_imu_samples`), and all
    snippets together hold at most `max_samples`, the bound of one upload's samples.
    """
    if not upload.HasField("edge"):
        return []
    edge = upload.edge
    if imu_sample_count(upload.imu) or any(getattr(upload.imu, name) for name in IMU_ARRAYS):
        return [
            Violation(
                "imu",
                "edge-with-samples",
                "an upload carries either IMU samples or an edge report, not both (send the samples without edge)",
            )
        ]
    violations = _check_edge_model(upload)
    state = edge.calibration.state
    if state not in CALIBRATION_STATES:
        choices = ", ".join(f"{value} ({label})" for value, label in CALIBRATION_STATES.items())
        violations.append(
            Violation("edge.calibration.state", "unknown-enum-value", f"state {state} is not one of {choices}")
        )
    for name in ("gravity_confidence", "forward_confidence"):
        violation = _check_bounded_floats(f"edge.calibration.{name}", [getattr(edge.calibration, name)], 0.0, 1.0)
        if violation is not None:
            violations.append(violation)
    duration = edge.duration_s
    if not math.isfinite(duration):
        return [*violations, Violation("edge.duration_s", "non-finite-value", f"{duration} is not a finite number")]
    if not 0 < duration <= limits.max_upload_duration_s:
        return [
            *violations,
            Violation(
                "edge.duration_s",
                "value-out-of-range",
                f"duration_s {duration:g} is outside (0, {limits.max_upload_duration_s:g}] s",
            ),
        ]
    most_windows = math.floor(limits.max_upload_duration_s / EDGE_WINDOW_HOP_S)
    if edge.windows > most_windows:
        violations.append(
            Violation("edge.windows", "value-out-of-range", f"windows {edge.windows} is above {most_windows}")
        )
    counts = list(edge.windows_per_class)
    if counts and (len(counts) != EDGE_CLASS_COUNT or sum(counts) != edge.windows):
        violations.append(
            Violation(
                "edge.windows_per_class",
                "edge-counts-inconsistent",
                f"windows_per_class must hold {EDGE_CLASS_COUNT} counts adding up to windows ({edge.windows});"
                f" it holds {len(counts)} adding up to {sum(counts)}",
            )
        )
    most_calls = min(edge.windows, most_windows)
    if len(edge.calls) > most_calls:
        return [
            *violations,
            Violation(
                "edge.calls",
                "too-many-calls",
                f"{len(edge.calls)} calls, at most {most_calls} (the windows scored, at most {most_windows})",
            ),
        ]
    return violations + _check_edge_calls(upload, duration, limits)


def check_device_calibration(upload: upload_pb2.Upload) -> list[Violation]:
    """The device's calibration sums on an upload sent in full (docs/edge.md): only with samples, at most 16 KiB,
    a JSON object of `CalibrationSums`' shape with finite numbers — what inference will fold the upload from.

    Without samples there is nothing to fold (an events-only upload carries the summary its calls were made
    with), so the sums are refused rather than carried and ignored.
    """
    if not upload.HasField("device_calibration"):
        return []
    if not imu_sample_count(upload.imu):
        return [
            Violation(
                "device_calibration",
                "device-calibration-without-samples",
                "device_calibration goes with the upload's IMU samples (an upload sent in full), not without",
            )
        ]
    (path,) = DOCUMENT_FIELDS
    text = upload.device_calibration.sums_json
    if not text:
        return [Violation(path, "required-field-missing", f"{path} is required when device_calibration is set")]
    try:
        sums_from_json(text)
    except StateRefused as refused:
        return [Violation(path, refused.reason, f"{path}: {refused}")]
    return []


def _string_at(message: Message, path: str) -> str:
    """The string at a dotted proto path (`edge.model.name`)."""
    value: Any = message
    for name in path.split("."):
        value = getattr(value, name)
    return str(value)


def _check_edge_model(upload: upload_pb2.Upload) -> list[Violation]:
    """The report's ids and texts, by the rules of the upload's own."""
    violations = []
    for path in EDGE_IDS:
        value = _string_at(upload, path)
        if not value:
            violations.append(Violation(path, "required-field-missing", f"{path} is required"))
        elif ID_PATTERN.fullmatch(value) is None:
            violations.append(
                Violation(path, "invalid-id", f"{path} must be 1-{MAX_ID_LENGTH} characters of A-Z a-z 0-9 . _ : -")
            )
    for path in EDGE_TEXT_FIELDS:
        problem = text_problem(_string_at(upload, path))
        if problem is not None:
            violations.append(Violation(path, problem[0], f"{path} {problem[1]}"))
    return violations


def _check_edge_calls(upload: upload_pb2.Upload, duration_s: float, limits: UploadLimits) -> list[Violation]:
    """Each call: a window inside the upload, after the previous one; its type, probabilities, features, snippet."""
    violations: list[Violation] = []
    previous = -math.inf
    samples = 0
    for index, call in enumerate(upload.edge.calls):
        at = f"edge.calls[{index}]"
        start = call.start_offset_s
        if not math.isfinite(start):
            return [Violation(f"{at}.start_offset_s", "non-finite-value", f"{start} is not a finite number")]
        # A window lies within the upload (a millisecond of rounding allowed) and on the hop grid's order.
        if not -1e-3 <= start <= duration_s - EDGE_WINDOW_S + 1e-3:
            return [
                Violation(
                    f"{at}.start_offset_s",
                    "value-out-of-range",
                    f"a {EDGE_WINDOW_S:g} s window starting at {start:g} s is not within the upload's {duration_s:g} s",
                )
            ]
        if start <= previous:
            return [
                Violation(
                    f"{at}.start_offset_s", "offset-not-increasing", f"start {start:g} s does not follow {previous:g} s"
                )
            ]
        previous = start
        if call.event_type not in EDGE_CALL_TYPES:
            return [
                Violation(
                    f"{at}.event_type",
                    "unknown-enum-value",
                    f"event_type {call.event_type} is not a risky type the model calls, nor EVENT_TYPE_UNSPECIFIED",
                )
            ]
        if len(call.probabilities) != EDGE_CLASS_COUNT:
            return [
                Violation(
                    f"{at}.probabilities",
                    "value-out-of-range",
                    f"{len(call.probabilities)} probabilities, one per class ({EDGE_CLASS_COUNT}) expected",
                )
            ]
        violation = _check_bounded_floats(f"{at}.probabilities[{{index}}]", call.probabilities, 0.0, 1.0)
        if violation is not None:
            return [violation]
        packed = call.packed_features
        if len(packed) % 4 or len(packed) > 4 * EDGE_MAX_FEATURES:
            return [
                Violation(
                    f"{at}.packed_features",
                    "invalid-packed-features",
                    f"{len(packed)} bytes: at most {EDGE_MAX_FEATURES} float32 values (4 bytes each) expected",
                )
            ]
        features = np.frombuffer(packed, dtype="<f4")
        if features.size and not np.isfinite(features).all():
            index_bad = int(np.argmin(np.isfinite(features)))
            return [
                Violation(f"{at}.packed_features", "non-finite-value", f"feature {index_bad} is not a finite number")
            ]
        snippet = check_imu_samples(upload, call.imu, f"{at}.imu", limits)
        if snippet:
            return snippet
        samples += imu_sample_count(call.imu)
        if samples > limits.max_samples:
            return [
                Violation(
                    f"{at}.imu",
                    "too-many-samples",
                    f"the calls' snippets hold over {limits.max_samples} IMU samples, the most one upload may hold",
                )
            ]
    return violations


def _check_sample_times(
    upload: upload_pb2.Upload, imu: upload_pb2.ImuSamples, path: str, times_name: str, limits: UploadLimits
) -> list[Violation]:
    """Times increase strictly and agree with offset_ms; their span and count fit the upload and its rate."""
    times = getattr(imu, times_name)
    unit = UNITS[times_name]
    # uint64 for offset_us: every value a device may send compares exactly.
    steps = np.asarray(times, dtype=np.uint64 if times_name == "offset_us" else np.int64)
    if len(times) > 1:
        increases = steps[1:] > steps[:-1]
        if not increases.all():
            index = int(np.argmin(increases)) + 1
            return [
                Violation(
                    f"{path}.{times_name}[{index}]",
                    "offset-not-increasing",
                    f"offset {times[index]} {unit} does not follow {times[index - 1]} {unit}",
                )
            ]
    if times_name == "offset_us" and times[-1] > MAX_OFFSET_US:
        index = int(np.argmax(steps > MAX_OFFSET_US))
        return [
            Violation(
                f"{path}.offset_us[{index}]",
                "value-out-of-range",
                f"offset {times[index]} µs is beyond {MAX_OFFSET_US} µs (what offset_ms can say)",
            )
        ]
    violations = []
    if times_name == "offset_us" and imu.offset_ms:
        # Below MAX_OFFSET_US (< 2^53) float64 holds every offset exactly.
        gaps = np.abs(np.asarray(imu.offset_ms, dtype=np.float64) * 1000.0 - steps.astype(np.float64))
        if gaps.max() > OFFSET_AGREEMENT_US:
            index = int(np.argmax(gaps > OFFSET_AGREEMENT_US))
            violations.append(
                Violation(
                    f"{path}.offset_ms[{index}]",
                    "imu-offsets-disagree",
                    f"offset_ms {imu.offset_ms[index]} ms is more than 1 ms from offset_us {times[index]} µs",
                )
            )
    span_s = (int(times[-1]) - int(times[0])) / MICROSECONDS_PER[times_name]
    latest_s = limits.max_upload_duration_s + FIRST_SAMPLE_DELAY_S
    latest = latest_s * MICROSECONDS_PER[times_name]  # in the array's unit
    if span_s > limits.max_upload_duration_s:
        violations.append(
            Violation(
                f"{path}.{times_name}",
                "upload-too-long",
                f"the IMU samples span {span_s:g} s, at most {limits.max_upload_duration_s:g} s per upload",
            )
        )
    elif int(times[-1]) > latest:
        index = int(np.argmax(steps > latest))
        violations.append(
            Violation(
                f"{path}.{times_name}[{index}]",
                "offset-too-large",
                f"offset {times[index]} {unit} is more than {latest_s:g} s after started_at"
                f" (an upload spans at most {limits.max_upload_duration_s:g} s)",
            )
        )
    elif not check_sample_rate(upload, limits):
        violation = _check_sample_count(len(times), span_s, declared_sample_rate_hz(upload), f"{path}.{times_name}")
        if violation is not None:
            violations.append(violation)
    return violations


def _check_sample_count(count: int, span_s: float, rate_hz: float, path: str) -> Violation | None:
    """About as many samples as `rate_hz` gives over `span_s` (see MOST_SAMPLES_PER_EXPECTED)."""
    expected = span_s * rate_hz + 1
    most = MOST_SAMPLES_PER_EXPECTED * expected + SAMPLE_COUNT_SLACK
    fewest = FEWEST_SAMPLES_PER_EXPECTED * expected - SAMPLE_COUNT_SLACK
    if fewest <= count <= most:
        return None
    if count > most:
        detail = f"at most {math.floor(most)} at {rate_hz:g} Hz"
    else:
        detail = f"at least {math.ceil(fewest)} at {rate_hz:g} Hz (more than half of them missing)"
    return Violation(
        path,
        "sample-count-inconsistent-with-rate",
        f"{count} IMU samples over {span_s:g} s where about {expected:.0f} are expected, {detail}",
    )


def check_gps(upload: upload_pb2.Upload, limits: UploadLimits) -> list[Violation]:
    fixes = upload.gps
    if len(fixes) > limits.max_gps_fixes:
        return [Violation("gps", "too-many-gps-fixes", f"{len(fixes)} GPS fixes, at most {limits.max_gps_fixes}")]
    if not fixes:
        return []
    bounds = (
        ("latitude", -90.0, 90.0),
        ("longitude", -180.0, 180.0),
        ("speed_mps", 0.0, limits.max_speed_mps),
        ("heading_deg", -360.0, 360.0),
        ("hdop", 0.0, 1000.0),
    )
    latest_ms = (limits.max_upload_duration_s + FIRST_SAMPLE_DELAY_S) * 1000
    if (
        len(fixes) <= FEW_GPS_FIXES
        and fixes[-1].offset_ms <= latest_ms
        and _plausible_fixes(fixes, limits.max_speed_mps)
    ):
        return []
    violations: list[Violation] = []
    previous_offset = -1
    for index, fix in enumerate(fixes):
        if fix.offset_ms < previous_offset:
            violations.append(
                Violation(
                    f"gps[{index}].offset_ms",
                    "gps-offset-decreasing",
                    f"offset {fix.offset_ms} ms comes after {previous_offset} ms",
                )
            )
            break
        if fix.offset_ms > latest_ms:
            violations.append(
                Violation(
                    f"gps[{index}].offset_ms",
                    "offset-too-large",
                    f"offset {fix.offset_ms} ms is more than {latest_ms / 1000:g} s after started_at"
                    f" (an upload spans at most {limits.max_upload_duration_s:g} s)",
                )
            )
            break
        previous_offset = fix.offset_ms
    # One row per fix, one column per bounded field: two comparisons when all is well (NaN fails both).
    table = np.array(
        [(fix.latitude, fix.longitude, fix.speed_mps, fix.heading_deg, fix.hdop) for fix in fixes], dtype=np.float64
    )
    lows = np.array([low for _, low, _ in bounds])
    highs = np.array([high for _, _, high in bounds])
    if (table >= lows).all() and (table <= highs).all():
        return violations
    for column, (name, low, high) in enumerate(bounds):
        violation = _check_bounded_floats(f"gps[{{index}}].{name}", table[:, column], low, high)
        if violation is not None:
            violations.append(violation)
    return violations


def _plausible_fixes(fixes: Sequence[upload_pb2.GpsFix], max_speed_mps: float) -> bool:
    """True when every fix is in bounds and offsets never decrease (NaN fails every comparison)."""
    previous_offset = -1
    for fix in fixes:
        if not (
            fix.offset_ms >= previous_offset
            and -90.0 <= fix.latitude <= 90.0
            and -180.0 <= fix.longitude <= 180.0
            and 0.0 <= fix.speed_mps <= max_speed_mps
            and -360.0 <= fix.heading_deg <= 360.0
            and 0.0 <= fix.hdop <= 1000.0
        ):
            return False
        previous_offset = fix.offset_ms
    return True


def _check_bounded_floats(
    path_template: str, values: Sequence[float] | np.ndarray, low: float, high: float
) -> Violation | None:
    """The first non-finite or out-of-range value; two vectorised reductions when all is well."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return None
    # NaN makes both comparisons false and inf fails one, so the fast path lets neither through.
    if array.min() >= low and array.max() <= high:
        return None
    finite = np.isfinite(array)
    if not finite.all():
        index = int(np.argmin(finite))
        return Violation(
            path_template.format(index=index), "non-finite-value", f"{array[index]} is not a finite number"
        )
    index = int(np.argmax((array < low) | (array > high)))
    return Violation(
        path_template.format(index=index), "value-out-of-range", f"{array[index]:g} is outside [{low:g}, {high:g}]"
    )


def validate_upload(upload: upload_pb2.Upload, now_s: float, limits: UploadLimits) -> list[Violation]:
    """Every violation of every rule (empty when the upload is acceptable)."""
    return [
        *check_ids(upload),
        *check_text_fields(upload),
        *check_well_known_types(upload),
        *check_started_at(upload, now_s, limits),
        *check_sequence(upload, limits),
        *check_sample_rate(upload, limits),
        *check_sensor_kinds(upload),
        *check_edge(upload, limits),
        *check_device_calibration(upload),
        *check_imu(upload, limits),
        *check_gps(upload, limits),
        *check_upload_end(upload, now_s, limits),
    ]
