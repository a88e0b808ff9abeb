"""`Prediction.packed_features` and the monitor's batched binning: the same counts as the feature map, row by row.

Inference packs each window's features (float32 little-endian, `FEATURE_NAMES` order) beside the map; the monitor
unpacks a poll batch at once, bins it once for every window of the version (`RowBatch`), and counts the slots in
bulk. Checked here: the codec; that a value lands in the bin numpy.histogram counts it in on the profile's edges
(edges themselves, their neighbouring floats, the closed last bin, outside the range, NaN and infinities), for
equal-width and for irregular edges; and that packed, map and mixed predictions give one and the same window.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from michi.contracts.v1 import inference_pb2
from michi.kit.consumer import Rejected
from michi.windows.features import FEATURE_INDEX, FEATURE_NAMES, pack_features, packed_width, unpack_features
from services.monitor.domain import binning_kernel
from services.monitor.domain.profiles import FeatureGrid, ReferenceProfile, read_profile
from services.monitor.domain.windows import BatchColumns, DriftWindow, RowBatch
from services.monitor.handlers import DriftMonitor, DriftPolicy
from services.trainer.domain.profile import histogram

from .test_monitor_handlers import TOPIC, History, Publisher, Reports

# Three features of the list, in an order of their own (the grid maps packed positions to its rows).
NAMES = ("sample_rate_hz", "gps_speed_mps", "braking_evidence")


def make_profile() -> ReferenceProfile:
    random = np.random.default_rng(4)
    return read_profile(
        {
            "version": "reference-profile-2",
            "data_version": "ds-1",
            "features": {
                "sample_rate_hz": histogram(random.choice([25.0, 50.0, 100.0], 20_000)),
                "gps_speed_mps": histogram(random.gamma(4.0, 3.0, 20_000)),
                "braking_evidence": histogram(np.clip(random.normal(0.1, 0.2, 20_000), 0.0, 1.0)),
            },
        }
    )


def feature_rows(count: int, seed: int = 9) -> np.ndarray:
    random = np.random.default_rng(seed)
    rows = random.normal(0.0, 1.0, (count, len(FEATURE_NAMES))).astype(np.float32)
    rows[:, FEATURE_INDEX["sample_rate_hz"]] = random.choice([25.0, 50.0, 100.0, 200.0], count)
    rows[:, FEATURE_INDEX["gps_speed_mps"]] = random.gamma(4.0, 3.5, count)
    rows[:, FEATURE_INDEX["braking_evidence"]] = np.clip(random.normal(0.15, 0.25, count), 0.0, 1.0)
    rows[::13, FEATURE_INDEX["gps_speed_mps"]] = np.nan
    return rows


def test_packed_rows_read_back_as_they_were_shorter_rows_padded_with_nan() -> None:
    rows = feature_rows(5)
    blocks = pack_features(rows)
    assert all(len(block) == 4 * len(FEATURE_NAMES) for block in blocks)
    assert np.array_equal(unpack_features(blocks), rows.astype(np.float64), equal_nan=True)
    # A model reading the first 23 features (features-3) packs 23: the rest reads as missing.
    mixed = unpack_features([blocks[0][: 4 * 23], blocks[1]])
    assert mixed.shape == (2, len(FEATURE_NAMES))
    assert np.isnan(mixed[0, 23:]).all() and np.array_equal(
        mixed[0, :23], rows[0, :23].astype(np.float64), equal_nan=True
    )
    assert packed_width(blocks[0]) == len(FEATURE_NAMES) and packed_width(b"12345") is None
    assert unpack_features([]).shape == (0, 0)


def test_a_value_lands_in_the_bin_numpy_counts_it_in_on_the_profile_edges() -> None:
    profile = make_profile()
    grid = FeatureGrid(profile)
    for position, feature in enumerate(profile.features):
        edges = feature.histogram.edges
        probes = np.concatenate(
            (
                edges,
                np.nextafter(edges, -np.inf),
                np.nextafter(edges, np.inf),
                np.linspace(edges[0] - 3 * (edges[-1] - edges[0]), edges[-1] + 3 * (edges[-1] - edges[0]), 5001),
                np.float32(edges).astype(np.float64),  # what a float32 feature reads near an edge
            )
        )
        values = np.full((probes.size, len(NAMES)), np.nan)
        values[:, position] = probes
        columns = grid.columns_of(values)[:, position]
        inside = (probes >= edges[0]) & (probes <= edges[-1])
        # numpy.histogram: [edge_i, edge_i+1), the last bin closed.
        expected = np.clip(np.searchsorted(edges, probes[inside], side="right") - 1, 0, len(edges) - 2)
        bins = int(grid.bins[position])
        assert np.array_equal((columns[inside] - bins - 1) // grid.subdivisions, expected), feature.name
        # Outside the range: below or above the profile's bins, never inside them.
        assert np.all((columns[probes < edges[0]] <= bins) & (columns[probes < edges[0]] >= 0))
        assert np.all(columns[probes > edges[-1]] >= 2 * bins + 1)
        # Every column holds its value between its live edges.
        live = grid.table[position]
        assert np.all(live[columns] <= probes) and np.all(probes < live[columns + 1])
    values = np.array([[math.nan, math.inf, -math.inf]])
    assert grid.columns_of(values).tolist() == [[-1, -1, -1]]


def test_irregular_edges_are_binned_by_search_with_the_same_rule() -> None:
    profile = read_profile(
        {
            "version": "reference-profile-2",
            "data_version": "ds-1",
            "features": {
                "gps_speed_mps": {
                    "edges": [0.0, 1.0, 5.0, 30.0],
                    "counts": [0, 10, 20, 30, 0],
                    "count": 60,
                    "min": 0.0,
                    "max": 30.0,
                    "std": 5.0,
                }
            },
        }
    )
    grid = FeatureGrid(profile)
    assert grid.irregular == [0]
    probes = np.array([0.0, 0.999, 1.0, 4.99, 5.0, 29.9, 30.0, -0.1, 30.1, math.nan])
    columns = grid.columns_of(probes[:, np.newaxis])[:, 0]
    bins = int(grid.bins[0])
    reference = (columns[:7] - bins - 1) // grid.subdivisions
    assert reference.tolist() == [0, 0, 1, 1, 2, 2, 2]
    assert columns[7] <= bins and columns[8] >= 2 * bins + 1 and columns[9] == -1


class Profiles:
    def __init__(self) -> None:
        self.known = make_profile()

    def profile(self, model_name: str, model_version: str) -> ReferenceProfile | None:
        return self.known if (model_name, model_version) == ("risk", "v1") else None


def build() -> tuple[DriftMonitor, Reports]:
    reports = Reports()
    monitor = DriftMonitor(
        profiles=Profiles(),
        publisher=Publisher(),
        history=History(),
        reports=reports,
        policy=DriftPolicy(window_rows=1500, min_rows=1000, min_devices=1, sustain_windows=1),
    )
    monitor.assigned({(TOPIC, 0): -1, (TOPIC, 1): -1})
    return monitor, reports


def prediction(row: np.ndarray, index: int, *, packed: bool, mapped: bool) -> inference_pb2.Prediction:
    message = inference_pb2.Prediction(variant=inference_pb2.VARIANT_CHAMPION, vehicle_type=("car", "van")[index % 2])
    message.lineage.model_name, message.lineage.model_version = "risk", "v1"
    message.lineage.window_id, message.lineage.device_id = f"window-{index}", f"device-{index % 7}"
    message.predicted, message.confidence = 1, 0.9  # type: ignore[assignment]
    message.occurred_at.seconds = 1_700_000_000 + index
    if packed:
        message.packed_features = pack_features(row[np.newaxis, :])[0]
    if mapped:
        message.features.update(zip(FEATURE_NAMES, (float(value) for value in row), strict=True))
    return message


@pytest.mark.parametrize("form", ["packed", "mixed"])
def test_packed_and_mixed_predictions_give_the_windows_the_feature_map_gives(form: str) -> None:
    rows = feature_rows(3200)
    by_map, map_reports = build()
    other, other_reports = build()
    for index, row in enumerate(rows):
        by_map.handle(prediction(row, index, packed=False, mapped=True), (TOPIC, index % 2), index // 2)
        packed = form == "packed" or index % 3 != 0
        other.handle(prediction(row, index, packed=packed, mapped=not packed), (TOPIC, index % 2), index // 2)
        if index % 700 == 699:  # poll batches end where they may
            by_map.flush()
            other.flush()
    by_map.flush()
    other.flush()
    assert [closed.window_id for closed in map_reports.closed] == [closed.window_id for closed in other_reports.closed]
    assert len(map_reports.closed) >= 3  # `all` twice, and each vehicle's first
    for expected, got in zip(map_reports.closed, other_reports.closed, strict=True):
        assert [
            (result.feature, result.psi, result.ks_statistic, result.wasserstein) for result in expected.features
        ] == [(result.feature, result.psi, result.ks_statistic, result.wasserstein) for result in got.features]
    for key, window in by_map.windows.items():
        assert np.array_equal(window.counts, other.windows[key].counts), key
        assert np.array_equal(window.lows, other.windows[key].lows, equal_nan=True)


def test_a_cohort_window_sharing_a_batch_counts_what_it_would_count_alone() -> None:
    profile = make_profile()
    grid = FeatureGrid(profile)
    rows = feature_rows(2500)
    shared, alone = (
        DriftWindow("risk", "v1", "vehicle:van", profile, grid),
        DriftWindow("risk", "v1", "x", profile, grid),
    )
    batch = RowBatch(grid)
    for index, row in enumerate(rows):
        position = batch.add(pack_features(row[np.newaxis, :])[0], 1, 0.9)
        if index % 3 == 0:
            shared.take(batch, position, (TOPIC, 0), index, (index, 0))
            alone.push(
                grid.values_of_packed(row[np.newaxis, :].astype(np.float64))[0], (TOPIC, 0), index, (index, 0), 1, 0.9
            )
        if index % 1000 == 999:
            shared.flush()
            alone.flush()
            batch = RowBatch(grid)
    shared.flush()
    alone.flush()
    assert shared.rows == alone.rows == 834
    assert np.array_equal(shared.counts, alone.counts)
    assert np.array_equal(shared.calls, alone.calls)


def test_packed_features_of_no_whole_number_of_values_are_a_schema_violation() -> None:
    monitor, _ = build()
    message = prediction(feature_rows(1)[0], 0, packed=True, mapped=True)
    message.packed_features = message.packed_features[:-1]
    with pytest.raises(Rejected, match="packed_features of 103 bytes"):
        monitor.handle(message, (TOPIC, 0), 0)


def edge_probes(grid: FeatureGrid, position: int, dtype: type[np.floating]) -> np.ndarray:  # type: ignore[type-arg]
    """Values of feature `position` on and next to every live edge (in `dtype`), across and beyond the grid."""
    edges = grid.table[position][np.isfinite(grid.table[position])].astype(dtype)
    span = float(edges[-1] - edges[0])
    return np.concatenate(
        (
            edges,
            np.nextafter(edges, dtype(-np.inf)),
            np.nextafter(edges, dtype(np.inf)),
            np.linspace(float(edges[0]) - span, float(edges[-1]) + span, 3001).astype(dtype),
        )
    )


def searched_slots(grid: FeatureGrid, values: np.ndarray) -> np.ndarray:
    """The slot of each value (rows, features in grid order) by `numpy.searchsorted` on the live edges."""
    slots = np.empty(values.shape, dtype=np.int64)
    for position in range(len(grid.names)):
        column = np.searchsorted(grid.table[position], values[:, position].astype(np.float64), side="right") - 1
        slots[:, position] = grid.offsets[position] + np.clip(column, 0, grid.columns - 1)
    slots[~np.isfinite(values)] = grid.unused
    return slots


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_batch_is_binned_as_search_finds_it_on_and_off_the_grid(dtype: type[np.floating]) -> None:  # type: ignore[type-arg]
    """The compiled kernel's arithmetic finds each value's nearest live edge and one comparison settles its side,
    in float32 for float32 rows: the slots search gives, on, beside and between every edge, beyond the grid and
    not finite; and it counts, for any rows of a batch, what those slots count."""
    grid = FeatureGrid(make_profile())
    assert grid.single_precision.all()
    probes = [edge_probes(grid, position, dtype) for position in range(len(grid.names))]
    random = np.random.default_rng(3)
    rows = np.stack([random.choice(values, 5000) for values in probes], axis=1).astype(dtype)
    rows[7, 0], rows[8, 1], rows[9, 2] = np.nan, np.inf, -np.inf
    binning = grid.binning()
    expected = searched_slots(grid, rows)
    assert np.array_equal(binning.slots(rows), expected)
    assert np.array_equal(binning.slots(rows), grid.slots_of(rows.astype(np.float64)))
    # Every probe of every feature, not only a draw of them.
    for position, values in enumerate(probes):
        alone = np.full((values.size, len(grid.names)), np.nan, dtype=dtype)
        alone[:, position] = values
        assert np.array_equal(binning.slots(alone), searched_slots(grid, alone)), grid.names[position]
    taken = np.sort(random.choice(rows.shape[0], 1200, replace=False))
    for chosen in (None, taken):
        counts = np.zeros(grid.unused + 1, dtype=np.int64)
        binning.count(rows, chosen, counts)
        slots = expected if chosen is None else expected[chosen]
        assert np.array_equal(counts, np.bincount(slots.ravel(), minlength=counts.size))


def test_a_grid_whose_edges_float32_cannot_place_bins_its_float32_rows_in_float64() -> None:
    """A feature a millionth of its magnitude wide: float32 arithmetic is off by many columns, so float32 rows are
    binned in float64 (exact); its slots are still search's."""
    profile = read_profile(
        {
            "version": "reference-profile-2",
            "data_version": "ds-1",
            "features": {"gps_speed_mps": histogram(1e6 + np.linspace(0.0, 1.0, 5000))},
        }
    )
    grid = FeatureGrid(profile)
    assert not grid.single_precision[0] and grid.irregular == []
    binning = grid.binning()
    assert np.float32 not in binning._constants
    values = (1e6 + np.random.default_rng(5).uniform(-1.5, 2.5, (4000, 1))).astype(np.float32)
    assert np.array_equal(binning.slots(values), searched_slots(grid, values))


def test_rows_handed_as_arrays_count_as_their_packed_features() -> None:
    """`RowBatch.extend_columns` (rows that arrive columnar) against the same rows as `packed_features`: the same
    counts, extremes and calls, for a window taking all of a batch and one taking a share; a block of fewer
    features than the grid's leaves the missing ones uncounted, as unpacked NaN would."""
    profile = make_profile()
    grid = FeatureGrid(profile)
    rows = feature_rows(3000)
    predicted = np.arange(3000) % 5
    confidences = np.linspace(0.0, 1.0, 3000)
    windows = {
        form: (DriftWindow("risk", "v1", "x", profile, grid), DriftWindow("risk", "v1", "y", profile, grid))
        for form in ("packed", "arrays")
    }
    for start in range(0, 3000, 1000):
        block = slice(start, start + 1000)
        packed, arrays = RowBatch(grid), RowBatch(grid)
        packed.extend(pack_features(rows[block]), predicted[block].tolist(), confidences[block].tolist(), packed=True)
        arrays.extend_columns(rows[block], predicted[block], confidences[block])
        for form, batch in (("packed", packed), ("arrays", arrays)):
            every, share = windows[form]
            for index in range(1000):
                every.take(batch, index, (TOPIC, 0), start + index, (start + index, 0))
                if index % 3 == 0:
                    share.take(batch, index, (TOPIC, 0), start + index, (start + index, 0))
            every.flush()
            share.flush()
    for expected, got in zip(windows["packed"], windows["arrays"], strict=True):
        assert np.array_equal(expected.counts, got.counts)
        assert np.array_equal(expected.lows, got.lows) and np.array_equal(expected.highs, got.highs)
        assert np.array_equal(expected.calls, got.calls) and np.array_equal(expected.alerts, got.alerts)
        assert expected.calls.sum() == expected.rows
    # A block of the first features only (a model of fewer features): the rest count nowhere.
    short, padded = RowBatch(grid), RowBatch(grid)
    width = FEATURE_INDEX["gps_speed_mps"] + 1
    short.extend_columns(rows[:, :width], predicted, confidences)
    padded_rows = rows.copy()
    padded_rows[:, width:] = np.nan
    padded.extend_columns(padded_rows, predicted, confidences)
    counted = [DriftWindow("risk", "v1", "x", profile, grid) for _ in range(2)]
    for window, batch in zip(counted, (short, padded), strict=True):
        window.take_rows(batch, _columns(3000), np.arange(3000))
        window.flush()
    assert np.array_equal(counted[0].counts, counted[1].counts)
    assert counted[0].counts[list(grid.names).index("braking_evidence")].sum() == 0


def test_a_batch_of_packed_rows_then_feature_map_rows_counts_each_row_once() -> None:
    """A close in the middle of a poll batch bins its rows so far (packed: in packed order); later rows of a feature
    map are binned in grid order, and the batch puts both in grid order: the same counts as each row alone."""
    profile = make_profile()
    grid = FeatureGrid(profile)
    rows = feature_rows(400)
    batch = RowBatch(grid)
    shared = DriftWindow("risk", "v1", "x", profile, grid)
    alone = DriftWindow("risk", "v1", "y", profile, grid)
    for index, row in enumerate(rows):
        grid_row = grid.values_of_packed(row[np.newaxis, :].astype(np.float64))[0]
        features: bytes | np.ndarray = pack_features(row[np.newaxis, :])[0] if index < 200 else grid_row
        shared.take(batch, batch.add(features, 1, 0.9), (TOPIC, 0), index, (index, 0))
        alone.add(grid_row, (TOPIC, 0), index, (index, 0))
        alone.count_call(1, 0.9)
        if index == 199:
            batch.gathered()  # what a close in the middle of the batch does
    shared.flush()
    assert batch.binning is grid.binning()
    assert np.array_equal(shared.counts, alone.counts)
    assert np.array_equal(shared.lows, alone.lows) and np.array_equal(shared.highs, alone.highs)
    assert np.array_equal(shared.calls, alone.calls)


def _columns(count: int) -> BatchColumns:
    return BatchColumns.anonymous((TOPIC, 0), 0, np.full(count, 1_700_000_000, dtype=np.int64))


def test_columns_beyond_the_grids_features_are_never_binned() -> None:
    """Packed rows longer than the grid reads (a newer producer, or a hostile one) bin as their first columns: the
    same counts, and one binning per width the grid reads, whatever the widths sent."""
    profile = make_profile()
    grid = FeatureGrid(profile)
    rows = feature_rows(500)
    longer = np.concatenate((rows, np.full((500, 1000), 7.0, dtype=np.float32)), axis=1)
    counted = []
    for block in (rows, longer):
        batch = RowBatch(grid)
        batch.extend(pack_features(block), [1] * 500, [0.9] * 500, packed=True)
        window = DriftWindow("risk", "v1", "x", profile, grid)
        for index in range(500):
            window.take(batch, index, (TOPIC, 0), index, (index, 0))
        window.flush()
        counted.append(window)
    assert np.array_equal(counted[0].counts, counted[1].counts)
    assert np.array_equal(counted[0].lows, counted[1].lows)
    assert max(width for width in grid._binnings if width is not None) == grid.packed_columns


def test_warming_up_compiles_the_kernel_for_every_kind_of_rows_a_window_bins() -> None:
    """After `binning_kernel.warm_up` (the monitor's start), no batch compiles: float32 rows as unpacked
    (read-only) and as arrays, float64 rows, each counted whole, in part, or binned to slots."""
    binning_kernel.warm_up()
    compiled = list(binning_kernel.bin_rows.signatures)
    grid = FeatureGrid(make_profile())
    rows = feature_rows(50)
    # As a batch unpacks `packed_features`: float32 over the joined bytes, read-only.
    unpacked = np.frombuffer(b"".join(pack_features(rows)), dtype=np.float32).reshape(rows.shape)
    assert not unpacked.flags.writeable
    counts = np.zeros(grid.unused + 1, dtype=np.int64)
    for values in (unpacked, rows.astype(np.float32), rows.astype(np.float64), unpacked.astype(np.float64)):
        binning = grid.binning(values.shape[1])
        binning.count(values, None, counts)
        binning.count(values, np.arange(10), counts)
        binning.slots(values)
    assert list(binning_kernel.bin_rows.signatures) == compiled
