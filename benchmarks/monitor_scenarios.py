"""Monitor acceptance (issue 17): no drift alert on a healthy fleet, every drift scenario detected within a bound.

    .venv/bin/python -m benchmarks.monitor_scenarios                       # 60 device-hours without drift, every case
    .venv/bin/python -m benchmarks.monitor_scenarios --quick               # 5 device-hours, 10-minute cases
    .venv/bin/python -m benchmarks.monitor_scenarios --device-hours 120 --workers 2 --cases winter-roads

The product's own code path, without Kafka (it adds nothing to the statistics):

1. **The served champion, as `michi up` gets it.** The trainer's start (`bootstrap_champion`, then
   `register_physics_model`, as its worker runs them) in a temporary `MICHI_HOME`, with the model cache `michi up`
   uses (`~/.cache/michi/models`, so a warm cache takes seconds); the registry's rollout plan names the champion.
   Inference's loader (`load_detector`: blob store, sha256, ONNX Runtime) loads it, and the monitor's
   `BlobProfiles` reads its `reference_profile.json`: the **served** reference, the one the acceptance judges.
   Two more references are measured on the same predictions, as what-ifs that explain the figures (they decide
   nothing): **learned**, the profile of the model the bootstrap trained (`train_candidate`: its training
   windows, the bootstrap recipe's 50, 25 and 100 Hz fleets), when it is not the champion; and **fleet**, the
   trainer's own `reference_profile` over the training split of `simulate_fleet_windows` for a recipe of the
   default fleet itself (50 Hz, 3 events and 3 confounders per 10 min, seed `REFERENCE_SEED`, 20 devices x 1 h):
   what a profile built from the data the model serves would give.
2. **Uploads as `michi simulate` makes them.** `FleetSimulator(SimulationConfig(devices=20, duration_s=...,
   seed=7, sample_rate_hz=50))` (the CLI's defaults), each upload wrapped in the `UploadReceived` ingest
   publishes, in the simulator's order, through inference's `process_uploads` in batches of 64 with one device
   state map: its windows, features and champion `Prediction`s exactly as the service computes them (the shadow
   is left out: the monitor skips its predictions).
3. **The monitor.** One `DriftMonitor` per reference with the monitor's settings, read from the environment as the
   service reads them (`policy_of(MonitorSettings())`; by default windows of 2,000 rows, PSI >= 0.2 on one
   feature, >= 1,000 rows, cohorts `all`, vehicle, rate and firmware; `MICHI_MONITOR_WINDOW_ROWS=20000
   MICHI_MONITOR_COHORTS=` tries others), an in-memory history and publisher, each batch's predictions handed
   over at once (`handle_batch`), then `flush` and `close_idle`, as its consumer calls them, and once more at the end (a fleet that stops sending closes its windows
   after `idle_s`).

Cases (`CASES`): **no drift**, the default fleet for `--device-hours` (60: 20 devices x 3 h); then per case the
default fleet for `BASELINE_S` (a first `michi simulate`) followed by the changed fleet for `CASE_S` (a second
one: `--scenario <name>`, or the fitted noise models), same seed and devices, device states carried on. A case's
windows are counted from the first window of cohort `all` holding a row of the changed fleet. A feature of a
window is **beyond the healthy fleet** when its PSI is >= the threshold and above the most the no-drift run
reached on it in the same cohort (any cohort, for one the healthy fleet never had); a case is **detected** when a
drift alert naming such a feature opens within `DETECTION_BOUND_WINDOWS` windows: an alert the change caused, not
one the healthy fleet raises anyway. The tables give, per reference: windows, drift alerts per cohort, the
largest PSI per feature without drift; per case the episodes already open at the switch (a false alarm's open
episode raises no new alert for the change), the first alert after it, windows to detection, and windows to
evidence (the first window of `all` with a feature beyond the healthy fleet, alert or not).

Exit status 1 when, against the served reference, the no-drift run raised a drift alert or a case was not
detected within its bound; speed is reported, never judged. Cases run in parallel (`--workers`, default 2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from benchmarks.harness import REPOSITORY, CpuMeter, describe_cpu, note, print_table, upload_received
from michi.blobs.store import BlobStore
from michi.bus.catalog import PREDICTIONS, TopicSpec
from michi.bus.producer import Delivery
from michi.contracts.v1 import labels_pb2, operations_pb2
from michi.registry.layout import reference_profile_key
from michi.roads import RoadMap
from michi.settings import load_settings
from michi.simulator import DEFAULT_START_TIME, FleetSimulator, SimulationConfig
from michi.simulator.hardware import FIXED_DASHCAM, PHONE_HOLDER, DomainRandomization
from michi.windows.features import FEATURE_NAMES
from services.inference.adapters.artifacts import ArtifactCache, load_detector
from services.inference.domain.state import DeviceState
from services.inference.handlers import Detector, InferencePipeline, process_uploads
from services.monitor.adapters.profiles import BlobProfiles
from services.monitor.domain.profiles import ReferenceProfile, read_profile
from services.monitor.domain.windows import COHORT_ALL, Partition
from services.monitor.handlers import ClosedWindow, DriftEpisode, DriftMonitor, DriftPolicy, ProfileSource
from services.monitor.settings import MonitorSettings
from services.monitor.wiring import policy_of
from services.trainer.adapters.simulation import FleetRecipe, SimulationRecipe, simulate_fleet_windows
from services.trainer.domain.dataset import build_dataset
from services.trainer.domain.profile import reference_profile
from services.trainer.domain.training import TrainingParameters
from services.trainer.handlers import bootstrap_champion, register_physics_model
from services.trainer.settings import TrainerSettings
from services.trainer.wiring import build_wiring

# `michi simulate`'s defaults, at the fleet size of the acceptance (20 devices x 3 h = 60 device-hours).
SEED = 7
DEVICES = 20
DEVICE_HOURS = 60.0
QUICK_DEVICE_HOURS = 5.0
# Each case: this long healthy, then this long changed (quick: a sixth of each).
BASELINE_S = 1800.0
CASE_S = 1800.0
QUICK_SCALE = 1.0 / 6.0
# A case is detected when a drift alert opens within this many windows of cohort `all` (2,000 rows each: about
# 100 s of a 20-device fleet) from the first window holding a row of the changed fleet. Every device changes at
# once, so the first full window after the switch holds only changed rows; the bound leaves one window for the one
# that straddles the switch and one for the devices' new trips to get going.
DETECTION_BOUND_WINDOWS = 3
# The fleet reference: the trainer's simulated recipe, at the default fleet's rate and event rates.
REFERENCE_SEED = 1001
REFERENCE_DEVICES = 20
REFERENCE_SECONDS = 3600.0
UPLOADS_PER_BATCH = 64
# Every simulated device starts fresh (mount uncalibrated, first trip from rest): drifting windows are counted
# apart for this first stretch of the no-drift run.
WARM_UP_S = 1800.0
PARTITION: Partition = (PREDICTIONS.name(), 0)
SERVED, LEARNED, FLEET = "served", "learned", "fleet"


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    # `SimulationConfig` fields of the changed fleet (the second `michi simulate`); empty: no drift.
    change: Mapping[str, Any] = field(default_factory=dict)


NO_DRIFT = Case("no-drift", "the default fleet (michi simulate --devices 20), no change")
CASES: tuple[Case, ...] = (
    Case(
        "firmware-accel-scale", "michi simulate --scenario firmware-accel-scale", {"scenario": "firmware-accel-scale"}
    ),
    Case("new-vehicle-mix", "michi simulate --scenario new-vehicle-mix", {"scenario": "new-vehicle-mix"}),
    Case("winter-roads", "michi simulate --scenario winter-roads", {"scenario": "winter-roads"}),
    Case("sample-rate-change", "michi simulate --scenario sample-rate-change", {"scenario": "sample-rate-change"}),
    Case(
        "fitted-noise",
        "the fitted noise models, hardware randomised around the fits (SimulationConfig(sensor_model='fitted'))",
        {"sensor_model": "fitted"},
    ),
    Case(
        "fitted-phone-holder",
        "every device a phone in a dash holder exactly as fitted (DomainRandomization.at_fit)",
        {"sensor_model": "fitted", "randomization": DomainRandomization.at_fit(PHONE_HOLDER)},
    ),
    Case(
        "fitted-dashcam",
        "every device a windshield dashcam exactly as fitted (DomainRandomization.at_fit)",
        {"sensor_model": "fitted", "randomization": DomainRandomization.at_fit(FIXED_DASHCAM)},
    ),
    Case(
        "random-sample-rates",
        "fitted noise, each device's IMU rate drawn log-uniform in 10-400 Hz (sample_rate_range_hz)",
        {"sensor_model": "fitted", "sample_rate_range_hz": (10.0, 400.0)},
    ),
)


# --------------------------------------------------------------------------- the served models and references


class PlanRecorder:
    """The registry's plan publisher (`PlanPublisher`): keeps the rollout plans instead of sending them."""

    def __init__(self) -> None:
        self.plans: list[operations_pb2.RolloutPlan] = []

    def publish_and_wait(self, spec: TopicSpec, key: str, message: Message, timeout: float = 30.0) -> Delivery:
        assert isinstance(message, operations_pb2.RolloutPlan)
        self.plans.append(message)
        return Delivery(spec.name(), 0, len(self.plans) - 1)


@dataclass(frozen=True)
class Reference:
    name: str
    model_version: str
    how: str
    # The profile document; None for the served one, which each worker reads from the blob store as the monitor does.
    document: dict[str, Any] | None
    windows: int


@dataclass(frozen=True)
class Served:
    """What the trainer's start leaves for inference and the monitor."""

    home: Path
    blob_url: str
    champion: bytes  # the rollout plan's champion `ModelRef`, serialized (workers parse it)
    model_name: str
    champion_version: str
    references: tuple[Reference, ...]
    seconds: float


def serve_bootstrap(home: Path, *, reference_seconds: float) -> Served:
    """The trainer's start in `home`: bootstrap, physics baseline, the plan's champion, and the references."""
    began = time.perf_counter()
    settings = load_settings(
        TrainerSettings, home=home, database_url=f"sqlite:///{home / 'michi.db'}", blob_url=f"file://{home / 'blobs'}"
    )
    plans = PlanRecorder()
    wiring = build_wiring(settings, producer=plans)
    try:
        outcome = bootstrap_champion(wiring)
        if outcome is None or outcome.status != "succeeded" or outcome.version is None:
            raise RuntimeError(f"the trainer's bootstrap did not succeed: {outcome and outcome.reason}")
        register_physics_model(wiring)
        champion = wiring.registry.champion(wiring.model_name)
        if champion is None or not plans.plans:
            raise RuntimeError("the bootstrap left no champion")
        reference = plans.plans[-1].champion
        if reference.version != champion.version:
            raise RuntimeError(f"the last rollout plan serves {reference.version}, the registry {champion.version}")
    finally:
        wiring.registry.close()
        wiring.store.close()
    blob_url = settings.resolved_blob_url()
    profiles = BlobProfiles(BlobStore(blob_url))
    served_document = _profile_document(blob_url, wiring.model_name, champion.version)
    references = [
        Reference(
            SERVED,
            champion.version,
            f"the champion's reference_profile.json ({outcome.stage} of the bootstrap: {champion.version})",
            None,
            int(served_document.get("windows", 0)),
        )
    ]
    learned = (
        _profile_document(blob_url, wiring.model_name, outcome.version)
        if outcome.version != champion.version and profiles.profile(wiring.model_name, outcome.version) is not None
        else None
    )
    # Every registered model describes the same served traffic: the learned one is a what-if only when it differs.
    if learned is not None and learned.get("data_version") != served_document.get("data_version"):
        references.append(
            Reference(
                LEARNED,
                outcome.version,
                f"the learned bootstrap model's profile ({outcome.stage}): its training windows",
                learned,
                int(learned.get("windows", 0)),
            )
        )
    fleet = fleet_reference(reference_seconds)
    references.append(
        Reference(
            FLEET,
            champion.version,
            f"trainer's reference_profile over the default fleet (seed {REFERENCE_SEED}, "
            f"{REFERENCE_DEVICES} devices x {reference_seconds / 60:g} min, training split)",
            fleet,
            int(fleet["windows"]),
        )
    )
    return Served(
        home,
        blob_url,
        reference.SerializeToString(),
        wiring.model_name,
        champion.version,
        tuple(references),
        time.perf_counter() - began,
    )


def _profile_document(blob_url: str, model_name: str, version: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        asyncio.run(BlobStore(blob_url).read_bytes(reference_profile_key(model_name, version)))
    )
    return document


def fleet_reference(seconds: float) -> dict[str, Any]:
    """The trainer's profile of its training windows, for a recipe of the default fleet (what-if reference)."""
    recipe = SimulationRecipe(
        fleets=(FleetRecipe(REFERENCE_SEED, 50),),
        devices=REFERENCE_DEVICES,
        duration_s=seconds,
        event_rate_per_10min=SimulationConfig().event_rate_per_10min,
        confounder_rate_per_10min=SimulationConfig().confounder_rate_per_10min,
    )
    windows = simulate_fleet_windows(recipe, recipe.fleets[0], RoadMap.default())
    parameters = TrainingParameters()
    dataset = build_dataset([windows], split_by=parameters.split_by, test_percent=parameters.test_percent)
    train = dataset.train()
    return reference_profile(train.features, train.signals, data_version=dataset.data_version)


# --------------------------------------------------------------------------- the monitor's ports, in memory


@dataclass(frozen=True)
class WindowRecord:
    """One closed window as the history kept it (in closing order)."""

    cohort: str
    reason: str
    rows: int
    verdict: str
    latest_s: float
    psi: dict[str, float]
    drifted: tuple[str, ...]
    alert: bool  # opened a drift episode: a drift alert (status firing)
    retrain: bool
    resolved: bool


class MemoryHistory:
    """The monitor's `DriftHistory` in memory: closed windows in closing order, episodes by id."""

    def __init__(self) -> None:
        self.records: list[WindowRecord] = []
        self.episodes: dict[str, DriftEpisode] = {}
        self.progress_by_cohort: dict[tuple[str, str, str], dict[Partition, int]] = {}

    def record_close(self, closed: ClosedWindow, latest_s: float, episode: DriftEpisode | None) -> None:
        self.records.append(
            WindowRecord(
                closed.cohort,
                closed.reason,
                closed.rows,
                closed.verdict,
                latest_s,
                {result.feature: result.psi for result in closed.features if not math.isnan(result.psi)},
                closed.drifted,
                closed.alert is not None,
                closed.retrain is not None,
                closed.resolved is not None,
            )
        )
        key = (closed.model_name, closed.model_version, closed.cohort)
        progress = self.progress_by_cohort.setdefault(key, {})
        for partition, offset in closed.ends.items():
            progress[partition] = max(progress.get(partition, -1), offset)
        if episode is not None:
            self.episodes[episode.episode_id] = replace(episode, windows=list(episode.windows))

    def progress(self, model_name: str, model_version: str, cohort: str) -> dict[Partition, int]:
        return dict(self.progress_by_cohort.get((model_name, model_version, cohort), {}))

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


class MemoryPublisher:
    def __init__(self) -> None:
        self.alerts: list[operations_pb2.Alert] = []
        self.requests = 0

    def publish_alert(self, alert: operations_pb2.Alert) -> None:
        self.alerts.append(alert)

    def publish_label_requests(self, requests: list[labels_pb2.LabelRequest]) -> None:
        self.requests += len(requests)


class SilentReports:
    def window_closed(self, closed: ClosedWindow) -> None:
        pass

    def prediction_skipped(self, reason: str) -> None:
        pass

    def open_rows(self, model_version: str, rows: int) -> None:
        pass


class FixedProfile:
    """A what-if `ProfileSource`: this profile for every version of the model."""

    def __init__(self, profile: ReferenceProfile) -> None:
        self.fixed = profile

    def profile(self, model_name: str, model_version: str) -> ReferenceProfile | None:
        return self.fixed


class Clock:
    """Wall-clock time (as the service), moved forward at the end so idle windows close."""

    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skew


# --------------------------------------------------------------------------- one case


@dataclass(frozen=True)
class Job:
    case: Case
    devices: int
    # Seconds of the healthy fleet, then of the changed one (0 and the whole run for no drift).
    baseline_s: float
    changed_s: float
    seed: int = SEED


@dataclass
class CaseResult:
    case: Case
    devices: int
    switch_s: float  # fleet time (Unix seconds) from which the changed fleet drives
    device_hours: float
    uploads: int
    predictions: int
    seconds: float
    records: dict[str, list[WindowRecord]]  # per reference, in closing order
    drift_alerts: dict[str, int]  # per reference: published drift alerts (firing)


_WORKER: dict[str, Any] = {}


def _start_worker(served: Served, policy: DriftPolicy) -> None:
    """Per process: the champion loaded as inference loads it, the profile sources, the monitor's policy."""
    reference = operations_pb2.ModelRef.FromString(served.champion)
    cache = ArtifactCache(BlobStore(served.blob_url), served.home / f"models-{os.getpid()}")
    _WORKER.update(
        detector=load_detector(cache, reference, threads=1),
        served=served,
        policy=policy,
        profiles={
            item.name: (
                BlobProfiles(BlobStore(served.blob_url))
                if item.document is None
                else FixedProfile(read_profile(item.document))
            )
            for item in served.references
        },
    )


def run_job(job: Job) -> CaseResult:
    """Simulate the job's fleet(s), run inference over every upload, feed every monitor; the closed windows."""
    began = time.perf_counter()
    detector: Detector = _WORKER["detector"]
    profiles: dict[str, ProfileSource] = _WORKER["profiles"]
    policy: DriftPolicy = _WORKER["policy"]
    clock = Clock()
    histories = {name: MemoryHistory() for name in profiles}
    publishers = {name: MemoryPublisher() for name in profiles}
    monitors = {
        name: DriftMonitor(
            profiles=source,
            publisher=publishers[name],
            history=histories[name],
            reports=SilentReports(),
            policy=policy,
            clock=clock,
        )
        for name, source in profiles.items()
    }
    for monitor in monitors.values():
        monitor.assigned({PARTITION: -1})
    pipeline = InferencePipeline(detector=detector, road_map=None)
    states: dict[str, DeviceState] = {}
    road_map = RoadMap.default()
    uploads = predictions = 0
    switch_s = DEFAULT_START_TIME + job.baseline_s
    # `michi simulate`'s fleet (healthy), then the changed one from where it stopped: same seed, same devices.
    segments = (
        [SimulationConfig(devices=job.devices, duration_s=job.baseline_s, seed=job.seed)] if job.baseline_s else []
    )
    segments.append(
        SimulationConfig(
            devices=job.devices, duration_s=job.changed_s, seed=job.seed, start_time=switch_s, **dict(job.case.change)
        )
    )
    for config in segments:
        simulator = FleetSimulator(config, road_map=road_map)
        for batch in _batches(simulator.uploads(), UPLOADS_PER_BATCH):
            uploads += len(batch)
            outcome = process_uploads([upload_received(upload) for upload in batch], states, pipeline)
            polled = [prediction for result in outcome.uploads for prediction in result.predictions]
            offsets = list(range(predictions, predictions + len(polled)))
            predictions += len(polled)
            for monitor in monitors.values():  # a poll batch at once, then flushed, as the monitor's consumer does
                rejected = monitor.handle_batch(polled, [PARTITION] * len(polled), offsets)
                if rejected:
                    raise RuntimeError(f"the monitor rejected a prediction of inference: {rejected[0][1]}")
                monitor.flush()
                monitor.close_idle()
    clock.skew += policy.idle_s + 1.0  # the fleet stopped: what is open closes idle, as in the service
    for monitor in monitors.values():
        monitor.close_idle()
    return CaseResult(
        job.case,
        job.devices,
        switch_s,
        job.devices * (job.baseline_s + job.changed_s) / 3600.0,
        uploads,
        predictions,
        time.perf_counter() - began,
        {name: history.records for name, history in histories.items()},
        {
            name: sum(
                1 for alert in publisher.alerts if alert.kind == "drift" and alert.attributes["status"] == "firing"
            )
            for name, publisher in publishers.items()
        },
    )


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_jobs(jobs: Sequence[Job], served: Served, policy: DriftPolicy, workers: int) -> list[CaseResult]:
    if workers <= 1:
        _start_worker(served, policy)
        return [_announce(run_job(job)) for job in jobs]
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_start_worker, initargs=(served, policy)) as pool:
        results = [_announce(result) for result in pool.imap_unordered(run_job, jobs)]
    order = {job.case.name: index for index, job in enumerate(jobs)}
    return sorted(results, key=lambda result: order[result.case.name])


def _announce(result: CaseResult) -> CaseResult:
    note(
        f"{result.case.name}: {result.device_hours:g} device-hours, {result.predictions:,} predictions "
        f"in {result.seconds:.0f} s"
    )
    return result


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Detection:
    windows_after_switch: int  # windows of cohort `all` holding rows of the changed fleet
    alerts_before_switch: int
    alerts_after_switch: int
    # Cohorts with a drift episode open when the changed fleet started: their change raises no new alert.
    open_at_switch: tuple[str, ...]
    # The first drift alert after the switch: its position (1-based, in windows of `all` after the switch), and
    # "cohort: feature PSI, ...".
    first_alert: int | None
    first_alert_features: str
    # The first drift alert after the switch naming a feature beyond the healthy fleet (PSI >= the threshold and
    # above the most that feature reached in the no-drift run, `detection`): an alert the change caused.
    windows_to_detection: int | None
    # The first window of `all` after the switch with such a feature, alert or not (what the figures show).
    windows_to_evidence: int | None
    beyond: dict[str, float]  # per feature beyond the healthy fleet in windows of `all`: its largest PSI


def all_windows(records: Sequence[WindowRecord]) -> list[WindowRecord]:
    return [record for record in records if record.cohort == COHORT_ALL]


def max_psi(records: Sequence[WindowRecord], cohort: str | None = COHORT_ALL) -> dict[str, float]:
    """The largest PSI per feature over the windows of `cohort` (None: every cohort); unjudged features absent."""
    largest: dict[str, float] = {}
    for record in records:
        if cohort is None or record.cohort == cohort:
            for feature, value in record.psi.items():
                largest[feature] = max(largest.get(feature, -math.inf), value)
    return largest


def healthy_maxima(records: Sequence[WindowRecord]) -> dict[str, dict[str, float]]:
    """The no-drift run's largest PSI per cohort and feature, and (key "") over every cohort."""
    maxima = {cohort: max_psi(records, cohort) for cohort in {record.cohort for record in records}}
    maxima[""] = max_psi(records, cohort=None)
    return maxima


def detection(
    result: CaseResult, reference: str, healthy: Mapping[str, Mapping[str, float]], threshold: float
) -> Detection:
    """How the monitor saw the case's switch. A window's feature is beyond the healthy fleet when its PSI is at or
    above the threshold and above the most the no-drift run reached on it in the same cohort (in any cohort, for
    a cohort the healthy fleet never had: a new firmware, rate or vehicle type)."""

    def beyond_healthy(record: WindowRecord) -> dict[str, float]:
        largest = healthy.get(record.cohort, healthy[""])
        return {
            feature: value
            for feature, value in record.psi.items()
            if value >= threshold and value > largest.get(feature, -math.inf)
        }

    after = alerts_before = alerts_after = 0
    first_alert: int | None = None
    first_alert_features = ""
    to_detection: int | None = None
    to_evidence: int | None = None
    beyond: dict[str, float] = {}
    open_cohorts: set[str] = set()
    open_at_switch: tuple[str, ...] | None = None
    for record in result.records[reference]:
        switched = record.latest_s >= result.switch_s
        if switched and open_at_switch is None:
            open_at_switch = tuple(sorted(open_cohorts))
        if switched and record.cohort == COHORT_ALL:
            after += 1
            for feature, value in beyond_healthy(record).items():
                beyond[feature] = max(beyond.get(feature, 0.0), value)
                to_evidence = after if to_evidence is None else to_evidence
        if record.resolved:
            open_cohorts.discard(record.cohort)
        if not record.alert:
            continue
        open_cohorts.add(record.cohort)
        if not switched:
            alerts_before += 1
            continue
        alerts_after += 1
        if first_alert is None:
            first_alert = max(after, 1)
            drifted = {feature: record.psi[feature] for feature in record.drifted}
            more = f" (+{len(drifted) - 3} more)" if len(drifted) > 3 else ""
            first_alert_features = f"{record.cohort}: {_top(drifted)}{more}"
        if to_detection is None and set(record.drifted) & set(beyond_healthy(record)):
            to_detection = max(after, 1)
    return Detection(
        after,
        alerts_before,
        alerts_after,
        open_at_switch or (),
        first_alert,
        first_alert_features,
        to_detection,
        to_evidence,
        beyond,
    )


def _top(values: Mapping[str, float], count: int = 3) -> str:
    ranked = sorted(values.items(), key=lambda item: -item[1])[:count]
    return ", ".join(f"{feature} {_psi(value)}" for feature, value in ranked) or "-"


def _psi(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.2f}"


def episodes_of(records: Sequence[WindowRecord]) -> dict[str, int]:
    """Drift alerts (opened episodes) per cohort."""
    counts: dict[str, int] = {}
    for record in records:
        if record.alert:
            counts[record.cohort] = counts.get(record.cohort, 0) + 1
    return counts


def report(
    served: Served, healthy: CaseResult, cases: Sequence[CaseResult], policy: DriftPolicy
) -> tuple[bool, list[str]]:
    """Print every table; whether the served reference passed, and why not."""
    spans = ""
    if cases:
        healthy_s = cases[0].switch_s - DEFAULT_START_TIME
        changed_s = cases[0].device_hours * 3600.0 / cases[0].devices - healthy_s
        spans = f"{healthy_s / 60:g} min healthy, then {changed_s / 60:g} min changed"
    threshold = policy.psi_threshold
    names = [item.name for item in served.references]
    print_table(
        "Cases (each after the healthy fleet, same seed and devices)",
        ["case", "the changed fleet"],
        [(result.case.name, result.case.description) for result in cases],
    )
    print_table(
        "Reference profiles (the monitor judges the served one; the others are what-ifs on the same predictions)",
        ["reference", "version", "windows", "built from"],
        [(item.name, item.model_version, f"{item.windows:,}", item.how) for item in served.references],
    )
    rows = []
    for name in names:
        records = healthy.records[name]
        cohorts = episodes_of(records)
        drifting = [record for record in all_windows(records) if record.verdict == "drift"]
        early = sum(1 for record in drifting if record.latest_s < DEFAULT_START_TIME + WARM_UP_S)
        largest = max_psi(records)
        rows.append(
            (
                name,
                f"{len(all_windows(records))} / {len(records)}",
                healthy.drift_alerts[name],
                ", ".join(f"{cohort} {count}" for cohort, count in sorted(cohorts.items())) or "-",
                f"{len(drifting)} ({early} / {len(drifting) - early})",
                _top(largest),
            )
        )
    print_table(
        f"No drift: {healthy.devices} devices x {healthy.device_hours / healthy.devices:g} h = "
        f"{healthy.device_hours:g} device-hours, {healthy.predictions:,} predictions",
        [
            "reference",
            "windows all / every cohort",
            "drift alerts",
            "alerts per cohort",
            f"drifting windows of all (first {WARM_UP_S / 60:g} min / later)",
            "max PSI",
        ],
        rows,
    )
    alerts = []
    for name in names:
        seen: dict[str, int] = {}
        for record in healthy.records[name]:
            seen[record.cohort] = seen.get(record.cohort, 0) + 1
            if record.alert:
                minutes = (record.latest_s - DEFAULT_START_TIME) / 60.0
                drifted = {feature: record.psi.get(feature, math.nan) for feature in record.drifted}
                alerts.append(
                    (
                        name,
                        record.cohort,
                        seen[record.cohort],
                        f"{record.rows:,}",
                        record.reason,
                        f"{minutes:.0f}",
                        _top(drifted),
                    )
                )
    print_table(
        "No drift: every drift alert (window: the cohort's n-th; minute: of its last row)",
        ["reference", "cohort", "window", "rows", "closed", "minute", "features (PSI)"],
        alerts or [("-", "none", "", "", "", "", "")],
    )
    largest_by_reference = {name: max_psi(healthy.records[name]) for name in names}
    drifting_by_reference = {
        name: {
            feature: sum(1 for record in all_windows(healthy.records[name]) if feature in record.drifted)
            for feature in FEATURE_NAMES
        }
        for name in names
    }
    print_table(
        f"No drift: largest PSI per feature over the windows of cohort all (in brackets: windows with PSI >= "
        f"{threshold:g})",
        ["feature", *names],
        [
            (
                feature,
                *(
                    f"{_psi(largest_by_reference[name].get(feature, math.nan))} "
                    f"({drifting_by_reference[name][feature]})"
                    for name in names
                ),
            )
            for feature in FEATURE_NAMES
        ],
    )
    failures: list[str] = []
    if healthy.drift_alerts[SERVED]:
        failures.append(f"no drift: {healthy.drift_alerts[SERVED]} drift alerts against the served reference")
    for name in names if cases else ():
        maxima = healthy_maxima(healthy.records[name])
        case_rows: list[tuple[object, ...]] = []
        for result in cases:
            found = detection(result, name, maxima, threshold)
            if found.windows_to_detection is not None:
                status = str(found.windows_to_detection)
            elif COHORT_ALL in found.open_at_switch:
                status = "no: episode open"
            else:
                status = "no"
            within = found.windows_to_detection is not None and found.windows_to_detection <= DETECTION_BOUND_WINDOWS
            if name == SERVED and not within:
                failures.append(f"{result.case.name}: windows to detection {status} (bound {DETECTION_BOUND_WINDOWS})")
            case_rows.append(
                (
                    result.case.name,
                    found.windows_after_switch,
                    f"{found.alerts_before_switch} / {found.alerts_after_switch}",
                    ", ".join(found.open_at_switch) or "-",
                    "-" if found.first_alert is None else f"{found.first_alert}: {found.first_alert_features}",
                    status,
                    "-" if found.windows_to_evidence is None else found.windows_to_evidence,
                    _top(found.beyond, 4),
                )
            )
        print_table(
            f"Cases against the {name} reference ({spans}; detected: a drift alert naming a feature beyond the "
            f"healthy fleet within {DETECTION_BOUND_WINDOWS} windows of cohort all after the switch)",
            [
                "case",
                "windows after",
                "alerts before / after",
                "episodes open at the switch",
                "first alert after (window: cohort: features PSI)",
                "windows to detection",
                "windows to evidence",
                "beyond the healthy fleet (max PSI, all)",
            ],
            case_rows,
        )
    return not failures, failures


def git_commit() -> str:
    def git(*arguments: str) -> str:
        return subprocess.run(
            ["git", *arguments], cwd=REPOSITORY, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    # --no-optional-locks: a read-only look (no index refresh written).
    return f"{commit} + working tree" if git("--no-optional-locks", "status", "--porcelain") else commit


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.monitor_scenarios", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 device-hours without drift, cases a sixth as long")
    parser.add_argument("--device-hours", type=float, default=None, metavar="N", help="no-drift run (default 60)")
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="processes running cases (default 2)")
    parser.add_argument("--seed", type=int, default=SEED, metavar="N", help=f"the fleets' seed (default {SEED})")
    parser.add_argument("--devices", type=int, default=DEVICES, metavar="N", help=f"fleet size (default {DEVICES})")
    parser.add_argument(
        "--cases",
        default=None,
        metavar="A,B",
        help="only these cases (default all): " + ", ".join(c.name for c in CASES),
    )
    options = parser.parse_args(arguments)
    device_hours = options.device_hours or (QUICK_DEVICE_HOURS if options.quick else DEVICE_HOURS)
    scale = QUICK_SCALE if options.quick else 1.0
    chosen = [case for case in CASES if options.cases is None or case.name in options.cases.split(",")]
    commit = git_commit()  # the code this run imported, whatever lands while it runs
    load_before = os.getloadavg()
    meter = CpuMeter({}).start()
    cpu_before = _cpu_seconds()
    with tempfile.TemporaryDirectory(prefix="michi-monitor-scenarios-") as folder:
        note("trainer start: bootstrap, physics baseline, fleet reference ...")
        served = serve_bootstrap(Path(folder), reference_seconds=REFERENCE_SECONDS * (scale if options.quick else 1.0))
        note(f"served champion {served.model_name} {served.champion_version} ({served.seconds:.0f} s)")
        policy = policy_of(load_settings(MonitorSettings, home=Path(folder)))
        devices, seed = options.devices, options.seed
        jobs = [Job(NO_DRIFT, devices, 0.0, device_hours * 3600.0 / devices, seed)]
        jobs += [Job(case, devices, BASELINE_S * scale, CASE_S * scale, seed) for case in chosen]
        results = run_jobs(jobs, served, policy, options.workers)
    elapsed = time.monotonic() - meter.started_at
    cores = {"benchmark": (_cpu_seconds() - cpu_before) / elapsed, **meter.stop()}
    passed, failures = report(served, results[0], results[1:], policy)
    print(
        f"  monitor policy: windows of {policy.window_rows:,} rows, >= {policy.min_rows:,} rows, PSI >= "
        f"{policy.psi_threshold:g} on >= {policy.min_drifted_features} feature(s), cohorts all"
        + "".join(f", {cohort}" for cohort in policy.cohorts)
        + f"; detection bound {DETECTION_BOUND_WINDOWS} windows",
        flush=True,
    )
    print(
        f"  commit {commit}; {os.cpu_count()} cores, load average {load_before[0]:.2f} before and "
        f"{os.getloadavg()[0]:.2f} after; cores used: {describe_cpu(cores)}; "
        f"{sum(result.device_hours for result in results):g} device-hours simulated, "
        f"{sum(result.predictions for result in results):,} predictions, {elapsed:.0f} s",
        flush=True,
    )
    if not passed:
        print("monitor acceptance FAILED against the served reference:", file=sys.stderr)
        for failure in failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    print("monitor acceptance passed against the served reference", flush=True)
    return 0


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
