"""Labelled windows from simulated fleets (in-process, deterministic): the bootstrap's ground truth.

Each fleet of the recipe is simulated with `michi.simulator`; its uploads go through
`michi.windows.chain.windows_in_order` in the simulator's time order (per device: upload order), so
every device's calibration evolves across its trips exactly as it does in inference, and each window
is labelled from the simulator's ground truth (`domain/labels.py::label_from_truth`; ambiguous windows
are left out). Rows carry `LABEL_SOURCE_SIMULATOR`.

Simulated windows are a pure function of the recipe and the code, so they are cached on disk
(`.npz` keyed by the recipe, the preprocessing version and the simulator/windows code) when a cache
folder is given.

`traffic_windows` is the other use of a recipe: every window of a simulated fleet as inference would serve it
(ambiguous ones included, no labels), with the cohort each came from (vehicle type, IMU rate, firmware), for the
reference profile the monitor judges served traffic against (`REFERENCE_TRAFFIC`: the fleet `michi up` and
`michi simulate` drive by default).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from michi.contracts.v1 import labels_pb2, upload_pb2
from michi.roads import RoadMap
from michi.simulator import FleetSimulator, SimulationConfig
from michi.windows.chain import windows_in_order
from michi.windows.features import DATA_VERSION
from michi.windows.upload import upload_from_proto
from services.trainer.domain.dataset import LabeledWindows, truth_labeled_rows
from services.trainer.domain.labels import TruthSpan
from services.trainer.domain.versions import source_digest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetRecipe:
    seed: int
    sample_rate_hz: int = 50
    scenario: str | None = None


@dataclass(frozen=True)
class SimulationRecipe:
    """Which simulated fleets make the ground-truth part of a dataset (empty: none)."""

    fleets: tuple[FleetRecipe, ...] = field(
        default_factory=lambda: (FleetRecipe(101, 50), FleetRecipe(102, 25), FleetRecipe(103, 100))
    )
    devices: int = 10
    duration_s: float = 900.0
    # More events than a real fleet, so the rare classes have examples (the priors are re-balanced in training).
    event_rate_per_10min: float = 10.0
    confounder_rate_per_10min: float = 8.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SimulationRecipe:
        fleets = tuple(FleetRecipe(**fleet) for fleet in data.get("fleets", []))  # type: ignore[arg-type, attr-defined]
        values = {key: value for key, value in data.items() if key != "fleets" and key in cls.__dataclass_fields__}
        return cls(fleets=fleets, **values)  # type: ignore[arg-type]

    @property
    def device_minutes(self) -> float:
        return len(self.fleets) * self.devices * self.duration_s / 60.0

    def cache_key(self) -> str:
        payload = json.dumps(
            {"recipe": self.to_dict(), "preprocessing": DATA_VERSION, "code": source_digest(("michi/simulator",))},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:24]


# The traffic a model's reference profile describes by default: the fleet `michi up` and `michi simulate` drive
# (50 Hz, `SimulationConfig`'s event and confounder rates and vehicle mix, one firmware), from a seed of its own:
# 40 devices for three hours each: every vehicle type of the mix driven by at least two drivers, and each device
# past its first trips into the driving it settles in (a fresh fleet's first half hour differs from its later
# hours); 120 device-hours, about two and a half minutes once, cached.
REFERENCE_TRAFFIC = SimulationRecipe(
    fleets=(FleetRecipe(1001, 50),),
    devices=40,
    duration_s=3 * 3600.0,
    event_rate_per_10min=SimulationConfig().event_rate_per_10min,
    confounder_rate_per_10min=SimulationConfig().confounder_rate_per_10min,
)


@dataclass(frozen=True)
class TrafficWindows:
    """Every window of simulated traffic (features [N, F]), its cohort per dimension and its device; the signals
    ([M, C, T]) of every `SIGNAL_SAMPLE_EVERY`-th window (the monitor compares summary features only)."""

    features: np.ndarray
    signals: np.ndarray
    # Cohort dimension (the monitor's: vehicle, rate, firmware), `calibration` and `device` -> each window's value.
    cohorts: dict[str, list[str]]

    @property
    def count(self) -> int:
        return int(self.features.shape[0])


TRAFFIC_DIMENSIONS = ("vehicle", "rate", "firmware")
# Beside the cohort dimensions: the state of the mount calibration each window was read with (as a `Prediction`
# says it: "calibrated", "gravity-only", "uncalibrated"), and the device.
CALIBRATION = "calibration"
DEVICE = "device"
TRAFFIC_COLUMNS = (*TRAFFIC_DIMENSIONS, CALIBRATION, DEVICE)
SIGNAL_SAMPLE_EVERY = 10


def simulate_traffic(recipe: SimulationRecipe, road_map: RoadMap) -> TrafficWindows:
    """The windows inference computes for the recipe's fleets, in the simulator's order, with their cohorts."""
    features, signals = [], []
    cohorts: dict[str, list[str]] = {column: [] for column in TRAFFIC_COLUMNS}
    seen = 0
    for fleet in recipe.fleets:
        simulator = FleetSimulator(_fleet_config(recipe, fleet), road_map=road_map)
        datas = (upload_from_proto(upload_pb2.UploadReceived(upload=upload)) for upload in simulator.uploads())
        for item in windows_in_order(datas):
            count = item.windows.count
            if not count:
                continue
            features.append(item.windows.features)
            # Every SIGNAL_SAMPLE_EVERY-th window of the traffic, wherever it falls.
            first = (-seen) % SIGNAL_SAMPLE_EVERY
            signals.append(item.windows.signals[first::SIGNAL_SAMPLE_EVERY])
            seen += count
            # As inference stamps a `Prediction` (`sample_rate_hz=round(data.sample_rate_hz)`).
            cohorts["vehicle"].extend([item.data.vehicle_type] * count)
            cohorts["rate"].extend([str(round(item.data.sample_rate_hz))] * count)
            cohorts["firmware"].extend([item.data.firmware_version] * count)
            cohorts[CALIBRATION].extend([item.calibration.state if item.calibration else "uncalibrated"] * count)
            cohorts[DEVICE].extend([item.data.device_id] * count)
    empty = LabeledWindows.empty()
    return TrafficWindows(
        np.concatenate(features) if features else empty.features,
        np.concatenate(signals) if signals else empty.signals,
        cohorts,
    )


def traffic_windows(
    recipe: SimulationRecipe, *, cache_dir: Path | None = None, road_map: RoadMap | None = None
) -> TrafficWindows:
    """`simulate_traffic`, from the cache when it holds it (keyed like `simulated_windows`)."""
    path = cache_dir / f"traffic-{recipe.cache_key()}.npz" if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            with np.load(path, allow_pickle=False) as stored:
                return TrafficWindows(
                    stored["features"],
                    stored["signals"],
                    {dimension: [str(value) for value in stored[dimension].tolist()] for dimension in TRAFFIC_COLUMNS},
                )
        except (OSError, ValueError, KeyError) as error:
            logger.warning("traffic cache unreadable: rebuilding", extra={"path": str(path), "error": str(error)})
    traffic = simulate_traffic(recipe, road_map or RoadMap.default())
    if path is not None:
        arrays = {"features": traffic.features, "signals": traffic.signals}
        arrays.update({dimension: np.asarray(values, dtype=np.str_) for dimension, values in traffic.cohorts.items()})
        _save_arrays(arrays, path)
    return traffic


def _fleet_config(recipe: SimulationRecipe, fleet: FleetRecipe) -> SimulationConfig:
    return SimulationConfig(
        devices=recipe.devices,
        duration_s=recipe.duration_s,
        seed=fleet.seed,
        sample_rate_hz=fleet.sample_rate_hz,
        scenario=fleet.scenario,
        event_rate_per_10min=recipe.event_rate_per_10min,
        confounder_rate_per_10min=recipe.confounder_rate_per_10min,
    )


def simulate_fleet_windows(recipe: SimulationRecipe, fleet: FleetRecipe, road_map: RoadMap) -> LabeledWindows:
    """The labelled windows of one simulated fleet."""
    simulator = FleetSimulator(_fleet_config(recipe, fleet), road_map=road_map)
    datas = (upload_from_proto(upload_pb2.UploadReceived(upload=upload)) for upload in simulator.uploads())
    chained = [item for item in windows_in_order(datas) if item.windows.count]
    truth: dict[str, list[TruthSpan]] = defaultdict(list)
    for event in simulator.ground_truth:
        truth[event.trip_id].append(TruthSpan(event.kind, event.started_at, event.ended_at, event.risky))
    parts = []
    for item in chained:
        labelled_rows = truth_labeled_rows(item, truth.get(item.data.trip_id, []), labels_pb2.LABEL_SOURCE_SIMULATOR)
        if labelled_rows is not None:
            parts.append(labelled_rows)
    return LabeledWindows.concatenate(parts)


def simulated_windows(
    recipe: SimulationRecipe, *, cache_dir: Path | None = None, road_map: RoadMap | None = None
) -> LabeledWindows:
    """Every fleet's labelled windows (from the cache when it holds them)."""
    if not recipe.fleets or recipe.devices <= 0:
        return LabeledWindows.empty()
    path = cache_dir / f"simulated-{recipe.cache_key()}.npz" if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            return load_windows(path)
        except (OSError, ValueError, KeyError) as error:
            logger.warning(
                "simulated windows cache unreadable: rebuilding", extra={"path": str(path), "error": str(error)}
            )
    chosen_map = road_map or RoadMap.default()
    windows = LabeledWindows.concatenate([simulate_fleet_windows(recipe, fleet, chosen_map) for fleet in recipe.fleets])
    if path is not None:
        save_windows(windows, path)
    return windows


_LIST_COLUMNS = (
    "window_ids",
    "sources",
    "upload_ids",
    "trip_ids",
    "device_ids",
    "driver_ids",
    "vehicle_types",
    "mount_buckets",
)
_ARRAY_COLUMNS = ("features", "signals", "labels", "sample_rates", "starts_s", "speeds_mps", "exposures_s")


def save_windows(windows: LabeledWindows, path: Path) -> None:
    """Write atomically (a reader never sees half a file)."""
    arrays: dict[str, np.ndarray] = {name: getattr(windows, name) for name in _ARRAY_COLUMNS}
    for name in _LIST_COLUMNS:
        values: Sequence[object] = getattr(windows, name)
        arrays[name] = np.asarray(values, dtype=np.int64 if name == "sources" else np.str_)
    _save_arrays(arrays, path)


def _save_arrays(arrays: dict[str, np.ndarray], path: Path) -> None:
    """`np.savez` to a temporary file renamed into place: a reader (another process) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{np.random.default_rng().integers(1 << 30)}.tmp.npz")
    np.savez(temporary, **arrays)  # type: ignore[arg-type]
    temporary.replace(path)


def load_windows(path: Path) -> LabeledWindows:
    with np.load(path, allow_pickle=False) as stored:
        columns: dict[str, object] = {name: stored[name] for name in _ARRAY_COLUMNS}
        for name in _LIST_COLUMNS:
            values = stored[name].tolist()
            columns[name] = [int(value) for value in values] if name == "sources" else [str(value) for value in values]
    return LabeledWindows(**columns)  # type: ignore[arg-type]
