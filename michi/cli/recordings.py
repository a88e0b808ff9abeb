"""`michi replay` and `michi evaluate`: a real recording as genuine device uploads, sent or analysed.

    michi replay auckland-forward --target http://127.0.0.1:8080 --speed 0
    michi replay drive.csv --gps-file gps.csv --target http://ingest:8080 --device cam-7 --token "$TOKEN"
    michi replay TotalAcceleration.csv --gyro-file Gyroscope.csv --gps-file Location.csv --target http://ingest:8080
    michi evaluate auckland-forward --labels datasets/real-driving/quat-orient-auckland/annotations.csv
    michi evaluate drive.npz --no-gps --model candidate.onnx --json
    michi evaluate TotalAcceleration.csv --gyro-file Gyroscope.csv --gps-file Location.csv   # an Android logger
    michi evaluate "Sensor Logger 2024-05-01.zip"    # a logger's export: its accelerometer, gyroscope, GPS files
    michi evaluate auckland-backwards --reference    # beside the reference rule (michi.recordings.threshold_rule)
    michi evaluate auckland-backwards --no-gps --gps-truth   # IMU only, judged against the drive's own GPS

A recording is what `michi.recordings.read_recording` reads (a CSV, JSON or NPZ file, or a phone
logger's export: a folder or .zip of per-sensor CSVs) or the short name of one shipped in
datasets/real-driving. `replay` cuts it into the uploads a dashcam would send, with
times rebased to now, and posts them in order to a running ingest through `michi.device_client` (the
simulator's client: retries, `Retry-After`). `evaluate` runs the product's own preprocessing,
calibration and model in this process (`services.inference.handlers.process_uploads`, no servers)
and prints calibration, detections and, against a labels file, the figures of
`michi.recordings.evaluation`; `--gps-truth` judges the detections against what the recording's own
GPS says the vehicle did instead (`michi.recordings.gps_truth`); `--reference` adds the same for the
smoothed-threshold rule of `michi.recordings.threshold_rule` on the same uploads. docs/recordings.md
has the details.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

# What the commands need beyond typer is imported when one runs: numpy, httpx, ONNX Runtime and faust
# would otherwise slow every `michi` invocation down.
if TYPE_CHECKING:
    from michi.recordings import Recording
    from michi.recordings.evaluation import DetectedEvent, Figures
    from michi.recordings.gps_truth import GpsTruth
    from michi.recordings.threshold_rule import ThresholdRule
    from services.inference.handlers import Detector

RECORDING_HELP = (
    "a recording file (CSV, JSON, NPZ), a phone logger's export (a folder or .zip of per-sensor CSVs) "
    "or a shipped recording's short name, e.g. auckland-forward"
)

# How `replay` and `evaluate` are told to read a user's own files (`load_recording`).
COLUMNS_OPTION = typer.Option(
    None, help="CSV columns as JSON (or a .json file; with an export, its files'); see docs/recordings.md"
)
GPS_FILE_OPTION = typer.Option(
    None, help="the GPS CSV that goes with a CSV recording (with an export: read instead of its own)"
)
GYRO_FILE_OPTION = typer.Option(
    None,
    help="the gyroscope CSV that goes with a recording without one (same clock; with an export: read instead "
    "of its own); see docs/recordings.md",
)

EVENT_TYPE_PREFIX = "EVENT_TYPE_"
MODEL_CHOICES = "champion, baseline, physics or a path to an .onnx file"


def _fail(message: str) -> None:
    typer.echo(f"michi: {message}", err=True)
    raise typer.Exit(1)


# --- reading the recording


@dataclass(frozen=True)
class RecordingSource:
    """A recording and what it was read from (labels files name the file by its stem)."""

    recording: Recording
    path: Path

    @property
    def names(self) -> list[str]:
        return [self.path.stem, self.recording.name]

    @property
    def shown_path(self) -> str:
        """The file, relative to the working folder when it is inside it."""
        try:
            return str(self.path.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(self.path)


def _column_mappings(
    columns: str | None,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
    """`--columns` (JSON text or a JSON file): the IMU mapping, the GPS one under "gps", the gyroscope
    file's under "gyroscope"."""
    from michi.recordings import RecordingError

    if columns is None:
        return None, None, None
    text = Path(columns).read_text() if columns.endswith(".json") and Path(columns).exists() else columns
    try:
        mapping = json.loads(text)
    except ValueError as error:
        raise RecordingError(f"--columns is not JSON: {error}") from error
    if not isinstance(mapping, dict):
        raise RecordingError('--columns must be a JSON object, e.g. {"time": "ts", "accel": ["ax", "ay", "az"]}')
    gps = mapping.pop("gps", None)
    if gps is not None and not isinstance(gps, dict):
        raise RecordingError('--columns: "gps" must be an object naming the GPS columns')
    gyroscope = mapping.pop("gyroscope", None)
    if gyroscope is not None and not isinstance(gyroscope, dict):
        raise RecordingError('--columns: "gyroscope" must be an object naming the gyroscope file\'s columns')
    return mapping, gps, gyroscope


def load_recording(
    argument: str,
    *,
    columns: str | None = None,
    gps_file: Path | None = None,
    gps: bool = True,
    gyro_file: Path | None = None,
) -> RecordingSource:
    """A recording from a file or a shipped short name; `gps=False` drops its GPS fixes.

    What reading decided on its own (a gyroscope file left out, samples it does not cover) is said on
    stderr: the figures that follow depend on it.
    """
    from michi.recordings import DATASETS, SHARED_RECORDINGS, RecordingError, read_recording, shared_recording

    path = Path(argument)
    if argument in SHARED_RECORDINGS and not path.exists():
        if columns is not None or gps_file is not None or gyro_file is not None:
            raise RecordingError(
                f"{argument} is a shipped recording: --columns and --gps-file are for your own files, "
                "and so is --gyro-file"
            )
        recording = shared_recording(argument)
        source = RecordingSource(recording, DATASETS / SHARED_RECORDINGS[argument]["path"])
    elif path.exists():
        imu_columns, gps_columns, gyro_columns = _column_mappings(columns)
        for option, given in (("--gps-file", gps_file), ("--gyro-file", gyro_file)):
            if given is not None and not given.exists():
                raise RecordingError(f"{option} {given}: no such file")
        try:
            recording = read_recording(
                path,
                gps=gps_file,
                gyro=gyro_file,
                columns=imu_columns,
                gps_columns=gps_columns,
                gyro_columns=gyro_columns,
            )
        except RecordingError:
            raise
        except (ValueError, KeyError, OSError) as error:  # a malformed file: a number that is not, a key missing
            raise RecordingError(f"{path}: cannot be read: {type(error).__name__}: {error}") from error
        for note in recording.notes:
            typer.echo(f"michi: note: {note}", err=True)
        source = RecordingSource(recording, path)
    else:
        raise RecordingError(f"{argument}: no such file, nor a shipped recording ({', '.join(SHARED_RECORDINGS)})")
    return replace(source, recording=source.recording.without_gps()) if not gps else source


def first_seconds(recording: Recording, seconds: float) -> Recording:
    """The recording's first `seconds` (IMU samples and GPS fixes before then)."""
    imu = recording.times_s < seconds
    fixes = recording.gps_times_s < seconds
    return replace(
        recording,
        times_s=recording.times_s[imu],
        accel=recording.accel[imu],
        gyro=recording.gyro[imu] if recording.gyro is not None else None,
        gps_times_s=recording.gps_times_s[fixes],
        latitude=recording.latitude[fixes],
        longitude=recording.longitude[fixes],
        speed_mps=recording.speed_mps[fixes],
        heading_deg=recording.heading_deg[fixes],
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:80] or "recording"


def _describe(recording: Recording) -> str:
    gps = f"GPS yes ({recording.gps_times_s.size} fixes)" if recording.has_gps else "GPS no"
    gyroscope = "yes" if recording.gyro is not None else "no"
    return f"{recording.duration_s:.1f} s at {recording.sample_rate_hz:.2f} Hz, gyroscope {gyroscope}, {gps}"


# --- michi replay


def rebased_start(now_s: float, span_s: float, speed: float) -> float:
    """When the drive starts so that every upload is over when it is sent.

    Uploads leave when their slice has passed at `speed` x real time (`michi.device_client`): the last one,
    `span_s` after the first began, leaves at now + span_s / speed. At speed 1 the drive starts now;
    faster, it starts `span_s x (1 - 1/speed)` earlier; as fast as possible (0), it ends now. Ingest
    refuses uploads from the future, and a device never sends a slice it has not recorded yet.
    """
    if speed == 0:
        return now_s - span_s
    return now_s - span_s * max(0.0, 1.0 - 1.0 / speed)


def _device_token(device: str) -> str:
    """A token for `device` from the local device registry (as `michi devices add`; a new one if registered)."""
    from michi.cli import _device_registry
    from services.ingest.adapters.devices import DeviceAlreadyRegistered

    registry = _device_registry()
    try:
        try:
            token: str = registry.add_device(device, label="michi replay")
            typer.echo(f"registered device {device} in the local device registry", err=True)
        except DeviceAlreadyRegistered:
            # Rotating keeps the token the device already has working for the overlap (an hour).
            token = registry.rotate(device)
            typer.echo(f"issued a new token for device {device} (the previous one keeps working for 1 h)", err=True)
    finally:
        registry.close()
    return token


def _check_reachable(target: str) -> None:
    """Fail at once when nothing answers (the client would retry every upload for half a minute)."""
    import httpx

    try:
        httpx.get(f"{target.rstrip('/')}/healthz", timeout=5.0)
    except httpx.HTTPError as error:
        _fail(f"no answer from {target}: {type(error).__name__}: {error}")


def replay_command(
    recording: str = typer.Argument(..., help=RECORDING_HELP),
    target: str = typer.Option(..., help="ingest base URL, e.g. http://127.0.0.1:8080"),
    device: str | None = typer.Option(None, help="device id (default replay-<recording>); with --token, its device"),
    token: str | None = typer.Option(
        None, help="the device's token; without it the device is registered in the local device registry"
    ),
    gps: bool = typer.Option(True, "--gps/--no-gps", help="send the GPS fixes, or none (a device without GPS)"),
    upload_seconds: float = typer.Option(10.0, help="seconds of recording per upload"),
    speed: float = typer.Option(1.0, help="recorded seconds per wall-clock second; 0 sends as fast as possible"),
    columns: str | None = COLUMNS_OPTION,
    gps_file: Path | None = GPS_FILE_OPTION,
    gyro_file: Path | None = GYRO_FILE_OPTION,
    trip_id: str | None = typer.Option(None, help="trip id (default: a new one per run)"),
    limit_seconds: float | None = typer.Option(None, help="send only the recording's first N seconds"),
) -> None:
    """Send a real recording to a running ingest as a dashcam would: its uploads, in order, paced."""
    import asyncio

    from michi.contracts import timestamp_from_seconds, timestamp_to_seconds
    from michi.device_client import SendReport, UploadClient, UploadResult, send_fleet
    from michi.recordings import RecordingError, recording_uploads
    from services.ingest.domain.validation import ID_PATTERN

    if speed < 0 or not math.isfinite(speed):
        _fail("--speed must be 0 (as fast as possible) or more")
    if upload_seconds <= 0 or not math.isfinite(upload_seconds):
        _fail("--upload-seconds must be more than 0")
    if limit_seconds is not None and limit_seconds <= 0:
        _fail("--limit-seconds must be more than 0")
    if token is not None and device is None:
        _fail("--token belongs to one device: name it with --device")
    try:
        source = load_recording(recording, columns=columns, gps_file=gps_file, gps=gps, gyro_file=gyro_file)
    except RecordingError as error:
        _fail(str(error))
        return
    drive = first_seconds(source.recording, limit_seconds) if limit_seconds else source.recording
    if drive.times_s.size < 2:
        _fail(f"{drive.name}: fewer than 2 IMU samples to send" + (" in --limit-seconds" if limit_seconds else ""))
    device_id = device or f"replay-{_slug(drive.name)}"
    # Milliseconds: upload ids derive from device, trip and sequence, so two runs must not share a trip.
    trip = trip_id or f"{device_id}-{round(time.time() * 1000)}"
    for name, value in (("--device", device_id), ("--trip-id", trip)):
        if ID_PATTERN.fullmatch(value) is None:
            _fail(f"{name} {value!r}: ids are 1-128 characters of A-Z a-z 0-9 . _ : -")
    try:
        uploads = recording_uploads(
            drive, device_id=device_id, trip_id=trip, started_at_s=0.0, upload_seconds=upload_seconds
        )
    except RecordingError as error:
        _fail(str(error))
        return
    offsets = [timestamp_to_seconds(upload.started_at) for upload in uploads]
    start = rebased_start(time.time(), offsets[-1] + upload_seconds, speed)
    for upload, offset in zip(uploads, offsets, strict=True):
        upload.started_at.CopyFrom(timestamp_from_seconds(start + offset))
    place = {upload.upload_id: (upload.sequence, offset) for upload, offset in zip(uploads, offsets, strict=True)}
    _check_reachable(target)
    tokens = {device_id: token if token is not None else _device_token(device_id)}
    pace = "as fast as ingest takes them" if speed == 0 else f"at {speed:g}x real time"
    typer.echo(
        f"replaying {drive.name} ({_describe(drive)}) as device {device_id}, trip {trip}: "
        f"{len(uploads)} uploads of {upload_seconds:g} s to {target}, {pace}"
    )

    def show(result: UploadResult) -> None:
        sequence, offset = place[result.upload_id]
        line = f"upload {sequence:>4} ({offset:7.1f} s): {result.status or '---'} {result.outcome}"
        if result.reason:
            line += f" {result.reason}" + (f": {result.detail}" if result.detail else "")
        if result.attempts > 1:
            line += f" (after {result.attempts} attempts)"
        typer.echo(line)

    async def send() -> SendReport:
        client = UploadClient(target)
        try:
            return await send_fleet(
                uploads, client, tokens, speed=speed or None, upload_seconds=upload_seconds, on_result=show
            )
        finally:
            await client.close()

    report = asyncio.run(send())
    outcomes = report.by_outcome
    refused = Counter(result.reason for result in report.results if result.outcome == "refused")
    failed = Counter(result.reason for result in report.results if result.outcome == "failed")
    typer.echo(
        f"sent {len(report.results)}, accepted {outcomes['accepted']}, duplicates {outcomes['duplicate']}, "
        f"refused {sum(refused.values())}" + (f", no answer {sum(failed.values())}" if failed else "")
    )
    for reason, count in refused.most_common():
        typer.echo(f"  refused {count} x {reason}")
    for reason, count in failed.most_common():
        typer.echo(f"  no answer {count} x {reason}")
    if outcomes["accepted"]:
        # Where to read what the platform made of the drive (the warehouse of the same MICHI_HOME or MICHI_BLOB_URL).
        typer.echo(
            "its detections, once scored (the first minutes' may come in hindsight, once the mount is calibrated):\n"
            f'  michi warehouse query "SELECT occurred_at, event_type, confidence, hindsight FROM detections '
            f"WHERE trip_id = '{trip}' ORDER BY occurred_at\""
        )
    if refused or failed:
        raise typer.Exit(1)


# --- michi evaluate


@dataclass(frozen=True)
class UploadCalibration:
    """How far the mount calibration had got for one upload (what serving used for its windows)."""

    sequence: int
    start_s: float  # on the recording's clock
    state: str  # "calibrated", "gravity-only", "uncalibrated", or "skipped"
    confidence: float
    forward_method: str
    mount_moved: bool
    skipped_reason: str | None


@dataclass(frozen=True)
class RecordingEvaluation:
    uploads: int
    calibration: list[UploadCalibration]
    detections: list[DetectedEvent]
    failures: list[str]


def event_type_name(event_type: int) -> str:
    """`harsh_braking` for EVENT_TYPE_HARSH_BRAKING (the names labels files use)."""
    from michi.contracts.v1 import common_pb2

    return common_pb2.EventType.Name(event_type).removeprefix(EVENT_TYPE_PREFIX).lower()


def evaluate_recording(recording: Recording, detector: Detector) -> RecordingEvaluation:
    """The recording through inference's own pipeline, in process: calibration per upload and detections."""
    from michi.contracts import timestamp_to_seconds
    from michi.recordings import received, recording_uploads
    from michi.recordings.evaluation import DetectedEvent
    from michi.windows.chain import windows_in_order
    from michi.windows.upload import upload_from_proto
    from services.inference.domain.state import DeviceState
    from services.inference.handlers import InferencePipeline, process_uploads

    # Without ingest any origin works; a whole second, so times brought back to the recording's clock
    # by subtracting it carry no rounding noise.
    origin = float(int(time.time()))
    uploads = [
        received(upload)
        for upload in recording_uploads(
            recording, device_id="evaluated-device", trip_id="evaluated-trip", started_at_s=origin
        )
    ]
    states: dict[str, DeviceState] = {}
    outcome = process_uploads(uploads, states, InferencePipeline(detector, road_map=None))
    # The outcome carries the confidence; the forward method and state come from the same chain of
    # `update_calibration` calls serving made (michi.windows.chain), which the outcome does not carry.
    chained = list(windows_in_order(upload_from_proto(event) for event in uploads))
    calibration = []
    for event, result, link in zip(uploads, outcome.uploads, chained, strict=True):
        estimate = link.calibration
        confidence = result.calibration_confidence
        if confidence is None:
            confidence = estimate.confidence if estimate is not None else 0.0
        calibration.append(
            UploadCalibration(
                sequence=event.upload.sequence,
                start_s=timestamp_to_seconds(event.upload.started_at) - origin,
                state=estimate.state if estimate is not None else "skipped",
                confidence=float(confidence),
                forward_method=estimate.forward_method if estimate is not None else "none",
                mount_moved=bool(result.orientation_changed or (estimate is not None and estimate.orientation_changed)),
                skipped_reason=result.skipped_reason or link.skipped_reason,
            )
        )
    detections = sorted(
        (
            DetectedEvent(
                timestamp_to_seconds(detection.window.started_at) - origin,
                timestamp_to_seconds(detection.window.ended_at) - origin,
                event_type_name(detection.event_type),
                hindsight=detection.hindsight,
            )
            for result in outcome.uploads
            # Serving's detections, those decided in hindsight once the mount was calibrated included.
            for detection in (*result.detections, *result.hindsight_detections)
        ),
        key=lambda detection: (detection.start_s, detection.end_s),
    )
    failures = [
        f"upload {event.upload.sequence}: {result.failure}"
        for event, result in zip(uploads, outcome.uploads, strict=True)
        if result.failure
    ]
    return RecordingEvaluation(len(uploads), calibration, detections, failures)


class ModelUnavailable(Exception):
    """The model `--model` names cannot be loaded, with the reason."""


@dataclass(frozen=True)
class ChosenModel:
    detector: Detector
    # Which model it is, for people ("the model registry's champion").
    note: str
    # The champion was asked for, there is none, and the built-in baseline stands in.
    fallback: bool = False


def load_detector(choice: str) -> ChosenModel:
    """The detector `--model` names (see `MODEL_CHOICES`)."""
    from michi.registry import ModelRegistry
    from michi.registry.rollout import model_reference
    from michi.settings import load_settings
    from michi.windows.features import DATA_VERSION
    from michi.windows.model_spec import MODEL_NAME
    from services.inference.adapters.artifacts import ModelRefused
    from services.inference.adapters.onnx_model import (
        ModelArtifact,
        ModelContractError,
        ModelIntegrityError,
        OnnxDetector,
        sha256_of,
    )
    from services.inference.settings import InferenceSettings
    from services.inference.wiring import blob_loader, default_detector

    settings = load_settings(InferenceSettings)
    if choice == "baseline":
        return ChosenModel(default_detector(settings), "the built-in baseline")
    if choice == "physics":
        from michi.windows.physics import PHYSICS_DATA_VERSION, PHYSICS_MODEL_VERSION, build_physics_model

        payload = build_physics_model()
        # Named by its content: the same rules are written once, whatever runs them.
        rules = (
            Path(tempfile.gettempdir())
            / f"michi-{PHYSICS_MODEL_VERSION}-{hashlib.sha256(payload).hexdigest()[:16]}.onnx"
        )
        if not rules.is_file() or rules.read_bytes() != payload:
            rules.write_bytes(payload)
        artifact = ModelArtifact(MODEL_NAME, PHYSICS_MODEL_VERSION, PHYSICS_DATA_VERSION, rules, sha256_of(rules))
        return ChosenModel(OnnxDetector(artifact), f"the physics baseline {PHYSICS_MODEL_VERSION}")
    if choice == "champion":
        registry = ModelRegistry.from_url(settings.resolved_database_url())
        try:
            champion = registry.champion(settings.inference_model_name)
        finally:
            registry.close()
        if champion is None:
            note = f"no champion of {settings.inference_model_name} in the model registry: the built-in baseline"
            return ChosenModel(default_detector(settings), note, fallback=True)
        try:
            return ChosenModel(blob_loader(settings)(model_reference(champion)), "the model registry's champion")
        except ModelRefused as error:
            raise ModelUnavailable(f"champion {champion.version}: {error.reason}: {error.detail}") from error
    path = Path(choice)
    if not path.is_file():
        raise ModelUnavailable(f"--model {choice}: no such file (--model is {MODEL_CHOICES})")
    artifact = ModelArtifact(MODEL_NAME, path.stem, DATA_VERSION, path, sha256_of(path))
    try:
        return ChosenModel(OnnxDetector(artifact), f"the ONNX file {path}")
    except (ModelContractError, ModelIntegrityError) as error:
        raise ModelUnavailable(str(error)) from error


@dataclass(frozen=True)
class CalibrationSummary:
    """Calibration over the drive: when it became reliable, its states in runs, mount moves."""

    # The confidence the detection rule relies on (`RELIABLE_CONFIDENCE`), and the first upload reaching it.
    threshold: float
    reliable_from: UploadCalibration | None
    # (first sequence, last sequence, state, forward methods seen in the run)
    runs: list[tuple[int, int, str, list[str]]]
    mount_moved: int
    final: UploadCalibration | None

    def to_json(self) -> dict[str, Any]:
        reliable = self.reliable_from
        return {
            "reliable_confidence": self.threshold,
            "reliable_from_upload": reliable.sequence if reliable else None,
            "reliable_from_s": reliable.start_s if reliable else None,
            "final_state": self.final.state if self.final else None,
            "final_confidence": self.final.confidence if self.final else None,
            "forward_method": self.final.forward_method if self.final else None,
            "mount_moved": self.mount_moved,
            "runs": [
                {"first_upload": first, "last_upload": last, "state": state, "forward_methods": methods}
                for first, last, state, methods in self.runs
            ],
        }


def summarise_calibration(uploads: list[UploadCalibration]) -> CalibrationSummary:
    from michi.windows.calibration import RELIABLE_CONFIDENCE

    runs: list[tuple[int, int, str, list[str]]] = []
    for upload in uploads:
        if runs and runs[-1][2] == upload.state:
            first, _, state, methods = runs[-1]
            if upload.forward_method not in methods:
                methods.append(upload.forward_method)
            runs[-1] = (first, upload.sequence, state, methods)
        else:
            runs.append((upload.sequence, upload.sequence, upload.state, [upload.forward_method]))
    return CalibrationSummary(
        threshold=RELIABLE_CONFIDENCE,
        reliable_from=next((upload for upload in uploads if upload.confidence >= RELIABLE_CONFIDENCE), None),
        runs=runs,
        mount_moved=sum(upload.mount_moved for upload in uploads),
        final=uploads[-1] if uploads else None,
    )


@dataclass(frozen=True)
class EvaluationReport:
    """Everything `michi evaluate` reports, for its text and its JSON output alike."""

    source: RecordingSource
    chosen: ChosenModel
    evaluation: RecordingEvaluation
    summary: CalibrationSummary
    per_hour: dict[str, float]
    labels_file: Path | None
    figures: Figures | None
    # `--reference`: the smoothed-threshold rule on the same recording (None without the flag).
    reference: ReferenceEvaluation | None = None
    # `--gps-truth`: the manoeuvres the recording's own GPS shows, which `figures` are against.
    gps_truth: GpsTruth | None = None


@dataclass(frozen=True)
class ReferenceEvaluation:
    """The reference rule's detections and figures on the evaluated recording (`--reference`)."""

    rule: ThresholdRule
    detections: list[DetectedEvent]
    per_hour: dict[str, float]
    figures: Figures | None


def _figure(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _print_evaluation(report: EvaluationReport) -> None:
    source, chosen, evaluation, summary = report.source, report.chosen, report.evaluation, report.summary
    per_hour, labels_file, figures = report.per_hour, report.labels_file, report.figures
    recording = source.recording
    echo = typer.echo
    echo(f"recording    {recording.name} ({source.shown_path})")
    echo(
        f"duration     {recording.duration_s:.1f} s ({recording.duration_s / 60:.1f} min), {evaluation.uploads} uploads"
    )
    echo(f"sample rate  {recording.sample_rate_hz:.2f} Hz, gyroscope {'yes' if recording.gyro is not None else 'no'}")
    echo(
        f"GPS          {'yes' if recording.has_gps else 'no'}"
        + (f" ({recording.gps_times_s.size} fixes)" if recording.has_gps else "")
    )
    echo(f"model        {chosen.detector.model_name} {chosen.detector.model_version}: {chosen.note}")
    echo("calibration")
    reliable = summary.reliable_from
    if reliable is None:
        echo(f"  confidence never reached {summary.threshold:g}")
    else:
        echo(
            f"  confidence >= {summary.threshold:g} from upload {reliable.sequence} "
            f"({reliable.start_s:.0f} s into the drive): {reliable.confidence:.2f}"
        )
    for first, last, state, methods in summary.runs:
        uploads = f"upload {first}" if first == last else f"uploads {first}-{last}"
        echo(f"  {uploads:<16} {state:<13} forward from {', '.join(methods)}")
    if summary.final is not None:
        echo(
            f"  at the end      confidence {summary.final.confidence:.2f}, forward from {summary.final.forward_method}"
        )
    echo(f"  mount moved     {summary.mount_moved} times")
    for failure in evaluation.failures:
        echo(f"  failed         {failure}")
    total = sum(per_hour.values())
    echo(f"detections   {len(evaluation.detections)} ({total:.1f} per hour)")
    for event_type, rate in per_hour.items():
        count = sum(1 for detection in evaluation.detections if detection.event_type == event_type)
        echo(f"  {event_type:<20} {rate:6.1f} per hour ({count})")
    matched = {id(pair.detection): pair.label for pair in figures.pairs} if figures is not None else {}
    for detection in evaluation.detections:
        label = matched.get(id(detection))
        note = f"  matches {label.label} at {label.start_s:g}-{label.end_s:g} s" if label is not None else ""
        note += "  (in hindsight)" if detection.hindsight else ""
        echo(f"  {f'{detection.start_s:.1f}-{detection.end_s:.1f} s':>16} {detection.event_type}{note}")
    if figures is None:
        return
    if report.gps_truth is not None:
        _print_gps_truth(report.gps_truth, recording.duration_s, figures)
    elif labels_file is not None:
        echo(
            f"labels       {labels_file}: {figures.aggressive_labels} aggressive, {figures.normal_labels} normal"
            + (f", {figures.uncertain_labels} firm" if figures.uncertain_labels else "")
            + f" (a label is widened by {figures.widen_s:g} s each side)"
        )
    else:
        return
    rows = (
        ("recall", figures.recall, f"{figures.matched_aggressive} of {figures.aggressive_labels} aggressive labels"),
        ("precision", figures.precision, f"{figures.matched_aggressive} of {figures.judged_detections} detections"),
        (
            "false alarms on normal",
            figures.normal_false_alarm_rate,
            f"{figures.normal_overlapped} of {figures.normal_labels} normal manoeuvres overlapped",
        ),
        (
            "other detections / min",
            figures.other_per_minute,
            f"{figures.other_detections} detections matching no label",
        ),
        (
            "axis agreement",
            figures.axis_agreement,
            f"{figures.axis_agreeing} of {figures.axis_pairs} matched pairs with a known axis",
        ),
    )
    for name, value, counts in rows:
        echo(f"  {name:<24} {_figure(value):>5}  ({counts})")
    _print_set_aside(figures)


def _print_set_aside(figures: Figures) -> None:
    """The detections a firm label absorbed and those outside the covered time, when there are any."""
    if figures.uncertain_labels:
        typer.echo(
            f"  {'on firm manoeuvres':<24} {figures.matched_uncertain:>5}  "
            f"(detections matched to a firm label: neither hits nor false alarms)"
        )
    if figures.covered_s is not None:
        typer.echo(
            f"  {'not judged':<24} {figures.not_judged:>5}  "
            f"(detections matching no label outside the {figures.covered_s:.0f} s the GPS covers)"
        )


def _print_gps_truth(truth: GpsTruth, duration_s: float, figures: Figures) -> None:
    """What the recording's GPS says the vehicle did: its coverage and each manoeuvre with its strength."""
    echo = typer.echo
    echo(
        f"GPS truth    {truth.harsh} harsh, {truth.firm} firm manoeuvres from the recording's GPS "
        f"(covering {truth.covered_s:.0f} of {duration_s:.0f} s in {len(truth.covered)} stretches; "
        f"a label is widened by {figures.widen_s:g} s each side)"
    )
    for event in truth.events:
        span = f"{event.start_s:.1f}-{event.end_s:.1f} s"
        echo(f"  {span:>16} {event.label:<20} {event.strength_mps2:.1f} m/s² at {event.peak_s:.1f} s")


def _print_reference(report: EvaluationReport, reference: ReferenceEvaluation) -> None:
    """The rule's detections, and with labels its figures beside the model's."""
    echo = typer.echo
    figures = reference.figures
    echo(f"reference    {reference.rule.describe()}")
    total = sum(reference.per_hour.values())
    echo(f"  detections   {len(reference.detections)} ({total:.1f} per hour)")
    for event_type, rate in reference.per_hour.items():
        count = sum(1 for detection in reference.detections if detection.event_type == event_type)
        echo(f"  {event_type:<20} {rate:6.1f} per hour ({count})")
    matched = {id(pair.detection): pair.label for pair in figures.pairs} if figures is not None else {}
    for detection in reference.detections:
        label = matched.get(id(detection))
        note = f"  matches {label.label} at {label.start_s:g}-{label.end_s:g} s" if label is not None else ""
        echo(f"  {f'{detection.start_s:.1f}-{detection.end_s:.1f} s':>16} {detection.event_type}{note}")
    model = report.figures
    if figures is None or model is None:
        return
    echo(f"  {'figure':<24} {'model':>5}  {'rule':>5}  (rule's counts)")
    rows = (
        ("recall", model.recall, figures.recall, f"{figures.matched_aggressive} of {figures.aggressive_labels}"),
        (
            "precision",
            model.precision,
            figures.precision,
            f"{figures.matched_aggressive} of {figures.judged_detections}",
        ),
        (
            "false alarms on normal",
            model.normal_false_alarm_rate,
            figures.normal_false_alarm_rate,
            f"{figures.normal_overlapped} of {figures.normal_labels}",
        ),
        (
            "other detections / min",
            model.other_per_minute,
            figures.other_per_minute,
            f"{figures.other_detections} detections",
        ),
        (
            "axis agreement",
            model.axis_agreement,
            figures.axis_agreement,
            f"{figures.axis_agreeing} of {figures.axis_pairs}",
        ),
    )
    for name, model_value, rule_value, counts in rows:
        echo(f"  {name:<24} {_figure(model_value):>5}  {_figure(rule_value):>5}  ({counts})")
    if figures.uncertain_labels:
        echo(
            f"  {'on firm manoeuvres':<24} {model.matched_uncertain:>5}  {figures.matched_uncertain:>5}  "
            f"({figures.matched_uncertain} detections)"
        )
    if figures.covered_s is not None:
        echo(f"  {'not judged':<24} {model.not_judged:>5}  {figures.not_judged:>5}  ({figures.not_judged} detections)")


def evaluate_command(
    recording: str = typer.Argument(..., help=RECORDING_HELP),
    labels: Path | None = typer.Option(None, help="CSV of t_start_s,t_end_s,label on the recording's clock"),
    gps: bool = typer.Option(True, "--gps/--no-gps", help="use the GPS fixes, or evaluate as a device without GPS"),
    model: str = typer.Option("champion", help=MODEL_CHOICES),
    columns: str | None = COLUMNS_OPTION,
    gps_file: Path | None = GPS_FILE_OPTION,
    gyro_file: Path | None = GYRO_FILE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="print one JSON object with every figure"),
    reference: bool = typer.Option(
        False,
        "--reference",
        help="also run the reference rule (0.5 s-smoothed horizontal acceleration above 2.5 m/s²) and show its figures",
    ),
    gps_truth: bool = typer.Option(
        False,
        "--gps-truth",
        help="judge the detections against what the recording's own GPS says the vehicle did (with --gps or --no-gps)",
    ),
) -> None:
    """Run a recording through the product's preprocessing, calibration and model here (no servers)."""
    from michi.recordings import RecordingError
    from michi.recordings.evaluation import LabelsError, detections_per_hour, evaluate_detections, read_labels
    from michi.recordings.gps_truth import gps_manoeuvres
    from michi.recordings.threshold_rule import ThresholdRule, recording_rule_detections

    if gps_truth and labels is not None:
        _fail("--gps-truth judges the drive by its own GPS instead of a labels file: give one of --gps-truth, --labels")
        return
    truth = None
    try:
        # The GPS judges even when the model is not given it (`--no-gps`): it is dropped after the truth is read.
        source = load_recording(
            recording, columns=columns, gps_file=gps_file, gps=gps or gps_truth, gyro_file=gyro_file
        )
        if gps_truth:
            if not source.recording.has_gps:
                raise RecordingError(f"{source.recording.name}: --gps-truth needs GPS fixes and the recording has none")
            truth = gps_manoeuvres(source.recording)
            if not gps:
                source = replace(source, recording=source.recording.without_gps())
        labelled = read_labels(labels, source.names) if labels is not None else None
        chosen = load_detector(model)
    except (RecordingError, LabelsError, ModelUnavailable) as error:
        _fail(str(error))
        return
    if truth is not None:
        labelled = truth.labels
    covered = truth.covered if truth is not None else None
    if as_json and chosen.fallback:
        typer.echo(f"michi: note: {chosen.note}", err=True)  # the text output says it on its model line
    evaluation = evaluate_recording(source.recording, chosen.detector)
    summary = summarise_calibration(evaluation.calibration)
    duration = source.recording.duration_s
    per_hour = detections_per_hour(evaluation.detections, duration)
    figures = (
        evaluate_detections(evaluation.detections, labelled, duration_s=duration, covered=covered)
        if labelled is not None
        else None
    )
    compared = None
    if reference:
        rule = ThresholdRule()
        found = recording_rule_detections(source.recording, rule)
        compared = ReferenceEvaluation(
            rule,
            found,
            detections_per_hour(found, duration),
            evaluate_detections(found, labelled, duration_s=duration, covered=covered)
            if labelled is not None
            else None,
        )
    report = EvaluationReport(source, chosen, evaluation, summary, per_hour, labels, figures, compared, truth)
    if as_json:
        typer.echo(json.dumps(_evaluation_document(report), indent=2))
    else:
        _print_evaluation(report)
        if compared is not None:
            _print_reference(report, compared)


def _evaluation_document(report: EvaluationReport) -> dict[str, Any]:
    """Everything `michi evaluate` prints, as one JSON object (docs/recordings.md)."""
    source, chosen, evaluation, summary = report.source, report.chosen, report.evaluation, report.summary
    per_hour, labels_file, figures = report.per_hour, report.labels_file, report.figures
    recording = source.recording
    detector = chosen.detector
    document: dict[str, Any] = {
        "recording": {
            "name": recording.name,
            "source": source.shown_path,
            "duration_s": recording.duration_s,
            "sample_rate_hz": recording.sample_rate_hz,
            "gyroscope": recording.gyro is not None,
            "gps": recording.has_gps,
            "gps_fixes": int(recording.gps_times_s.size),
            "uploads": evaluation.uploads,
        },
        "model": {
            "name": detector.model_name,
            "version": detector.model_version,
            "source": chosen.note,
            "fallback": chosen.fallback,
        },
        "calibration": {
            **summary.to_json(),
            "per_upload": [
                {
                    "upload": upload.sequence,
                    "start_s": upload.start_s,
                    "state": upload.state,
                    "confidence": upload.confidence,
                    "forward_method": upload.forward_method,
                    "mount_moved": upload.mount_moved,
                    "skipped_reason": upload.skipped_reason,
                }
                for upload in evaluation.calibration
            ],
            "failures": evaluation.failures,
        },
        "detections": {
            "count": len(evaluation.detections),
            "per_hour": sum(per_hour.values()),
            "per_hour_by_type": per_hour,
            "events": [
                {
                    "start_s": detection.start_s,
                    "end_s": detection.end_s,
                    "event_type": detection.event_type,
                    "hindsight": detection.hindsight,
                }
                for detection in evaluation.detections
            ],
        },
        "labels": (
            {"file": str(labels_file), **figures.to_json()} if figures is not None and labels_file is not None else None
        ),
    }
    if report.gps_truth is not None:
        document["gps_truth"] = {**report.gps_truth.to_json(), **(figures.to_json() if figures is not None else {})}
    if report.reference is not None:
        document["reference"] = _reference_document(report.reference, judged_by_gps=report.gps_truth is not None)
    return document


def _reference_document(reference: ReferenceEvaluation, *, judged_by_gps: bool = False) -> dict[str, Any]:
    """`--reference` in the JSON output: the rule, its detections and, with labels, its figures."""
    return {
        "rule": reference.rule.to_json(),
        "detections": {
            "count": len(reference.detections),
            "per_hour": sum(reference.per_hour.values()),
            "per_hour_by_type": reference.per_hour,
            "events": [
                {"start_s": detection.start_s, "end_s": detection.end_s, "event_type": detection.event_type}
                for detection in reference.detections
            ],
        },
        "labels": reference.figures.to_json() if reference.figures is not None and not judged_by_gps else None,
        **(
            {"gps_truth": reference.figures.to_json() if reference.figures is not None else None}
            if judged_by_gps
            else {}
        ),
    }
