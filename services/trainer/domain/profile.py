"""The reference profile saved with every model: fixed-bin histograms of every input, for drift monitoring.

For each summary feature (`FEATURE_NAMES`) and each signal channel (`SIGNAL_CHANNELS`, all time
steps pooled) over the training windows: `BINS` (1,000) equal-width bins between the input's minimum
and maximum, plus an underflow and an overflow bin, so the monitor can histogram live windows on
exactly the same `edges` and compare (PSI, KS, Wasserstein, Jensen-Shannon; `services/monitor`).
`counts` has `len(edges) + 1` entries: below `edges[0]`, each bin, above `edges[-1]`. The last bin is
closed (it holds the maximum), so the training data's own underflow and overflow are empty; live values
outside the training range land there. Summary statistics (count, mean, std, min, max, quantiles) ride
along. A constant input gets edges around its value.

1,000 bins is what re-binning to a batch tool's bins needs: Evidently's PSI (Sturges bins over the
combined range) is reproduced within 0.005 from them, where 100 bins missed by up to 0.4
(`tests/unit/test_monitor_drift.py`). Profiles of `reference-profile-1` (20 bins between the 0.5 % and
99.5 % quantiles, overflow at or above the last edge) stay readable; the monitor marks them low-resolution.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from michi.registry.layout import REFERENCE_PROFILE_VERSION
from michi.windows.features import DATA_VERSION, FEATURE_NAMES, SIGNAL_CHANNELS

BINS = 1000
PROFILE_VERSION = REFERENCE_PROFILE_VERSION


def histogram(values: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"edges": [], "counts": [0], "count": 0}
    low, high = float(values.min()), float(values.max())
    if not high > low:
        low, high = low - 0.5, low + 0.5
    edges = np.linspace(low, high, bins + 1)
    # np.histogram's last bin is closed: the maximum is counted inside, nothing of the training data outside.
    inside, _ = np.histogram(values, bins=edges)
    counts = [0, *(int(count) for count in inside), 0]
    quantiles = np.quantile(values, [0.005, 0.05, 0.25, 0.5, 0.75, 0.95, 0.995])
    return {
        "edges": [float(edge) for edge in edges],
        "counts": counts,
        "count": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "quantiles": {
            key: float(value)
            for key, value in zip(("p005", "p05", "p25", "p50", "p75", "p95", "p995"), quantiles, strict=True)
        },
    }


def reference_profile(features: np.ndarray, signals: np.ndarray, *, data_version: str) -> dict[str, Any]:
    return {
        "version": PROFILE_VERSION,
        "data_version": data_version,
        "preprocessing_version": DATA_VERSION,
        "windows": int(features.shape[0]),
        "bins": BINS,
        "features": {name: histogram(features[:, index]) for index, name in enumerate(FEATURE_NAMES)},
        "signals": {name: histogram(signals[:, index, :]) for index, name in enumerate(SIGNAL_CHANNELS)},
    }
