"""What the monitor does with each prediction: window it, and when a window closes, judge drift and alert.

    monitor = DriftMonitor(profiles=..., publisher=..., reports=..., policy=DriftPolicy(...))
    monitor.assigned({("michi.predictions.v1", 0): committed_offset, ...})
    monitor.handle(prediction, ("michi.predictions.v1", 0), offset)    # `Rejected` for what cannot be used
    monitor.committable()                                               # the offsets it may commit now

Only the champion's predictions are windowed (a shadow model sees the same inputs; its reference profile is
not what is served). Per (model name, model version, cohort) one tumbling window is open; each prediction's
features are binned on that model's reference profile (`ProfileSource`), and a window closes after
`window_rows` predictions. A window of a version that stopped being served (no row of it while `window_rows`
rows of other versions of the model arrived) closes as it is. For each closed window every feature gets its
figures (`domain/drift.py`; "insufficient data" under `min_rows`), the report goes to `DriftReports` (the
Prometheus gauges), and when PSI >= `psi_threshold` on at least `min_drifted_features` features a drift `Alert`
is published (`AlertPublisher`, acknowledged before anything is committed). Its event id is derived from the
model version, the window id and the drifted features, so the same window read again yields the same id.

Restart-safe without state of its own: offsets are committable only up to the rows of closed windows (never
into an open window), so after kill -9 Kafka redelivers exactly the open windows' rows, and nothing is counted
twice. A window's id is derived from the commit point it opened at, which is where a restarted monitor reads
from, so the window read again has the id it had. Limits: with two versions of a model interleaved (a hot swap
on some partitions before others), rows of a closed window may lie past an open one's first row, and are read
again after a crash (into a window with another id); two windows closing in one poll batch before a crash may
be cut elsewhere when read again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from michi.contracts import stable_event_id
from michi.contracts.v1 import inference_pb2, operations_pb2
from michi.kit.consumer import Rejected
from services.monitor.domain.drift import DRIFT, INSUFFICIENT_DATA, MIN_ROWS, FeatureDrift, feature_drift
from services.monitor.domain.profiles import FeatureGrid, ReferenceProfile
from services.monitor.domain.windows import COHORT_ALL, DriftWindow, Partition, describe_start

logger = logging.getLogger(__name__)

SCHEMA_VIOLATION = "schema-violation"
DRIFT_ALERT_KIND = "drift"
# What the trainer consumes as a request to retrain (`services.trainer.domain.triggers.RETRAIN_ALERT_KIND`).
RETRAIN_ALERT_KIND = "retrain"
# Why a prediction is not windowed (the label of michi_monitor_predictions_skipped_total).
NOT_CHAMPION = "not-champion"
NO_PROFILE = "no-profile"
NO_FEATURES = "no-features"
# Why a window closed.
FULL = "full"
RETIRED = "retired"
# No new row for `DriftPolicy.idle_s`: the window is judged on what it holds (insufficient data under the
# minimum), so a quiet fleet's last rows are reported and committed instead of held back for good.
IDLE = "idle"
WINDOWED_VARIANTS = (inference_pb2.VARIANT_CHAMPION, inference_pb2.VARIANT_UNSPECIFIED)


class ProfileSource(Protocol):
    def profile(self, model_name: str, model_version: str) -> ReferenceProfile | None:
        """The version's reference profile, None when it has none (an outage raises)."""
        ...


class AlertPublisher(Protocol):
    def publish_alert(self, alert: operations_pb2.Alert) -> None:
        """Publish on michi.alerts.v1 and return once the broker acknowledged it (raise when it did not)."""
        ...


class DriftReports(Protocol):
    def window_closed(self, closed: ClosedWindow) -> None: ...

    def prediction_skipped(self, reason: str) -> None: ...

    def open_rows(self, model_version: str, rows: int) -> None: ...


@dataclass(frozen=True)
class DriftPolicy:
    window_rows: int = 2000
    min_rows: int = MIN_ROWS
    psi_threshold: float = 0.2
    min_drifted_features: int = 1
    # Alerts from a low-resolution (reference-profile-1) profile, whose PSI may be off by up to 0.4.
    alert_on_low_resolution: bool = False
    # Seconds without a new row after which an open window closes (`IDLE`).
    idle_s: float = 60.0
    # Sustained drift: this many drifting windows in a row of one model version ask the trainer to retrain
    # (a `retrain` alert with the windows as evidence); 0 never asks.
    retrain_after_windows: int = 3


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


class DriftMonitor:
    def __init__(
        self,
        *,
        profiles: ProfileSource,
        publisher: AlertPublisher,
        reports: DriftReports,
        policy: DriftPolicy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        # When each open window last got a row (`close_idle`).
        self._last_row_at: dict[tuple[str, str, str], float] = {}
        # Per (model name, version): the drifting windows in a row so far (their ids, drifted features).
        self._streaks: dict[tuple[str, str], list[tuple[str, tuple[str, ...]]]] = {}
        self.profiles = profiles
        self.publisher = publisher
        self.reports = reports
        self.policy = policy
        self.windows: dict[tuple[str, str, str], DriftWindow] = {}
        self._grids: dict[tuple[str, str], FeatureGrid] = {}
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
        for partition in partitions:
            for mapping in (self.positions, self.closed_to, self._offered, self.committed_to):
                mapping.pop(partition, None)
        self._drop_windows("partitions revoked")

    def confirm_commit(self) -> None:
        """A new batch begins: the offsets offered after the last one were committed."""
        self.committed_to.update(self._offered)

    def rewind(self) -> None:
        """A batch failed and was sought back to the last commit: drop what was built on it since."""
        self.closed_to = dict(self.committed_to)
        self._offered = dict(self.committed_to)
        self.positions.clear()
        self._drop_windows("batch failed")

    def passed(self, partition: Partition, offset: int) -> None:
        """A record that is no prediction to window (a dead letter): only its position counts."""
        self.positions[partition] = offset + 1

    def committable(self) -> dict[Partition, int]:
        """Offsets that may be committed now: everything handled up to the first row of a window still open.

        Asked after every batch, so a partition none of whose rows waits in an open window (dead letters,
        skipped predictions, rows of closed windows) is committed at once, whatever the other partitions hold.
        """
        self._advance_commit_point()
        # Only forward, and never offset 0 (nothing read yet): a commit that moves nothing is not made.
        changed = {p: o for p, o in self.closed_to.items() if o > max(self._offered.get(p, -1), 0)}
        self._offered.update(changed)
        return changed

    # --- predictions

    def handle(self, prediction: inference_pb2.Prediction, partition: Partition, offset: int) -> None:
        self.positions[partition] = offset + 1
        if prediction.variant not in WINDOWED_VARIANTS:
            self.reports.prediction_skipped(NOT_CHAMPION)
            return
        lineage = prediction.lineage
        if not lineage.model_name or not lineage.model_version:
            raise Rejected(SCHEMA_VIOLATION, "a prediction without lineage.model_name and model_version")
        if not prediction.features:
            self.reports.prediction_skipped(NO_FEATURES)
            return
        profile = self.profiles.profile(lineage.model_name, lineage.model_version)
        if profile is None:
            self.reports.prediction_skipped(NO_PROFILE)
            return
        key = (lineage.model_name, lineage.model_version, COHORT_ALL)
        window = self.windows.get(key)
        if window is None:
            window = self.windows[key] = DriftWindow(
                lineage.model_name,
                lineage.model_version,
                COHORT_ALL,
                profile,
                self._grid(lineage.model_name, lineage.model_version, profile),
                start=dict(self.closed_to),
            )
        occurred = (prediction.occurred_at.seconds, prediction.occurred_at.nanos)
        window.add(window.grid.values_of(prediction.features), partition, offset, occurred)
        self._last_row_at[key] = self.clock()
        self.reports.open_rows(window.model_version, window.rows)
        for other_key, other in list(self.windows.items()):
            if other is not window and other.model_name == window.model_name:
                other.idle_rows += 1
                if other.idle_rows >= self.policy.window_rows:
                    self._close(other_key, RETIRED)
        if window.rows >= self.policy.window_rows:
            self._close(key, FULL)

    def close_idle(self) -> list[ClosedWindow]:
        """Close the windows that got no row for `policy.idle_s` (after every poll, empty ones included)."""
        now = self.clock()
        idle = [key for key in self.windows if now - self._last_row_at.get(key, now) >= self.policy.idle_s]
        return [self._close(key, IDLE) for key in idle]

    def _grid(self, name: str, version: str, profile: ReferenceProfile) -> FeatureGrid:
        grid = self._grids.get((name, version))
        if grid is None or grid.names != profile.names:
            grid = self._grids[(name, version)] = FeatureGrid(profile)
        return grid

    def _close(self, key: tuple[str, str, str], reason: str) -> ClosedWindow:
        window = self.windows.pop(key)
        self._last_row_at.pop(key, None)
        profile = window.profile
        results = tuple(
            feature_drift(
                feature.name,
                feature.histogram,
                window.histogram(position),
                reference_std=feature.std,
                psi_threshold=self.policy.psi_threshold,
                min_rows=self.policy.min_rows,
            )
            for position, feature in enumerate(profile.features)
        )
        drifted = tuple(result.feature for result in results if result.status == DRIFT)
        alert = None
        if len(drifted) >= self.policy.min_drifted_features and (
            self.policy.alert_on_low_resolution or not profile.low_resolution
        ):
            alert = drift_alert(window, results, drifted, self.policy)
            self.publisher.publish_alert(alert)
            logger.info(
                "drift alert published",
                extra={"model_version": window.model_version, "window_id": window.id, "features": list(drifted)},
            )
        retrain = self._follow_streak(window, results, drifted, alert is not None)
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
            alert,
            retrain,
        )
        self.reports.window_closed(closed)
        self.reports.open_rows(window.model_version, 0)
        self._advance_commit_point()
        return closed

    def _follow_streak(
        self, window: DriftWindow, results: tuple[FeatureDrift, ...], drifted: tuple[str, ...], alerted: bool
    ) -> operations_pb2.Alert | None:
        """Count drifting windows in a row; at `retrain_after_windows`, publish the retrain request (then anew).

        A window with enough data and no drift ends the streak; one with too little data (an idle close)
        neither counts nor ends it. The streak lives in memory: a restart starts it again, so a retrain may
        come later, never twice (its id is derived from the windows that made it).
        """
        needed = self.policy.retrain_after_windows
        key = (window.model_name, window.model_version)
        if alerted:
            streak = self._streaks.setdefault(key, [])
            if all(window.id != counted for counted, _ in streak):  # a window read again after a rewind counts once
                streak.append((window.id, drifted))
        elif any(result.status != INSUFFICIENT_DATA for result in results):
            self._streaks.pop(key, None)
            return None
        else:
            return None
        if needed <= 0 or len(streak) < needed:
            return None
        del self._streaks[key]
        request = retrain_request(window, streak, self.policy)
        self.publisher.publish_alert(request)
        logger.info(
            "retrain requested on sustained drift",
            extra={"model_version": window.model_version, "windows": ",".join(ids for ids, _ in streak)},
        )
        return request

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


def drift_alert(
    window: DriftWindow, results: tuple[FeatureDrift, ...], drifted: tuple[str, ...], policy: DriftPolicy
) -> operations_pb2.Alert:
    """The drift alert of a closed window: its id stable for the same model version, window and features."""
    alert = operations_pb2.Alert(
        event_id=stable_event_id(
            DRIFT_ALERT_KIND, window.model_name, window.model_version, window.id, ",".join(sorted(drifted))
        ),
        kind=DRIFT_ALERT_KIND,
        severity=operations_pb2.ALERT_SEVERITY_WARNING,
        message=(
            f"data drift: PSI >= {policy.psi_threshold:g} on {len(drifted)} of {len(results)} features of "
            f"{window.model_name} {window.model_version} over {window.rows} predictions "
            f"(window {window.id}): {', '.join(drifted)}"
        ),
    )
    alert.occurred_at.seconds, alert.occurred_at.nanos = window.latest
    alert.lineage.model_name = window.model_name
    alert.lineage.model_version = window.model_version
    alert.lineage.data_version = window.profile.data_version
    alert.attributes.update(
        {
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


def retrain_request(
    window: DriftWindow, streak: list[tuple[str, tuple[str, ...]]], policy: DriftPolicy
) -> operations_pb2.Alert:
    """The retrain request of sustained drift: its id stable for the same model version and drifting windows."""
    window_ids = [window_id for window_id, _ in streak]
    features = sorted({feature for _, drifted in streak for feature in drifted})
    request = operations_pb2.Alert(
        event_id=stable_event_id(RETRAIN_ALERT_KIND, window.model_name, window.model_version, *window_ids),
        kind=RETRAIN_ALERT_KIND,
        severity=operations_pb2.ALERT_SEVERITY_WARNING,
        message=(
            f"sustained data drift: {len(streak)} windows in a row of {window.model_name} {window.model_version} "
            f"drifted (PSI >= {policy.psi_threshold:g}) on {', '.join(features)}; retrain"
        ),
    )
    request.occurred_at.seconds, request.occurred_at.nanos = window.latest
    request.lineage.model_name = window.model_name
    request.lineage.model_version = window.model_version
    request.lineage.data_version = window.profile.data_version
    request.attributes.update(
        {"reason": "sustained-drift", "drift_windows": ",".join(window_ids), "features": ",".join(features)}
    )
    request.figures["windows"] = float(len(streak))
    return request
