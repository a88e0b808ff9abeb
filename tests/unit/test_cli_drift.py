"""`michi drift` reads the monitor's drift gauges from a real `/metrics` page (the monitor's own registry, served)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from michi.cli import app
from michi.cli.drift import monitor_url
from michi.infra.processes import free_port
from michi.readiness import serve_operations
from services.monitor.adapters.metrics import MonitorMetrics
from services.monitor.domain.drift import DRIFT, INSUFFICIENT_DATA, OK, FeatureDrift
from services.monitor.handlers import FULL, ClosedWindow


def closed(version: str, *features: FeatureDrift, cohort: str = "all") -> ClosedWindow:
    drifted = tuple(feature.feature for feature in features if feature.status == DRIFT)
    return ClosedWindow(
        "michi-risk", version, cohort, f"w-{version}", 2000, FULL, features, drifted, "reference-profile-2", False, None
    )


@pytest.fixture
def monitor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    metrics = MonitorMetrics()
    metrics.window_closed(
        closed(
            "7",
            FeatureDrift(
                "speed_mean_mps", DRIFT, 2000, psi=0.41, jensen_shannon=0.2, wasserstein=0.9, ks_statistic=0.3
            ),
            FeatureDrift(
                "braking_peak_mps2", OK, 2000, psi=0.01, jensen_shannon=0.02, wasserstein=0.05, ks_statistic=0.02
            ),
        )
    )
    metrics.window_closed(closed("8", FeatureDrift("speed_mean_mps", INSUFFICIENT_DATA, 40)))
    metrics.window_closed(
        closed(
            "7",
            FeatureDrift("speed_mean_mps", OK, 1000, psi=0.05, jensen_shannon=0.02, wasserstein=0.1, ks_statistic=0.03),
            cohort="vehicle:truck",
        )
    )
    port = free_port()
    server = serve_operations("monitor", port, alive=lambda: True, registry=metrics.registry)
    monkeypatch.setenv("MICHI_HOME", str(tmp_path / ".michi"))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def test_every_version_and_feature_with_its_figures_and_status(monitor: str) -> None:
    result = CliRunner().invoke(app, ["drift", "--url", monitor])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["model", "feature", "psi", "js", "wass/std", "ks", "status"]
    rows = {(line.split()[0], line.split()[1]): line for line in lines[1:]}
    assert set(rows) == {("7", "braking_peak_mps2"), ("7", "speed_mean_mps"), ("8", "speed_mean_mps")}
    assert "0.4100" in rows[("7", "speed_mean_mps")] and rows[("7", "speed_mean_mps")].endswith("DRIFT")
    assert rows[("7", "braking_peak_mps2")].endswith("ok")
    assert rows[("8", "speed_mean_mps")].endswith("insufficient data") and " - " in rows[("8", "speed_mean_mps")]


def test_one_model_and_feature_as_json(monitor: str) -> None:
    result = CliRunner().invoke(
        app, ["drift", "--url", monitor, "--model", "7", "--feature", "speed_mean_mps", "--json"]
    )
    (row,) = [json.loads(line) for line in result.output.splitlines()]
    assert (row["model_version"], row["feature"], row["status"]) == ("7", "speed_mean_mps", "DRIFT")
    assert row["figures"]["psi"] == pytest.approx(0.41) and row["figures"]["ks"] == pytest.approx(0.3)


def test_the_monitor_is_found_from_michi_ups_endpoints_and_an_absent_one_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = tmp_path / "endpoints.json"
    endpoints.write_text(json.dumps({"services": {"monitor": {"http": "http://127.0.0.1:18083"}}}))
    assert monitor_url(endpoints, "127.0.0.1", 8083) == "http://127.0.0.1:18083"
    assert monitor_url(tmp_path / "absent.json", "0.0.0.0", 9083) == "http://127.0.0.1:9083"
    monkeypatch.setenv("MICHI_HOME", str(tmp_path / ".michi"))
    result = CliRunner().invoke(app, ["drift", "--url", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1 and "did not answer" in result.output and "Traceback" not in result.output


def test_one_cohort(monitor: str) -> None:
    result = CliRunner().invoke(app, ["drift", "--url", monitor, "--cohort", "vehicle:truck", "--json"])
    (row,) = [json.loads(line) for line in result.output.splitlines()]
    assert (row["model_version"], row["cohort"], row["feature"], row["status"]) == (
        "7",
        "vehicle:truck",
        "speed_mean_mps",
        "ok",
    )
    empty = CliRunner().invoke(app, ["drift", "--url", monitor, "--cohort", "firmware:9"])
    assert empty.exit_code == 0 and "no window of cohort firmware:9" in empty.output
