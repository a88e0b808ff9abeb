"""The monitor's resource watch with fake readers: episodes, memory headroom, consumer lag and the day's cost; the
memory limit every service exports, and the scrape of a real `/metrics` page."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from michi.contracts import stable_event_id
from michi.contracts.v1 import operations_pb2
from michi.kit import service_specs
from michi.readiness import serve_operations
from michi.telemetry.metrics import (
    CGROUP,
    MACHINE,
    MEMORY_LIMIT_METRIC,
    MemoryLimit,
    MemoryLimitCollector,
    read_memory_limit,
    service_registry,
)
from services.monitor.adapters.scrape import MetricsScraper, parse_service_metrics
from services.monitor.adapters.store import MonitorStore
from services.monitor.domain.episodes import (
    FIRING,
    RESOLVED,
    EpisodeTracker,
    episode_id_of,
    firing_event_id,
    resolved_event_id,
)
from services.monitor.domain.resources import (
    TRAINING_RUN_SECONDS,
    TRAINING_RUNS,
    GroupLag,
    ProcessReading,
    ServiceReading,
    parse_scrape_targets,
)
from services.monitor.resources import (
    COST_ALERT_KIND,
    DAILY_REPORT,
    LAG_ALERT_KIND,
    MEMORY_ALERT_KIND,
    OVER_BUDGET,
    ResourceMetrics,
    ResourcePolicy,
    ResourceWatch,
    ResourceWatchThread,
)
from services.monitor.settings import MonitorSettings

GIB = 1024.0**3
# 2026-03-14 00:00:00 UTC, and the next day.
DAY_START = 1_773_446_400.0
NEXT_DAY = DAY_START + 86_400.0
MONITOR_GROUP = "michi.monitor"


class FakeServices:
    """The scraper as the watch sees it: whatever readings the test sets (None: could not be scraped)."""

    def __init__(self) -> None:
        self.readings: dict[str, ServiceReading | None] = {}

    def read(self) -> Mapping[str, ServiceReading | None]:
        return dict(self.readings)


class FakeLag:
    def __init__(self) -> None:
        self.lags: list[GroupLag] = []
        self.failing = False

    def read_lag(self) -> list[GroupLag]:
        if self.failing:
            raise RuntimeError("Kafka unreachable")
        return list(self.lags)


def build(**policy: object) -> tuple[ResourceWatch, FakeServices, FakeLag, CollectorRegistry]:
    services, lag, registry = FakeServices(), FakeLag(), CollectorRegistry()
    settings: dict[str, object] = {"ignored_groups": frozenset({MONITOR_GROUP}), **policy}
    watch = ResourceWatch(
        policy=ResourcePolicy(**settings),  # type: ignore[arg-type]
        services=services,
        lag=lag,
        reports=ResourceMetrics(registry),
    )
    return watch, services, lag, registry


def memory(service: str, ratio: float, *, limit: float = 2 * GIB, source: str = CGROUP) -> ServiceReading:
    return ServiceReading(service, rss_bytes=ratio * limit, limit_bytes=limit, limit_source=source)


def cpu(service: str, *processes: tuple[str, float, float], **counters: float) -> ServiceReading:
    """A reading with processes (identity, CPU seconds, start time) and counters, memory far from its limit."""
    return ServiceReading(
        service,
        rss_bytes=0.1 * GIB,
        limit_bytes=GIB,
        limit_source=CGROUP,
        processes=tuple(ProcessReading(*process) for process in processes),
        counters=counters,
    )


def kinds(alerts: list[operations_pb2.Alert]) -> list[tuple[str, str]]:
    return [(alert.kind, alert.attributes.get("status", "")) for alert in alerts]


# --- episodes


def test_an_episode_opens_after_the_hold_once_and_resolves_once() -> None:
    tracker = EpisodeTracker(hold_s=30.0)
    key = ("memory", "ingest")
    assert [tracker.observe(key, True, now) for now in (100.0, 110.0, 129.9)] == [None, None, None]
    firing = tracker.observe(key, True, 130.0)
    assert firing is not None and firing.status == FIRING
    assert firing.started_at == 100.0 and firing.duration_s == 30.0
    assert firing.episode_id == episode_id_of(key, 100.0)
    assert tracker.observe(key, True, 200.0) is None
    assert tracker.open_episode(key) == firing.episode_id
    resolved = tracker.observe(key, False, 210.0)
    assert resolved is not None and resolved.status == RESOLVED
    assert resolved.episode_id == firing.episode_id and resolved.started_at == 100.0
    assert tracker.observe(key, False, 220.0) is None
    assert tracker.open_keys() == []


def test_a_condition_inactive_before_the_hold_starts_again() -> None:
    tracker = EpisodeTracker(hold_s=30.0)
    key = ("lag", "michi.scoring")
    tracker.observe(key, True, 0.0)
    assert tracker.observe(key, False, 20.0) is None  # pending, never open: nothing to resolve
    tracker.observe(key, True, 25.0)
    assert tracker.observe(key, True, 54.0) is None
    firing = tracker.observe(key, True, 55.0)
    assert firing is not None and firing.started_at == 25.0


def test_hold_zero_opens_at_once_and_negative_holds_are_refused() -> None:
    tracker = EpisodeTracker(hold_s=0.0)
    firing = tracker.observe(("cost",), True, 5.0)
    assert firing is not None and firing.status == FIRING and firing.duration_s == 0.0
    with pytest.raises(ValueError, match="hold_s"):
        EpisodeTracker(hold_s=-1.0)


def test_episode_ids_depend_on_key_and_start_only() -> None:
    """The same condition observed from the same moment again (a restart reading event time) is the same episode."""
    first, again = EpisodeTracker(hold_s=10.0), EpisodeTracker(hold_s=10.0)
    key = ("drift", "risk", "v1")
    for tracker in (first, again):
        tracker.observe(key, True, 1000.0)
    one, two = first.observe(key, True, 1010.0), again.observe(key, True, 1012.5)
    assert one is not None and two is not None and one.episode_id == two.episode_id
    assert episode_id_of(key, 1000.0) != episode_id_of(key, 1001.0)
    assert episode_id_of(key, 1000.0) != episode_id_of(("drift", "risk", "v2"), 1000.0)
    assert resolved_event_id("memory", one.episode_id) == stable_event_id("memory", one.episode_id, "resolved")
    assert firing_event_id("memory", one.episode_id) != resolved_event_id("memory", one.episode_id)


# --- memory headroom


def test_memory_alert_after_thirty_seconds_at_the_headroom_then_one_resolve() -> None:
    watch, services, _, registry = build(memory_headroom_ratio=0.85, memory_for_s=30.0)
    services.readings = {"inference": memory("inference", 0.9), "ingest": memory("ingest", 0.2)}
    for now in range(0, 30, 5):
        assert watch.tick(DAY_START + now) == [], now
    alerts = watch.tick(DAY_START + 30)
    assert kinds(alerts) == [(MEMORY_ALERT_KIND, FIRING)]
    firing = alerts[0]
    assert firing.severity == operations_pb2.ALERT_SEVERITY_WARNING
    assert firing.attributes["service"] == "inference" and firing.attributes["limit_source"] == CGROUP
    assert firing.figures["rss_bytes"] == pytest.approx(0.9 * 2 * GIB)
    assert firing.figures["limit_bytes"] == 2 * GIB and firing.figures["ratio"] == pytest.approx(0.9)
    episode = firing.attributes["episode"]
    assert firing.event_id == firing_event_id(MEMORY_ALERT_KIND, episode)
    assert registry.get_sample_value("michi_monitor_memory_used_ratio", {"service": "inference"}) == pytest.approx(0.9)

    assert watch.tick(DAY_START + 35) == []  # still high: the same episode, no second alert
    services.readings["inference"] = memory("inference", 0.5)
    resolved = watch.tick(DAY_START + 40)
    assert kinds(resolved) == [(MEMORY_ALERT_KIND, RESOLVED)]
    assert resolved[0].severity == operations_pb2.ALERT_SEVERITY_INFO
    assert resolved[0].attributes["episode"] == episode
    assert resolved[0].event_id == stable_event_id(MEMORY_ALERT_KIND, episode, "resolved")
    assert watch.tick(DAY_START + 45) == []


def test_a_dip_under_the_headroom_restarts_the_hold() -> None:
    watch, services, _, _ = build(memory_for_s=30.0)
    services.readings = {"scoring": memory("scoring", 0.95)}
    watch.tick(DAY_START)
    watch.tick(DAY_START + 20)
    services.readings = {"scoring": memory("scoring", 0.84)}
    watch.tick(DAY_START + 25)
    services.readings = {"scoring": memory("scoring", 0.95)}
    assert watch.tick(DAY_START + 30) == []  # 30 s after the first high reading, but not continuously
    assert watch.tick(DAY_START + 59) == []
    assert kinds(watch.tick(DAY_START + 60)) == [(MEMORY_ALERT_KIND, FIRING)]


def test_a_service_not_scraped_is_not_observed_and_raises_nothing() -> None:
    watch, services, _, registry = build(memory_for_s=30.0)
    services.readings = {"trainer": memory("trainer", 0.9), "annotation": None}
    watch.tick(DAY_START)
    assert registry.get_sample_value("michi_monitor_scrape_up", {"service": "trainer"}) == 1.0
    assert registry.get_sample_value("michi_monitor_scrape_up", {"service": "annotation"}) == 0.0
    services.readings = {"trainer": None, "annotation": None}
    assert watch.tick(DAY_START + 20) == []  # a gap: neither active nor inactive
    assert registry.get_sample_value("michi_monitor_scrape_up", {"service": "trainer"}) == 0.0
    services.readings = {"trainer": memory("trainer", 0.9)}
    assert kinds(watch.tick(DAY_START + 30)) == [(MEMORY_ALERT_KIND, FIRING)]


def test_a_service_without_a_memory_limit_is_not_judged() -> None:
    watch, services, _, _ = build(memory_for_s=0.0)
    services.readings = {"old": ServiceReading("old", rss_bytes=10 * GIB, limit_bytes=None)}
    assert watch.tick(DAY_START) == []


# --- consumer lag


def test_lag_in_records_alerts_after_the_hold_and_resolves() -> None:
    watch, _, lag, registry = build(lag_records=10_000, lag_age_s=300.0, lag_for_s=300.0)
    lag.lags = [GroupLag("michi.scoring", 12_000, DAY_START - 10.0), GroupLag("michi.warehouse", 5, DAY_START - 1.0)]
    for now in range(0, 300, 60):
        assert watch.tick(DAY_START + now) == [], now
    assert registry.get_sample_value("michi_monitor_consumer_lag_records", {"group": "michi.scoring"}) == 12_000
    assert registry.get_sample_value("michi_monitor_consumer_lag_age_seconds", {"group": "michi.scoring"}) == 250.0
    alerts = watch.tick(DAY_START + 300)
    assert kinds(alerts) == [(LAG_ALERT_KIND, FIRING)]
    assert alerts[0].attributes["group"] == "michi.scoring"
    assert alerts[0].figures["records"] == 12_000 and alerts[0].figures["age_s"] == 310.0
    assert alerts[0].severity == operations_pb2.ALERT_SEVERITY_WARNING
    lag.lags = [GroupLag("michi.scoring", 0)]
    resolved = watch.tick(DAY_START + 360)
    assert kinds(resolved) == [(LAG_ALERT_KIND, RESOLVED)]
    assert resolved[0].attributes["episode"] == alerts[0].attributes["episode"]
    assert registry.get_sample_value("michi_monitor_consumer_lag_age_seconds", {"group": "michi.scoring"}) == 0.0


def test_lag_by_age_alone_alerts_and_records_at_the_threshold_do_not() -> None:
    watch, _, lag, _ = build(lag_records=10_000, lag_age_s=300.0, lag_for_s=0.0)
    lag.lags = [GroupLag("michi.inference", 10_000, DAY_START - 100.0)]  # not over either threshold
    assert watch.tick(DAY_START) == []
    lag.lags = [GroupLag("michi.inference", 3, DAY_START - 301.0)]
    alerts = watch.tick(DAY_START)
    assert kinds(alerts) == [(LAG_ALERT_KIND, FIRING)] and alerts[0].figures["age_s"] == 301.0


def test_the_monitors_own_group_is_never_judged() -> None:
    watch, _, lag, registry = build(lag_for_s=0.0)
    lag.lags = [GroupLag(MONITOR_GROUP, 1_000_000, DAY_START - 10_000.0)]
    assert watch.tick(DAY_START) == []
    assert watch.tick(DAY_START + 600) == []
    assert registry.get_sample_value("michi_monitor_consumer_lag_records", {"group": MONITOR_GROUP}) is None


def test_a_round_without_kafka_changes_nothing() -> None:
    watch, _, lag, _ = build(lag_for_s=300.0)
    lag.lags = [GroupLag("michi.scoring", 50_000, DAY_START)]
    watch.tick(DAY_START)
    lag.failing = True
    assert watch.tick(DAY_START + 150) == []
    lag.failing = False
    assert kinds(watch.tick(DAY_START + 300)) == [(LAG_ALERT_KIND, FIRING)]


def test_lag_age_is_zero_without_lag_and_unknown_when_the_record_was_not_read() -> None:
    assert GroupLag("g", 0, None).age_s(100.0) == 0.0
    assert GroupLag("g", 5, None).age_s(100.0) is None
    assert GroupLag("g", 5, 40.0).age_s(100.0) == 60.0


# --- cost


def test_cpu_counters_that_reset_never_count_negative() -> None:
    watch, services, _, _ = build()
    services.readings = {"scoring": cpu("scoring", ("", 100.0, 1000.0))}
    watch.tick(DAY_START)  # the first look: a baseline, nothing counted
    services.readings = {"scoring": cpu("scoring", ("", 110.0, 1000.0))}
    watch.tick(DAY_START + 5)
    services.readings = {"scoring": cpu("scoring", ("", 3.0, 2000.0))}  # restarted: another start time
    watch.tick(DAY_START + 10)
    services.readings = {"scoring": cpu("scoring", ("", 5.0, 2000.0))}
    watch.tick(DAY_START + 15)
    services.readings = {"scoring": cpu("scoring", ("", 1.0, 2000.0))}  # went down without a new start time
    watch.tick(DAY_START + 20)
    assert watch.day is not None
    assert watch.day.cpu_seconds == {"scoring": pytest.approx(10.0 + 3.0 + 2.0 + 1.0)}


def test_a_new_worker_of_a_known_service_counts_from_its_start() -> None:
    watch, services, _, _ = build()
    services.readings = {"ingest": cpu("ingest", ("11", 50.0, 1000.0))}
    watch.tick(DAY_START)
    services.readings = {"ingest": cpu("ingest", ("11", 52.0, 1000.0), ("12", 4.0, 1500.0))}
    watch.tick(DAY_START + 5)
    assert watch.day is not None and watch.day.cpu_seconds["ingest"] == pytest.approx(6.0)


def test_a_worker_gone_is_forgotten_but_a_page_not_read_forgets_nothing() -> None:
    watch, services, _, _ = build()
    services.readings = {"ingest": cpu("ingest", ("11", 50.0, 1000.0), ("12", 10.0, 1000.0))}
    watch.tick(DAY_START)
    services.readings = {"ingest": None}  # not read: both workers may still run
    watch.tick(DAY_START + 5)
    services.readings = {"ingest": cpu("ingest", ("11", 51.0, 1000.0), ("12", 11.0, 1000.0))}
    watch.tick(DAY_START + 10)
    assert watch.day is not None and watch.day.cpu_seconds["ingest"] == pytest.approx(2.0)
    services.readings = {"ingest": cpu("ingest", ("11", 52.0, 1000.0))}  # worker 12 exited
    watch.tick(DAY_START + 15)
    assert not watch.counters.tracks(("cpu", "ingest", "12")) and watch.counters.tracks(("cpu", "ingest", "11"))
    assert watch.day.cpu_seconds["ingest"] == pytest.approx(3.0)


def test_cpu_seconds_per_thousand_predictions() -> None:
    watch, services, _, registry = build()
    services.readings = {"inference": cpu("inference", ("", 100.0, 1000.0))}
    watch.tick(DAY_START)
    watch.predictions_seen(1500)
    watch.predictions_seen(500)
    services.readings = {"inference": cpu("inference", ("", 110.0, 1000.0))}
    watch.tick(DAY_START + 5)
    sample = registry.get_sample_value("michi_monitor_cpu_seconds_per_1000_predictions", {"service": "inference"})
    assert sample == pytest.approx(5.0)


def test_the_daily_report_comes_once_at_the_next_utc_day_with_a_stable_id() -> None:
    def run_day() -> list[operations_pb2.Alert]:
        watch, services, _, _ = build(price_cpu_hour=0.04, price_label=0.05)
        services.readings = {
            "inference": cpu("inference", ("", 0.0, 1000.0)),
            "trainer": cpu("trainer", ("", 0.0, 1000.0), **{TRAINING_RUNS: 2.0, TRAINING_RUN_SECONDS: 100.0}),
        }
        assert watch.tick(DAY_START + 3600) == []
        watch.predictions_seen(36_000)
        watch.labels_seen(10)
        services.readings = {
            "inference": cpu("inference", ("", 7200.0, 1000.0)),
            "trainer": cpu("trainer", ("", 3600.0, 1000.0), **{TRAINING_RUNS: 3.0, TRAINING_RUN_SECONDS: 1900.0}),
        }
        assert watch.tick(NEXT_DAY - 1) == []
        report = watch.tick(NEXT_DAY + 2)
        assert watch.tick(NEXT_DAY + 7) == []  # once
        return report

    report = run_day()
    assert kinds(report) == [(COST_ALERT_KIND, "")]
    alert = report[0]
    assert alert.severity == operations_pb2.ALERT_SEVERITY_INFO
    assert alert.attributes["reason"] == DAILY_REPORT and alert.attributes["day"] == "2026-03-14"
    assert alert.event_id == stable_event_id(COST_ALERT_KIND, DAILY_REPORT, "2026-03-14")
    figures = alert.figures
    assert figures["cpu_hours"] == pytest.approx(3.0)
    assert figures["cost_usd"] == pytest.approx(3.0 * 0.04 + 10 * 0.05)
    assert figures["label_cost_usd"] == pytest.approx(0.5)
    assert figures["training_runs"] == 1.0 and figures["training_run_hours"] == pytest.approx(0.5)
    assert figures["trainer_cpu_hours"] == pytest.approx(1.0)
    assert figures["cpu_seconds_per_1000_predictions.inference"] == pytest.approx(200.0)
    assert figures["observed_seconds"] == pytest.approx(86_400 - 3601)
    # A monitor run again over the same day reports it under the same id.
    assert run_day()[0].event_id == alert.event_id


def test_over_budget_is_an_episode_resolved_by_the_next_day() -> None:
    watch, _, _, registry = build(price_label=0.05, daily_budget=1.0)
    watch.tick(DAY_START)
    watch.labels_seen(19)
    assert watch.tick(DAY_START + 5) == []  # 0.95 USD
    watch.labels_seen(2)
    alerts = watch.tick(DAY_START + 10)
    assert kinds(alerts) == [(COST_ALERT_KIND, FIRING)]
    assert alerts[0].severity == operations_pb2.ALERT_SEVERITY_WARNING
    assert alerts[0].attributes["reason"] == OVER_BUDGET
    assert alerts[0].figures["cost_usd"] == pytest.approx(1.05) and alerts[0].figures["budget_usd"] == 1.0
    assert registry.get_sample_value("michi_monitor_cost_today_usd") == pytest.approx(1.05)
    watch.labels_seen(5)
    assert watch.tick(DAY_START + 15) == []
    next_day = watch.tick(NEXT_DAY)
    assert sorted(kinds(next_day)) == [(COST_ALERT_KIND, ""), (COST_ALERT_KIND, RESOLVED)]
    resolved = next(alert for alert in next_day if alert.attributes.get("status") == RESOLVED)
    assert resolved.severity == operations_pb2.ALERT_SEVERITY_INFO
    assert resolved.event_id == stable_event_id(COST_ALERT_KIND, alerts[0].attributes["episode"], "resolved")


def test_no_budget_no_budget_alert() -> None:
    watch, _, _, _ = build(daily_budget=0.0)
    watch.labels_seen(1_000_000)
    assert watch.tick(DAY_START) == []


def test_a_trainer_restart_counts_its_runs_from_zero() -> None:
    watch, services, _, _ = build()
    services.readings = {"trainer": cpu("trainer", ("", 1.0, 1000.0), **{TRAINING_RUNS: 4.0})}
    watch.tick(DAY_START)
    services.readings = {"trainer": cpu("trainer", ("", 1.0, 5000.0), **{TRAINING_RUNS: 1.0})}
    watch.tick(DAY_START + 5)
    assert watch.day is not None and watch.day.training_runs == 1.0


# --- the thread that ticks and publishes


class FlakyPublisher:
    def __init__(self) -> None:
        self.published: list[operations_pb2.Alert] = []
        self.refusing = True

    def publish_alert(self, alert: operations_pb2.Alert) -> None:
        if self.refusing:
            raise RuntimeError("broker down")
        self.published.append(alert)


def test_an_alert_the_broker_refused_is_published_at_the_next_round() -> None:
    watch, services, _, _ = build(memory_for_s=0.0)
    services.readings = {"inference": memory("inference", 0.99)}
    publisher = FlakyPublisher()
    times = iter([DAY_START, DAY_START + 5])
    thread = ResourceWatchThread(watch, publisher, interval_s=5.0, clock=lambda: next(times))
    thread.round()
    assert publisher.published == [] and len(thread.unpublished) == 1
    publisher.refusing = False
    thread.round()
    assert kinds(publisher.published) == [(MEMORY_ALERT_KIND, FIRING)] and thread.unpublished == []


def test_the_thread_ticks_until_stopped_and_closes_its_readers() -> None:
    watch, services, _, _ = build(memory_for_s=0.0)
    services.readings = {"inference": memory("inference", 0.99)}
    publisher = FlakyPublisher()
    publisher.refusing = False
    closed: list[str] = []
    thread = ResourceWatchThread(watch, publisher, interval_s=0.01, closers=(lambda: closed.append("reader"),))
    thread.start()
    thread.join(0.2)
    thread.stop()
    assert not thread.is_alive() and closed == ["reader"]
    assert kinds(publisher.published) == [(MEMORY_ALERT_KIND, FIRING)]


# --- settings and scraping


def test_scrape_targets_default_to_every_service_and_are_checked() -> None:
    defaults = MonitorSettings().scrape_targets()
    assert set(defaults) == {spec.name for spec in service_specs()}
    assert defaults["monitor"] == "http://127.0.0.1:8083/metrics"
    given = MonitorSettings(monitor_scrape_targets=" ingest=http://ingest:8080/metrics, scoring=http://s:8085/metrics ")
    assert given.scrape_targets() == {"ingest": "http://ingest:8080/metrics", "scoring": "http://s:8085/metrics"}
    for wrong in ("ingest", "ingest=ingest:8080/metrics", "a=http://x/metrics,a=http://y/metrics", "=http://x"):
        with pytest.raises(ValidationError, match="monitor_scrape_targets"):
            MonitorSettings(monitor_scrape_targets=wrong)
    assert parse_scrape_targets("") == {}


MULTIPROCESS_PAGE = """\
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes{pid="11"} 1.0e8
process_resident_memory_bytes{pid="12"} 3.0e8
# TYPE process_cpu_seconds counter
process_cpu_seconds_total{pid="11"} 4.5
process_cpu_seconds_total{pid="12"} 1.5
# TYPE process_start_time_seconds gauge
process_start_time_seconds{pid="11"} 1000.0
process_start_time_seconds{pid="12"} 1200.0
# TYPE michi_memory_limit_bytes gauge
michi_memory_limit_bytes{source="cgroup"} 1.0e9
# TYPE michi_trainer_runs counter
michi_trainer_runs_total{trigger="labels",status="ok"} 2.0
michi_trainer_runs_total{trigger="alert",status="failed"} 1.0
"""


def test_a_multiprocess_page_sums_memory_and_keeps_each_worker() -> None:
    reading = parse_service_metrics("ingest", MULTIPROCESS_PAGE)
    assert reading.rss_bytes == 4.0e8 and reading.limit_bytes == 1.0e9 and reading.limit_source == CGROUP
    assert reading.processes == (ProcessReading("11", 4.5, 1000.0), ProcessReading("12", 1.5, 1200.0))
    assert reading.counters == {TRAINING_RUNS: 3.0} and reading.started_at == 1000.0


def test_the_scraper_reads_a_real_service_page_and_tells_an_absent_one() -> None:
    registry = service_registry()
    server = serve_operations("example", 0, alive=lambda: True, registry=registry)
    port = server.server_address[1]
    scraper = MetricsScraper(
        {"example": f"http://127.0.0.1:{port}/metrics", "absent": "http://127.0.0.1:9/metrics"}, timeout_s=2.0
    )
    try:
        readings = scraper.read()
    finally:
        scraper.close()
        server.shutdown()
        server.server_close()
    example = readings["example"]
    assert readings["absent"] is None
    assert example is not None and example.rss_bytes is not None and example.rss_bytes > 0
    assert example.limit_bytes is not None and example.limit_bytes >= example.rss_bytes
    assert example.limit_source in (CGROUP, MACHINE)
    assert len(example.processes) == 1 and example.processes[0].cpu_seconds > 0


# --- the memory limit every service exports


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def machine(root: Path, kilobytes: int = 16 * 1024 * 1024) -> None:
    write(root / "proc/meminfo", f"MemTotal:       {kilobytes} kB\nMemFree:        1000 kB\n")


def test_cgroup_v2_limit_is_the_lowest_along_the_path(tmp_path: Path) -> None:
    machine(tmp_path)
    write(tmp_path / "proc/self/cgroup", "0::/kubepods/pod1/container\n")
    cgroup = tmp_path / "sys/fs/cgroup"
    write(cgroup / "cgroup.controllers", "cpu memory\n")
    write(cgroup / "kubepods/memory.max", "max\n")
    write(cgroup / "kubepods/pod1/memory.max", "1073741824\n")
    write(cgroup / "kubepods/pod1/container/memory.max", "2147483648\n")
    assert read_memory_limit(tmp_path) == MemoryLimit(1073741824, CGROUP)


def test_no_limit_or_one_above_the_machine_is_the_machines_memory(tmp_path: Path) -> None:
    machine(tmp_path, kilobytes=1024 * 1024)
    write(tmp_path / "proc/self/cgroup", "0::/\n")
    write(tmp_path / "sys/fs/cgroup/cgroup.controllers", "memory\n")
    write(tmp_path / "sys/fs/cgroup/memory.max", "max\n")
    assert read_memory_limit(tmp_path) == MemoryLimit(1024**3, MACHINE)
    write(tmp_path / "sys/fs/cgroup/memory.max", str(8 * 1024**3))
    assert read_memory_limit(tmp_path) == MemoryLimit(1024**3, MACHINE)


def test_cgroup_v1_limit_and_its_huge_no_limit(tmp_path: Path) -> None:
    machine(tmp_path)
    # A container that mounts its own cgroup as the root: its path (/docker/abc) is not under the mount.
    write(tmp_path / "proc/self/cgroup", "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    write(tmp_path / "sys/fs/cgroup/memory/memory.limit_in_bytes", "536870912\n")
    assert read_memory_limit(tmp_path) == MemoryLimit(536870912, CGROUP)
    write(tmp_path / "sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n")
    assert read_memory_limit(tmp_path) == MemoryLimit(16 * 1024**3, MACHINE)


def test_the_limit_is_read_again_only_after_the_cache(tmp_path: Path) -> None:
    machine(tmp_path)
    write(tmp_path / "proc/self/cgroup", "0::/\n")
    write(tmp_path / "sys/fs/cgroup/cgroup.controllers", "memory\n")
    write(tmp_path / "sys/fs/cgroup/memory.max", "1000000\n")
    now = [0.0]
    collector = MemoryLimitCollector(tmp_path, cache_s=5.0, clock=lambda: now[0])
    assert collector.limit() == MemoryLimit(1000000, CGROUP)
    write(tmp_path / "sys/fs/cgroup/memory.max", "2000000\n")
    now[0] = 4.0
    assert collector.limit() == MemoryLimit(1000000, CGROUP)
    now[0] = 5.0
    assert collector.limit() == MemoryLimit(2000000, CGROUP)


def limit_samples(page: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == MEMORY_LIMIT_METRIC
    ]


def test_a_service_registry_exports_its_memory_limit() -> None:
    samples = limit_samples(generate_latest(service_registry()).decode())
    assert len(samples) == 1
    labels, value = samples[0]
    assert labels["source"] in (CGROUP, MACHINE) and value > 0
    assert value == read_memory_limit().limit_bytes  # type: ignore[union-attr]


WORKERS_PROGRAM = """
import os, sys
from pathlib import Path
from prometheus_client import Counter
from michi.telemetry.metrics import render_metrics, service_registry
registry = service_registry(workers_directory=Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
Counter("michi_example_things", "Things", registry=registry).inc()
sys.stdout.write(render_metrics(registry).decode())
"""


def test_a_workers_registry_exports_the_limit_once(tmp_path: Path) -> None:
    """Multiprocess mode is chosen as prometheus_client is imported: a process of its own, as a worker is."""
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    pages = [
        subprocess.run(
            [sys.executable, "-c", WORKERS_PROGRAM], env=environment, capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    ]
    # The second worker's page answers for both (their counters summed), and still has one limit.
    assert "michi_example_things_total 2.0" in pages[1]
    for page in pages:
        samples = limit_samples(page)
        assert len(samples) == 1 and samples[0][1] > 0


# --- restarts: the ledger (SQL)


def with_ledger(ledger: MonitorStore, **policy: object) -> tuple[ResourceWatch, FakeServices, FakeLag]:
    services, lag = FakeServices(), FakeLag()
    settings: dict[str, object] = {"ignored_groups": frozenset({MONITOR_GROUP}), **policy}
    watch = ResourceWatch(
        policy=ResourcePolicy(**settings),  # type: ignore[arg-type]
        services=services,
        lag=lag,
        reports=ResourceMetrics(CollectorRegistry()),
        ledger=ledger,
    )
    return watch, services, lag


def publish(watch: ResourceWatch, alerts: list[operations_pb2.Alert]) -> list[operations_pb2.Alert]:
    """As the thread does: each alert acknowledged, then recorded."""
    for alert in alerts:
        watch.published(alert)
    return alerts


def test_an_episode_open_before_a_restart_continues_and_resolves_once() -> None:
    ledger = MonitorStore.from_url("sqlite://")
    first, services, _ = with_ledger(ledger, memory_headroom_ratio=0.85, memory_for_s=30.0)
    services.readings = {"inference": memory("inference", 0.9)}
    fired = [alert for now in range(0, 35, 5) for alert in publish(first, first.tick(DAY_START + now))]
    assert kinds(fired) == [(MEMORY_ALERT_KIND, FIRING)]
    # The monitor restarts while inference is still high: no second firing, the same episode.
    second, services, _ = with_ledger(ledger, memory_headroom_ratio=0.85, memory_for_s=30.0)
    services.readings = {"inference": memory("inference", 0.9)}
    assert [publish(second, second.tick(DAY_START + now)) for now in range(100, 200, 5)] == [[]] * 20
    services.readings["inference"] = memory("inference", 0.4)
    resolved = publish(second, second.tick(DAY_START + 205))
    assert kinds(resolved) == [(MEMORY_ALERT_KIND, RESOLVED)]
    assert resolved[0].attributes["episode"] == fired[0].attributes["episode"]
    # And once resolved, a later restart finds nothing open.
    third, services, _ = with_ledger(ledger)
    services.readings = {"inference": memory("inference", 0.4)}
    assert third.tick(DAY_START + 300) == [] and ledger.open_condition_episodes() == []


def test_the_days_sums_survive_a_restart_and_a_day_finished_while_down_is_reported_once() -> None:
    ledger = MonitorStore.from_url("sqlite://")
    first, services, _ = with_ledger(ledger)
    services.readings = {"inference": cpu("inference", ("1", 100.0, 5.0))}
    first.tick(DAY_START + 10)
    services.readings = {"inference": cpu("inference", ("1", 160.0, 5.0))}
    first.predictions_seen(3000)
    first.tick(DAY_START + 20)
    # Restarted later the same day: the sums go on from where they were (the new scrape is a baseline).
    second, services, _ = with_ledger(ledger)
    services.readings = {"inference": cpu("inference", ("1", 200.0, 5.0))}
    second.tick(DAY_START + 3600)
    services.readings = {"inference": cpu("inference", ("1", 230.0, 5.0))}
    second.tick(DAY_START + 3610)
    assert second.day is not None and second.day.cpu_seconds["inference"] == pytest.approx(90.0)
    assert second.day.predictions == 3000
    # Down over midnight: the next start reports the finished day, once.
    third, services, _ = with_ledger(ledger)
    reports = [alert for alert in publish(third, third.tick(NEXT_DAY + 60)) if alert.kind == COST_ALERT_KIND]
    assert [alert.attributes["reason"] for alert in reports] == [DAILY_REPORT]
    assert reports[0].attributes["day"] == "2026-03-14" and reports[0].figures["predictions"] == 3000
    fourth, _, _ = with_ledger(ledger)
    assert [alert for alert in fourth.tick(NEXT_DAY + 120) if alert.kind == COST_ALERT_KIND] == []
