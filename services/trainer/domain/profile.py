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

What a profile describes (`source`): `traffic` (`traffic_profile`), the windows of the traffic the model serves
(by default the simulated fleet `michi up` drives, `services/trainer/adapters/simulation.py::REFERENCE_TRAFFIC`),
which is what the monitor compares live predictions with; or `training`, a model's training windows (enriched
with events and mixed sample rates, so a served fleet differs from them by design; used where no traffic is
configured). A traffic profile also holds, per cohort the traffic characterises (`vehicle:<type>`, `rate:<hz>`,
`firmware:<version>`, at least `MIN_COHORT_WINDOWS` windows from `MIN_COHORT_DEVICES` devices), its features'
counts on the same edges (`cohorts`), and per cohort dimension those values (`population`): the monitor judges a
cohort against its own part of the traffic, the fleet against the traffic of its own vehicle mix, counts rows
from values the traffic does not characterise, and tests the fleet's mix of vehicle types against the traffic's
(`mix`: each characterised type's share of the traffic's devices).

`live` (`live_profile`): the same, from a period of the fleet's own traffic read back from the warehouse, when a
person accepts it as the new normal (`michi models reprofile`): after a firmware rollout, or for a real fleet the
simulator does not describe. It records the period, who accepted it and why, and where the profile it replaced
was kept (`replaced`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from michi.registry.layout import REFERENCE_PROFILE_VERSION
from michi.windows.features import DATA_VERSION, FEATURE_NAMES, SIGNAL_CHANNELS

BINS = 1000
PROFILE_VERSION = REFERENCE_PROFILE_VERSION
TRAFFIC = "traffic"
LIVE = "live"
CALIBRATED = "calibrated"
TRAINING = "training"
# A cohort of the traffic with fewer windows or devices gets no histograms of its own, and is not one the traffic
# characterises (`traffic_profile`).
MIN_COHORT_WINDOWS = 2000
MIN_COHORT_DEVICES = 2


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


def reference_profile(
    features: np.ndarray, signals: np.ndarray, *, data_version: str, source: str = TRAINING
) -> dict[str, Any]:
    return {
        "version": PROFILE_VERSION,
        "source": source,
        "data_version": data_version,
        "preprocessing_version": DATA_VERSION,
        "windows": int(features.shape[0]),
        "bins": BINS,
        "features": {name: histogram(features[:, index]) for index, name in enumerate(FEATURE_NAMES)},
        "signals": {name: histogram(signals[:, index, :]) for index, name in enumerate(SIGNAL_CHANNELS)},
    }


def traffic_profile(
    features: np.ndarray,
    signals: np.ndarray,
    cohorts: Mapping[str, Sequence[str]],
    *,
    data_version: str,
    calibration: Sequence[str] | None = None,
    devices: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The profile of served traffic: `reference_profile` plus each cohort's counts on the same edges and the
    values of each cohort dimension the traffic characterises.

    With `calibration` (each window's calibration state), only windows read with a calibrated mount are profiled
    (`rows` `calibrated`, and the share they were): a device's uncalibrated windows read device axes, not vehicle
    axes, and how many a fleet has depends on how new its devices are, not on the roads they drive. `signals` is
    profiled as given (a sample of the windows will do: the monitor compares summary features).

    A cohort gets histograms of its own (`cohorts`) when the traffic has at least `MIN_COHORT_WINDOWS` of its
    windows from at least `MIN_COHORT_DEVICES` devices (`devices`: each window's; without them, windows only):
    fewer drivers than that describe those drivers, not the cohort. `population` lists, per dimension, the values
    that have one: the values the traffic characterises.
    """
    kept = np.ones(features.shape[0], dtype=bool)
    if calibration is not None:
        kept = np.asarray(calibration, dtype=np.str_) == CALIBRATED
        features = features[kept]
    profile = reference_profile(features, signals, data_version=data_version, source=TRAFFIC)
    if calibration is not None:
        profile["rows"] = CALIBRATED
        profile["calibrated_share"] = float(kept.mean()) if kept.size else 0.0
    owners = np.asarray(devices, dtype=np.str_)[kept] if devices is not None else None
    parts: dict[str, Any] = {}
    population: dict[str, list[str]] = {}
    for dimension, values in sorted(cohorts.items()):
        labels = np.asarray(values, dtype=np.str_)[kept]
        population[dimension] = []
        for value in sorted({str(value) for value in labels.tolist() if value}):
            rows = labels == value
            drivers = len(set(owners[rows].tolist())) if owners is not None else None
            if int(rows.sum()) < MIN_COHORT_WINDOWS or (drivers is not None and drivers < MIN_COHORT_DEVICES):
                continue
            population[dimension].append(value)
            parts[f"{dimension}:{value}"] = {
                "windows": int(rows.sum()),
                "devices": drivers,
                "features": {
                    name: _on_edges(features[rows, index], profile["features"][name])
                    for index, name in enumerate(FEATURE_NAMES)
                },
            }
    profile["cohorts"] = parts
    profile["population"] = population
    if owners is not None and "vehicle" in cohorts:
        # The traffic's mix of vehicle types, in devices (a device is one draw of the fleet's mix).
        labels = np.asarray(cohorts["vehicle"], dtype=np.str_)[kept]
        drawn = {str(value): len(set(owners[labels == value].tolist())) for value in population["vehicle"]}
        fleet = sum(drawn.values())
        profile["mix"] = {"vehicle": {value: count / fleet for value, count in drawn.items()}} if fleet else {}
    return profile


def _on_edges(values: np.ndarray, whole: Mapping[str, Any]) -> dict[str, Any]:
    """A part's counts on the whole's edges (a part lies inside the whole's range), with its own extremes."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0 or not whole["edges"]:
        return {"counts": [0], "count": 0}
    inside, _ = np.histogram(values, bins=np.asarray(whole["edges"], dtype=np.float64))
    return {
        "counts": [0, *(int(count) for count in inside), 0],
        "count": int(values.size),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def live_profile(
    features: np.ndarray,
    cohorts: Mapping[str, Sequence[str]],
    *,
    calibration: Sequence[str],
    devices: Sequence[str],
    previous: Mapping[str, Any] | None,
    accepted: Mapping[str, Any],
) -> dict[str, Any]:
    """A traffic profile of live windows (`traffic_profile`, calibrated windows only), `source` `live`, with what
    `accepted` says (period, windows read, who, why, the replaced profile's key). The signal channels' histograms
    are carried over from `previous` (live predictions carry summary features only; the monitor compares those)."""
    empty_signals = np.zeros((0, len(SIGNAL_CHANNELS), 1), dtype=np.float32)
    period = accepted.get("period", {})
    profile = traffic_profile(
        features,
        empty_signals,
        cohorts,
        data_version=f"live-{period.get('since', '')}-{period.get('until', '')}",
        calibration=calibration,
        devices=devices,
    )
    profile["source"] = LIVE
    if previous is not None and isinstance(previous.get("signals"), Mapping):
        profile["signals"] = dict(previous["signals"])
    profile["accepted"] = dict(accepted)
    return profile
