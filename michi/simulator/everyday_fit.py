"""How hard everyday brakes and pull-aways are: real drives with GPS against the simulator.

    MICHI_DATASETS_DIR=/path/to/real-driving python -m michi.simulator.everyday_fit

A *manoeuvre* is read the same way on both sides, from speed sampled once a second (GPS, or CAN where a
recording has it): a run of 1-s speed changes beyond 0.5 m/s² (below -0.5: a brake, above +0.5: a
pull-away) that changes the speed by at least 2 m/s; its *peak* is its largest 1-s change. Real: every
recording with a speed track in the datasets folder (`michi.recordings.DATASETS`): the DrivePlotR
naturalistic drives (`driveplotr-nds`, 386 minutes of one driver, 1 Hz GPS speed) when the folder holds
them, the two Auckland drives (1 Hz GPS) and comma2k19's minute (CAN speed). Simulated: ordinary driving
only (no injected events or confounders), read from the fleet's own 1 Hz GPS speed, for the default fleet and
for `SimulationConfig.everyday_braking_g` / `everyday_acceleration_g` at the values given.

The figures feed the fit of those two knobs (docs/training.md, *Datasets*); nothing here runs in serving.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from michi.contracts import timestamp_to_seconds
from michi.recordings import DATASETS
from michi.roads import RoadMap
from michi.simulator.config import SimulationConfig
from michi.simulator.fleet import FleetSimulator

# A manoeuvre: 1-s speed changes beyond this (m/s²), changing the speed by at least this much (m/s).
MANOEUVRE_MPS2 = 0.5
MANOEUVRE_SPEED_CHANGE_MPS = 2.0
# The fit to the naturalistic drives (median, 95th percentile, g), the knobs' documented values.
FITTED_BRAKING_G = (0.13, 0.22)
FITTED_ACCELERATION_G = (0.19, 0.42)
# Ordinary driving only, enough of it for a few hundred manoeuvres.
SIMULATED = SimulationConfig(
    devices=20, duration_s=1800.0, seed=7, event_rate_per_10min=0.0, confounder_rate_per_10min=0.0
)


@dataclass
class Peaks:
    """Peaks (m/s², positive) of one source's brakes and pull-aways, and how many minutes it covers."""

    brakes: list[float]
    pull_aways: list[float]
    minutes: float = 0.0

    def add(self, speed_mps: NDArray[np.float64]) -> None:
        """Add the manoeuvres of one stretch of 1 Hz speeds (no gaps)."""
        self.minutes += speed_mps.size / 60.0
        brakes, pull_aways = manoeuvre_peaks(speed_mps)
        self.brakes += brakes
        self.pull_aways += pull_aways


def manoeuvre_peaks(speed_mps: NDArray[np.float64]) -> tuple[list[float], list[float]]:
    """Peaks of the brakes and pull-aways in a 1 Hz speed series (module docstring)."""
    change = np.diff(speed_mps)
    found: tuple[list[float], list[float]] = ([], [])
    for sign, peaks in zip((-1.0, 1.0), found, strict=True):
        active = np.concatenate([[False], sign * change > MANOEUVRE_MPS2, [False]])
        edges = np.flatnonzero(np.diff(active.astype(np.int8)))
        for first, end in zip(edges[::2], edges[1::2], strict=True):
            if abs(float(speed_mps[end] - speed_mps[first])) >= MANOEUVRE_SPEED_CHANGE_MPS:
                peaks.append(float((sign * change[first:end]).max()))
    return found


def _columns(path: Path, names: Sequence[str]) -> dict[str, NDArray[np.float64]]:
    values: dict[str, list[float]] = defaultdict(list)
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            for name in names:
                text = row[name]
                values[name].append(float(text) if text else np.nan)
    return {name: np.asarray(values[name], dtype=np.float64) for name in names}


def _on_second_grid(times_s: NDArray[np.float64], speed_mps: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.interp(np.arange(times_s[0], times_s[-1], 1.0), times_s, speed_mps)


def real_peaks(folder: Path = DATASETS) -> dict[str, Peaks]:
    """Every real source the folder holds, by name."""
    sources: dict[str, Peaks] = {}
    naturalistic = folder / "driveplotr-nds" / "nds_drives_1hz.csv"
    if naturalistic.exists():
        data = _columns(naturalistic, ("drive", "time_utc_s", "speed_mps"))
        peaks = sources.setdefault("driveplotr-nds (1 Hz GPS)", Peaks([], []))
        for drive in np.unique(data["drive"]):
            rows = np.flatnonzero(data["drive"] == drive)
            times = data["time_utc_s"][rows]
            for stretch in np.split(rows, np.flatnonzero(np.diff(times) != 1.0) + 1):
                if stretch.size >= 5:
                    peaks.add(data["speed_mps"][stretch])
    auckland = sorted((folder / "quat-orient-auckland").glob("gps_*.csv"))
    if auckland:
        peaks = sources.setdefault("Auckland (1 Hz GPS)", Peaks([], []))
        for path in auckland:
            gps = _columns(path, ("t_ms", "speed_kmh"))
            peaks.add(_on_second_grid(gps["t_ms"] / 1000.0, gps["speed_kmh"] / 3.6))
    comma = folder / "comma2k19-example" / "can_speed.csv"
    if comma.exists():
        can = _columns(comma, ("t_boot_s", "speed_mps"))
        sources.setdefault("comma2k19 (CAN speed)", Peaks([], [])).add(
            _on_second_grid(can["t_boot_s"], can["speed_mps"])
        )
    return sources


def simulated_peaks(config: SimulationConfig) -> Peaks:
    """The fleet's everyday manoeuvres read from its own 1 Hz GPS speed, trip by trip."""
    fixes: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for upload in FleetSimulator(config, road_map=RoadMap.default()).uploads():
        start = timestamp_to_seconds(upload.started_at)
        fixes[upload.trip_id].extend((start + fix.offset_ms / 1000.0, fix.speed_mps) for fix in upload.gps)
    peaks = Peaks([], [])
    for track in fixes.values():
        times, speeds = np.asarray(track, dtype=np.float64).T
        peaks.add(_on_second_grid(times, speeds))
    return peaks


def _row(name: str, values: Iterable[float], minutes: float) -> str:
    array = np.asarray(list(values))
    if array.size == 0:
        return f"| {name} | 0 | {minutes:.0f} | | | | | | | |"
    median, p75, p90, p95, p99 = np.percentile(array, [50, 75, 90, 95, 99])
    return (
        f"| {name} | {array.size} | {minutes:.0f} | {median:.2f} | {p75:.2f} | {p90:.2f} | {p95:.2f} | {p99:.2f} | "
        f"{array.max():.2f} | {np.mean(array >= 2.2):.2f} |"
    )


def render(real: dict[str, Peaks], simulated: dict[str, Peaks]) -> str:
    header = (
        "| source | manoeuvres | minutes | median | 75th | 90th | 95th | 99th | largest | share ≥ 2.2 |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = []
    for kind in ("brakes", "pull_aways"):
        lines += [f"\n{kind.replace('_', '-')} (peak 1-s speed change, m/s²)\n", header]
        for name, peaks in [*real.items(), *simulated.items()]:
            lines.append(_row(name, getattr(peaks, kind), peaks.minutes))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--braking", type=float, nargs=2, default=FITTED_BRAKING_G, metavar=("MEDIAN", "P95"))
    parser.add_argument("--acceleration", type=float, nargs=2, default=FITTED_ACCELERATION_G, metavar=("MEDIAN", "P95"))
    arguments = parser.parse_args(argv)
    braking, acceleration = tuple(arguments.braking), tuple(arguments.acceleration)
    knobs = replace(SIMULATED, everyday_braking_g=braking, everyday_acceleration_g=acceleration)
    simulated = {
        "simulator, default": simulated_peaks(SIMULATED),
        f"simulator, everyday {braking[0]:g}/{braking[1]:g} g, {acceleration[0]:g}/{acceleration[1]:g} g": (
            simulated_peaks(knobs)
        ),
    }
    print(render(real_peaks(), simulated))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
