"""Versioned datasets of labelled windows, and their deterministic train/test split.

A dataset is a set of *members*: (window id, label, label source). Its data version is the
sha256 of the sorted members plus the preprocessing version (`michi.windows.features.DATA_VERSION`),
so the same labels over the same archived uploads give the same version on any machine, and a
changed feature definition gives a new one. Rows are kept sorted by window id, so the order a
dataset was assembled in never changes what is trained.

The split is by trip (default) or by driver: a window is in the test set when the first 8 hex
digits of sha256("michi-split:" + id) modulo 100 fall below `test_percent`. Every window of a trip
(or driver) lands on the same side, so no trip leaks between training and evaluation, and the
assignment of an id never depends on what else is in the dataset.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from michi.windows.chain import ChainedUpload
from michi.windows.features import DATA_VERSION, FEATURE_NAMES, SIGNAL_CHANNELS, SIGNAL_STEPS, window_id
from michi.windows.model_spec import CLASS_EVENT_TYPES
from services.trainer.domain.labels import CLASS_NAMES, TruthSpan, label_from_truth, source_name

SPLIT_KEYS = ("trip", "driver")
RELIABLE_MOUNT_CONFIDENCE = 0.5
_AXES = ("x", "y", "z")


def mount_bucket(rotation: np.ndarray | None, confidence: float) -> str:
    """Coarse mount orientation: which device axis points up and which forward ("up+z/fwd+x")."""
    if rotation is None or confidence < RELIABLE_MOUNT_CONFIDENCE:
        return "uncalibrated"

    def axis(vector: np.ndarray) -> str:
        index = int(np.argmax(np.abs(vector)))
        return ("+" if vector[index] >= 0 else "-") + _AXES[index]

    return f"up{axis(rotation[2])}/fwd{axis(rotation[0])}"


@dataclass
class LabeledWindows:
    """Windows with their labels and where they came from (all columns aligned by row)."""

    features: np.ndarray  # [N, F] float32
    signals: np.ndarray  # [N, C, T] float32
    labels: np.ndarray  # [N] int64, column of CLASS_EVENT_TYPES
    window_ids: list[str] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)
    upload_ids: list[str] = field(default_factory=list)
    trip_ids: list[str] = field(default_factory=list)
    device_ids: list[str] = field(default_factory=list)
    driver_ids: list[str] = field(default_factory=list)
    vehicle_types: list[str] = field(default_factory=list)
    sample_rates: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    mount_buckets: list[str] = field(default_factory=list)
    starts_s: np.ndarray = field(default_factory=lambda: np.zeros(0))  # absolute epoch seconds
    speeds_mps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # Seconds of driving each window stands for (upload duration / its windows): distance = speed x exposure.
    exposures_s: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def count(self) -> int:
        return int(self.labels.size)

    @classmethod
    def empty(cls) -> LabeledWindows:
        return cls(
            np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32),
            np.zeros((0, len(SIGNAL_CHANNELS), SIGNAL_STEPS), dtype=np.float32),
            np.zeros(0, dtype=np.int64),
        )

    def take(self, rows: np.ndarray | Sequence[int]) -> LabeledWindows:
        index = np.asarray(rows, dtype=np.int64)

        def pick(values: list[Any]) -> list[Any]:
            return [values[int(position)] for position in index]

        return LabeledWindows(
            features=self.features[index],
            signals=self.signals[index],
            labels=self.labels[index],
            window_ids=pick(self.window_ids),
            sources=pick(self.sources),
            upload_ids=pick(self.upload_ids),
            trip_ids=pick(self.trip_ids),
            device_ids=pick(self.device_ids),
            driver_ids=pick(self.driver_ids),
            vehicle_types=pick(self.vehicle_types),
            sample_rates=self.sample_rates[index],
            mount_buckets=pick(self.mount_buckets),
            starts_s=self.starts_s[index],
            speeds_mps=self.speeds_mps[index],
            exposures_s=self.exposures_s[index],
        )

    @classmethod
    def concatenate(cls, parts: Sequence[LabeledWindows]) -> LabeledWindows:
        parts = [part for part in parts if part.count]
        if not parts:
            return cls.empty()

        def joined(name: str) -> list[Any]:
            return [value for part in parts for value in getattr(part, name)]

        return LabeledWindows(
            features=np.concatenate([part.features for part in parts]),
            signals=np.concatenate([part.signals for part in parts]),
            labels=np.concatenate([part.labels for part in parts]),
            window_ids=joined("window_ids"),
            sources=joined("sources"),
            upload_ids=joined("upload_ids"),
            trip_ids=joined("trip_ids"),
            device_ids=joined("device_ids"),
            driver_ids=joined("driver_ids"),
            vehicle_types=joined("vehicle_types"),
            sample_rates=np.concatenate([part.sample_rates for part in parts]),
            mount_buckets=joined("mount_buckets"),
            starts_s=np.concatenate([part.starts_s for part in parts]),
            speeds_mps=np.concatenate([part.speeds_mps for part in parts]),
            exposures_s=np.concatenate([part.exposures_s for part in parts]),
        )


def data_version_of(window_ids: Sequence[str], labels: Sequence[int], sources: Sequence[int], origin: str = "") -> str:
    """Content hash of the members (window id, label event type, label source) and the preprocessing version.

    `origin` names what the members' uploads are made from when that is not an immutable archive
    (simulated fleets: the recipe and simulator code), so regenerated uploads give a new version.
    """
    digest = hashlib.sha256(f"preprocessing {DATA_VERSION}\norigin {origin}\n".encode())
    for window, label, source in sorted(zip(window_ids, labels, sources, strict=True)):
        digest.update(f"{window}\t{CLASS_EVENT_TYPES[int(label)]}\t{int(source)}\n".encode())
    return f"ds-{digest.hexdigest()[:24]}"


def in_test_split(key: str, test_percent: int) -> bool:
    """Whether the trip or driver `key` is held out (stable: depends on the id alone)."""
    bucket = int(hashlib.sha256(f"michi-split:{key}".encode()).hexdigest()[:8], 16) % 100
    return bucket < test_percent


@dataclass
class Dataset:
    """Labelled windows sorted by window id, their version and their split."""

    windows: LabeledWindows
    test: np.ndarray  # [N] bool
    data_version: str
    split_by: str
    test_percent: int
    # Labels that could not become windows, by reason (archive missing, window not found, ...).
    unresolved: dict[str, int] = field(default_factory=dict)

    @property
    def train_rows(self) -> np.ndarray:
        return np.flatnonzero(~self.test)

    @property
    def test_rows(self) -> np.ndarray:
        return np.flatnonzero(self.test)

    def train(self) -> LabeledWindows:
        return self.windows.take(self.train_rows)

    def test_windows(self) -> LabeledWindows:
        return self.windows.take(self.test_rows)

    def summary(self) -> dict[str, Any]:
        """Counts a person reads in the experiment record and the dry run."""
        windows = self.windows

        def per_class(rows: np.ndarray) -> dict[str, int]:
            counts = np.bincount(windows.labels[rows], minlength=len(CLASS_NAMES))
            return {name: int(counts[index]) for index, name in enumerate(CLASS_NAMES)}

        split_of = [windows.trip_ids, windows.driver_ids][SPLIT_KEYS.index(self.split_by)]
        return {
            "data_version": self.data_version,
            "preprocessing_version": DATA_VERSION,
            "windows": windows.count,
            "train_windows": int(self.train_rows.size),
            "test_windows": int(self.test_rows.size),
            "train_classes": per_class(self.train_rows),
            "test_classes": per_class(self.test_rows),
            "sources": dict(sorted(Counter(source_name(source) for source in windows.sources).items())),
            "split_by": self.split_by,
            "test_percent": self.test_percent,
            "train_groups": len({split_of[int(row)] for row in self.train_rows}),
            "test_groups": len({split_of[int(row)] for row in self.test_rows}),
            "devices": len(set(windows.device_ids)),
            "unresolved_labels": dict(sorted(self.unresolved.items())),
        }


def build_dataset(
    parts: Sequence[LabeledWindows],
    *,
    split_by: str = "trip",
    test_percent: int = 20,
    unresolved: dict[str, int] | None = None,
    origin: str = "",
) -> Dataset:
    """One dataset from parts; a window in a later part replaces the same window in an earlier one."""
    if split_by not in SPLIT_KEYS:
        raise ValueError(f"split_by must be one of {', '.join(SPLIT_KEYS)}")
    if not 0 < test_percent < 100:
        raise ValueError("test_percent must be between 1 and 99")
    combined = LabeledWindows.concatenate(parts)
    last_row: dict[str, int] = {}
    for row, identifier in enumerate(combined.window_ids):
        last_row[identifier] = row
    rows = [last_row[identifier] for identifier in sorted(last_row)]
    windows = combined.take(rows)
    keys = windows.trip_ids if split_by == "trip" else windows.driver_ids
    test = np.array([in_test_split(key, test_percent) for key in keys], dtype=bool)
    version = data_version_of(windows.window_ids, windows.labels.tolist(), windows.sources, origin)
    return Dataset(windows, test, version, split_by, test_percent, dict(unresolved or {}))


def labeled_rows(
    chained: ChainedUpload, rows: Sequence[int], labels: Sequence[int], sources: Sequence[int]
) -> LabeledWindows:
    """The chosen windows of one chained upload, with their labels, as dataset rows."""
    data, windows = chained.data, chained.windows
    index = np.asarray(rows, dtype=np.int64)
    count = int(index.size)
    calibration = chained.calibration
    bucket = mount_bucket(
        calibration.rotation if calibration is not None else None, calibration.confidence if calibration else 0.0
    )
    exposure = data.duration_s / max(windows.count, 1)
    return LabeledWindows(
        features=windows.features[index],
        signals=windows.signals[index],
        labels=np.asarray(labels, dtype=np.int64),
        window_ids=[window_id(data.upload_id, float(windows.starts_s[row])) for row in index],
        sources=[int(source) for source in sources],
        upload_ids=[data.upload_id] * count,
        trip_ids=[data.trip_id] * count,
        device_ids=[data.device_id] * count,
        driver_ids=[data.driver_id] * count,
        vehicle_types=[data.vehicle_type or "unknown"] * count,
        sample_rates=np.full(count, round(data.sample_rate_hz), dtype=np.int64),
        mount_buckets=[bucket] * count,
        starts_s=data.started_at_s + windows.starts_s[index],
        speeds_mps=np.asarray(windows.speed_mps[index], dtype=np.float64),
        exposures_s=np.full(count, exposure),
    )


def truth_labeled_rows(chained: ChainedUpload, spans: Sequence[TruthSpan], source: int) -> LabeledWindows | None:
    """The windows of one chained upload that ground-truth spans label (ambiguous ones left out), or None."""
    starts = chained.data.started_at_s + chained.windows.starts_s
    ends = chained.data.started_at_s + chained.windows.ends_s
    rows, classes = [], []
    for row in range(chained.windows.count):
        label = label_from_truth(float(starts[row]), float(ends[row]), spans)
        if label is not None:
            rows.append(row)
            classes.append(label)
    return labeled_rows(chained, rows, classes, [source] * len(rows)) if rows else None
