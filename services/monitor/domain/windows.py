"""A tumbling window of live predictions of one model version and cohort: histograms, never rows.

A window holds, per input feature of the model's reference profile, the counts of its values on the profile's
grid (`FeatureGrid`), the smallest and largest value, and where its rows came from (the first and last offset
per partition). A cohort's windows follow each other: a window takes the cohort's rows from where the one
before it ended (`ends`, kept when it closes), so a window read again after a crash takes the same rows, starts
at the same first offsets and has the same id (`window_id`, derived from them).

Cohorts: every device (`all`), and per vehicle type, IMU sample rate and firmware when a prediction says them
(`cohorts_of`). A window also counts, per cohort dimension of a traffic profile's `population`, its rows from a
value the traffic never had (`unseen`): a new firmware, vehicle type or rate is a change of the population the
model serves, judged like a feature (`population_drift`: the share of such rows against the traffic's none).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from michi.windows.features import PACKED_FEATURE_TYPE, unpack_features
from services.monitor.domain.drift import Histogram
from services.monitor.domain.performance import (
    CONFIDENCE_BINS,
    confidence_bin,
    confidence_bins_and_alerts,
    risky_call,
)
from services.monitor.domain.profiles import ColumnBinning, FeatureGrid, ReferenceProfile, column_extremes
from services.monitor.domain.samples import StratifiedSample

Partition = tuple[str, int]
COHORT_ALL = "all"
# The cohort dimensions beside `all`: cohort names are `<dimension>:<value>`.
VEHICLE = "vehicle"
RATE = "rate"
FIRMWARE = "firmware"
COHORT_DIMENSIONS = (VEHICLE, RATE, FIRMWARE)
# A cohort value longer than this, or with characters outside printable ASCII, is cut and escaped.
MAX_COHORT_VALUE = 64
# A window counts its devices up to this many, and its rows per vehicle type for this many types (the rest as one).
MAX_DEVICES_COUNTED = 1000
MAX_VEHICLE_TYPES_COUNTED = 32


def cohort_value(value: str) -> str:
    """A device-given value as a cohort name part: printable ASCII, at most `MAX_COHORT_VALUE` characters."""
    printable = "".join(character if " " <= character <= "~" else "?" for character in value.strip())
    return printable[:MAX_COHORT_VALUE]


def cohort_values(vehicle_type: str, sample_rate_hz: int, firmware_version: str) -> dict[str, str]:
    """A prediction's value per cohort dimension ("" where it says none)."""
    return {
        VEHICLE: cohort_value(vehicle_type),
        RATE: str(sample_rate_hz) if sample_rate_hz > 0 else "",
        FIRMWARE: cohort_value(firmware_version),
    }


def cohorts_of(
    vehicle_type: str, sample_rate_hz: int, firmware_version: str, dimensions: tuple[str, ...]
) -> list[tuple[str, str]]:
    """(dimension, cohort) of a prediction beside `all`, for the enabled `dimensions`, where the value is known."""
    known = cohort_values(vehicle_type, sample_rate_hz, firmware_version)
    return [(dimension, f"{dimension}:{known[dimension]}") for dimension in dimensions if known.get(dimension)]


def window_id(model_name: str, model_version: str, cohort: str, start: Mapping[Partition, int]) -> str:
    """`w-` and 16 hex digits of the model, cohort and first offsets: stable across a redelivery."""
    where = ",".join(f"{topic}:{partition}:{offset}" for (topic, partition), offset in sorted(start.items()))
    digest = hashlib.sha256(f"{model_name}\x1f{model_version}\x1f{cohort}\x1f{where}".encode()).hexdigest()
    return f"w-{digest[:16]}"


def describe_start(start: Mapping[Partition, int]) -> str:
    """`partition:offset,...` of a window's first rows, for people."""
    return ",".join(f"{partition}:{offset}" for (_, partition), offset in sorted(start.items()))


class RowBatch:
    """The predictions of one poll batch of one model version: their features as they came (`packed_features`, a
    feature map's row, or arrays of rows), unpacked once for every window that takes them (`DriftWindow.take`),
    with each row's call (class and confidence). Valid until the monitor's end-of-batch `flush`, where each
    window bins and counts the rows it took.

    Gathered rows keep the columns they came in (`binning`: `packed_features`' order, or the grid's for rows of a
    feature map), so packed rows are binned as they are unpacked, without reordering them."""

    def __init__(self, grid: FeatureGrid) -> None:
        self.grid = grid
        # Rows added since the last binning, one at a time (`add`, `extend`).
        self._features: list[bytes | np.ndarray] = []
        # Whether a pending row came as a feature map's row rather than `packed_features` (an older producer).
        self._unpacked = False
        self._predicted: list[int] = []
        self._confidences: list[float] = []
        # The rows gathered so far (`gathered`): values in the columns of `binning`, confidence bins, whether each
        # call is an alert, and per grid feature the smallest and largest finite value (`extremes`).
        self.binning = grid.binning()
        self._values, self._bins, self._alerts, self._lows, self._highs = _no_rows(len(grid.names))

    def __len__(self) -> int:
        return self._values.shape[0] + len(self._features)

    def add(self, features: bytes | np.ndarray, predicted: int, confidence: float) -> int:
        """A prediction's features (`packed_features`, or a row in grid order) and call; its index in the batch."""
        self._features.append(features)
        if not isinstance(features, bytes):
            self._unpacked = True
        self._predicted.append(predicted)
        self._confidences.append(confidence)
        return len(self) - 1

    def extend(
        self,
        features: Sequence[bytes | np.ndarray],
        predicted: Sequence[int],
        confidences: Sequence[float],
        *,
        packed: bool = False,
    ) -> None:
        """Many predictions' features and calls at once (`add` for each; `packed`: all of them `packed_features`)."""
        if not packed and not self._unpacked and not all(type(row) is bytes for row in features):
            self._unpacked = True
        self._features.extend(features)
        self._predicted.extend(predicted)
        self._confidences.extend(confidences)

    def extend_columns(self, features: np.ndarray, predicted: np.ndarray, confidences: np.ndarray) -> None:
        """Many predictions as arrays (rows that arrive columnar): `features` (rows, width) in `FEATURE_NAMES` order
        as `unpack_features` gives them (NaN where a row has none), each row's class and confidence. Gathered at
        once, after the rows added before them."""
        if self._features:
            self.gathered()
        if features.dtype != np.float32:
            features = np.asarray(features, dtype=np.float64)
        features = features[:, : self.grid.packed_columns]
        self._gather(
            np.ascontiguousarray(features),
            self.grid.binning(features.shape[1]),
            np.asarray(predicted, dtype=np.int64),
            np.asarray(confidences, dtype=np.float64),
        )

    def gathered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every row's values (rows, `binning.width`: what each window taking rows bins and counts at its `flush`),
        its confidence bin and whether its call is an alert."""
        if self._features:
            features, predicted, confidences = self._features, self._predicted, self._confidences
            unpacked = self._unpacked
            self._features, self._predicted, self._confidences, self._unpacked = [], [], [], False
            values, binning = self._rows(features, unpacked)
            self._gather(
                values,
                binning,
                np.fromiter(predicted, dtype=np.int64, count=len(predicted)),
                np.fromiter(confidences, dtype=np.float64, count=len(confidences)),
            )
        return self._values, self._bins, self._alerts

    def extremes(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per grid feature, the smallest and largest finite value (NaN where none) of the rows gathered, or of those
        of them at `rows`."""
        if rows is None:
            return self._lows, self._highs
        lows, highs = self.binning.extremes(self._values[rows])
        return lows, highs

    def _gather(
        self, values: np.ndarray, binning: ColumnBinning, predicted: np.ndarray, confidences: np.ndarray
    ) -> None:
        lows, highs = binning.extremes(values)
        bins, alerts = confidence_bins_and_alerts(predicted, confidences)
        if self._values.shape[0] == 0:
            self._values, self.binning = values, binning
            self._bins, self._alerts, self._lows, self._highs = bins, alerts, lows, highs
            return
        if binning is not self.binning:  # rows of other columns than the batch's so far (rare): both in grid order
            grid_order = self.grid.binning()
            self._values = self.binning.in_grid_order(self._values, np.nan)
            values = binning.in_grid_order(values, np.nan)
            self.binning = grid_order
        self._values = np.concatenate((self._values, values))
        self._bins = np.concatenate((self._bins, bins))
        self._alerts = np.concatenate((self._alerts, alerts))
        self._lows, self._highs = np.fmin(self._lows, lows), np.fmax(self._highs, highs)

    def _rows(self, features: list[bytes | np.ndarray], unpacked: bool) -> tuple[np.ndarray, ColumnBinning]:
        """The rows' values (float32 as packed, when every row packs as many), and their columns."""
        if not unpacked:
            rows = _unpacked(features)  # type: ignore[arg-type]
            if rows.shape[1] > self.grid.packed_columns:  # columns the grid does not read
                rows = np.ascontiguousarray(rows[:, : self.grid.packed_columns])
            return rows, self.grid.binning(rows.shape[1])
        rows = np.vstack(
            [self.grid.values_of_packed(unpack_features([row])) if isinstance(row, bytes) else row for row in features]
        )
        return np.asarray(rows, dtype=np.float64), self.grid.binning()


def _unpacked(blocks: list[bytes]) -> np.ndarray:
    """`unpack_features`, float32 as packed (read-only) when every row is as long."""
    joined = b"".join(blocks)
    width, rest = divmod(len(blocks[0]), PACKED_FEATURE_TYPE.itemsize)
    # No row is longer than the first and together they are as long as that many first rows: all as long.
    if not rest and len(joined) == len(blocks[0]) * len(blocks) and max(map(len, blocks)) == len(blocks[0]):
        return np.frombuffer(joined, dtype=PACKED_FEATURE_TYPE).reshape(len(blocks), width)
    return unpack_features(blocks)


@functools.cache
def _no_rows(features: int) -> tuple[np.ndarray, ...]:
    """A `RowBatch`'s arrays before it gathered any row (shared, read-only: a batch replaces them, never writes)."""
    arrays = (
        np.zeros((0, features)),
        np.zeros(0, dtype=np.int64),
        np.zeros(0, dtype=bool),
        np.full(features, np.nan),
        np.full(features, np.nan),
    )
    for array in arrays:
        array.flags.writeable = False
    return arrays


def _first_seen(codes: np.ndarray) -> list[int]:
    """The distinct values of `codes`, in the order they first occur."""
    if codes.size == 0:
        return []
    if codes[0] == codes[-1] and (codes == codes[0]).all():
        return [int(codes[0])]
    found, first = np.unique(codes, return_index=True)
    return found[np.argsort(first)].tolist()


@dataclass
class BatchColumns:
    """What a poll batch's predictions of one model version say beside their features, one array per fact
    (row i: row i of their `RowBatch`): the windows take them in bulk (`DriftWindow.take_rows`)."""

    partitions: list[Partition]  # by code
    partition: np.ndarray  # per row: its partition's code
    offsets: np.ndarray
    seconds: np.ndarray  # occurred_at
    nanos: np.ndarray
    occurred: np.ndarray  # seconds * 1e9 + nanos (the latest row)
    devices: list[str]  # by code
    device: np.ndarray
    known: list[dict[str, str]]  # per population code: its cohort values
    population: np.ndarray
    predicted: np.ndarray
    keys: list[str]  # lineage.window_id: the drift sample's key ("" none)
    has_key: np.ndarray
    ranks: np.ndarray  # uint64 `sample_rank` of the key (0 without one)

    @property
    def single_partition(self) -> bool:
        return len(self.partitions) == 1

    @classmethod
    def anonymous(cls, partition: Partition, first_offset: int, seconds: np.ndarray) -> BatchColumns:
        """Rows of one partition from `first_offset` on, occurred at `seconds` (one per row), with nothing else to
        say: no device, population, predicted class or drift-sample key (benchmarks and tests of the binning)."""
        count = len(seconds)
        seconds = np.asarray(seconds, dtype=np.int64)
        return cls(
            partitions=[partition],
            partition=np.zeros(count, dtype=np.int64),
            offsets=np.arange(first_offset, first_offset + count, dtype=np.int64),
            seconds=seconds,
            nanos=np.zeros(count, dtype=np.int64),
            occurred=seconds * 1_000_000_000,
            devices=[],
            device=np.zeros(count, dtype=np.int64),
            known=[],
            population=np.zeros(count, dtype=np.int64),
            predicted=np.zeros(count, dtype=np.int64),
            keys=[],
            has_key=np.zeros(count, dtype=bool),
            ranks=np.zeros(count, dtype=np.uint64),
        )


@dataclass
class DriftWindow:
    model_name: str
    model_version: str
    cohort: str
    profile: ReferenceProfile
    grid: FeatureGrid
    # When it opened (the monitor's clock): a window open longer than the policy's maximum age closes.
    opened_at: float = 0.0
    _counts: np.ndarray = field(init=False, repr=False)
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
    # Per cohort dimension of the profile's population: rows whose value the traffic does not characterise.
    unseen: dict[str, int] = field(default_factory=dict)
    # Rows per vehicle type (the mix the reference is re-weighted to, `ReferenceProfile.mixed`), and the devices
    # the rows came from (up to `MAX_DEVICES_COUNTED`: enough to tell whether there are too few).
    vehicles: dict[str, int] = field(default_factory=dict)
    devices: set[str] = field(default_factory=set)
    # Devices per vehicle type (cohort `all`): the fleet's mix, tested against the traffic's (`mix_drift`).
    vehicle_devices: dict[str, set[str]] = field(default_factory=dict)

    # The model's calls per confidence bin, and its alerts (risky calls) per bin: the expected performance.
    calls: np.ndarray = field(init=False)
    alerts: np.ndarray = field(init=False)
    # Rows taken since the last `flush` (at most a poll batch): their batch and indexes in it.
    _batch: RowBatch | None = field(default=None, init=False, repr=False)
    _taken: list[int] = field(default_factory=list, init=False, repr=False)
    # Rows taken by `take_rows` since the last flush: arrays of indexes in `_batch`.
    _taken_rows: list[np.ndarray] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self.calls = np.zeros(CONFIDENCE_BINS)
        self.alerts = np.zeros(CONFIDENCE_BINS)
        features = len(self.grid.names)
        self._counts = np.zeros(features * self.grid.columns + 1, dtype=np.int64)
        self.lows = np.full(features, np.inf)
        self.highs = np.full(features, -np.inf)

    @property
    def start(self) -> dict[Partition, int]:
        """Its first row per partition."""
        return dict(self.first_offsets)

    @property
    def id(self) -> str:
        return window_id(self.model_name, self.model_version, self.cohort, self.first_offsets)

    @property
    def ends(self) -> dict[Partition, int]:
        """Per partition, the offset after its last row: where the cohort's next window takes over."""
        return {partition: offset + 1 for partition, offset in self.last_offsets.items()}

    @property
    def counts(self) -> np.ndarray:
        """Per feature, its values' counts per grid column (shape (features, columns)), of the rows flushed."""
        features = len(self.grid.names)
        return self._counts[:-1].reshape(features, self.grid.columns)

    def add(
        self,
        values: np.ndarray,
        partition: Partition,
        offset: int,
        occurred_at: tuple[int, int],
    ) -> None:
        """One prediction's feature row (NaN where it has none), counted at once: O(features)."""
        self.grid.binning().count(np.asarray(values, dtype=np.float64)[np.newaxis, :], None, self._counts)
        self._extremes(values[np.newaxis, :])
        self.rows += 1
        self.idle_rows = 0
        self.first_offsets.setdefault(partition, offset)
        self.last_offsets[partition] = offset
        self.latest = max(self.latest, occurred_at)

    def take(
        self, batch: RowBatch, index: int, partition: Partition, offset: int, occurred_at: tuple[int, int]
    ) -> None:
        """Row `index` of `batch`, counted into the histograms at the next `flush` (the monitor flushes every poll
        batch and before a close): its offsets and time now, its binning with the batch's other rows, vectorised
        and shared with the other windows that take it."""
        if batch is not self._batch:
            self.flush()
            self._batch = batch
        self._taken.append(index)
        self.rows += 1
        self.idle_rows = 0
        if partition not in self.first_offsets:
            self.first_offsets[partition] = offset
        self.last_offsets[partition] = offset
        if occurred_at > self.latest:
            self.latest = occurred_at

    def take_rows(self, batch: RowBatch, columns: BatchColumns, rows: np.ndarray) -> None:
        """Rows `rows` (increasing indexes of `batch`, whose facts `columns` holds) at once: what `take` does for
        each, vectorised; counted into the histograms at the next `flush`."""
        if rows.size == 0:
            return
        if batch is not self._batch:
            self.flush()
            self._batch = batch
        self._taken_rows.append(rows)
        self.rows += int(rows.size)
        self.idle_rows = 0
        every = rows.size == columns.offsets.size  # increasing indexes as many as the rows: all of them
        if columns.single_partition:
            partitions, firsts, lasts = [0], [int(rows[0])], [int(rows[-1])]
        else:
            # Each partition's first and last of the rows (its offsets increase with the rows').
            codes = columns.partition if every else columns.partition[rows]
            first_at = np.full(len(columns.partitions), rows.size)
            last_at = np.full(len(columns.partitions), -1)
            positions = np.arange(rows.size)
            np.minimum.at(first_at, codes, positions)
            np.maximum.at(last_at, codes, positions)
            found = np.flatnonzero(last_at >= 0)
            partitions, firsts, lasts = found.tolist(), rows[first_at[found]].tolist(), rows[last_at[found]].tolist()
        for code, first, last in zip(partitions, firsts, lasts, strict=True):
            partition = columns.partitions[code]
            if partition not in self.first_offsets:
                self.first_offsets[partition] = int(columns.offsets[first])
            self.last_offsets[partition] = int(columns.offsets[last])
        latest = int(rows[int(np.argmax(columns.occurred if every else columns.occurred[rows]))])
        occurred_at = (int(columns.seconds[latest]), int(columns.nanos[latest]))
        if occurred_at > self.latest:
            self.latest = occurred_at

    def count_devices(self, columns: BatchColumns, rows: np.ndarray) -> None:
        """`count_device` of each row's device, in the rows' order."""
        if len(self.devices) >= MAX_DEVICES_COUNTED or rows.size == 0:
            return
        present = np.flatnonzero(np.bincount(columns.device[rows], minlength=len(columns.devices)))
        if len(self.devices) + present.size <= MAX_DEVICES_COUNTED:  # all of them fit: their order does not matter
            self.devices.update([columns.devices[code] for code in present.tolist()])
            return
        for code in _first_seen(columns.device[rows]):
            if len(self.devices) >= MAX_DEVICES_COUNTED:
                return
            self.devices.add(columns.devices[code])

    def count_populations(self, columns: BatchColumns, rows: np.ndarray) -> None:
        """`count_population` of each row (cohort `all`): per population its rows, and its vehicle type's devices."""
        if rows.size == 0:
            return
        populations = columns.population[rows]
        counts = np.bincount(populations, minlength=len(columns.known))
        for code in _first_seen(populations):
            known = columns.known[code]
            rows_of = int(counts[code])
            vehicle = known.get(VEHICLE, "")
            if vehicle not in self.vehicles and len(self.vehicles) >= MAX_VEHICLE_TYPES_COUNTED:
                vehicle = ""
            self.vehicles[vehicle] = self.vehicles.get(vehicle, 0) + rows_of
            for dimension, values in self.profile.population.items():
                value = known.get(dimension)
                if value and value not in values:
                    self.unseen[dimension] = self.unseen.get(dimension, 0) + rows_of
        # Devices per vehicle type: each (vehicle type, device) pair once (in the rows' order where a type's devices
        # reach the count's limit). Types beyond MAX_VEHICLE_TYPES_COUNTED count as the rest ("") above.
        types = [known.get(VEHICLE, "") for known in columns.known]
        types = [vehicle if vehicle in self.vehicles else "" for vehicle in types]
        codes = {vehicle: number for number, vehicle in enumerate(dict.fromkeys(types))}
        of_population = np.array([codes[vehicle] for vehicle in types], dtype=np.int64)
        devices = len(columns.devices)
        pairs = of_population[populations] * devices + columns.device[rows]
        present = np.flatnonzero(np.bincount(pairs, minlength=len(codes) * devices)).tolist()
        names = list(codes)
        full = any(len(self.vehicle_devices.get(vehicle, ())) + devices > MAX_DEVICES_COUNTED for vehicle in names)
        for pair in _first_seen(pairs) if full else present:
            vehicle_code, device = divmod(int(pair), devices)
            drivers = self.vehicle_devices.setdefault(names[vehicle_code], set())
            if len(drivers) < MAX_DEVICES_COUNTED:
                drivers.add(columns.devices[device])

    def offer_samples(self, columns: BatchColumns, rows: np.ndarray, make: Callable[[int], Any]) -> None:
        """Offer the rows with a window id to the drift sample (`sample.offer`), each stratum's in ascending rank:
        the same sample as offering every row, building only the requests that enter (`make(row)`)."""
        if self.sample.per_stratum <= 0 or rows.size == 0:
            return
        rows = rows[columns.has_key[rows]]
        if rows.size == 0:
            return
        strata = columns.predicted[rows]
        uniform = bool((strata == strata[0]).all())
        for stratum in [int(strata[0])] if uniform else np.unique(strata).tolist():
            candidates = rows if uniform else rows[strata == stratum]
            bound = self.sample.bound(stratum)
            if bound is not None:
                candidates = candidates[columns.ranks[candidates] <= np.uint64(bound)]
                if candidates.size == 0:
                    continue
            candidates = candidates[np.argsort(columns.ranks[candidates], kind="stable")]
            self.sample.offer_ascending(
                stratum,
                columns.ranks[candidates].tolist(),
                [columns.keys[row] for row in candidates.tolist()],
                candidates.tolist(),
                make,
            )

    def push(
        self,
        values: np.ndarray,
        partition: Partition,
        offset: int,
        occurred_at: tuple[int, int],
        predicted: int,
        confidence: float,
    ) -> None:
        """One prediction's feature row in grid order (or `packed_features`) and call, in a batch of this window's
        own (`take` shares one batch between windows)."""
        if self._batch is None:
            self._batch = RowBatch(self.grid)
        self.take(self._batch, self._batch.add(values, predicted, confidence), partition, offset, occurred_at)

    def flush(self) -> None:
        """Bin and count the rows taken since the last flush (their batch unpacks them once for every window) in
        one compiled pass over their values (`ColumnBinning.count`: O(rows x features), not O(grid)), update the
        extremes and the calls."""
        batch, taken, taken_rows = self._batch, self._taken, self._taken_rows
        self._batch, self._taken, self._taken_rows = None, [], []
        if batch is None or not (taken or taken_rows):
            return
        values, bins, alerts = batch.gathered()
        if taken:
            taken_rows.append(np.array(taken, dtype=np.int64))
        rows = taken_rows[0] if len(taken_rows) == 1 else np.concatenate(taken_rows)
        every = len(rows) == len(values)  # indexes are unique: all of them means the batch as it is
        if every:
            lows, highs = batch.extremes()
        else:
            bins, alerts = bins[rows], alerts[rows]
            lows, highs = batch.extremes(rows)
        batch.binning.count(values, None if every else rows, self._counts)
        self.lows = np.fmin(self.lows, lows)
        self.highs = np.fmax(self.highs, highs)
        # Calls per bin, alerts per bin after them: one count.
        both = np.bincount(bins + CONFIDENCE_BINS * alerts, minlength=2 * CONFIDENCE_BINS)
        self.calls += both[:CONFIDENCE_BINS] + both[CONFIDENCE_BINS:]
        self.alerts += both[CONFIDENCE_BINS:]

    def _extremes(self, values: np.ndarray) -> None:
        """The smallest and largest finite value per feature, with `values`' rows (rows, features)."""
        lows, highs = column_extremes(np.ascontiguousarray(values, dtype=np.float64))
        self.lows = np.fmin(self.lows, lows)
        self.highs = np.fmax(self.highs, highs)

    def count_call(self, predicted: int, confidence: float) -> None:
        """The model's call on the row: its confidence bin, and whether it is an alert."""
        position = confidence_bin(confidence)
        self.calls[position] += 1
        if risky_call(predicted, confidence):
            self.alerts[position] += 1

    def histogram(self, position: int) -> Histogram:
        return self.grid.histogram(
            position, self.counts[position], float(self.lows[position]), float(self.highs[position])
        )

    def count_device(self, device_id: str) -> None:
        if len(self.devices) < MAX_DEVICES_COUNTED:
            self.devices.add(device_id)

    def count_population(self, known: Mapping[str, str], device_id: str) -> None:
        """A row's cohort values (dimension -> value, where it says one) and device: its vehicle type (rows and
        devices), and the values the traffic does not characterise."""
        vehicle = known.get(VEHICLE, "")
        if vehicle not in self.vehicles and len(self.vehicles) >= MAX_VEHICLE_TYPES_COUNTED:
            vehicle = ""
        self.vehicles[vehicle] = self.vehicles.get(vehicle, 0) + 1
        drivers = self.vehicle_devices.setdefault(vehicle, set())
        if len(drivers) < MAX_DEVICES_COUNTED:
            drivers.add(device_id)
        for dimension, values in self.profile.population.items():
            value = known.get(dimension)
            if value and value not in values:
                self.unseen[dimension] = self.unseen.get(dimension, 0) + 1

    def population_histograms(self) -> list[tuple[str, Histogram, Histogram]]:
        """Per cohort dimension of the profile's population: (`<dimension>_unseen`, the traffic's histogram, this
        window's) of a 0/1 value, 1 for a row from a value the traffic never had."""
        if not self.profile.features:
            return []
        reference_rows = float(self.profile.features[0].histogram.total)
        edges = np.array([-0.5, 0.5, 1.5])
        figures = []
        for dimension in sorted(self.profile.population):
            unseen = float(self.unseen.get(dimension, 0))
            reference = Histogram(edges, np.array([0.0, reference_rows, 0.0, 0.0]), 0.0, 0.0)
            current = Histogram(edges, np.array([0.0, self.rows - unseen, unseen, 0.0]), 0.0, 1.0 if unseen else 0.0)
            figures.append((f"{dimension}_unseen", reference, current))
        return figures
