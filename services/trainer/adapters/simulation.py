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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from michi.contracts.v1 import labels_pb2, upload_pb2
from michi.roads import RoadMap
from michi.simulator import FleetSimulator, GroundTruthEvent, SimulationConfig
from michi.simulator.hardware import DomainRandomization
from michi.windows.chain import windows_in_order
from michi.windows.features import DATA_VERSION
from michi.windows.upload import upload_from_proto
from services.trainer.domain.dataset import LabeledWindows, truth_labeled_rows
from services.trainer.domain.labels import TruthSpan
from services.trainer.domain.versions import source_digest

logger = logging.getLogger(__name__)

# The code that turns ground truth into window labels (part of the simulated windows' cache key).
LABELLING_SOURCES = (
    "services/trainer/adapters/simulation.py",
    "services/trainer/domain/dataset.py",
    "services/trainer/domain/labels.py",
)


@dataclass(frozen=True)
class FleetRecipe:
    seed: int
    sample_rate_hz: int = 50
    scenario: str | None = None
    # Opt-in: every device draws its IMU rate from this range (`SimulationConfig.sample_rate_range_hz`).
    sample_rate_range_hz: tuple[float, float] | None = None
    # True: this fleet is drawn as the simulator's default fleet is (its noise model, event strengths and turns),
    # whatever the recipe says about them.
    simulator_defaults: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FleetRecipe:
        values = dict(data)
        if values.get("sample_rate_range_hz") is not None:
            lowest, highest = values["sample_rate_range_hz"]
            values["sample_rate_range_hz"] = (float(lowest), float(highest))
        return cls(**values)


@dataclass(frozen=True)
class SimulationRecipe:
    """Which simulated fleets make the ground-truth part of a dataset (empty: none), and how they are drawn.

    The fields after the event rates are opt-in (`MICHI_TRAINER_SIMULATION`): unset, every fleet is drawn as the
    simulator's default fleet is; set, they draw harsh events down to real strength, ordinary turns as hard and
    as gradual as real ones, evasive swerves, and every device's hardware around the fit to real recordings
    (docs/training.md, *Datasets*)."""

    fleets: tuple[FleetRecipe, ...] = field(
        default_factory=lambda: (FleetRecipe(101, 50), FleetRecipe(102, 25), FleetRecipe(103, 100))
    )
    devices: int = 10
    duration_s: float = 900.0
    # More events than a real fleet, so the rare classes have examples (the priors are re-balanced in training).
    event_rate_per_10min: float = 10.0
    confounder_rate_per_10min: float = 8.0
    # `SimulationConfig.sensor_model`: "fitted" draws every device's holder, vibration, sensor range, clock and
    # GPS around the fit to real recordings (`DomainRandomization`, docs/simulator-fit.md).
    sensor_model: str = "before-fit"
    # `SimulationConfig.harsh_peak_g` and `harsh_jerk_mps3`: how hard and how fast harsh events are drawn.
    harsh_peak_g: tuple[tuple[str, float, float], ...] = ()
    harsh_jerk_mps3: tuple[float, float] | None = None
    # `SimulationConfig.ordinary_turn_lateral_g` and `turn_in_s`: how hard and how gradually ordinary turns are taken.
    ordinary_turn_lateral_g: tuple[float, float] | None = None
    turn_in_s: tuple[float, float] | None = None
    # `SimulationConfig.swerve_share`: the share of harsh cornering that is a swerve into the next lane.
    swerve_share: float = 0.0
    # `DomainRandomization.road_grade` (standard deviation of each device's road grade, radians); None: its default.
    road_grade: tuple[float, float] | None = None
    # `SimulationConfig.everyday_braking_g` and `everyday_acceleration_g`: how hard everyday brakes and pull-aways
    # are, (median, 95th percentile) in g drawn per manoeuvre; (0.13, 0.22) and (0.19, 0.42) fit real drives.
    everyday_braking_g: tuple[float, float] | None = None
    everyday_acceleration_g: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulationRecipe:
        fleets = tuple(FleetRecipe.from_dict(dict(fleet)) for fleet in data.get("fleets", []))
        values = {key: value for key, value in data.items() if key != "fleets" and key in cls.__dataclass_fields__}
        if values.get("harsh_peak_g") is not None:
            values["harsh_peak_g"] = tuple(
                (str(kind), float(lowest), float(highest)) for kind, lowest, highest in values["harsh_peak_g"]
            )
        for name in (
            "harsh_jerk_mps3",
            "ordinary_turn_lateral_g",
            "turn_in_s",
            "road_grade",
            "everyday_braking_g",
            "everyday_acceleration_g",
        ):
            if values.get(name) is not None:
                lowest, highest = values[name]
                values[name] = (float(lowest), float(highest))
        return cls(fleets=fleets, **values)

    @property
    def device_minutes(self) -> float:
        return len(self.fleets) * self.devices * self.duration_s / 60.0

    def cache_key(self) -> str:
        """The recipe, the preprocessing version, and the code of the simulator and of the windows (chaining and
        calibration change a window's features without a new preprocessing version)."""
        payload = json.dumps(
            {
                "recipe": self.to_dict(),
                "preprocessing": DATA_VERSION,
                "code": source_digest(("michi/simulator", "michi/roads", "michi/windows")),
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

    def labelled_cache_key(self) -> str:
        """`cache_key` and the code that labels the windows from ground truth (a new harshness threshold must not
        reuse windows labelled by the old one)."""
        payload = f"{self.cache_key()} {source_digest(LABELLING_SOURCES)}"
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
    config = SimulationConfig(
        devices=recipe.devices,
        duration_s=recipe.duration_s,
        seed=fleet.seed,
        sample_rate_hz=fleet.sample_rate_hz,
        sample_rate_range_hz=fleet.sample_rate_range_hz,
        scenario=fleet.scenario,
        event_rate_per_10min=recipe.event_rate_per_10min,
        confounder_rate_per_10min=recipe.confounder_rate_per_10min,
    )
    if fleet.simulator_defaults:
        return config
    return replace(
        config,
        sensor_model=recipe.sensor_model,
        harsh_peak_g=recipe.harsh_peak_g,
        harsh_jerk_mps3=recipe.harsh_jerk_mps3,
        ordinary_turn_lateral_g=recipe.ordinary_turn_lateral_g,
        turn_in_s=recipe.turn_in_s,
        swerve_share=recipe.swerve_share,
        everyday_braking_g=recipe.everyday_braking_g,
        everyday_acceleration_g=recipe.everyday_acceleration_g,
        randomization=(
            DomainRandomization(road_grade=recipe.road_grade) if recipe.road_grade is not None else config.randomization
        ),
    )


def _peak_mps2(event: GroundTruthEvent) -> float | None:
    """A harsh event's peak acceleration (m/s², vehicle frame) as the simulator measured it; None otherwise."""
    return float(event.peak_magnitude) if event.magnitude_unit == "m/s^2" else None


def simulate_fleet_windows(recipe: SimulationRecipe, fleet: FleetRecipe, road_map: RoadMap) -> LabeledWindows:
    """The labelled windows of one simulated fleet."""
    simulator = FleetSimulator(_fleet_config(recipe, fleet), road_map=road_map)
    datas = (upload_from_proto(upload_pb2.UploadReceived(upload=upload)) for upload in simulator.uploads())
    chained = [item for item in windows_in_order(datas) if item.windows.count]
    truth: dict[str, list[TruthSpan]] = defaultdict(list)
    for event in simulator.ground_truth:
        truth[event.trip_id].append(
            TruthSpan(event.kind, event.started_at, event.ended_at, event.risky, peak_mps2=_peak_mps2(event))
        )
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
    path = cache_dir / f"simulated-{recipe.labelled_cache_key()}.npz" if cache_dir is not None else None
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
