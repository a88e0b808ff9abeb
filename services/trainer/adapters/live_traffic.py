"""The traffic a fleet really sent, read back from the warehouse: the windows of a period, for a reference profile.

The warehouse keeps every champion `Prediction` with its window's summary features (the `features` map), its
device, vehicle type, IMU rate, firmware and mount calibration (`michi/warehouse/rows.py`). A shadow version
scores windows a serving arm already scored, so each window counts once: the serving arms' predictions only
(champion, or a rollout's canary or treatment arm), whichever version served them.
The features are model-independent (preprocessing computes them before any model), so the traffic of a period
describes what any version of the model serves.

    traffic = read_live_traffic(blob_url, since, until)
    traffic.count, traffic.devices_count, traffic.features.shape   # windows, devices, (windows, 26)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from michi.warehouse.query import query_arrow
from michi.windows.features import FEATURE_NAMES
from services.trainer.adapters.simulation import CALIBRATION, DEVICE, TRAFFIC_DIMENSIONS

# The most windows read for one profile: a month of a 40-device fleet is ~10 M; a sample of this many, spread over
# the period (every k-th window in time order), describes it as well and keeps the read to seconds.
MAX_LIVE_WINDOWS = 2_000_000


@dataclass(frozen=True)
class LiveTraffic:
    """Windows of a period in time order: features [N, 26] in `FEATURE_NAMES` order (NaN where a prediction did
    not carry one), and per window its cohort values (`vehicle`, `rate`, `firmware`, as the trainer's simulated
    traffic names them), calibration state and device."""

    features: np.ndarray
    cohorts: dict[str, list[str]] = field(default_factory=dict)
    first_at: datetime | None = None
    last_at: datetime | None = None
    # Windows in the period before sampling (`MAX_LIVE_WINDOWS`).
    available: int = 0

    @property
    def count(self) -> int:
        return int(self.features.shape[0])

    @property
    def devices_count(self) -> int:
        return len(set(self.cohorts.get(DEVICE, [])))


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def read_live_traffic(
    blob_url: str, since: datetime, until: datetime, *, max_windows: int = MAX_LIVE_WINDOWS
) -> LiveTraffic:
    """The serving arms' predictions with `since <= occurred_at < until` from the warehouse under `blob_url`."""
    period = (
        f"variant <> 'shadow' AND occurred_at >= TIMESTAMPTZ '{_timestamp(since)}+00' "
        f"AND occurred_at < TIMESTAMPTZ '{_timestamp(until)}+00'"
    )
    # Feature names are the module's own constants (no quoting needed); each is read out of the map, NULL if absent.
    columns = ", ".join(f"map_extract(features, '{name}')[1] AS \"{name}\"" for name in FEATURE_NAMES)
    # One scan: every window of the period is numbered in time order and counted, and every k-th is kept, k the
    # smallest step that keeps at most `max_windows`.
    table = query_arrow(
        "SELECT * FROM ("
        f"SELECT occurred_at, device_id, vehicle_type, sample_rate_hz, firmware_version, calibration_state, {columns}, "
        "row_number() OVER (ORDER BY occurred_at, event_id) AS position, count(*) OVER () AS available "
        f"FROM predictions WHERE {period}) "
        f"WHERE position % ((available + {max_windows} - 1) // {max_windows}) = 0 ORDER BY position",
        blob_url,
    )
    if table.num_rows == 0:
        return LiveTraffic(np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32), available=0)
    available = int(table.column("available")[0].as_py())
    features = np.column_stack(
        [table.column(name).to_numpy(zero_copy_only=False).astype(np.float32) for name in FEATURE_NAMES]
    )

    def strings(column: str) -> list[str]:
        return ["" if value is None else str(value) for value in table.column(column).to_pylist()]

    rates = [str(value) if value else "" for value in table.column("sample_rate_hz").to_pylist()]
    cohorts = dict(zip(TRAFFIC_DIMENSIONS, (strings("vehicle_type"), rates, strings("firmware_version")), strict=True))
    cohorts[CALIBRATION] = [value or "uncalibrated" for value in strings("calibration_state")]
    cohorts[DEVICE] = strings("device_id")
    moments = table.column("occurred_at").to_pylist()
    return LiveTraffic(features, cohorts, moments[0], moments[-1], available)
