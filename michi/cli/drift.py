"""`michi drift`: the running monitor's drift figures of each model version's last closed window, per feature.

    michi drift                          # every model version and feature, cohort "all"
    michi drift --model 7 --feature speed_mean_mps
    michi drift --cohort vehicle:truck   # one cohort (vehicle:<type>, rate:<Hz>, firmware:<version>)
    michi drift --json                   # one JSON object per (model version, cohort, feature)

Read from the monitor's `/metrics` (the gauges `michi_monitor_feature_*`, `docs/monitor.md`), at the address
`michi up` wrote in `.michi/endpoints.json`, else `MICHI_MONITOR_HOST`:`MICHI_MONITOR_PORT`, or `--url`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

# Gauge name → column.
FIGURES = {
    "michi_monitor_feature_psi": "psi",
    "michi_monitor_feature_jensen_shannon": "jensen_shannon",
    "michi_monitor_feature_wasserstein": "wasserstein",
    "michi_monitor_feature_ks_statistic": "ks",
    "michi_monitor_feature_drifted": "drifted",
    "michi_monitor_feature_insufficient_data": "insufficient_data",
}


@dataclass
class FeatureFigures:
    model_version: str
    feature: str
    cohort: str = "all"
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.figures.get("insufficient_data") == 1.0:
            return "insufficient data"
        return "DRIFT" if self.figures.get("drifted") == 1.0 else "ok"


def monitor_url(endpoints_path: Path, host: str, port: int) -> str:
    """Where the monitor answers: `michi up`'s endpoints file, else the configured host and port."""
    try:
        services = json.loads(endpoints_path.read_text()).get("services", {})
        url = services.get("monitor", {}).get("http")
        if url:
            return str(url)
    except (OSError, ValueError, AttributeError):
        pass
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"


def parse_figures(
    metrics_text: str, *, model: str | None = None, feature: str | None = None, cohort: str = "all"
) -> list[FeatureFigures]:
    """The per-feature drift gauges of one cohort on a `/metrics` page, by model version then feature."""
    rows: dict[tuple[str, str], FeatureFigures] = {}
    for family in text_string_to_metric_families(metrics_text):
        column = FIGURES.get(family.name)
        if column is None:
            continue
        for sample in family.samples:
            version, name = sample.labels.get("model_version", ""), sample.labels.get("feature", "")
            if sample.labels.get("cohort", "all") != cohort:
                continue
            if (model is not None and version != model) or (feature is not None and name != feature):
                continue
            rows.setdefault((version, name), FeatureFigures(version, name, cohort)).figures[column] = sample.value
    return [rows[key] for key in sorted(rows)]


def read_figures(
    url: str, *, model: str | None, feature: str | None, cohort: str = "all", timeout: float = 10.0
) -> list[FeatureFigures]:
    answer = httpx.get(f"{url.rstrip('/')}/metrics", timeout=timeout)
    answer.raise_for_status()
    return parse_figures(answer.text, model=model, feature=feature, cohort=cohort)


def _number(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def render(rows: list[FeatureFigures]) -> str:
    header = f"{'model':10} {'feature':32} {'psi':>8} {'js':>8} {'wass/std':>8} {'ks':>8}  status"
    lines = [header]
    for row in rows:
        figures = row.figures
        lines.append(
            f"{row.model_version:10} {row.feature:32} {_number(figures.get('psi')):>8} "
            f"{_number(figures.get('jensen_shannon')):>8} {_number(figures.get('wasserstein')):>8} "
            f"{_number(figures.get('ks')):>8}  {row.status}"
        )
    return "\n".join(lines)


def as_json(row: FeatureFigures) -> str:
    figures = {key: (None if math.isnan(value) else value) for key, value in row.figures.items()}
    return json.dumps({**asdict(row), "figures": figures, "status": row.status}, sort_keys=True)
