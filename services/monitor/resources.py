"""The monitor's resource watch: memory headroom, consumer lag and cost, with one alert per episode.

    watch = ResourceWatch(policy=ResourcePolicy(...), services=MetricsScraper(...), lag=KafkaLagReader(...),
                          reports=ResourceMetrics(registry))
    alerts = watch.tick(time.time())          # one round: scrape every service, read every group's lag
    watch.predictions_seen(n)                 # from the prediction handler: the cost per 1,000 predictions
    watch.labels_seen(n)                      # labels, priced in the day's cost

    thread = start_resource_watch(settings, publisher, registry)   # ticks every scrape interval, publishes
    thread.stop()

    watch.history()                           # the last rounds (an hour at 5 s), for the monitor page's charts
    watch.today()                             # the day's figures at the last round

Each round:

- **Memory.** Per service scraped, `process_resident_memory_bytes` (summed over a multiprocess service's
  workers) against `michi_memory_limit_bytes` (`michi.telemetry.metrics`): a `memory` alert (WARNING) when the
  ratio stays at or above `memory_headroom_ratio` for `memory_for_s`, resolved (INFO) at the first round below.
- **Lag.** Per consumer group (the monitor's own left out: its commits trail its open window by design), records
  behind and the age of the oldest unconsumed record: a `lag` alert (WARNING) when records > `lag_records` or
  age > `lag_age_s` continuously for `lag_for_s`, resolved when both are back under.
- **Cost.** CPU seconds per service (increases of `process_cpu_seconds_total`, never negative across restarts),
  predictions and labels counted by the monitor, the trainer's runs, summed per UTC day (`DailyCost`). At the
  first round of a new UTC day, the finished day's report is a `cost` alert (INFO, id stable per day); while the
  day's running cost exceeds `daily_budget` (> 0) a `cost` WARNING episode is open, resolved by the next day.

A service that cannot be scraped, or a round in which Kafka cannot be asked, is not observed: no alert, no
state change (`michi_monitor_scrape_up` says which). Episodes follow `domain/episodes.py`. With a `ledger`
(`ResourceLedger`, the monitor's SQL store) the episodes opened and the day's sums survive a restart: an episode
open before it continues and resolves once, a day finished while the monitor was down is reported once.

**History.** The last `history_rounds` rounds (`HISTORY_ROUNDS`, 720: an hour at the default 5 s) are kept in a
ring buffer for the monitor page (`services/monitor/entrypoints/page.py`): per round each service's RSS / limit,
each group's lag and the day's running cost (`ResourceRound`); `history()` and `today()` may be read from
another thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Gauge

from michi.contracts import stable_event_id, timestamp_from_seconds
from michi.contracts.v1 import operations_pb2
from michi.kit import service_specs
from services.monitor.adapters.lag import KafkaLagReader
from services.monitor.adapters.scrape import MetricsScraper
from services.monitor.domain.episodes import EpisodeTracker, Transition, episode_attributes, event_id_of
from services.monitor.domain.resources import (
    TRAINING_RUN_SECONDS,
    TRAINING_RUNS,
    CounterIncreases,
    DailyCost,
    GroupLag,
    Prices,
    ServiceReading,
    utc_day,
)
from services.monitor.settings import MonitorSettings

logger = logging.getLogger(__name__)

MEMORY_ALERT_KIND = "memory"
LAG_ALERT_KIND = "lag"
COST_ALERT_KIND = "cost"
# attributes["reason"] of the two cost alerts.
DAILY_REPORT = "daily-report"
OVER_BUDGET = "over-budget"
# The monitor's own group (`<prefix>monitor`, `services.monitor.entrypoints.consumer.SERVICE`).
MONITOR_SERVICE = "monitor"
# Alerts a broker outage left unpublished, kept to try again at the next round (the oldest dropped beyond it).
MAX_UNPUBLISHED = 100
MEBIBYTE = 1024.0 * 1024.0
# Rounds kept for the monitor page's charts: an hour at the default scrape interval of 5 s.
HISTORY_ROUNDS = 720


class ResourceLedger(Protocol):
    """Where the resource watch keeps what must survive a restart (SQL): open episodes and the day's sums."""

    def open_condition_episodes(self) -> list[tuple[tuple[str, ...], str, float]]:
        """(key, episode id, started at) of every episode opened and not resolved."""
        ...

    def condition_episode_opened(self, key: tuple[str, ...], episode_id: str, started_at: float) -> None: ...

    def condition_episode_resolved(self, episode_id: str) -> None: ...

    def cost_days(self, since_day: str) -> list[tuple[DailyCost, bool]]:
        """The days from `since_day` on, and the earlier ones not reported yet, with whether each was reported."""
        ...

    def save_cost_day(self, day: DailyCost, reported: bool) -> None:
        """Insert or update the day's sums (reported stays true once true)."""
        ...


class ServiceMetricsReader(Protocol):
    def read(self) -> Mapping[str, ServiceReading | None]:
        """Every target's reading, None for one that could not be scraped."""
        ...


class AlertPublisher(Protocol):
    def publish_alert(self, alert: operations_pb2.Alert) -> None:
        """Publish on michi.alerts.v1 and return once the broker acknowledged it (raise when it did not)."""
        ...


class LagReader(Protocol):
    def read_lag(self) -> list[GroupLag]:
        """The lag of every group with committed offsets; raises when Kafka cannot be asked."""
        ...


@dataclass(frozen=True)
class ResourcePolicy:
    memory_headroom_ratio: float = 0.85
    memory_for_s: float = 30.0
    lag_records: int = 10_000
    lag_age_s: float = 300.0
    lag_for_s: float = 300.0
    price_cpu_hour: float = 0.04
    price_label: float = 0.05
    # USD per day; 0: no budget, no budget alert.
    daily_budget: float = 0.0
    # Groups never judged for lag (the monitor's own: `<prefix>monitor`).
    ignored_groups: frozenset[str] = frozenset()

    @property
    def prices(self) -> Prices:
        return Prices(cpu_hour=self.price_cpu_hour, label=self.price_label)


def resource_policy_of(settings: MonitorSettings) -> ResourcePolicy:
    return ResourcePolicy(
        memory_headroom_ratio=settings.monitor_memory_headroom_ratio,
        memory_for_s=settings.monitor_memory_for_s,
        lag_records=settings.monitor_lag_records,
        lag_age_s=settings.monitor_lag_age_s,
        lag_for_s=settings.monitor_lag_for_s,
        price_cpu_hour=settings.monitor_price_cpu_hour,
        price_label=settings.monitor_price_label,
        daily_budget=settings.monitor_daily_budget,
        ignored_groups=frozenset({f"{settings.topic_prefix}{MONITOR_SERVICE}"}),
    )


@dataclass(frozen=True)
class ResourceRound:
    """What one round observed, kept for the monitor page's charts.

    `memory`: RSS / memory limit per service scraped with a limit; `lag`: per group judged, records behind and the
    age (s) of its oldest unconsumed record (None when unknown); `day` and `cost_usd`: the UTC day and its running
    cost at the end of the round. A service or group absent was not observed that round.
    """

    at: float
    memory: Mapping[str, float]
    lag: Mapping[str, tuple[int, float | None]]
    day: str
    cost_usd: float


def memory_ratio(reading: ServiceReading) -> float | None:
    """RSS / memory limit of a reading; None without RSS or limit."""
    if reading.rss_bytes is None or not reading.limit_bytes or reading.limit_bytes <= 0:
        return None
    return reading.rss_bytes / reading.limit_bytes


class ResourceMetrics:
    """The resource watch's gauges, on the monitor's registry (served at its /metrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.scrape_up = Gauge(
            "michi_monitor_scrape_up",
            "1 when the service's /metrics was scraped in the last round, else 0",
            ["service"],
            registry=registry,
        )
        self.memory_ratio = Gauge(
            "michi_monitor_memory_used_ratio",
            "Resident memory / memory limit of the service at the last scrape",
            ["service"],
            registry=registry,
        )
        self.lag_records = Gauge(
            "michi_monitor_consumer_lag_records",
            "Records the consumer group has not committed yet (high watermark - committed, over its partitions)",
            ["group"],
            registry=registry,
        )
        self.lag_age = Gauge(
            "michi_monitor_consumer_lag_age_seconds",
            "Age of the group's oldest unconsumed record (0 without lag, NaN when it could not be read)",
            ["group"],
            registry=registry,
        )
        self.cpu_per_predictions = Gauge(
            "michi_monitor_cpu_seconds_per_1000_predictions",
            "CPU seconds of the service per 1,000 predictions the monitor counted, over the UTC day so far",
            ["service"],
            registry=registry,
        )
        self.cost_today = Gauge(
            "michi_monitor_cost_today_usd",
            "Running cost of the UTC day so far (CPU hours and labels at the configured prices)",
            registry=registry,
        )

    def scraped(self, service: str, up: bool) -> None:
        self.scrape_up.labels(service).set(1.0 if up else 0.0)

    def memory(self, service: str, ratio: float) -> None:
        self.memory_ratio.labels(service).set(ratio)

    def lag(self, group: str, records: int, age_s: float | None) -> None:
        self.lag_records.labels(group).set(records)
        self.lag_age.labels(group).set(math.nan if age_s is None else age_s)

    def cost(self, day: DailyCost, prices: Prices) -> None:
        self.cost_today.set(day.cost(prices))
        for service in day.cpu_seconds:
            self.cpu_per_predictions.labels(service).set(day.cpu_seconds_per_1000_predictions(service))


class ResourceWatch:
    """One scrape/lag round per `tick(now)` (module docstring); `now` is Unix time (the cost's days are UTC)."""

    def __init__(
        self,
        *,
        policy: ResourcePolicy,
        services: ServiceMetricsReader,
        lag: LagReader | None,
        reports: ResourceMetrics | None = None,
        history_rounds: int = HISTORY_ROUNDS,
        ledger: ResourceLedger | None = None,
    ) -> None:
        self.policy = policy
        self.ledger = ledger
        self._restored = ledger is None
        # Alerts raised and not yet acknowledged: what to keep once they are (`published`).
        self._transitions: dict[str, Transition] = {}
        self._reports: dict[str, DailyCost] = {}
        self.services = services
        self.lag = lag
        self.reports = reports
        self.memory_episodes = EpisodeTracker(policy.memory_for_s)
        self.lag_episodes = EpisodeTracker(policy.lag_for_s)
        self.budget_episodes = EpisodeTracker(0.0)
        self.counters = CounterIncreases()
        # Per service read at least once, its processes' counter keys: a process of a known service seen for the
        # first time started since the last round, and counts from its start.
        self._process_keys: dict[str, set[Hashable]] = {}
        self.day: DailyCost | None = None
        # A finished day whose report the round that noticed the new day publishes.
        self.pending_reports: list[DailyCost] = []
        self._lag_unread = False
        self._lock = threading.Lock()
        self._predictions = 0
        self._labels = 0
        # The monitor page's view (another thread): the last rounds and the day's figures at the last one.
        self._history: deque[ResourceRound] = deque(maxlen=max(1, history_rounds))
        self._today: dict[str, float | str] = {}
        self._history_lock = threading.Lock()

    # --- counted by the monitor's handlers (another thread)

    def predictions_seen(self, count: int) -> None:
        """`count` more predictions read by the monitor (the denominator of the CPU cost per 1,000)."""
        with self._lock:
            self._predictions += count

    def labels_seen(self, count: int) -> None:
        """`count` more labels (priced at `price_label` in the day's cost)."""
        with self._lock:
            self._labels += count

    # --- one round

    def tick(self, now: float) -> list[operations_pb2.Alert]:
        """Scrape, read lag, account the day: the alerts this round raises, for the caller to publish."""
        alerts: list[operations_pb2.Alert] = []
        if not self._restored:
            self._restore(now)
        day = self._day_at(now)
        readings = self.services.read()
        ratios: dict[str, float] = {}
        for service, reading in sorted(readings.items()):
            if self.reports is not None:
                self.reports.scraped(service, reading is not None)
            if reading is None:
                continue
            ratio = memory_ratio(reading)
            if ratio is not None:
                ratios[service] = ratio
            alerts.extend(self._judge_memory(reading, now))
            self._account(reading, day)
        lags: dict[str, tuple[int, float | None]] = {}
        alerts.extend(self._judge_lag(now, lags))
        with self._lock:
            day.predictions += self._predictions
            day.labels += self._labels
            self._predictions = self._labels = 0
        day.last_seen = now
        alerts.extend(self._judge_cost(day, now))
        if self.reports is not None:
            self.reports.cost(day, self.policy.prices)
        self._remember(ResourceRound(now, ratios, lags, day.day, day.cost(self.policy.prices)), day)
        if self.ledger is not None:
            self.ledger.save_cost_day(day, reported=False)
        return alerts

    def _episode_alert(self, kind: str, transition: Transition, message: str, now: float) -> operations_pb2.Alert:
        alert = episode_alert(kind, transition, message, now)
        self._transitions[alert.event_id] = transition
        return alert

    def _restore(self, now: float) -> None:
        """After a restart: the episodes open before it continue, today's sums go on, unreported days are reported."""
        assert self.ledger is not None
        trackers = {MEMORY_ALERT_KIND: self.memory_episodes, LAG_ALERT_KIND: self.lag_episodes}
        for key, episode_id, started_at in self.ledger.open_condition_episodes():
            tracker = trackers.get(key[0], self.budget_episodes) if key else None
            if tracker is not None:
                tracker.restore(key, started_at, episode_id)
        today = utc_day(now)
        for day, reported in self.ledger.cost_days(today):
            if day.day == today:
                self.day = day
            elif not reported:
                self.pending_reports.append(day)
        self._restored = True

    def published(self, alert: operations_pb2.Alert) -> None:
        """The broker acknowledged `alert`: keep what it changed (an episode opened or resolved, a day reported)."""
        if self.ledger is None:
            return
        transition = self._transitions.pop(alert.event_id, None)
        if transition is not None:
            if transition.firing:
                self.ledger.condition_episode_opened(
                    tuple(str(part) for part in transition.key), transition.episode_id, transition.started_at
                )
            else:
                self.ledger.condition_episode_resolved(transition.episode_id)
        reported = self._reports.pop(alert.event_id, None)
        if reported is not None:
            self.ledger.save_cost_day(reported, reported=True)

    # --- history (the monitor page)

    def _remember(self, round_: ResourceRound, day: DailyCost) -> None:
        today: dict[str, float | str] = {"day": day.day, **day.figures(self.policy.prices)}
        with self._history_lock:
            self._history.append(round_)
            self._today = today

    def history(self) -> list[ResourceRound]:
        """The last rounds kept (at most `history_rounds`), oldest first."""
        with self._history_lock:
            return list(self._history)

    def today(self) -> dict[str, float | str]:
        """The UTC day's figures at the last round (`DailyCost.figures` and `day`); empty before the first."""
        with self._history_lock:
            return dict(self._today)

    def _day_at(self, now: float) -> DailyCost:
        """Today's sums; at the first round of a new UTC day the finished day is reported (`pending_reports`)."""
        today = utc_day(now)
        if self.day is None:
            self.day = DailyCost(today, first_seen=now, last_seen=now)
        elif self.day.day != today:
            self.pending_reports.append(self.day)
            self.day = DailyCost(today, first_seen=now, last_seen=now)
        return self.day

    # --- memory

    def _judge_memory(self, reading: ServiceReading, now: float) -> list[operations_pb2.Alert]:
        ratio = memory_ratio(reading)
        if ratio is None or reading.rss_bytes is None or reading.limit_bytes is None:
            return []
        if self.reports is not None:
            self.reports.memory(reading.service, ratio)
        active = ratio >= self.policy.memory_headroom_ratio
        transition = self.memory_episodes.observe((MEMORY_ALERT_KIND, reading.service), active, now)
        if transition is None:
            return []
        rss, limit = reading.rss_bytes / MEBIBYTE, reading.limit_bytes / MEBIBYTE
        if transition.firing:
            message = (
                f"memory: {reading.service} has used {ratio:.0%} of its memory limit ({rss:.0f} of {limit:.0f} MiB, "
                f"{reading.limit_source or 'unknown'}) for {transition.duration_s:.0f} s "
                f"(threshold {self.policy.memory_headroom_ratio:.0%})"
            )
        else:
            message = (
                f"memory: {reading.service} is back under {self.policy.memory_headroom_ratio:.0%} of its memory "
                f"limit ({rss:.0f} of {limit:.0f} MiB, {ratio:.0%}) after {transition.duration_s:.0f} s"
            )
        alert = self._episode_alert(MEMORY_ALERT_KIND, transition, message, now)
        alert.attributes.update({"service": reading.service, "limit_source": reading.limit_source})
        alert.figures.update(
            {
                "rss_bytes": reading.rss_bytes,
                "limit_bytes": reading.limit_bytes,
                "ratio": ratio,
                "threshold_ratio": self.policy.memory_headroom_ratio,
            }
        )
        return [alert]

    # --- lag

    def _judge_lag(self, now: float, observed: dict[str, tuple[int, float | None]]) -> list[operations_pb2.Alert]:
        """Judge every group's lag; what was read goes into `observed` (group -> records, age) for the history."""
        if self.lag is None:
            return []
        try:
            lags = self.lag.read_lag()
        except Exception as error:  # Kafka unreachable this round: not observed
            # Once per outage at WARNING: the rounds come every few seconds.
            log = logger.debug if self._lag_unread else logger.warning
            log("consumer lag not read", extra={"error": str(error)[:300]})
            self._lag_unread = True
            return []
        if self._lag_unread:
            logger.info("consumer lag read again")
            self._lag_unread = False
        alerts = []
        for lag in sorted(lags, key=lambda lag: lag.group):
            if lag.group in self.policy.ignored_groups:
                continue
            age = lag.age_s(now)
            observed[lag.group] = (lag.records, age)
            if self.reports is not None:
                self.reports.lag(lag.group, lag.records, age)
            too_old = age is not None and age > self.policy.lag_age_s
            active = lag.records > self.policy.lag_records or too_old
            transition = self.lag_episodes.observe((LAG_ALERT_KIND, lag.group), active, now)
            if transition is None:
                continue
            shown_age = "unknown" if age is None else f"{age:.0f} s"
            if transition.firing:
                message = (
                    f"lag: consumer group {lag.group} is {lag.records} records behind, oldest unconsumed "
                    f"{shown_age}, for {transition.duration_s:.0f} s "
                    f"(thresholds {self.policy.lag_records} records, {self.policy.lag_age_s:g} s)"
                )
            else:
                message = (
                    f"lag: consumer group {lag.group} caught up ({lag.records} records behind, oldest unconsumed "
                    f"{shown_age}) after {transition.duration_s:.0f} s"
                )
            alert = self._episode_alert(LAG_ALERT_KIND, transition, message, now)
            alert.attributes["group"] = lag.group
            alert.figures.update(
                {
                    "records": float(lag.records),
                    "records_threshold": float(self.policy.lag_records),
                    "age_threshold_s": self.policy.lag_age_s,
                }
            )
            if age is not None:
                alert.figures["age_s"] = age
            alerts.append(alert)
        return alerts

    # --- cost

    def _account(self, reading: ServiceReading, day: DailyCost) -> None:
        """Add what the service's processes and the trainer's counters did since the last scrape to the day."""
        known = reading.service in self._process_keys
        present: set[Hashable] = set()
        for process in reading.processes:
            key: Hashable = ("cpu", reading.service, process.identity)
            present.add(key)
            seconds = self.counters.increase(key, process.cpu_seconds, process.started_at, count_new=known)
            day.add_cpu(reading.service, seconds)
        # Workers gone from a page that was read (not from one that could not be: they may still run).
        self.counters.forget(self._process_keys.get(reading.service, set()) - present)
        self._process_keys[reading.service] = present
        started_at = reading.started_at
        runs = reading.counters.get(TRAINING_RUNS)
        if runs is not None:
            day.training_runs += self.counters.increase(
                ("counter", reading.service, TRAINING_RUNS), runs, started_at, count_new=known
            )
        run_seconds = reading.counters.get(TRAINING_RUN_SECONDS)
        if run_seconds is not None:
            day.training_run_seconds += self.counters.increase(
                ("counter", reading.service, TRAINING_RUN_SECONDS), run_seconds, started_at, count_new=known
            )

    def _judge_cost(self, day: DailyCost, now: float) -> list[operations_pb2.Alert]:
        alerts = []
        for finished in self.pending_reports:
            report = self.daily_report(finished, now)
            self._reports[report.event_id] = finished
            alerts.append(report)
        self.pending_reports = []
        budget = self.policy.daily_budget
        cost = day.cost(self.policy.prices)
        transition = self.budget_episodes.observe((COST_ALERT_KIND, OVER_BUDGET), budget > 0 and cost > budget, now)
        if transition is not None:
            if transition.firing:
                message = f"cost: {day.day} has cost {cost:.2f} USD so far, over the daily budget of {budget:.2f} USD"
            else:
                message = (
                    f"cost: the daily budget of {budget:.2f} USD is no longer exceeded ({day.day}: {cost:.2f} USD)"
                )
            alert = self._episode_alert(COST_ALERT_KIND, transition, message, now)
            alert.attributes.update({"reason": OVER_BUDGET, "day": day.day})
            alert.figures.update({"cost_usd": cost, "budget_usd": budget})
            alerts.append(alert)
        return alerts

    def daily_report(self, day: DailyCost, now: float) -> operations_pb2.Alert:
        """The cost report of a finished UTC day: INFO, its id stable per day."""
        figures = day.figures(self.policy.prices)
        alert = operations_pb2.Alert(
            event_id=stable_event_id(COST_ALERT_KIND, DAILY_REPORT, day.day),
            kind=COST_ALERT_KIND,
            severity=operations_pb2.ALERT_SEVERITY_INFO,
            message=(
                f"cost: {day.day} cost {figures['cost_usd']:.2f} USD: {figures['cpu_hours']:.2f} CPU hours, "
                f"{day.labels} labels, {figures['training_runs']:.0f} training runs, {day.predictions} predictions"
            ),
        )
        alert.occurred_at.CopyFrom(timestamp_from_seconds(now))
        alert.attributes.update(
            {
                "reason": DAILY_REPORT,
                "day": day.day,
                "observed_from": f"{day.first_seen:.3f}",
                "observed_to": f"{day.last_seen:.3f}",
            }
        )
        alert.figures.update(figures)
        return alert


def episode_alert(kind: str, transition: Transition, message: str, now: float) -> operations_pb2.Alert:
    """An alert of `kind` for an episode transition: WARNING when it fires, INFO when it resolves."""
    alert = operations_pb2.Alert(
        event_id=event_id_of(kind, transition),
        kind=kind,
        severity=operations_pb2.ALERT_SEVERITY_WARNING if transition.firing else operations_pb2.ALERT_SEVERITY_INFO,
        message=message,
    )
    alert.occurred_at.CopyFrom(timestamp_from_seconds(now))
    alert.attributes.update(episode_attributes(transition))
    alert.figures["episode_seconds"] = transition.duration_s
    return alert


class ResourceWatchThread(threading.Thread):
    """Ticks `watch` every `interval_s` and publishes what it raises; `stop()` ends it and closes the readers.

    A round that fails is logged and the next one comes on time; an alert the broker did not acknowledge is
    tried again at the next round (up to `MAX_UNPUBLISHED` kept; their ids are stable, so a retry that
    duplicates one is deduplicated by readers).
    """

    def __init__(
        self,
        watch: ResourceWatch,
        publisher: AlertPublisher,
        *,
        interval_s: float,
        closers: tuple[Callable[[], None], ...] = (),
        published: Callable[[operations_pb2.Alert], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name="michi-monitor-resources", daemon=True)
        self.watch = watch
        self.publisher = publisher
        self.interval_s = interval_s
        self.closers = closers
        self.published = published
        self.clock = clock
        self.unpublished: list[operations_pb2.Alert] = []
        self._stop_requested = threading.Event()

    def run(self) -> None:
        try:
            next_round = time.monotonic()
            while not self._stop_requested.is_set():
                self.round()
                next_round = max(next_round + self.interval_s, time.monotonic())
                self._stop_requested.wait(max(0.0, next_round - time.monotonic()))
        finally:
            for close in self.closers:
                try:
                    close()
                except Exception:
                    logger.exception("resource watch reader not closed")

    def round(self) -> None:
        """One tick and the publication of its alerts (and of those an earlier round could not publish)."""
        try:
            self.unpublished.extend(self.watch.tick(self.clock()))
        except Exception:
            logger.exception("resource watch round failed")
        waiting, self.unpublished = self.unpublished, []
        for index, alert in enumerate(waiting):
            try:
                self.publisher.publish_alert(alert)
            except Exception as error:
                logger.warning("alert not published, tried again next round", extra={"error": str(error)[:300]})
                self.unpublished = waiting[index:][-MAX_UNPUBLISHED:]
                return
            logger.info("alert published", extra={"kind": alert.kind, "event_id": alert.event_id})
            try:
                self.watch.published(alert)
            except Exception:  # the ledger (SQL) down: the alert stands; a restart may raise its episode again
                logger.exception("published alert not recorded")
            if self.published is not None:
                self.published(alert)

    def stop(self, timeout: float | None = 30.0) -> None:
        self._stop_requested.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)


def start_resource_watch(
    settings: MonitorSettings,
    publisher: AlertPublisher,
    registry: CollectorRegistry,
    *,
    published: Callable[[operations_pb2.Alert], None] | None = None,
    ledger: ResourceLedger | None = None,
) -> ResourceWatchThread:
    """The resource watch of the running monitor, started: scrapes `settings.scrape_targets()`, reads the lag of
    every service's group but the monitor's, publishes through `publisher`, exports on `registry`; `published`
    is told of each alert the broker acknowledged (the monitor's alert counter). `stop()` it before closing
    the producer behind `publisher`; `ledger` keeps open episodes and the day's sums across restarts."""
    policy = resource_policy_of(settings)
    interval = settings.monitor_scrape_interval_s
    scraper = MetricsScraper(settings.scrape_targets(), timeout_s=min(2.0, interval))
    groups = [f"{settings.topic_prefix}{spec.name}" for spec in service_specs()]
    lag_reader = KafkaLagReader(
        settings.kafka_connection(),
        [group for group in groups if group not in policy.ignored_groups],
        topic_prefix=settings.topic_prefix,
        timeout_s=max(interval, 5.0),
        age_timeout_s=min(3.0, interval),
    )
    watch = ResourceWatch(
        policy=policy, services=scraper, lag=lag_reader, reports=ResourceMetrics(registry), ledger=ledger
    )
    thread = ResourceWatchThread(
        watch, publisher, interval_s=interval, closers=(scraper.close, lag_reader.close), published=published
    )
    thread.start()
    return thread
