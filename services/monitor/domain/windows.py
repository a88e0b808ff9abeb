"""A tumbling window of live predictions of one model version and cohort: histograms, never rows.

A window holds, per input feature of the model's reference profile, the counts of its values on the profile's
grid (`FeatureGrid`), the smallest and largest value, and where its rows came from (the first and last offset
per partition). Its id is derived from where it starts, the consumer group's commit point when it opened
(`start`: partition -> offset), so a window read again after a crash, from that same commit point, has the
same id (`window_id`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.monitor.domain.drift import Histogram
from services.monitor.domain.profiles import FeatureGrid, ReferenceProfile
from services.monitor.domain.samples import StratifiedSample

Partition = tuple[str, int]
# The only cohort built so far: every device (vehicle type, sample rate and firmware cohorts are not yet).
COHORT_ALL = "all"


def window_id(model_name: str, model_version: str, cohort: str, start: Mapping[Partition, int]) -> str:
    """`w-` and 16 hex digits of the model, cohort and start offsets: stable across a redelivery."""
    where = ",".join(f"{topic}:{partition}:{offset}" for (topic, partition), offset in sorted(start.items()))
    digest = hashlib.sha256(f"{model_name}\x1f{model_version}\x1f{cohort}\x1f{where}".encode()).hexdigest()
    return f"w-{digest[:16]}"


def describe_start(start: Mapping[Partition, int]) -> str:
    """`partition:offset,...` of a window's start, for people (an offset of -1: the partition's beginning)."""
    return ",".join(f"{partition}:{offset}" for (_, partition), offset in sorted(start.items()))


@dataclass
class DriftWindow:
    model_name: str
    model_version: str
    cohort: str
    profile: ReferenceProfile
    grid: FeatureGrid
    start: dict[Partition, int]
    counts: np.ndarray = field(init=False)
    lows: np.ndarray = field(init=False)
    highs: np.ndarray = field(init=False)
    rows: int = 0
    first_offsets: dict[Partition, int] = field(default_factory=dict)
    last_offsets: dict[Partition, int] = field(default_factory=dict)
    # Latest `occurred_at` of its predictions (seconds, nanos): the time of what it reports.
    latest: tuple[int, int] = (0, 0)
    # Rows of other versions of the same model since its last row (a window of a version no longer served ends).
    idle_rows: int = 0
    # The rows a drift episode opened by this window asks people to label (`DRIFT_SAMPLE`), per predicted class.
    sample: StratifiedSample[Any] = field(default_factory=lambda: StratifiedSample(0))

    def __post_init__(self) -> None:
        features = len(self.grid.names)
        self.counts = np.zeros((features, self.grid.columns), dtype=np.int32)
        self.lows = np.full(features, np.inf)
        self.highs = np.full(features, -np.inf)

    @property
    def id(self) -> str:
        return window_id(self.model_name, self.model_version, self.cohort, self.start)

    def add(self, values: np.ndarray, partition: Partition, offset: int, occurred_at: tuple[int, int]) -> None:
        """One prediction's feature row (NaN where it has none): O(features)."""
        column = self.grid.columns_of(values)
        used = column >= 0
        self.counts[self.grid.rows[used], column[used]] += 1
        finite = np.where(used, values, np.nan)
        self.lows = np.fmin(self.lows, finite)
        self.highs = np.fmax(self.highs, finite)
        self.rows += 1
        self.idle_rows = 0
        self.first_offsets.setdefault(partition, offset)
        self.last_offsets[partition] = offset
        self.latest = max(self.latest, occurred_at)

    def histogram(self, position: int) -> Histogram:
        return self.grid.histogram(
            position, self.counts[position], float(self.lows[position]), float(self.highs[position])
        )
