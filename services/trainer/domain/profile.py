"""The reference profile saved with every model: fixed-bin histograms of every input, for drift monitoring.

For each summary feature (`FEATURE_NAMES`) and each signal channel (`SIGNAL_CHANNELS`, all time
steps pooled) over the training windows: `BINS` equal-width bins between the 0.5 % and 99.5 %
quantiles, plus an underflow and an overflow bin, so the monitor can histogram live windows on
exactly the same `edges` and compare (PSI, KS, Wasserstein, Jensen-Shannon). `counts` has
`len(edges) + 1` entries: below `edges[0]`, each bin, at or above `edges[-1]`. Summary statistics
(mean, std, min, max, quantiles) ride along. A constant input gets edges around its value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from michi.windows.features import DATA_VERSION, FEATURE_NAMES, SIGNAL_CHANNELS

BINS = 20
PROFILE_VERSION = "reference-profile-1"


def histogram(values: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"edges": [], "counts": [0], "count": 0}
    low, high = (float(value) for value in np.quantile(values, [0.005, 0.995]))
    if not high > low:
        low, high = low - 0.5, low + 0.5
    edges = np.linspace(low, high, bins + 1)
    inside, _ = np.histogram(np.clip(values, low, high), bins=edges)
    below = int(np.count_nonzero(values < low))
    above = int(np.count_nonzero(values >= high))
    # np.histogram puts values equal to the last edge in the last bin: those belong to overflow here.
    inside[-1] -= int(np.count_nonzero(values >= high))
    inside[0] -= below
    counts = [below, *(int(count) for count in inside), above]
    quantiles = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "edges": [float(edge) for edge in edges],
        "counts": counts,
        "count": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "quantiles": {
            key: float(value) for key, value in zip(("p05", "p25", "p50", "p75", "p95"), quantiles, strict=True)
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
