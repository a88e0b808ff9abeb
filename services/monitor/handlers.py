"""What the monitor does with each prediction: window it, and when a window closes, judge drift and alert.

    monitor = DriftMonitor(profiles=..., publisher=..., reports=..., policy=DriftPolicy(...))
    monitor.assigned({("michi.predictions.v1", 0): committed_offset, ...})
    monitor.handle(prediction, ("michi.predictions.v1", 0), offset)    # `Rejected` for what cannot be used
    monitor.handle_batch(predictions, partitions, offsets)              # a poll batch, columnar: [(index, Rejected)]
    monitor.flush()                                                     # after each poll batch: bin and count
    monitor.committable()                                               # the offsets it may commit now

Only the champion's predictions are windowed (a shadow model sees the same inputs; its reference profile is
not what is served). Per (model name, model version, cohort) one tumbling window is open; each prediction's
features are binned on that model's reference profile (`ProfileSource`), and a window closes after
`window_rows` predictions. A window of a version that stopped being served (no row of it while `window_rows`
rows of other versions of the model arrived) closes as it is. For each closed window every feature gets its
figures (`domain/drift.py`; "insufficient data" under `min_rows`), the report goes to `DriftReports` (the
Prometheus gauges) and the window to `DriftHistory` (SQL). A window with PSI >= `psi_threshold` on at least
`min_drifted_features` features opens a drift episode, or joins the one open (`_follow_episode`): one drift
`Alert` and a stratified sample of `DRIFT_SAMPLE` label requests per episode, a retrain request once enough of
its windows drifted, a resolve event at the first clean window (`AlertPublisher`, acknowledged before anything is
saved or committed). Ids are derived from the windows, so the same window read again yields the same ids.

Restart-safe without state of its own: offsets are committable only up to the rows of closed windows (never
into an open window), so after kill -9 Kafka redelivers exactly the open windows' rows, and nothing is counted
twice. A window's id is derived from the commit point it opened at, which is where a restarted monitor reads
from, so the window read again has the id it had. With `background_writes` (the service) a closed window is
written on a thread of its own while the next rows are read; no offset is offered while a write is under way, and
the next read of the history waits for it (`_record_close`). Limits: with two versions of a model interleaved (a
hot swap on some partitions before others), rows of a closed window may lie past an open one's first row, and are
read again after a crash (into a window with another id); two windows closing in one poll batch before a crash
may be cut elsewhere when read again.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Protocol
from urllib.parse import urlencode

import numpy as np
from google.protobuf.message import Message

from michi.contracts import stable_event_id, timestamp_from_seconds
from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2, operations_pb2
from michi.kit.consumer import Rejected
from michi.labels.outcomes import INCOMPLETE as INCOMPLETE  # re-exported: the skip reasons, as before
from michi.labels.outcomes import NOT_RANDOM as NOT_RANDOM
from michi.labels.outcomes import REASONS_UNKNOWN as REASONS_UNKNOWN
from michi.labels.outcomes import Skipped, qa_label, qa_prediction
from michi.windows.features import PACKED_FEATURE_TYPE, packed_width
from services.monitor.domain.adwin import Adwin
from services.monitor.domain.drift import (
    DRIFT,
    INSUFFICIENT_DATA,
    MIN_ROWS,
    FeatureDrift,
    display_shares,
    feature_drift,
    mix_drift,
)
from services.monitor.domain.episodes import FIRING, RESOLVED, firing_event_id, resolved_event_id
from services.monitor.domain.performance import (
    Calibration,
    ExpectedPerformance,
    RealisedPerformance,
    expected_performance,
    risky_call,
)
from services.monitor.domain.profiles import FeatureGrid, ReferenceProfile
from services.monitor.domain.samples import sample_rank
from services.monitor.domain.windows import (
    COHORT_ALL,
    COHORT_DIMENSIONS,
    VEHICLE,
    BatchColumns,
    DriftWindow,
    Partition,
    RowBatch,
    cohort_values,
    describe_start,
)

logger = logging.getLogger(__name__)

SCHEMA_VIOLATION = "schema-violation"
DRIFT_ALERT_KIND = "drift"
# What the trainer consumes as a request to retrain (`services.trainer.domain.triggers.RETRAIN_ALERT_KIND`).
RETRAIN_ALERT_KIND = "retrain"
# Every alert of a condition that lasts (an episode) says which and where it stands (`attributes`), as the
# resource watch's do (`domain/episodes.py`).
STATUS = "status"
EPISODE = "episode"
# Verdicts of a closed window.
VERDICT_DRIFT = "drift"
VERDICT_OK = "ok"
# Priority of the drift-sample label requests (uncertain windows go 0-100 by closeness, random QA 0).
DRIFT_SAMPLE_PRIORITY = 50
# Why a prediction is not windowed (the label of michi_monitor_predictions_skipped_total).
NOT_CHAMPION = "not-champion"
# An events-only upload's prediction (`VARIANT_EDGE`, docs/edge.md): the device's calls and uncertain windows only,
# a biased sample of its windows, not the traffic's features.
EDGE = "edge"
NO_PROFILE = "no-profile"
NO_FEATURES = "no-features"
# The figure of a window's mix of vehicle types (devices per type) against the traffic's.
VEHICLE_MIX = "vehicle_mix"
# Read with a mount that was not calibrated, against a profile of calibrated traffic (`ReferenceProfile.rows`).
UNCALIBRATED = "uncalibrated"
# Why a window closed.
FULL = "full"
RETIRED = "retired"
# No new row for `DriftPolicy.idle_s`: the window is judged on what it holds (insufficient data under the
# minimum), so a quiet fleet's last rows are reported and committed instead of held back for good.
IDLE = "idle"
# Open longer than `DriftPolicy.max_age_s`: a slow cohort's window never holds the group's commits back for long.
AGED = "aged"
# The version's reference profile changed (`michi models reprofile`): what the window holds is judged against the
# profile it was binned on, the next window against the new one.
PROFILE_CHANGED = "profile-changed"
# A cohort beyond `DriftPolicy.max_cohorts` of its dimension (rows not windowed in it).
COHORT_LIMIT = "cohort-limit"
# Populations (vehicle type, rate, firmware) whose windows are remembered per version; beyond it, forgotten.
MAX_POPULATIONS_CACHED = 4096
# The serving arms: each window is served by exactly one of them (a rollout splits devices between champion,
# canary or treatment arms), and each version's windows are judged against its own profile. A shadow scores
# windows some serving arm already served: skipped (`not-champion`); an edge prediction, skipped (`edge`).
WINDOWED_VARIANTS = (
    inference_pb2.VARIANT_CHAMPION,
    inference_pb2.VARIANT_UNSPECIFIED,
    inference_pb2.VARIANT_CANARY,
    inference_pb2.VARIANT_TREATMENT,
)

_WINDOWED = frozenset(WINDOWED_VARIANTS)
PACKED_SIZE = PACKED_FEATURE_TYPE.itemsize


@dataclass
class _Plan:
    """A window key's rows of a poll batch (`DriftMonitor.handle_batch`): which rows of its version's batch, their
    record indexes, and how many it took so far."""

    key: tuple[str, str, str]
    # Its place among a row's cohorts (`all` first, then `DriftPolicy.cohorts`' order): the order of closes at one row.
    order: int
    rows: np.ndarray
    records: np.ndarray
    batch: RowBatch
    columns: BatchColumns
    profile: ReferenceProfile
    grid: FeatureGrid
    messages: list[inference_pb2.Prediction]
    done: int = 0


class ProfileSource(Protocol):
    def profile(self, model_name: str, model_version: str) -> ReferenceProfile | None:
        """The version's reference profile, None when it has none (an outage raises)."""
        ...


class AlertPublisher(Protocol):
    def publish_alert(self, alert: operations_pb2.Alert) -> None:
        """Publish on michi.alerts.v1 and return once the broker acknowledged it (raise when it did not)."""
        ...

    def publish_label_requests(self, requests: list[labels_pb2.LabelRequest]) -> None:
        """Publish on michi.label-requests.v1 and return once the broker acknowledged all (raise when it did not)."""
        ...


class DriftHistory(Protocol):
    """Where closed windows and drift episodes are kept (SQL): what survives a restart of the monitor."""

    def record_close(self, closed: ClosedWindow, latest_s: float, episode: DriftEpisode | None) -> None:
        """In one transaction: keep the closed window's figures (once per window id), move its cohort's progress
        to the window's ends, and save the episode it opened, continued or resolved (if any)."""
        ...

    def progress(self, model_name: str, model_version: str, cohort: str) -> dict[Partition, int]:
        """Per partition, the offset up to which the cohort's rows were judged in closed windows."""
        ...

    def open_episode(self, model_name: str, model_version: str, cohort: str) -> DriftEpisode | None: ...


class DriftReports(Protocol):
    def window_closed(self, closed: ClosedWindow) -> None: ...

    def prediction_skipped(self, reason: str) -> None: ...

    def open_rows(self, model_version: str, rows: int) -> None: ...


@dataclass(frozen=True)
class DriftPolicy:
    window_rows: int = 20_000
    min_rows: int = MIN_ROWS
    # A window of fewer devices is insufficient data whatever its rows (a few drivers' style is not the fleet's).
    min_devices: int = 5
    # Drifting windows in a row before an episode alerts (1: the first drifting window alerts).
    sustain_windows: int = 2
    psi_threshold: float = 0.2
    min_drifted_features: int = 1
    # Alerts from a low-resolution (reference-profile-1) profile, whose PSI may be off by up to 0.4.
    alert_on_low_resolution: bool = False
    # Seconds without a new row after which an open window closes (`IDLE`).
    idle_s: float = 60.0
    # Sustained drift: this many drifting windows in one episode of a model version ask the trainer to retrain
    # (a `retrain` alert with the windows as evidence), once per episode; 0 never asks.
    retrain_after_windows: int = 3
    # Rows per predicted class of the window that opens a drift episode that people are asked to label.
    drift_sample_per_class: int = 5
    # Cohorts beside `all` (`domain/windows.py`), and at most this many cohorts per dimension and model version
    # (the first seen; a fleet's firmware strings are the device's to choose).
    cohorts: tuple[str, ...] = COHORT_DIMENSIONS
    max_cohorts: int = 8
    # A window open this long closes on what it holds (`AGED`): the group's commits never trail by more.
    max_age_s: float = 3600.0
    # The monitor page's public address: alerts link to their evidence there (`evidence` attribute); empty: none.
    page_url: str = ""


@dataclass
class DriftEpisode:
    """A drift condition of one (model, version, cohort) from its first drifting window to its first clean one.

    Its id is derived from the window that opened it, so the same window read again opens the same episode.
    """

    episode_id: str
    model_name: str
    model_version: str
    cohort: str
    windows: list[str]
    features: list[str]
    firing_event_id: str
    samples: int = 0
    retrain_event_id: str | None = None
    status: str = "open"
    resolved_event_id: str | None = None
    resolved_window_id: str | None = None


@dataclass(frozen=True)
class ClosedWindow:
    model_name: str
    model_version: str
    cohort: str
    window_id: str
    rows: int
    reason: str
    features: tuple[FeatureDrift, ...]
    drifted: tuple[str, ...]
    profile_version: str
    low_resolution: bool
    alert: operations_pb2.Alert | None
    # The retrain request this window completed (sustained drift), if any.
    retrain: operations_pb2.Alert | None = None
    # The episode's resolve event this clean window published, and the label requests a new episode made.
    resolved: operations_pb2.Alert | None = None
    drift_samples: int = 0
    # drift (enough features drifted, on a profile that may alert), ok, or insufficient-data.
    verdict: str = VERDICT_OK
    # The episode it opened, continued or resolved.
    episode_id: str | None = None
    # Per feature with values in the window: reference and current shares on common bins, for people
    # (`domain.drift.display_shares`: edges, reference, current).
    shapes: Mapping[str, Mapping[str, list[float]]] = field(default_factory=dict)
    # Per partition, the offset after its last row (where the cohort's next window takes over).
    ends: Mapping[Partition, int] = field(default_factory=dict)
    # Accuracy and false-alert rate expected from the model's confidence, calibrated on random-QA labels.
    performance: ExpectedPerformance | None = None


class DriftMonitor:
    def __init__(
        self,
        *,
        profiles: ProfileSource,
        publisher: AlertPublisher,
        history: DriftHistory,
        reports: DriftReports,
        policy: DriftPolicy,
        clock: Callable[[], float] = time.monotonic,
        calibrations: Callable[[str, str], Calibration | None] | None = None,
        background_writes: bool = False,
    ) -> None:
        self.clock = clock
        # A closed window's write to `history` (SQL: a commit, an fsync) on a thread of its own while the next
        # rows are read (`_record_close`); None: written in the close itself.
        self._writer = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitor-history") if background_writes else None
        )
        self._pending: Future[None] | None = None
        # The version's confidence calibration on random-QA labels (`ConceptDriftMonitor.calibration`).
        self.calibrations = calibrations
        # When each open window last got a row (`close_idle`).
        self._last_row_at: dict[tuple[str, str, str], float] = {}
        self.history = history
        # Per (model, version, cohort): where its closed windows ended (`DriftHistory.progress`, then kept here).
        self._progress: dict[tuple[str, str, str], dict[Partition, int]] = {}
        # Per (model, version, dimension): the cohorts windowed so far (at most `policy.max_cohorts`).
        self._cohorts: dict[tuple[str, str, str], set[str]] = {}
        # Per (model, version, population): the windows its rows go to (`_cohorts_of`).
        self._cohort_keys: dict[
            tuple[str, str, tuple[str, int, str]], tuple[list[tuple[str, str, str]], dict[str, str], int]
        ] = {}
        # Per model: the versions with an open window (a row of one ages the others' windows, `_retire_others`).
        self._versions: dict[str, set[str]] = {}
        # Per (model, version): this poll batch's rows, unpacked once for all the version's windows (each window
        # bins and counts the rows it takes when it flushes).
        self._batches: dict[tuple[str, str], RowBatch] = {}
        self.profiles = profiles
        self.publisher = publisher
        self.reports = reports
        self.policy = policy
        self.windows: dict[tuple[str, str, str], DriftWindow] = {}
        # Per (model, version): the profile its grid was built on, and the grid (a new profile, a new grid).
        self._grids: dict[tuple[str, str], tuple[ReferenceProfile, FeatureGrid]] = {}
        # Per partition: the offset after the last record handled; what may be committed (closed windows' rows
        # and what lies between them), what was last offered for commit, and what was committed for sure.
        self.positions: dict[Partition, int] = {}
        self.closed_to: dict[Partition, int] = {}
        self._offered: dict[Partition, int] = {}
        self.committed_to: dict[Partition, int] = {}

    # --- partitions and commits

    def assigned(self, committed: Mapping[Partition, int]) -> None:
        """Partitions now held, with their committed offsets (-1: never committed)."""
        for partition, offset in committed.items():
            self.committed_to[partition] = self.closed_to[partition] = self._offered[partition] = offset

    def revoked(self, partitions: Iterable[Partition]) -> None:
        """Partitions taken away: their open windows' rows are read again by whoever holds them next."""
        self._settle_quietly("partitions revoked")
        for partition in partitions:
            for mapping in (self.positions, self.closed_to, self._offered, self.committed_to):
                mapping.pop(partition, None)
        self._drop_windows("partitions revoked")

    def confirm_commit(self) -> None:
        """A new batch begins: the offsets offered after the last one were committed."""
        self.committed_to.update(self._offered)

    def rewind(self) -> None:
        """A batch failed and was sought back to the last commit: drop what was built on it since."""
        self._settle_quietly("batch failed")
        self.closed_to = dict(self.committed_to)
        self._offered = dict(self.committed_to)
        self.positions.clear()
        self._drop_windows("batch failed")

    def passed(self, partition: Partition, offset: int) -> None:
        """A record that is no prediction to window (a dead letter): only its position counts (never back: a batch's
        dead letters are sent after its other records were handled)."""
        self.positions[partition] = max(self.positions.get(partition, 0), offset + 1)

    def committable(self) -> dict[Partition, int]:
        """Offsets that may be committed now: everything handled up to the first row of a window still open.

        Asked after every batch, so a partition none of whose rows waits in an open window (dead letters,
        skipped predictions, rows of closed windows) is committed at once, whatever the other partitions hold.
        Nothing while a closed window's write to `history` is still under way (it is offered once that is done:
        a commit never passes rows whose window is not kept); a write that failed is raised here.
        """
        if not self._settle_writes(wait=False):
            return {}
        self._advance_commit_point()
        # Only forward, and never offset 0 (nothing read yet): a commit that moves nothing is not made.
        changed = {p: o for p, o in self.closed_to.items() if o > max(self._offered.get(p, -1), 0)}
        self._offered.update(changed)
        return changed

    # --- predictions

    def handle(self, prediction: inference_pb2.Prediction, partition: Partition, offset: int) -> None:
        """One prediction, row by row (`handle_batch` does the same for a poll batch at once)."""
        self.positions[partition] = offset + 1
        prediction = full_prediction(prediction)
        checked = self._check(prediction)
        if checked is None:
            return
        name, version = checked
        profile = self.profiles.profile(name, version)
        if not self._usable(prediction, profile):
            return
        assert profile is not None
        self._window_one(prediction, partition, offset, name, version, profile)

    def _check(self, prediction: inference_pb2.Prediction) -> tuple[str, str] | None:
        """The prediction's (model name, version) if it is one to window, None when skipped; `Rejected` if bad."""
        if prediction.variant not in WINDOWED_VARIANTS:
            self.reports.prediction_skipped(EDGE if prediction.variant == inference_pb2.VARIANT_EDGE else NOT_CHAMPION)
            return None
        lineage = prediction.lineage
        name, version = lineage.model_name, lineage.model_version
        if not name or not version:
            raise Rejected(SCHEMA_VIOLATION, "a prediction without lineage.model_name and model_version")
        packed = prediction.packed_features
        if packed and packed_width(packed) is None:
            raise Rejected(SCHEMA_VIOLATION, f"packed_features of {len(packed)} bytes: not whole float32 values")
        if not packed and not prediction.features:
            self.reports.prediction_skipped(NO_FEATURES)
            return None
        return name, version

    def _usable(self, prediction: inference_pb2.Prediction, profile: ReferenceProfile | None) -> bool:
        """Whether the version has a profile and the prediction suits it (skipped, with the reason, if not)."""
        if profile is None:
            self.reports.prediction_skipped(NO_PROFILE)
            return False
        if profile.calibrated_only and prediction.calibration.state != common_pb2.CALIBRATION_STATE_CALIBRATED:
            self.reports.prediction_skipped(UNCALIBRATED)
            return False
        return True

    def _window_one(
        self,
        prediction: inference_pb2.Prediction,
        partition: Partition,
        offset: int,
        name: str,
        version: str,
        profile: ReferenceProfile,
    ) -> None:
        lineage = prediction.lineage
        open_versions = self._versions.get(name)
        if open_versions and (len(open_versions) > 1 or version not in open_versions):
            self._retire_others(name, version)
        now = self.clock()
        grid = self._grid(name, version, profile)
        batch = self._batches.get((name, version))
        if batch is None or batch.grid is not grid:
            batch = self._batches[(name, version)] = RowBatch(grid)
        packed = prediction.packed_features
        index = batch.add(packed or grid.values_of(prediction.features), prediction.predicted, prediction.confidence)
        rank = sample_rank(lineage.window_id) if lineage.window_id else 0
        occurred = (prediction.occurred_at.seconds, prediction.occurred_at.nanos)
        population = (prediction.vehicle_type, prediction.sample_rate_hz, prediction.firmware_version)
        cohorts, known = self._cohorts_of(name, version, population)
        device = lineage.device_id
        for key in cohorts:
            if offset < self._progress_of(key).get(partition, -1):
                continue  # judged in a window closed before a crash: read again, never counted twice
            window = self.windows.get(key)
            if window is not None and window.profile is not profile:
                self._close(key, PROFILE_CHANGED)
                window = None
            if window is None:
                window = self._open(key, profile, grid, now)
            window.take(batch, index, partition, offset, occurred)
            window.count_device(device)
            if key[2] == COHORT_ALL:
                window.count_population(known, device)
            if lineage.window_id:
                window.sample.offer(
                    prediction.predicted, lineage.window_id, lambda: drift_sample_request(prediction), rank=rank
                )
            self._last_row_at[key] = now
            if window.rows >= self.policy.window_rows:
                self._close(key, FULL)

    def _open(self, key: tuple[str, str, str], profile: ReferenceProfile, grid: FeatureGrid, now: float) -> DriftWindow:
        window = self.windows[key] = DriftWindow(key[0], key[1], key[2], profile, grid, opened_at=now)
        window.sample.per_stratum = self.policy.drift_sample_per_class
        self._versions.setdefault(key[0], set()).add(key[1])
        return window

    def handle_batch(
        self,
        predictions: Sequence[inference_pb2.Prediction],
        partitions: Sequence[Partition],
        offsets: Sequence[int],
    ) -> list[tuple[int, Rejected]]:
        """A poll batch of predictions (record i: `predictions[i]` at `partitions[i]`, `offsets[i]`), as `handle`
        does each in turn, columnar: the rows' facts are read once into arrays (`BatchColumns`), each version's
        rows unpacked once (`RowBatch`), and each cohort's window takes its rows in bulk, closing where `handle`
        would have (a full window at its last row, in the rows' order across cohorts and models). Returns the
        records to dead-letter (their index and why), which `handle` would have rejected.

        Raises only before it changed anything (the version's profile, an outage): the batch can be handed
        again whole. A batch in which a model has rows or open windows of more than one version (a rollout's
        arms, a hot swap) goes row by row (`handle`), for a row of one version ages the other's windows."""
        count = len(predictions)
        rejected: list[tuple[int, Rejected]] = []
        if count == 0:
            return rejected
        lineages = [prediction.lineage for prediction in predictions]
        names = [lineage.model_name for lineage in lineages]
        versions = [lineage.model_version for lineage in lineages]
        packed = [prediction.packed_features for prediction in predictions]
        # One name and one version in the batch: one model (strings hash once, tuples would hash every time).
        single_name, single_version = set(names), set(versions)
        sizes = set(map(len, packed))
        # Per record: its (model, version) when it is one to window so far, else None (skipped or rejected).
        model_of: list[tuple[str, str] | None]
        skipped: dict[str, int] = {}
        if (
            len(single_name) == 1
            and len(single_version) == 1
            and names[0]
            and versions[0]
            and len(sizes) == 1
            and sizes.pop() % PACKED_SIZE == 0
            and packed[0]
            and set([prediction.variant for prediction in predictions]) <= _WINDOWED
        ):
            model_of = [(names[0], versions[0])] * count  # the usual batch: one version's serving arm
            usual = True
        else:
            usual = False
            model_of = []
            for index, prediction in enumerate(predictions):
                try:
                    model_of.append(self._check_counted(prediction, skipped))
                except Rejected as rejection:
                    rejected.append((index, rejection))
                    model_of.append(None)
        # The profiles first (an outage raises here, before anything changed).
        profiles = {
            model: self.profiles.profile(*model)
            for model in ({model_of[0]} if usual else set(model_of))
            if model is not None
        }
        # Only a version without a profile, or whose profile reads calibrated rows only, skips records here.
        if any(profile is None or profile.calibrated_only for profile in profiles.values()):
            for index, model in enumerate(model_of):
                if model is None:
                    continue
                profile = profiles[model]
                if profile is None:
                    skipped[NO_PROFILE] = skipped.get(NO_PROFILE, 0) + 1
                    model_of[index] = None
                elif (
                    profile.calibrated_only
                    and predictions[index].calibration.state != common_pb2.CALIBRATION_STATE_CALIBRATED
                ):
                    skipped[UNCALIBRATED] = skipped.get(UNCALIBRATED, 0) + 1
                    model_of[index] = None
        for reason, times in skipped.items():
            for _ in range(times):
                self.reports.prediction_skipped(reason)
        served: dict[str, set[str]] = {}
        for model in profiles:
            if profiles[model] is not None:
                served.setdefault(model[0], set()).add(model[1])
        mixed = any(
            len(versions_of) > 1 or not self._versions.get(name, set()) <= versions_of
            for name, versions_of in served.items()
        )
        if mixed:
            for index, model in enumerate(model_of):
                self.positions[partitions[index]] = offsets[index] + 1
                if model is not None:
                    profile = profiles[model]
                    assert profile is not None
                    prediction = full_prediction(predictions[index])
                    self._window_one(prediction, partitions[index], offsets[index], *model, profile)
            return rejected
        everyone = usual and not skipped  # every record is one to window, of one version
        self._window_batch(predictions, partitions, offsets, model_of, profiles, lineages, packed, everyone)
        return rejected

    def _check_counted(self, prediction: inference_pb2.Prediction, skipped: dict[str, int]) -> tuple[str, str] | None:
        """`_check`, counting the skipped into `skipped` (reported once the batch's profiles are known)."""
        if prediction.variant not in _WINDOWED:
            reason = EDGE if prediction.variant == inference_pb2.VARIANT_EDGE else NOT_CHAMPION
            skipped[reason] = skipped.get(reason, 0) + 1
            return None
        lineage = prediction.lineage
        name, version = lineage.model_name, lineage.model_version
        if not name or not version:
            raise Rejected(SCHEMA_VIOLATION, "a prediction without lineage.model_name and model_version")
        packed = prediction.packed_features
        if packed and packed_width(packed) is None:
            raise Rejected(SCHEMA_VIOLATION, f"packed_features of {len(packed)} bytes: not whole float32 values")
        if not packed and not full_prediction(prediction).features:
            skipped[NO_FEATURES] = skipped.get(NO_FEATURES, 0) + 1
            return None
        return name, version

    def _window_batch(
        self,
        predictions: Sequence[inference_pb2.Prediction],
        partitions: Sequence[Partition],
        offsets: Sequence[int],
        model_of: list[tuple[str, str] | None],
        profiles: Mapping[tuple[str, str], ReferenceProfile | None],
        lineages: list[common_pb2.Lineage],
        packed: list[bytes],
        everyone: bool,
    ) -> None:
        """`handle_batch` of the records whose model is in `model_of`, each model with one version (`everyone`:
        every record is one of one model's, as in most batches)."""
        now = self.clock()
        partition_codes: dict[Partition, int] = {}
        record_partition = np.array(
            [partition_codes.setdefault(partition, len(partition_codes)) for partition in partitions], dtype=np.int64
        )
        record_offsets = np.array(offsets, dtype=np.int64)
        partition_list = list(partition_codes)
        # Per partition: its records' indexes (where the positions stand at each close).
        by_partition = [np.flatnonzero(record_partition == code) for code in range(len(partition_list))]
        groups: dict[tuple[str, str], list[int] | None] = {}
        if everyone and model_of and model_of[0] is not None:
            groups[model_of[0]] = None  # all of them
        else:
            for index, model in enumerate(model_of):
                if model is not None:
                    groups.setdefault(model, []).append(index)  # type: ignore[union-attr]
        # Per window key: its rows (indexes into the group), their record indexes, how many it took so far.
        plans: list[_Plan] = []
        for model, members in groups.items():
            profile = profiles[model]
            assert profile is not None
            plans.extend(
                self._plan_group(
                    model,
                    members,
                    profile,
                    predictions,
                    (lineages, packed),
                    record_partition,
                    record_offsets,
                    partition_list,
                )
            )
        # Where windows fill: (record index, cohort order, plan), in the order `handle` would close them.
        fills: list[tuple[int, int, int]] = []
        for number, plan in enumerate(plans):
            window = self.windows.get(plan.key)
            room = self.policy.window_rows - (window.rows if window is not None else 0)
            at = room - 1
            while at < plan.records.size:
                fills.append((int(plan.records[at]), plan.order, number))
                at += self.policy.window_rows
        fills.sort()
        for record, _, number in fills:
            self._take_until(plans, record, now)
            for code, held in enumerate(by_partition):
                before = int(np.searchsorted(held, record, side="right"))
                if before:
                    self.positions[partition_list[code]] = int(record_offsets[held[before - 1]]) + 1
            self._close(plans[number].key, FULL)
        self._take_until(plans, len(predictions), now)
        for code, held in enumerate(by_partition):
            self.positions[partition_list[code]] = int(record_offsets[held[-1]]) + 1

    def _plan_group(
        self,
        model: tuple[str, str],
        members: list[int] | None,
        profile: ReferenceProfile,
        predictions: Sequence[inference_pb2.Prediction],
        read: tuple[list[common_pb2.Lineage], list[bytes]],
        record_partition: np.ndarray,
        record_offsets: np.ndarray,
        partition_list: list[Partition],
    ) -> list[_Plan]:
        """One version's rows of the batch (`members`: their record indexes, None: every record), binned together,
        their facts in arrays, their windows' rows. `read`: every record's lineage and packed features."""
        name, version = model
        grid = self._grid(name, version, profile)
        if members is None:
            rows, (lineages, packed) = list(predictions), read
            indexes = np.arange(len(rows), dtype=np.int64)
        else:
            rows = [predictions[index] for index in members]
            lineages = [read[0][index] for index in members]
            packed = [read[1][index] for index in members]
            indexes = np.array(members, dtype=np.int64)
        predicted = [prediction.predicted for prediction in rows]
        batch = RowBatch(grid)
        batch.extend(
            [
                block or grid.values_of(full_prediction(prediction).features)
                for block, prediction in zip(packed, rows, strict=True)
            ]
            if members is not None or not all(packed)
            else packed,
            predicted,
            [prediction.confidence for prediction in rows],
            packed=members is None and all(packed),
        )
        occurred_at = [prediction.occurred_at for prediction in rows]
        seconds = np.array([stamp.seconds for stamp in occurred_at], dtype=np.int64)
        nanos = np.array([stamp.nanos for stamp in occurred_at], dtype=np.int64)
        device_codes: dict[str, int] = {}
        device = np.array(
            [device_codes.setdefault(lineage.device_id, len(device_codes)) for lineage in lineages], dtype=np.int64
        )
        population_codes: dict[tuple[str, int, str], int] = {}
        population = np.array(
            [
                population_codes.setdefault(
                    (prediction.vehicle_type, prediction.sample_rate_hz, prediction.firmware_version),
                    len(population_codes),
                )
                for prediction in rows
            ],
            dtype=np.int64,
        )
        keys = [lineage.window_id for lineage in lineages]
        has_key = np.fromiter(map(bool, keys), dtype=bool, count=len(keys))
        if self.policy.drift_sample_per_class > 0:
            # `sample_rank` of each: the first 8 bytes of its SHA-256, big-endian (the digests joined whole).
            sha256 = hashlib.sha256
            digests = np.frombuffer(b"".join([sha256(key.encode()).digest() for key in keys]), dtype=">u8")
            ranks = digests.reshape(len(keys), 4)[:, 0].astype(np.uint64)
        else:
            ranks = np.zeros(len(keys), dtype=np.uint64)
        group_partition = record_partition[indexes]
        columns = BatchColumns(
            partitions=partition_list,
            partition=group_partition,
            offsets=record_offsets[indexes],
            seconds=seconds,
            nanos=nanos,
            occurred=seconds * 1_000_000_000 + nanos,
            devices=list(device_codes),
            device=device,
            known=[],
            population=population,
            predicted=np.array(predicted, dtype=np.int64),
            keys=keys,
            has_key=has_key,
            ranks=ranks,
        )
        # Per population (first seen first): its windows; rows of a cohort beyond the limit are reported skipped.
        occurrences = np.bincount(population, minlength=len(population_codes))
        members_of: dict[tuple[str, str, str], list[int]] = {}
        for code, values in enumerate(population_codes):
            cohort_keys, known, skipped = self._population_cohorts(name, version, values)
            columns.known.append(known)
            for _ in range(skipped * int(occurrences[code])):
                self.reports.prediction_skipped(COHORT_LIMIT)
            for key in cohort_keys:
                members_of.setdefault(key, []).append(code)
        plans = []
        for key, codes in members_of.items():
            if len(codes) == len(population_codes):
                mask = np.ones(len(rows), dtype=bool)
            else:
                lookup = np.zeros(len(population_codes), dtype=bool)
                lookup[codes] = True
                mask = lookup[population]
            progress = self._progress_of(key)
            if progress:
                floor = np.array([progress.get(partition, -1) for partition in partition_list], dtype=np.int64)
                mask &= columns.offsets >= floor[group_partition]
            taken = np.flatnonzero(mask)
            if taken.size == 0:
                continue
            window = self.windows.get(key)
            if window is not None and window.profile is not profile:
                self._close(key, PROFILE_CHANGED)
            order = 0 if key[2] == COHORT_ALL else 1 + self.policy.cohorts.index(key[2].split(":", 1)[0])
            plans.append(_Plan(key, order, taken, indexes[taken], batch, columns, profile, grid, rows))
        return plans

    def _take_until(self, plans: list[_Plan], record: int, now: float) -> None:
        """Every window takes its rows up to record `record` (included) not taken yet."""
        for plan in plans:
            end = int(np.searchsorted(plan.records, record, side="right"))
            if end <= plan.done:
                continue
            rows = plan.rows[plan.done : end]
            plan.done = end
            window = self.windows.get(plan.key)
            if window is None:
                window = self._open(plan.key, plan.profile, plan.grid, now)
            window.take_rows(plan.batch, plan.columns, rows)
            window.count_devices(plan.columns, rows)
            if plan.key[2] == COHORT_ALL:
                window.count_populations(plan.columns, rows)
            window.offer_samples(plan.columns, rows, functools.partial(_drift_sample_of, plan.messages))
            self._last_row_at[plan.key] = now

    def _cohorts_of(
        self, name: str, version: str, population: tuple[str, int, str]
    ) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
        """The windows (model, version, cohort) a prediction of this population goes to, and its cohort values;
        a cohort beyond `policy.max_cohorts` of its dimension is reported skipped, for every such row."""
        keys, known, skipped = self._population_cohorts(name, version, population)
        for _ in range(skipped):
            self.reports.prediction_skipped(COHORT_LIMIT)
        return keys, known

    def _population_cohorts(
        self, name: str, version: str, population: tuple[str, int, str]
    ) -> tuple[list[tuple[str, str, str]], dict[str, str], int]:
        """`_cohorts_of`, and how many cohorts of the population were beyond the limit (not reported)."""
        cached = self._cohort_keys.get((name, version, population))
        if cached is None:
            known = cohort_values(*population)
            keys, skipped = [(name, version, COHORT_ALL)], 0
            for dimension in self.policy.cohorts:
                if not known.get(dimension):
                    continue
                cohort = f"{dimension}:{known[dimension]}"
                seen = self._cohorts.setdefault((name, version, dimension), set())
                if cohort not in seen and len(seen) >= self.policy.max_cohorts:
                    skipped += 1
                    continue
                seen.add(cohort)
                keys.append((name, version, cohort))
            cached = (keys, known, skipped)
            if len(self._cohort_keys) >= MAX_POPULATIONS_CACHED:
                self._cohort_keys.clear()
            self._cohort_keys[(name, version, population)] = cached
        return cached

    def _retire_others(self, name: str, version: str) -> None:
        """A row of `version`: windows of the model's other versions count it, and close once a whole window of
        rows went by without one of theirs (a version no longer served)."""
        retired = []
        for other_key, other in self.windows.items():
            if other.model_name == name and other.model_version != version:
                other.idle_rows += 1
                if other.idle_rows >= self.policy.window_rows:
                    retired.append(other_key)
        for other_key in retired:
            self._close(other_key, RETIRED)

    def _progress_of(self, key: tuple[str, str, str]) -> dict[Partition, int]:
        progress = self._progress.get(key)
        if progress is None:
            self._settle_writes()
            progress = self._progress[key] = self.history.progress(*key)
        return progress

    def close_idle(self) -> list[ClosedWindow]:
        """Close the windows that got no row for `policy.idle_s` or are open for `policy.max_age_s` (after every
        poll, empty ones included)."""
        now = self.clock()
        closed = []
        for key, window in list(self.windows.items()):
            if now - self._last_row_at.get(key, now) >= self.policy.idle_s:
                closed.append(self._close(key, IDLE))
            elif now - window.opened_at >= self.policy.max_age_s:
                closed.append(self._close(key, AGED))
        return closed

    def _grid(self, name: str, version: str, profile: ReferenceProfile) -> FeatureGrid:
        known = self._grids.get((name, version))
        if known is None or known[0] is not profile:
            known = self._grids[(name, version)] = (profile, FeatureGrid(profile))
        return known[1]

    def flush(self) -> None:
        """Count every open window's rows of the batch into its histograms (after each poll batch)."""
        for window in self.windows.values():
            window.flush()
            if window.cohort == COHORT_ALL:
                self.reports.open_rows(window.model_version, window.rows)
        self._batches.clear()

    def _close(self, key: tuple[str, str, str], reason: str) -> ClosedWindow:
        window = self.windows.pop(key)
        window.flush()
        if not any(other[:2] == key[:2] for other in self.windows):
            self._versions.get(key[0], set()).discard(key[1])
        self._last_row_at.pop(key, None)
        profile = window.profile
        # (name, reference, current, reference std): the model's features against the cohort's part of the
        # reference, then (cohort `all`) the share of rows from cohort values the reference never had.
        reference = (
            profile.mixed(VEHICLE, window.vehicles)
            if window.cohort == COHORT_ALL
            else profile.features_of(window.cohort)
        )
        compared = [
            (feature.name, feature.histogram, window.histogram(position), feature.std)
            for position, feature in enumerate(reference)
        ]
        if window.cohort == COHORT_ALL:
            compared += [(name, reference, current, 0.0) for name, reference, current in window.population_histograms()]
        results = tuple(
            feature_drift(
                name,
                reference,
                current,
                reference_std=std,
                psi_threshold=self.policy.psi_threshold,
                # Rows of fewer devices than that describe those devices' drivers, not a fleet: insufficient data.
                min_rows=self.policy.min_rows if len(window.devices) >= self.policy.min_devices else sys.maxsize,
            )
            for name, reference, current, std in compared
        )
        if window.cohort == COHORT_ALL and VEHICLE in profile.mix:
            devices = {vehicle: len(drivers) for vehicle, drivers in window.vehicle_devices.items()}
            results += (
                mix_drift(
                    VEHICLE_MIX,
                    devices,
                    profile.mix[VEHICLE],
                    min_devices=self.policy.min_devices,
                    rows=window.rows,
                    min_rows=self.policy.min_rows,
                ),
            )
        drifted = tuple(result.feature for result in results if result.status == DRIFT)
        shapes = {
            name: display_shares(reference, current) for name, reference, current, _ in compared if current.total > 0
        }
        alertable = self.policy.alert_on_low_resolution or not profile.low_resolution
        if len(drifted) >= self.policy.min_drifted_features and alertable:
            verdict = VERDICT_DRIFT
        elif all(result.status == INSUFFICIENT_DATA for result in results):
            verdict = INSUFFICIENT_DATA
        else:
            verdict = VERDICT_OK
        closed = ClosedWindow(
            window.model_name,
            window.model_version,
            window.cohort,
            window.id,
            window.rows,
            reason,
            results,
            drifted,
            profile.version,
            profile.low_resolution,
            alert=None,
            verdict=verdict,
            shapes=shapes,
            ends=window.ends,
            performance=expected_performance(
                window.calls,
                window.alerts,
                self.calibrations(window.model_name, window.model_version) if self.calibrations else None,
            ),
        )
        closed, episode = self._follow_episode(window, closed)
        self._record_close(closed, window.latest[0] + window.latest[1] / 1e9, episode)
        progress = self._progress_of(key)
        for partition, offset in window.ends.items():
            progress[partition] = max(progress.get(partition, -1), offset)
        self.reports.window_closed(closed)
        if window.cohort == COHORT_ALL:
            self.reports.open_rows(window.model_version, 0)
        self._advance_commit_point()
        return closed

    def _fleet_drifts(self, window: DriftWindow) -> bool:
        """Whether `window` is a cohort's and its model version's cohort `all` has a drift episode open."""
        if window.cohort == COHORT_ALL:
            return False
        self._settle_writes()
        return self.history.open_episode(window.model_name, window.model_version, COHORT_ALL) is not None

    def _follow_episode(self, window: DriftWindow, closed: ClosedWindow) -> tuple[ClosedWindow, DriftEpisode | None]:
        """Open, continue or resolve the drift episode of the window's model version and cohort.

        A drifting window with no episode open opens one; it alerts once `sustain_windows` drifting windows in a
        row belong to it (one drift alert, status firing, and the drift sample of the window that completes the
        run as label requests): a single window over the threshold is what a healthy fleet's noise does now and
        then, a change lasts. A cohort's window opens none while the cohort `all` has one open (the fleet's alert
        covers it: with one firmware or one sample rate a cohort holds exactly `all`'s rows). Later drifting
        windows join it silently; at `retrain_after_windows` of them the trainer is asked to retrain, once per
        episode of the cohort `all`. A window with enough data and no drift resolves it (a resolve event, when it
        alerted); one with too little data changes nothing. Everything is published (and acknowledged) before the
        episode is saved (with the window, `DriftHistory.record_close`), and its ids are derived from the windows,
        so a window read again after a crash publishes the same ids again or nothing. Returns the window with what
        it published, and the episode to save.
        """
        self._settle_writes()
        episode = self.history.open_episode(window.model_name, window.model_version, window.cohort)
        if closed.verdict == VERDICT_DRIFT and episode is None and self._fleet_drifts(window):
            return closed, None  # the fleet's own episode covers it: a cohort alerts only where `all` does not
        if closed.verdict == VERDICT_DRIFT:
            if episode is None:
                episode = DriftEpisode(
                    stable_event_id("drift-episode", window.model_name, window.model_version, window.cohort, window.id),
                    window.model_name,
                    window.model_version,
                    window.cohort,
                    windows=[window.id],
                    features=sorted(closed.drifted),
                    firing_event_id="",
                )
            elif window.id not in episode.windows:  # a window read again after a rewind counts once
                episode.windows.append(window.id)
                episode.features = sorted(set(episode.features) | set(closed.drifted))
            alert = None
            samples = 0
            if not episode.firing_event_id and len(episode.windows) >= self.policy.sustain_windows:
                alert = drift_alert(window, closed.features, closed.drifted, self.policy, episode.episode_id)
                self.publisher.publish_alert(alert)
                requests = window.sample.items()
                if requests:
                    self.publisher.publish_label_requests(requests)
                samples = len(requests)
                episode.firing_event_id = alert.event_id
                episode.samples = samples
                logger.info(
                    "drift episode alerted",
                    extra={
                        "model_version": window.model_version,
                        "cohort": window.cohort,
                        "window_id": window.id,
                        "windows": len(episode.windows),
                        "features": list(closed.drifted),
                        "drift_samples": samples,
                    },
                )
            retrain = None
            needed = self.policy.retrain_after_windows
            # The fleet as a whole asks to retrain; a cohort's drift alerts and is sampled for people.
            if (
                window.cohort == COHORT_ALL
                and episode.firing_event_id
                and needed > 0
                and len(episode.windows) >= needed
                and episode.retrain_event_id is None
            ):
                retrain = retrain_request(window, episode, self.policy)
                self.publisher.publish_alert(retrain)
                episode.retrain_event_id = retrain.event_id
                logger.info(
                    "retrain requested on sustained drift",
                    extra={"model_version": window.model_version, "windows": ",".join(episode.windows)},
                )
            closed = replace(closed, alert=alert, retrain=retrain, drift_samples=samples, episode_id=episode.episode_id)
            return closed, episode
        if closed.verdict == VERDICT_OK and episode is not None:
            episode.status = RESOLVED
            episode.resolved_window_id = window.id
            if not episode.firing_event_id:  # it never alerted: nothing to resolve for anyone
                return replace(closed, episode_id=episode.episode_id), episode
            resolved = drift_resolved(window, closed, episode, self.policy)
            self.publisher.publish_alert(resolved)
            episode.resolved_event_id = resolved.event_id
            logger.info(
                "drift episode resolved",
                extra={"model_version": window.model_version, "cohort": window.cohort, "window_id": window.id},
            )
            return replace(closed, resolved=resolved, episode_id=episode.episode_id), episode
        return closed, None

    def _record_close(self, closed: ClosedWindow, latest_s: float, episode: DriftEpisode | None) -> None:
        """`history.record_close`, or with background writes handed to the writer thread: the close goes on (its
        progress kept in memory at once) while SQL commits. At most one write is under way: whatever reads
        `history` next (the next close's episode, a cohort's progress) or offers offsets for commit
        (`committable`) waits for it first, and a failure is raised there, before anything else is published or
        committed (then the batch is read again from the committed offsets)."""
        if self._writer is None:
            self.history.record_close(closed, latest_s, episode)
            return
        self._settle_writes()
        self._pending = self._writer.submit(self.history.record_close, closed, latest_s, episode)

    def _settle_writes(self, *, wait: bool = True) -> bool:
        """Whether no write to `history` is under way (waiting for it when `wait`). A write that failed is raised,
        the cohorts' progress kept in memory dropped first: SQL says where each cohort stands."""
        pending = self._pending
        if pending is None:
            return True
        if not wait and not pending.done():
            return False
        self._pending = None
        try:
            pending.result()
        except BaseException:
            self._progress.clear()
            raise
        return True

    def _settle_quietly(self, why: str) -> None:
        """`_settle_writes` where the batch is abandoned anyway (a failed write is logged, its progress dropped)."""
        try:
            self._settle_writes()
        except Exception:
            logger.exception("a closed window was not kept; its rows are read again", extra={"reason": why})

    def shutdown(self) -> None:
        """Wait for the last write to `history` and stop the writer thread (before `history` is closed)."""
        self._settle_quietly("stopping")
        if self._writer is not None:
            self._writer.shutdown(wait=True)

    def _advance_commit_point(self) -> None:
        """Everything handled becomes committable, except from the first row of a window still open."""
        for partition, position in self.positions.items():
            held = [w.first_offsets[partition] for w in self.windows.values() if partition in w.first_offsets]
            limit = min([position, *held])
            if limit > self.closed_to.get(partition, -1):
                self.closed_to[partition] = limit

    def _drop_windows(self, why: str) -> None:
        if self.windows:
            logger.info("open drift windows dropped; their rows are read again", extra={"reason": why})
        for window in self.windows.values():
            self.reports.open_rows(window.model_version, 0)
        self.windows.clear()
        self._last_row_at.clear()
        self._versions.clear()
        self._batches.clear()


def evidence_url(page_url: str, *, window_id: str | None = None, episode: str | None = None) -> str | None:
    """The page's address showing an alert's evidence (`?window=`: that window's figures and histograms;
    `?episode=`: that episode), None when `MICHI_MONITOR_PAGE_URL` is not set."""
    if not page_url:
        return None
    query = {name: value for name, value in (("window", window_id), ("episode", episode)) if value}
    return f"{page_url.rstrip('/')}/" + (f"?{urlencode(query)}" if query else "")


def _of_window(alert: operations_pb2.Alert, window: DriftWindow) -> None:
    """An alert about a window: its time (the window's latest prediction) and the model and data it is about."""
    alert.occurred_at.seconds, alert.occurred_at.nanos = window.latest
    alert.lineage.model_name = window.model_name
    alert.lineage.model_version = window.model_version
    alert.lineage.data_version = window.profile.data_version


def drift_alert(
    window: DriftWindow,
    results: tuple[FeatureDrift, ...],
    drifted: tuple[str, ...],
    policy: DriftPolicy,
    episode_id: str,
) -> operations_pb2.Alert:
    """The alert of a drift episode opened by a closed window: its id stable for the same episode."""
    alert = operations_pb2.Alert(
        event_id=firing_event_id(DRIFT_ALERT_KIND, episode_id),
        kind=DRIFT_ALERT_KIND,
        severity=operations_pb2.ALERT_SEVERITY_WARNING,
        message=(
            f"data drift: PSI >= {policy.psi_threshold:g} on {len(drifted)} of {len(results)} features of "
            f"{window.model_name} {window.model_version} (cohort {window.cohort}) over {window.rows} predictions "
            f"(window {window.id}): {', '.join(drifted)}"
        ),
    )
    _of_window(alert, window)
    alert.attributes.update(
        {
            STATUS: FIRING,
            EPISODE: episode_id,
            **_evidence(policy.page_url, window_id=window.id, episode=episode_id),
            "window_id": window.id,
            "cohort": window.cohort,
            "features": ",".join(drifted),
            "window_start": describe_start(window.start),
            "profile_version": window.profile.version,
            "profile_resolution": "low" if window.profile.low_resolution else "high",
        }
    )
    alert.figures["rows"] = float(window.rows)
    alert.figures["psi_threshold"] = policy.psi_threshold
    for result in results:
        if result.feature in drifted:
            for name, value in (
                ("psi", result.psi),
                ("jensen_shannon", result.jensen_shannon),
                ("wasserstein", result.wasserstein),
                ("ks", result.ks_statistic),
            ):
                if not math.isnan(value):
                    alert.figures[f"{name}.{result.feature}"] = value
    return alert


def _evidence(page_url: str, *, window_id: str | None = None, episode: str | None = None) -> dict[str, str]:
    url = evidence_url(page_url, window_id=window_id, episode=episode)
    return {"evidence": url} if url else {}


def drift_resolved(
    window: DriftWindow, closed: ClosedWindow, episode: DriftEpisode, policy: DriftPolicy
) -> operations_pb2.Alert:
    """The resolve event of a drift episode: the first window with enough data and no drift after it."""
    resolved = operations_pb2.Alert(
        event_id=resolved_event_id(DRIFT_ALERT_KIND, episode.episode_id),
        kind=DRIFT_ALERT_KIND,
        severity=operations_pb2.ALERT_SEVERITY_INFO,
        message=(
            f"data drift resolved: {window.model_name} {window.model_version} (cohort {window.cohort}) has no "
            f"drifting feature over {window.rows} predictions (window {window.id}) after {len(episode.windows)} "
            f"drifting windows"
        ),
    )
    _of_window(resolved, window)
    resolved.attributes.update(
        {
            STATUS: RESOLVED,
            EPISODE: episode.episode_id,
            **_evidence(policy.page_url, window_id=window.id, episode=episode.episode_id),
            "window_id": window.id,
            "cohort": window.cohort,
            "drift_windows": ",".join(episode.windows),
            "features": ",".join(episode.features),
        }
    )
    resolved.figures["rows"] = float(window.rows)
    resolved.figures["windows"] = float(len(episode.windows))
    return resolved


def retrain_request(window: DriftWindow, episode: DriftEpisode, policy: DriftPolicy) -> operations_pb2.Alert:
    """The retrain request of sustained drift: its id stable for the same model version and drifting windows."""
    request = operations_pb2.Alert(
        event_id=stable_event_id(RETRAIN_ALERT_KIND, window.model_name, window.model_version, *episode.windows),
        kind=RETRAIN_ALERT_KIND,
        severity=operations_pb2.ALERT_SEVERITY_WARNING,
        message=(
            f"sustained data drift: {len(episode.windows)} windows of {window.model_name} {window.model_version} "
            f"(cohort {window.cohort}) drifted (PSI >= {policy.psi_threshold:g}) on {', '.join(episode.features)}; "
            "retrain"
        ),
    )
    _of_window(request, window)
    request.attributes.update(
        {
            "reason": "sustained-drift",
            EPISODE: episode.episode_id,
            **_evidence(policy.page_url, episode=episode.episode_id),
            "cohort": window.cohort,
            "drift_windows": ",".join(episode.windows),
            "features": ",".join(episode.features),
        }
    )
    request.figures["windows"] = float(len(episode.windows))
    return request


def _drift_sample_of(messages: Sequence[inference_pb2.Prediction], row: int) -> labels_pb2.LabelRequest:
    return drift_sample_request(full_prediction(messages[row]))


def full_prediction(prediction: Message) -> inference_pb2.Prediction:
    """The `Prediction` itself, or the whole `Prediction` of a view that left fields out
    (`adapters/prediction_view.py`: its unknown fields hold them)."""
    if isinstance(prediction, inference_pb2.Prediction):
        return prediction
    return inference_pb2.Prediction.FromString(prediction.SerializeToString())


def drift_sample_request(prediction: inference_pb2.Prediction) -> labels_pb2.LabelRequest:
    """A `DRIFT_SAMPLE` label request for a prediction of a drifted window (its id stable per window and model)."""
    lineage = prediction.lineage
    request = labels_pb2.LabelRequest(
        event_id=stable_event_id("label-request", lineage.window_id, lineage.model_version, "drift-sample"),
        occurred_at=prediction.occurred_at,
        lineage=lineage,
        reason=labels_pb2.LABEL_REASON_DRIFT_SAMPLE,
        priority=DRIFT_SAMPLE_PRIORITY,
        suggested=prediction.predicted,
        confidence=prediction.confidence,
        window=prediction.window,
    )
    return request


# --- concept drift: ADWIN over the correctness of the model on windows people labelled at random

CONCEPT_DRIFT_ALERT_KIND = "concept-drift"
# Why a label request or a label is not an outcome (the label of michi_monitor_labels_skipped_total): the shared
# rules' reasons (`michi.labels.outcomes`), NOT_RANDOM, REASONS_UNKNOWN and INCOMPLETE, imported above.


@dataclass(frozen=True)
class LabelOutcome:
    """One window asked for at random and labelled: whether the model's call was right, in feed order."""

    window_id: str
    model_name: str
    model_version: str
    sequence: int
    correct: bool
    predicted_at_s: float
    # The model's call and its confidence (the probability of the predicted class).
    predicted: int = 0
    confidence: float = 0.0


class QaOutcomes(Protocol):
    """Where the random-QA windows wait for both sides and their outcomes are kept in feed order (SQL)."""

    def record_prediction(
        self,
        window_id: str,
        model_name: str,
        model_version: str,
        predicted: int,
        confidence: float,
        predicted_at_s: float,
    ) -> None:
        """What the model said for the window, and how sure it was (idempotent)."""
        ...

    def record_label(
        self, window_id: str, model_name: str, model_version: str, labelled: int, label_event_id: str
    ) -> None:
        """What people said for the window (idempotent; the first label counts)."""
        ...

    def sequence_ready(self) -> list[LabelOutcome]:
        """Give every window that has both sides and no place yet its place (per version, in prediction-time
        order), and return them, by version then place."""
        ...

    def outcomes(self) -> list[LabelOutcome]:
        """Every outcome with a place, by version then place (what a restart replays)."""
        ...

    def concept_drift_ids(self) -> set[str]: ...

    def record_concept_drift(
        self,
        event_id: str,
        outcome: LabelOutcome,
        error_rate_before: float,
        error_rate_after: float,
        retrain_event_id: str | None,
    ) -> None:
        """Keep the change found (once per event id)."""
        ...


class ConceptReports(Protocol):
    def label_skipped(self, reason: str) -> None: ...

    def outcome(
        self,
        outcome: LabelOutcome,
        error_rate: float,
        window: int,
        realised: RealisedPerformance,
        calibration: Calibration,
    ) -> None: ...


@dataclass(frozen=True)
class ConceptPolicy:
    # ADWIN's confidence (river's default and the issue's).
    delta: float = 0.002
    # A change to a higher error rate asks the trainer to retrain.
    retrain_on_concept_drift: bool = True


class ConceptDriftMonitor:
    """Per model version, an ADWIN detector over the correctness of the model on windows labelled at random.

    Only labels whose `request_reasons` contain `RANDOM_QA` count (windows chosen at random, an unbiased sample of
    what the model sees; uncertain, disagreed-on and drifted windows were chosen because the model is likely
    wrong there). What the model said comes from the window's random-QA `LabelRequest` (its `suggested` class is
    its prediction's class), what people said from the `Label`; whichever comes first waits in `QaOutcomes`.
    After each batch (`settle`) the windows that have both get their place in the version's feed order (by
    prediction time) and are fed to its detector, 1 for an error, 0 for a right call. A change found publishes a
    `concept-drift` alert, and, when the error rate rose, a `retrain` request; both are published before the
    change is kept, and their ids are derived from the version and the place, so a restart (which replays every
    kept outcome in its place into new detectors, `_replay`) publishes what a crash left unpublished and nothing
    twice.
    """

    def __init__(
        self,
        *,
        outcomes: QaOutcomes,
        publisher: AlertPublisher,
        reports: ConceptReports,
        policy: ConceptPolicy,
    ) -> None:
        self.outcomes = outcomes
        self.publisher = publisher
        self.reports = reports
        self.policy = policy
        self.detectors: dict[tuple[str, str], Adwin] = {}
        # Per (model, version): its confidence calibration and its latest outcomes (performance without labels).
        self.calibrations: dict[tuple[str, str], Calibration] = {}
        self.realised: dict[tuple[str, str], RealisedPerformance] = {}
        self._replayed = False
        # Whether a request or label was kept since the last `settle` (only then can a window have become complete).
        self._recorded = True

    def request(self, request: labels_pb2.LabelRequest) -> None:
        prediction = qa_prediction(request)  # the shared rules (michi/labels/outcomes.py)
        if isinstance(prediction, Skipped):
            if prediction.reason != NOT_RANDOM:  # requests for other reasons are not counted as skipped
                self.reports.label_skipped(prediction.reason)
            return
        self._recorded = True
        self.outcomes.record_prediction(
            prediction.window_id,
            prediction.model_name,
            prediction.model_version,
            prediction.predicted,
            prediction.confidence,
            prediction.predicted_at_s,
        )

    def label(self, label: labels_pb2.Label) -> None:
        labelled = qa_label(label)
        if isinstance(labelled, Skipped):
            self.reports.label_skipped(labelled.reason)
            return
        self._recorded = True
        self.outcomes.record_label(
            labelled.window_id,
            labelled.model_name,
            labelled.model_version,
            labelled.labelled,
            labelled.label_event_id,
        )

    def settle(self) -> None:
        """After a batch: feed what became complete to its version's detector (replaying the kept ones first). A
        batch that kept no request or label (most: predictions) completes nothing, and asks SQL nothing."""
        if self._replayed and not self._recorded:
            return
        if not self._replayed:
            self._replay()
        self._recorded = False
        known = self.outcomes.concept_drift_ids()
        for outcome in self.outcomes.sequence_ready():
            self._feed(outcome, known)

    def rewind(self) -> None:
        """A batch failed: rebuild the detectors from what was kept before feeding more."""
        self._replayed = False
        self._recorded = True

    def calibration(self, model_name: str, model_version: str) -> Calibration | None:
        """The version's confidence calibration so far (the kept outcomes replayed first), None without labels."""
        if not self._replayed:
            self._replay()
        return self.calibrations.get((model_name, model_version))

    def _replay(self) -> None:
        self.detectors.clear()
        self.calibrations.clear()
        self.realised.clear()
        known = self.outcomes.concept_drift_ids()
        for outcome in self.outcomes.outcomes():
            self._feed(outcome, known)
        self._replayed = True

    def _feed(self, outcome: LabelOutcome, known: set[str]) -> None:
        key = (outcome.model_name, outcome.model_version)
        detector = self.detectors.get(key)
        if detector is None:
            detector = self.detectors[key] = Adwin(delta=self.policy.delta)
        before = detector.estimation
        changed = detector.update(0.0 if outcome.correct else 1.0)
        calibration = self.calibrations.setdefault(key, Calibration())
        calibration.add(outcome.confidence, outcome.correct)
        realised = self.realised.setdefault(key, RealisedPerformance())
        realised.add(outcome.correct, risky_call(outcome.predicted, outcome.confidence))
        self.reports.outcome(outcome, detector.estimation, detector.width, realised, calibration)
        if not changed:
            return
        after = detector.estimation
        event_id = stable_event_id(
            CONCEPT_DRIFT_ALERT_KIND, outcome.model_name, outcome.model_version, outcome.sequence
        )
        if event_id in known:
            return
        self.publisher.publish_alert(concept_drift_alert(event_id, outcome, before, after, detector.width))
        retrain = None
        if after > before and self.policy.retrain_on_concept_drift:
            retrain = concept_retrain_request(event_id, outcome, before, after)
            self.publisher.publish_alert(retrain)
        self.outcomes.record_concept_drift(
            event_id, outcome, before, after, retrain.event_id if retrain is not None else None
        )
        known.add(event_id)
        logger.info(
            "concept drift",
            extra={
                "model_version": outcome.model_version,
                "error_rate_before": round(before, 4),
                "error_rate_after": round(after, 4),
                "labels": outcome.sequence,
            },
        )


def concept_drift_alert(
    event_id: str, outcome: LabelOutcome, before: float, after: float, window: int
) -> operations_pb2.Alert:
    """A change in the error rate of a model version on random-QA labels (a change point: no resolve event)."""
    worse = after > before
    alert = operations_pb2.Alert(
        event_id=event_id,
        kind=CONCEPT_DRIFT_ALERT_KIND,
        severity=operations_pb2.ALERT_SEVERITY_WARNING if worse else operations_pb2.ALERT_SEVERITY_INFO,
        message=(
            f"concept drift: the error rate of {outcome.model_name} {outcome.model_version} on randomly sampled "
            f"labels {'rose' if worse else 'fell'} from {before:.3f} to {after:.3f} (ADWIN, label {outcome.sequence})"
        ),
        occurred_at=timestamp_from_seconds(outcome.predicted_at_s),
    )
    alert.lineage.model_name = outcome.model_name
    alert.lineage.model_version = outcome.model_version
    alert.lineage.window_id = outcome.window_id
    alert.attributes.update({"direction": "worse" if worse else "better", "detector": "adwin"})
    alert.figures.update(
        {
            "error_rate_before": before,
            "error_rate_after": after,
            "labels": float(outcome.sequence),
            "window_labels": float(window),
        }
    )
    return alert


def concept_retrain_request(event_id: str, outcome: LabelOutcome, before: float, after: float) -> operations_pb2.Alert:
    request = operations_pb2.Alert(
        event_id=stable_event_id(RETRAIN_ALERT_KIND, CONCEPT_DRIFT_ALERT_KIND, event_id),
        kind=RETRAIN_ALERT_KIND,
        severity=operations_pb2.ALERT_SEVERITY_WARNING,
        message=(
            f"concept drift: {outcome.model_name} {outcome.model_version} errs more on randomly sampled labels "
            f"({before:.3f} -> {after:.3f}); retrain"
        ),
        occurred_at=timestamp_from_seconds(outcome.predicted_at_s),
    )
    request.lineage.model_name = outcome.model_name
    request.lineage.model_version = outcome.model_version
    request.attributes.update({"reason": "concept-drift", "concept_drift": event_id})
    request.figures.update({"error_rate_before": before, "error_rate_after": after})
    return request
