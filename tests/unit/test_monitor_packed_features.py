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
from services.monitor.domain.profiles import FeatureGrid, ReferenceProfile, read_profile
from services.monitor.domain.windows import DriftWindow, RowBatch
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
