"""Real recordings for the trainer: the evaluation set's windows, and labelled recordings as training data.

    source = RealRecordings(evaluation_folder=Path("~/drives"), training_folder=Path("~/labelled"))
    recordings, skipped = source.evaluation_windows()     # RealWindows per recording and variant
    windows, summary = source.training_windows()          # LabeledWindows of the labelled recordings

**Evaluation set** (the real-data section of every evaluation, `domain/real_data.py`): the recordings
shipped in `datasets/real-driving` (`michi.recordings.SHARED_RECORDINGS`; auckland-forward with the
author's annotations, all ordinary manoeuvres), unless `shipped=False`, plus every recording file in
`MICHI_TRAINER_REAL_RECORDINGS`. Each is cut into the uploads a device would send
(`michi.recordings.recording_uploads`, 10 s) and chained through `michi.windows.chain.windows_in_order`,
so calibration evolves upload by upload exactly as serving computes it; once as recorded and once
with its GPS removed (when it has GPS). Both are judged by the recording's labels file when it has
one; a recording with GPS and no labels file is judged by what its own GPS says the vehicle did
(`michi.recordings.gps_truth.gps_manoeuvres`: harsh events to find, firm ones where a detection of
that manoeuvre is no false alert), since a drive taken as ordinary can hold real harsh moments
(auckland-backwards brakes at 3.1 m/s² by GPS at 165 s); one with neither is normal driving
throughout. Each variant says which (`RealWindows.label_source`, `evaluation_labels`).

A recording whose GPS gives the mount's truth (`gps_truth`) is also evaluated a third time, without
GPS and with real-strength harsh braking and acceleration (0.25-0.33 g) added along its true forward
axis at steady cruising moments (`michi.recordings.injection`): labelled events on real noise, for
recall, judged by those labels alone; that variant's ordinary driving is not counted again for false
alerts.

**Training set**: every recording in `MICHI_TRAINER_REAL_TRAINING` that has a labels file. Its windows
are labelled from the file as simulator ground truth labels windows (`domain/labels.py::label_from_truth`,
labels widened by `WIDEN_S` since people mark instants): a window overlapping an aggressive label by
≥ 0.5 s takes its class, one overlapping `pothole`, `speed_bump` or `mount_moved` by ≥ 0.25 s is a
confounder, one touching no such label is normal, the rest are ambiguous and left out. Rows carry the
trainer's `LABEL_SOURCE_IMPORTED`; device and trip are named after the recording's content hash, so
window ids (and the dataset's version) change exactly when the recording or its labels do. The
training and evaluation folders are kept apart so no model is judged on the drives it learned from.

A folder holds, per recording: the recording (`drive.csv`, `drive.json` or `drive.npz`, read by
`michi.recordings.read_recording`), for a CSV its GPS beside it (`drive.gps.csv`) and its gyroscope when a
logger wrote it to a file of its own (`drive.gyro.csv`, on the recording's clock), or a phone
logger's export (a folder `drive/` or `drive.zip` of one CSV per sensor, as Sensor Logger and phyphox
write it: its accelerometer, gyroscope and GPS files found by name), and optionally its
labels (`drive.labels.csv`: `t_start_s,t_end_s,label`, seconds from the recording's first sample;
`michi.recordings.evaluation.read_labels`). A recording that cannot be read is skipped and named with
the reason; the run goes on.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from michi.recordings import (
    DATASETS,
    SHARED_RECORDINGS,
    Recording,
    RecordingError,
    read_recording,
    received,
    recording_uploads,
    shared_recording,
)
from michi.recordings.evaluation import AGGRESSIVE_LABELS, WIDEN_S, LabelledEvent, LabelsError, read_labels
from michi.recordings.gps_truth import gps_manoeuvres
from michi.recordings.injection import inject_manoeuvres, plan_manoeuvres, quiet_moments
from michi.windows.chain import ChainedUpload, windows_in_order
from michi.windows.features import FEATURE_INDEX
from michi.windows.model_spec import detection_allowed
from michi.windows.upload import upload_from_proto
from services.trainer.domain.dataset import LabeledWindows, truth_labeled_rows
from services.trainer.domain.labels import CONFOUNDER_KINDS, LABEL_SOURCE_IMPORTED, TruthSpan
from services.trainer.domain.real_data import (
    LABELS_FROM_ADDED_MANOEUVRES,
    LABELS_FROM_FILE,
    LABELS_FROM_GPS,
    NO_LABELS,
    WITH_GPS,
    WITH_MANOEUVRES,
    WITHOUT_GPS,
    RealWindows,
    gps_truth,
    yaw_error_deg,
)

logger = logging.getLogger(__name__)

# Every recording's uploads start here (2026-01-01 UTC), so window ids do not depend on when a run happens.
RECORDINGS_START_S = 1_767_225_600.0
RECORDING_SUFFIXES = (".csv", ".json", ".npz")
GPS_SUFFIX = ".gps.csv"
GYROSCOPE_SUFFIX = ".gyro.csv"
LABELS_SUFFIX = ".labels.csv"
# Files that go with a recording, never recordings themselves.
COMPANION_SUFFIXES = (GPS_SUFFIX, GYROSCOPE_SUFFIX, LABELS_SUFFIX)
# Labels for the shipped recordings (paths under datasets/real-driving).
SHIPPED_LABELS = {"auckland-forward": "quat-orient-auckland/annotations.csv"}


@dataclass(frozen=True)
class RecordingFile:
    """One recording with where it came from and its labels (None: no labels file)."""

    recording: Recording
    names: tuple[str, ...]  # file stem first, then the short name
    labels: tuple[LabelledEvent, ...] | None
    digest: str  # sha256 of the recording's files (not the labels)
    labels_digest: str


def _digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def folder_recordings(folder: Path) -> tuple[list[RecordingFile], dict[str, str]]:
    """The readable recordings of a folder (sorted by file name) and the unreadable ones with the reason."""
    found: list[RecordingFile] = []
    skipped: dict[str, str] = {}
    if not folder.is_dir():
        return found, {str(folder): "not a folder"}
    for path in sorted(folder.iterdir()):
        name = path.name
        # A phone logger's export, one CSV per sensor: a folder, or a zip of one.
        export = not name.startswith(".") and (path.is_dir() or (path.is_file() and path.suffix == ".zip"))
        if not export and (
            not path.is_file() or name.endswith(COMPANION_SUFFIXES) or path.suffix not in RECORDING_SUFFIXES
        ):
            continue
        stem = path.name if path.is_dir() else path.stem
        gps = path.with_name(stem + GPS_SUFFIX)
        gyroscope = path.with_name(stem + GYROSCOPE_SUFFIX)
        labels_path = path.with_name(stem + LABELS_SUFFIX)
        csv = path.suffix == ".csv"
        try:
            recording = read_recording(
                path,
                gps=gps if csv and gps.exists() else None,
                gyro=gyroscope if csv and gyroscope.exists() else None,
                name=stem,
            )
            labels = tuple(read_labels(labels_path, (stem,))) if labels_path.exists() else None
        except (RecordingError, LabelsError, ValueError, KeyError, OSError) as error:
            skipped[name] = f"{type(error).__name__}: {error}"[:300]
            continue
        if path.is_dir():
            files = sorted(member for member in path.rglob("*") if member.is_file())
        else:
            files = [path] + [companion for companion in (gps, gyroscope) if csv and companion.exists()]
        found.append(
            RecordingFile(
                recording,
                (stem,),
                labels,
                _digest(files),
                _digest([labels_path]) if labels_path.exists() else "",
            )
        )
    return found, skipped


def shipped_recordings(root: Path = DATASETS) -> tuple[list[RecordingFile], dict[str, str]]:
    """The recordings shipped in datasets/real-driving, with their labels where there are some.

    An installation without the datasets folder (a container image built from the packages alone) has
    none: each is named as skipped with the reason, and the evaluation goes on without it.
    """
    found = []
    skipped: dict[str, str] = {}
    for name, entry in SHARED_RECORDINGS.items():
        stem = Path(entry["path"]).stem
        labels_path = root / SHIPPED_LABELS[name] if name in SHIPPED_LABELS else None
        files = [root / entry["path"], root / entry["gps"]]
        try:
            recording = shared_recording(name, root)
            labels = tuple(read_labels(labels_path, (stem, name))) if labels_path is not None else None
            digest = _digest(files)
            labels_digest = _digest([labels_path]) if labels_path is not None else ""
        except (RecordingError, LabelsError, ValueError, KeyError, OSError) as error:
            skipped[name] = f"{type(error).__name__}: {error}"[:300]
            continue
        found.append(RecordingFile(recording, (stem, name), labels, digest, labels_digest))
    return found, skipped


def chained_uploads(recording: Recording, *, device_id: str, trip_id: str) -> Iterator[ChainedUpload]:
    """The recording as a device's uploads, chained through calibration as serving does."""
    uploads = recording_uploads(recording, device_id=device_id, trip_id=trip_id, started_at_s=RECORDINGS_START_S)
    return windows_in_order(upload_from_proto(received(upload)) for upload in uploads)


def recording_windows(
    recording: Recording,
    *,
    name: str,
    variant: str,
    labels: tuple[LabelledEvent, ...],
    truth: tuple[np.ndarray, np.ndarray] | None,
    normal_driving: bool = True,
    label_source: str = NO_LABELS,
) -> RealWindows:
    """One variant of one recording as `RealWindows` (window times on the recording's clock)."""
    starts, ends, features, signals, allowed = [], [], [], [], []
    last = None
    has_gyroscope = False
    for chained in chained_uploads(recording, device_id=f"real-{name}", trip_id=f"real-{name}-{variant}"):
        if chained.calibration is None or not chained.windows.count:
            continue
        last = chained.calibration
        has_gyroscope = has_gyroscope or chained.data.has_gyroscope
        windows = chained.windows
        offset = chained.data.started_at_s - RECORDINGS_START_S
        starts.append(offset + windows.starts_s)
        ends.append(offset + windows.ends_s)
        features.append(windows.features)
        signals.append(windows.signals)
        allowed.append(
            detection_allowed(chained.calibration.state, windows.features[:, FEATURE_INDEX["gps_available"]])
        )
    if not starts:
        nothing = LabeledWindows.empty()
        return RealWindows(
            name,
            variant,
            recording.duration_s,
            np.zeros(0),
            np.zeros(0),
            nothing.features,
            nothing.signals,
            np.zeros(0, dtype=bool),
            labels,
            normal_driving=normal_driving,
            label_source=label_source,
        )
    return RealWindows(
        recording=name,
        variant=variant,
        duration_s=recording.duration_s,
        starts_s=np.concatenate(starts),
        ends_s=np.concatenate(ends),
        features=np.concatenate(features),
        signals=np.concatenate(signals),
        allowed=np.concatenate(allowed).astype(bool),
        labels=labels,
        calibration_state=last.state if last is not None else "uncalibrated",
        calibration_error_deg=yaw_error_deg(last, *truth) if truth is not None and last is not None else None,
        sample_rate_hz=recording.sample_rate_hz,
        gyroscope=has_gyroscope,
        normal_driving=normal_driving,
        label_source=label_source,
    )


def evaluation_labels(entry: RecordingFile) -> tuple[tuple[LabelledEvent, ...], str]:
    """The labels a recording's plain variants are judged by, and their source (module docstring).

    Hand labels win; without them the GPS's harsh and firm manoeuvres, when the recording has GPS
    (`gps_manoeuvres`). Detections where the GPS did not see are judged as on a recording without
    labels (`domain/real_data.py`), so its coverage is not needed here.
    """
    if entry.labels is not None:
        return entry.labels, LABELS_FROM_FILE
    if not entry.recording.has_gps:
        return (), NO_LABELS
    try:
        return tuple(gps_manoeuvres(entry.recording).labels), LABELS_FROM_GPS
    except ValueError as error:
        logger.warning("no GPS labels for a real recording", extra={"recording": entry.names[-1], "error": str(error)})
        return (), NO_LABELS


def with_added_manoeuvres(
    recording: Recording, truth: tuple[np.ndarray, np.ndarray]
) -> tuple[Recording, tuple[LabelledEvent, ...]] | None:
    """The drive without GPS and with real-strength harsh manoeuvres added in its true axes (`truth`: forward,
    up from `gps_truth`), and their labels; None when its GPS shows no quiet moment for one."""
    manoeuvres = plan_manoeuvres(quiet_moments(recording))
    if not manoeuvres:
        return None
    # Real-strength harsh events on this drive's own noise and mount: what finds them is measured.
    speed = np.interp(recording.times_s, recording.gps_times_s, recording.speed_mps)
    return inject_manoeuvres(recording.without_gps(), manoeuvres, forward=truth[0], up=truth[1], speed_mps=speed)


class RealRecordings:
    """The trainer's real recordings: an evaluation set and a training set (see the module docstring)."""

    def __init__(
        self,
        *,
        evaluation_folder: Path | None = None,
        training_folder: Path | None = None,
        shipped: bool = True,
        root: Path = DATASETS,
    ) -> None:
        self.evaluation_folder = evaluation_folder
        self.training_folder = training_folder
        self.shipped = shipped
        self.root = root

    def describe(self) -> dict[str, object]:
        return {
            "shipped": self.shipped,
            "evaluation_folder": str(self.evaluation_folder) if self.evaluation_folder else None,
            "training_folder": str(self.training_folder) if self.training_folder else None,
        }

    def fingerprint(self) -> str:
        """A hash of every evaluation recording and labels file: what a cached evaluation depends on."""
        files, skipped = self.evaluation_files()
        digest = hashlib.sha256()
        for entry in files:
            digest.update(f"{entry.names[0]}:{entry.digest}:{entry.labels_digest}\n".encode())
        for name, reason in sorted(skipped.items()):
            digest.update(f"skipped {name}: {reason}\n".encode())
        return digest.hexdigest()[:24]

    def evaluation_files(self) -> tuple[list[RecordingFile], dict[str, str]]:
        files, skipped = shipped_recordings(self.root) if self.shipped else ([], {})
        if self.evaluation_folder is not None:
            found, unreadable = folder_recordings(self.evaluation_folder)
            files += found
            skipped.update(unreadable)
        return files, skipped

    def evaluation_windows(self) -> tuple[list[RealWindows], dict[str, str]]:
        """Every variant of every evaluation recording, and the files skipped (name → reason)."""
        files, skipped = self.evaluation_files()
        windows: list[RealWindows] = []
        for entry in files:
            recording, name = entry.recording, entry.names[-1]
            truth = None
            if recording.has_gps:
                try:
                    truth = gps_truth(recording)
                except (ValueError, np.linalg.LinAlgError) as error:
                    logger.warning("no GPS truth for a real recording", extra={"recording": name, "error": str(error)})
            variants = (
                [(WITH_GPS, recording), (WITHOUT_GPS, recording.without_gps())]
                if recording.has_gps
                else [(WITHOUT_GPS, recording)]
            )
            labels, source = evaluation_labels(entry)
            for variant, seen in variants:
                windows.append(
                    recording_windows(seen, name=name, variant=variant, labels=labels, truth=truth, label_source=source)
                )
            added = with_added_manoeuvres(recording, truth) if truth is not None else None
            if added is not None:
                injected, added_labels = added
                windows.append(
                    recording_windows(
                        injected,
                        name=name,
                        variant=WITH_MANOEUVRES,
                        labels=added_labels,
                        truth=truth,
                        normal_driving=False,
                        label_source=LABELS_FROM_ADDED_MANOEUVRES,
                    )
                )
        return windows, skipped

    def training_windows(self) -> tuple[LabeledWindows, dict[str, object]]:
        """The labelled windows of the training folder's recordings, and what they are made of."""
        summary: dict[str, object] = {"recordings": 0, "windows": 0, "version": "", "skipped": {}}
        if self.training_folder is None:
            return LabeledWindows.empty(), summary
        files, skipped = folder_recordings(self.training_folder)
        unlabelled = [entry.names[0] for entry in files if entry.labels is None]
        skipped.update({name: "no labels file" for name in unlabelled})
        labelled = [entry for entry in files if entry.labels is not None]
        parts = []
        for entry in labelled:
            identity = f"real-{entry.digest[:16]}"
            spans = [
                TruthSpan(
                    label.label,
                    RECORDINGS_START_S + label.start_s - WIDEN_S,
                    RECORDINGS_START_S + label.end_s + WIDEN_S,
                    label.label in AGGRESSIVE_LABELS,
                )
                for label in entry.labels or ()
                if label.label in AGGRESSIVE_LABELS or label.label in CONFOUNDER_KINDS
            ]
            for chained in chained_uploads(entry.recording, device_id=identity, trip_id=identity):
                if not chained.windows.count:
                    continue
                labelled_rows = truth_labeled_rows(chained, spans, LABEL_SOURCE_IMPORTED)
                if labelled_rows is not None:
                    parts.append(labelled_rows)
        windows = LabeledWindows.concatenate(parts)
        version = hashlib.sha256(
            "".join(
                f"{entry.digest}:{entry.labels_digest}\n" for entry in sorted(labelled, key=lambda e: e.digest)
            ).encode()
        ).hexdigest()
        summary.update(
            {
                "recordings": len(labelled),
                "windows": windows.count,
                "version": f"real-{version[:24]}" if labelled else "",
                "skipped": dict(sorted(skipped.items())),
            }
        )
        return windows, summary
