"""Monitor acceptance, short (issue 17): a healthy simulated fleet raises no drift alert, a drift scenario one.

The full run is `python -m benchmarks.monitor_scenarios` (60 device-hours, every scenario and noise model, figures
in docs/monitor.md); this is its shape on a few device-hours, through the product's own code without Kafka:

- the champion `michi up` serves: the trainer's start (`bootstrap_champion`, `register_physics_model`) in a fresh
  SQLite registry and blob store (the trained model from the shared cache `~/.cache/michi/models` when an earlier
  run left it there), the rollout plan's champion loaded by inference's `load_detector`, its reference profile
  read by the monitor's `BlobProfiles`;
- uploads from `FleetSimulator` as `michi simulate` makes them (seed 7, 50 Hz), through inference's
  `process_uploads` into champion `Prediction`s;
- the monitor's `DriftMonitor` with its settings' policy (`policy_of(MonitorSettings())`), in-memory history and
  publisher.

A scenario runs as a second `michi simulate --scenario <name>` after a healthy one (same seed and devices): it is
detected when a drift alert naming the scenario's feature opens within `DETECTION_BOUND_WINDOWS` windows of cohort
`all` from the first window holding its rows, the healthy part before it having raised none. Windows are the
service's (20,000 rows, about 17 minutes of 20 devices; an episode alerts at its second drifting window in a row),
so the healthy fleet drives an hour and a scenario 50 minutes (about two minutes of the suite).

Run: .venv/bin/python -m pytest tests/integration/test_monitor_scenarios.py -q
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import pytest

from michi.blobs.store import BlobStore
from michi.bus.catalog import PREDICTIONS
from michi.contracts.v1 import labels_pb2, operations_pb2, upload_pb2
from michi.roads import RoadMap
from michi.simulator import DEFAULT_START_TIME, FleetSimulator, SimulationConfig
from services.inference.adapters.artifacts import ArtifactCache, load_detector
from services.inference.domain.state import DeviceState
from services.inference.handlers import Detector, InferencePipeline, process_uploads
from services.monitor.adapters.profiles import BlobProfiles
from services.monitor.domain.windows import COHORT_ALL, Partition
from services.monitor.handlers import ClosedWindow, DriftEpisode, DriftMonitor
from services.monitor.settings import MonitorSettings
from services.monitor.wiring import policy_of
from services.trainer.handlers import bootstrap_champion, register_physics_model
from services.trainer.settings import TrainerSettings
from services.trainer.wiring import build_wiring

from ..fakes import RecordingPlanPublisher

SEED, DEVICES = 7, 20
HEALTHY_S = 3600.0  # 20 devices x 1 h = 20 device-hours: 3 full windows and the rest
BEFORE_S, AFTER_S = 600.0, 2400.0  # a scenario: 10 min healthy, then 40 min of it
# The bound of the full run (docs/monitor.md): the window straddling the switch, and two drifting ones in a row.
DETECTION_BOUND_WINDOWS = 3
PARTITION: Partition = (PREDICTIONS.name(), 0)
# Each scenario tested, and the feature its change must show in.
SCENARIO_FEATURES = {"sample-rate-change": "sample_rate_hz", "winter-roads": "vertical_peak_to_peak_mps2"}


@dataclass(frozen=True)
class Served:
    detector: Detector
    blob_url: str


@dataclass(frozen=True)
class Closed:
    cohort: str
    latest_s: float
    alert: bool
    psi: dict[str, float]
    drifted: tuple[str, ...]


class History:
    """The monitor's `DriftHistory` in memory: closed windows in closing order, episodes by id."""

    def __init__(self) -> None:
        self.closed: list[Closed] = []
        self.episodes: dict[str, DriftEpisode] = {}
        self.ends: dict[tuple[str, str, str], dict[Partition, int]] = {}

    def record_close(self, closed: ClosedWindow, latest_s: float, episode: DriftEpisode | None) -> None:
        psi = {result.feature: result.psi for result in closed.features if not math.isnan(result.psi)}
        self.closed.append(Closed(closed.cohort, latest_s, closed.alert is not None, psi, closed.drifted))
        ends = self.ends.setdefault((closed.model_name, closed.model_version, closed.cohort), {})
        for partition, offset in closed.ends.items():
            ends[partition] = max(ends.get(partition, -1), offset)
        if episode is not None:
            self.episodes[episode.episode_id] = replace(episode, windows=list(episode.windows))

    def progress(self, model_name: str, model_version: str, cohort: str) -> dict[Partition, int]:
        return dict(self.ends.get((model_name, model_version, cohort), {}))

    def open_episode(self, model_name: str, model_version: str, cohort: str) -> DriftEpisode | None:
        for episode in reversed(self.episodes.values()):
            if (episode.model_name, episode.model_version, episode.cohort, episode.status) == (
                model_name,
                model_version,
                cohort,
                "open",
            ):
                return replace(episode, windows=list(episode.windows), features=list(episode.features))
        return None


class Publisher:
    def __init__(self) -> None:
        self.alerts: list[operations_pb2.Alert] = []

    def publish_alert(self, alert: operations_pb2.Alert) -> None:
        self.alerts.append(alert)

    def publish_label_requests(self, requests: list[labels_pb2.LabelRequest]) -> None:
        pass


class Reports:
    def window_closed(self, closed: ClosedWindow) -> None:
        pass

    def prediction_skipped(self, reason: str) -> None:
        pass

    def open_rows(self, model_version: str, rows: int) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skew


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    """The trainer's start as `michi up` runs it, and the champion its rollout plan serves, loaded by inference."""
    home = tmp_path_factory.mktemp("monitor-scenarios")
    settings = TrainerSettings(
        home=home, database_url=f"sqlite:///{home / 'michi.db'}", blob_url=f"file://{home / 'blobs'}"
    )
    plans = RecordingPlanPublisher()
    wiring = build_wiring(settings, producer=plans)
    try:
        outcome = bootstrap_champion(wiring)
        if outcome is None or outcome.status != "succeeded":
            raise RuntimeError(f"the trainer's bootstrap failed: {outcome and outcome.reason}")
        register_physics_model(wiring)
    finally:
        wiring.registry.close()
        wiring.store.close()
    champion = plans.plans[-1].champion
    cache = ArtifactCache(BlobStore(settings.resolved_blob_url()), home / "models")
    return Served(load_detector(cache, champion, threads=1), settings.resolved_blob_url())


def watch(served: Served, fleets: Sequence[SimulationConfig]) -> tuple[list[Closed], list[operations_pb2.Alert]]:
    """The fleets one after the other through inference and the monitor: closed windows and drift alerts."""
    history, publisher, clock = History(), Publisher(), Clock()
    policy = policy_of(MonitorSettings())
    monitor = DriftMonitor(
        profiles=BlobProfiles(BlobStore(served.blob_url)),
        publisher=publisher,
        history=history,
        reports=Reports(),
        policy=policy,
        clock=clock,
    )
    monitor.assigned({PARTITION: -1})
    pipeline = InferencePipeline(detector=served.detector, road_map=None)
    states: dict[str, DeviceState] = {}
    offset = 0
    for config in fleets:
        for batch in batches(FleetSimulator(config, road_map=RoadMap.default()).uploads(), 64):
            outcome = process_uploads([upload_pb2.UploadReceived(upload=upload) for upload in batch], states, pipeline)
            for result in outcome.uploads:
                for prediction in result.predictions:
                    monitor.handle(prediction, PARTITION, offset)
                    offset += 1
            monitor.flush()  # after every poll batch, as the monitor's consumer does
            monitor.close_idle()
    clock.skew += policy.idle_s + 1.0  # the fleet stopped sending: open windows close idle
    monitor.close_idle()
    if not history.closed:
        raise RuntimeError(f"{offset} predictions closed no window")
    drift = [alert for alert in publisher.alerts if alert.kind == "drift" and alert.attributes["status"] == "firing"]
    return history.closed, drift


def batches(uploads: Iterator[upload_pb2.Upload], size: int) -> Iterator[list[upload_pb2.Upload]]:
    batch: list[upload_pb2.Upload] = []
    for upload in uploads:
        batch.append(upload)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def described(closed: Sequence[Closed]) -> list[str]:
    return [
        f"{window.cohort}: " + ", ".join(f"{feature} {window.psi[feature]:.2f}" for feature in window.drifted)
        for window in closed
        if window.alert
    ]


def test_a_healthy_fleet_raises_no_drift_alert(served: Served) -> None:
    closed, alerts = watch(served, [SimulationConfig(devices=DEVICES, duration_s=HEALTHY_S, seed=SEED)])
    assert sum(1 for window in closed if window.cohort == COHORT_ALL) >= 3  # 20,000-row windows of ~58,000 rows
    assert alerts == [], described(closed)


@pytest.mark.parametrize("scenario", sorted(SCENARIO_FEATURES))
def test_a_scenario_is_detected_within_its_bound(served: Served, scenario: str) -> None:
    switch_s = DEFAULT_START_TIME + BEFORE_S
    closed, _ = watch(
        served,
        [
            SimulationConfig(devices=DEVICES, duration_s=BEFORE_S, seed=SEED),
            SimulationConfig(devices=DEVICES, duration_s=AFTER_S, seed=SEED, start_time=switch_s, scenario=scenario),
        ],
    )
    before = [window for window in closed if window.latest_s < switch_s]
    assert not any(window.alert for window in before), described(before)
    after = [window for window in closed if window.latest_s >= switch_s]
    windows = 0
    detected_at = None
    for window in after:
        windows += window.cohort == COHORT_ALL
        if detected_at is None and window.alert and SCENARIO_FEATURES[scenario] in window.drifted:
            detected_at = max(windows, 1)
    assert detected_at is not None, f"no drift alert on {SCENARIO_FEATURES[scenario]}: {described(after)}"
    assert detected_at <= DETECTION_BOUND_WINDOWS, described(after)
