"""The monitor page's JSON views over a real SQLite `MonitorStore` and a `ResourceWatch` with fake readers, and who may
read them, through a real `serve_operations` server (httpx): the token, the 403 without one, bounded queries."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import httpx
import pytest
from prometheus_client import CollectorRegistry
from sqlmodel import Session, col, select

from michi.bus.producer import EventProducer
from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import common_pb2, labels_pb2, operations_pb2
from michi.readiness import MAX_PAGE_TARGET, PageAnswer, PageHandler, PageRequest, serve_operations
from services.monitor.adapters.store import MonitorStore
from services.monitor.adapters.tables import MonitorWindowRow
from services.monitor.domain.adwin import Adwin
from services.monitor.domain.drift import DRIFT, INSUFFICIENT_DATA, OK, FeatureDrift
from services.monitor.domain.resources import GroupLag, ServiceReading
from services.monitor.entrypoints.page import (
    MAX_ERROR_POINTS,
    PageAccess,
    PageSources,
    answer_api,
    episode_view,
    episodes_view,
    error_rate_view,
    is_loopback,
    monitor_pages,
    page_html,
    pages_of,
    resources_view,
    window_view,
    windows_view,
)
from services.monitor.handlers import (
    FULL,
    VERDICT_DRIFT,
    VERDICT_OK,
    ClosedWindow,
    ConceptDriftMonitor,
    ConceptPolicy,
    DriftEpisode,
    LabelOutcome,
    evidence_url,
)
from services.monitor.resources import ResourcePolicy, ResourceWatch
from services.monitor.settings import MonitorSettings
from services.monitor.wiring import build_consumer, page_routes

MODEL = "michi-risk"
THRESHOLD = 0.2
TOKEN = "a-page-token-of-some-length"
START = datetime(2026, 3, 14, 8, 0, tzinfo=UTC)
HISTOGRAM = {"edges": [0.0, 1.0, 2.0, 3.0], "reference": [0.2, 0.5, 0.3], "current": [0.6, 0.3, 0.1]}
GIB = 1024.0**3


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MonitorStore]:
    store = MonitorStore.from_url(f"sqlite:///{tmp_path / 'michi.db'}")
    yield store
    store.close()


def closed(
    window_id: str,
    psi: Mapping[str, float | None],
    *,
    version: str = "7",
    cohort: str = "all",
    shapes: Mapping[str, Mapping[str, list[float]]] | None = None,
) -> ClosedWindow:
    """A closed window with these PSI figures (None: insufficient data), drifted where PSI >= THRESHOLD."""
    features = tuple(
        FeatureDrift(feature, INSUFFICIENT_DATA, 10)
        if value is None
        else FeatureDrift(
            feature, DRIFT if value >= THRESHOLD else OK, 2000, value, value / 2, value / 3, value / 4, 0.5
        )
        for feature, value in psi.items()
    )
    drifted = tuple(sorted(result.feature for result in features if result.status == DRIFT))
    return ClosedWindow(
        MODEL,
        version,
        cohort,
        window_id,
        2000,
        FULL,
        features,
        drifted,
        "reference-profile-2",
        False,
        None,
        verdict=VERDICT_DRIFT if drifted else VERDICT_OK,
        shapes=dict(shapes or {}),
    )


def keep(store: MonitorStore, *windows: ClosedWindow, minutes: int = 5) -> None:
    """Record the windows in order, closed `minutes` apart from START."""
    for window in windows:
        store.record_close(window, START.timestamp(), None)
    with Session(store.engine) as session:
        for index, row in enumerate(session.exec(select(MonitorWindowRow).order_by(col(MonitorWindowRow.id))).all()):
            row.closed_at = START + timedelta(minutes=minutes * index)
            session.add(row)
        session.commit()


# --- the views


def test_the_drift_chart_shows_the_newest_version_all_cohort_oldest_first_with_the_drifted_features(
    store: MonitorStore,
) -> None:
    keep(
        store,
        closed("w-6-1", {"speed": 0.01}, version="6"),
        closed("w-7-1", {"speed": 0.02, "braking": 0.05, "gyro": None}),
        closed("w-7-2", {"speed": 0.31, "braking": 0.04, "gyro": 0.25}, shapes={"speed": HISTOGRAM}),
        closed("w-7-3", {"speed": 0.01, "braking": 0.03, "gyro": 0.02}),
        closed("w-7-vehicle", {"speed": 0.9}, cohort="vehicle:truck"),
    )
    view = windows_view(store, psi_threshold=THRESHOLD)
    assert (view["model_name"], view["model_version"], view["cohort"]) == (MODEL, "7", "all")
    assert [window["window_id"] for window in view["windows"]] == ["w-7-1", "w-7-2", "w-7-3"]
    assert view["windows"][0]["psi"] == {"speed": 0.02, "braking": 0.05, "gyro": None}
    assert view["windows"][1]["drifted"] == ["gyro", "speed"] and view["windows"][1]["verdict"] == "drift"
    assert view["windows"][1]["closed_at"] == (START + timedelta(minutes=10)).timestamp()
    assert "histogram" not in str(view["windows"])  # the list is light: PSI only
    assert view["features"] == ["braking", "gyro", "speed"]
    assert view["default_features"] == ["gyro", "speed"]  # drifted most recently
    assert view["psi_threshold"] == THRESHOLD
    assert [(item["model_version"], item["cohort"], item["windows"]) for item in view["series"]] == [
        ("7", "vehicle:truck", 1),
        ("7", "all", 3),
        ("6", "all", 1),
    ]

    older = windows_view(store, psi_threshold=THRESHOLD, model_version="6")
    assert [window["window_id"] for window in older["windows"]] == ["w-6-1"]
    assert older["default_features"] == ["speed"]  # none drifted: the top PSI
    cohort = windows_view(store, psi_threshold=THRESHOLD, cohort="vehicle:truck")
    assert [window["window_id"] for window in cohort["windows"]] == ["w-7-vehicle"]
    latest_two = windows_view(store, psi_threshold=THRESHOLD, limit=2)
    assert [window["window_id"] for window in latest_two["windows"]] == ["w-7-2", "w-7-3"]
    nothing = windows_view(store, psi_threshold=THRESHOLD, model_version="99")
    assert nothing["windows"] == [] and nothing["default_features"] == [] and nothing["model_name"] is None


def test_without_drift_the_chart_starts_on_the_highest_psi_features(store: MonitorStore) -> None:
    keep(store, closed("w-1", {"a": 0.01, "b": 0.15, "c": 0.08, "d": 0.11, "e": None}))
    assert windows_view(store, psi_threshold=THRESHOLD)["default_features"] == ["b", "d", "c"]
    empty = MonitorStore.from_url("sqlite://")
    try:
        view = windows_view(empty, psi_threshold=THRESHOLD)
        assert (view["model_version"], view["windows"], view["series"]) == (None, [], [])
    finally:
        empty.close()


def test_a_window_gives_every_figure_its_histograms_and_its_episodes(store: MonitorStore) -> None:
    keep(
        store,
        closed("w-1", {"speed": 0.4, "braking": None}, shapes={"speed": HISTOGRAM}),
        closed("w-2", {"speed": 0.01, "braking": 0.01}),
    )
    store.save_episode(DriftEpisode("e-1", MODEL, "7", "all", ["w-1"], ["speed"], "alert-1", samples=10))
    store.save_episode(DriftEpisode("e-other", MODEL, "8", "all", ["w-1"], ["speed"], "alert-2"))

    view = window_view(store, "w-1", psi_threshold=THRESHOLD)
    assert view is not None
    assert (view["window_id"], view["verdict"], view["drifted"], view["cohort"]) == ("w-1", "drift", ["speed"], "all")
    assert view["figures"]["speed"]["histogram"] == HISTOGRAM
    assert view["figures"]["speed"]["psi"] == pytest.approx(0.4)
    assert view["figures"]["braking"]["status"] == INSUFFICIENT_DATA and "histogram" not in view["figures"]["braking"]
    assert [episode["episode_id"] for episode in view["episodes"]] == ["e-1"]  # of its own version only
    assert window_view(store, "w-unknown", psi_threshold=THRESHOLD) is None

    episode = DriftEpisode("e-1", MODEL, "7", "all", ["w-1"], ["speed"], "alert-1", samples=10)
    episode.status, episode.resolved_event_id, episode.resolved_window_id = "resolved", "resolved-1", "w-2"
    store.save_episode(episode)
    resolving = window_view(store, "w-2", psi_threshold=THRESHOLD)
    assert resolving is not None and [item["episode_id"] for item in resolving["episodes"]] == ["e-1"]


def test_episodes_newest_first_with_their_ids_and_times(store: MonitorStore) -> None:
    store.save_episode(DriftEpisode("e-1", MODEL, "7", "all", ["w-1", "w-2"], ["speed"], "alert-1", samples=10))
    later = DriftEpisode("e-2", MODEL, "7", "vehicle:bus", ["w-5"], ["gyro"], "alert-2", retrain_event_id="re-1")
    later.status, later.resolved_event_id, later.resolved_window_id = "resolved", "resolved-2", "w-6"
    store.save_episode(later)
    view = episodes_view(store)
    assert [episode["episode_id"] for episode in view["episodes"]] == ["e-2", "e-1"]
    first = view["episodes"][1]
    assert (first["status"], first["windows"], first["features"], first["samples"]) == (
        "open",
        ["w-1", "w-2"],
        ["speed"],
        10,
    )
    assert first["firing_event_id"] == "alert-1" and first["resolved_at"] is None and first["alerted"] is True
    assert isinstance(first["opened_at"], float)
    second = view["episodes"][0]
    assert (second["retrain_event_id"], second["resolved_event_id"], second["resolved_window_id"]) == (
        "re-1",
        "resolved-2",
        "w-6",
    )
    assert isinstance(second["resolved_at"], float)
    assert episodes_view(store, limit=1)["episodes"][0]["episode_id"] == "e-2"
    assert episode_view(store, "e-1") == first and episode_view(store, "e-9") is None


class RecordingPublisher:
    def __init__(self) -> None:
        self.alerts: list[operations_pb2.Alert] = []

    def publish_alert(self, alert: operations_pb2.Alert) -> None:
        self.alerts.append(alert)

    def publish_label_requests(self, requests: list[labels_pb2.LabelRequest]) -> None:
        raise AssertionError("the concept-drift monitor asks for no labels")


class SilentReports:
    """The concept-drift monitor's metrics, not looked at here."""

    def label_skipped(self, reason: str) -> None:
        pass

    def outcome(self, outcome: LabelOutcome, *figures: object) -> None:
        pass


def fill_outcomes(store: MonitorStore, version: str, rates: list[tuple[int, float]], *, seed: int = 7) -> None:
    """Random-QA requests and labels of `version`, in order: per (how many, error rate), through the concept-drift
    monitor (which keeps the outcomes and the changes ADWIN finds)."""
    concept = ConceptDriftMonitor(
        outcomes=store, publisher=RecordingPublisher(), reports=SilentReports(), policy=ConceptPolicy()
    )
    draw = random.Random(seed)
    index = 0
    for labels, error_rate in rates:
        for _ in range(labels):
            lineage = common_pb2.Lineage(window_id=f"qa-{version}-{index:05d}", model_name=MODEL, model_version=version)
            request = labels_pb2.LabelRequest(
                event_id=f"request-{index}",
                lineage=lineage,
                reason=labels_pb2.LABEL_REASON_RANDOM_QA,
                suggested=common_pb2.EVENT_TYPE_NORMAL,
                confidence=0.9,
                occurred_at=timestamp_from_seconds(1_790_000_000.0 + index),
            )
            wrong = draw.random() < error_rate
            label = labels_pb2.Label(
                event_id=f"label-{version}-{index}",
                lineage=lineage,
                event_type=common_pb2.EVENT_TYPE_HARSH_BRAKING if wrong else common_pb2.EVENT_TYPE_NORMAL,
                request_reasons=[labels_pb2.LABEL_REASON_RANDOM_QA],
            )
            concept.request(request)
            concept.label(label)
            index += 1
    concept.settle()


@pytest.fixture
def memory_store() -> Iterator[MonitorStore]:
    """A store in memory: thousands of outcomes without a disk write each."""
    store = MonitorStore.from_url("sqlite://")
    yield store
    store.close()


def test_the_error_rate_is_adwins_estimate_replayed_with_its_changes(memory_store: MonitorStore) -> None:
    store = memory_store
    fill_outcomes(store, "7", [(700, 0.05), (700, 0.45)])
    fill_outcomes(store, "6", [(20, 0.1)], seed=3)
    view = error_rate_view(store, delta=0.002, model_version="7")
    assert (view["model_name"], view["model_version"], view["labels"]) == (MODEL, "7", 1400)
    assert 0 < view["errors"] < 1400
    assert len(view["points"]) <= MAX_ERROR_POINTS
    labels = [point["label"] for point in view["points"]]
    assert labels == sorted(labels) and labels[0] == 1 and labels[-1] == 1400
    assert view["changes"], "the step from 5 % to 40 % was not found"
    rise = [change for change in view["changes"] if change["direction"] == "worse"]
    assert rise and rise[0]["error_rate_after"] > rise[0]["error_rate_before"] and rise[0]["retrain_event_id"]
    # The replay finds what the monitor kept, at the same places, and every change is among the points.
    assert view["detected"] == [change["label"] for change in view["changes"]]
    assert set(view["detected"]) <= set(labels)
    detector = Adwin(delta=0.002)
    estimates = {}
    for outcome in store.outcomes_of(MODEL, "7"):
        detector.update(0.0 if outcome.correct else 1.0)
        estimates[outcome.sequence] = detector.estimation
    for point in view["points"]:
        assert point["error_rate"] == pytest.approx(estimates[point["label"]], abs=1e-6)
    assert view["points"][-1]["error_rate"] > 0.25
    assert [item["model_version"] for item in view["series"]] == ["7", "6"]

    assert error_rate_view(store, delta=0.002)["model_version"] == "7"  # the latest predicted
    small = error_rate_view(store, delta=0.002, model_version="6")
    assert small["labels"] == 20 and len(small["points"]) == 20 and small["changes"] == []
    unknown = error_rate_view(store, delta=0.002, model_version="99")
    assert (unknown["model_version"], unknown["labels"], unknown["points"]) == ("99", 0, [])


class FakeServices:
    def __init__(self) -> None:
        self.readings: dict[str, ServiceReading | None] = {}

    def read(self) -> Mapping[str, ServiceReading | None]:
        return dict(self.readings)


class FakeLag:
    def __init__(self) -> None:
        self.lags: list[GroupLag] = []

    def read_lag(self) -> list[GroupLag]:
        return list(self.lags)


def watched(rounds: int, *, history_rounds: int = 720) -> ResourceWatch:
    """A resource watch after `rounds` rounds 5 s apart: ingest's memory rising, annotation scraped every other
    round, one group's lag."""
    services, lag = FakeServices(), FakeLag()
    watch = ResourceWatch(
        policy=ResourcePolicy(daily_budget=1.0, ignored_groups=frozenset({"michi.monitor"})),
        services=services,
        lag=lag,
        history_rounds=history_rounds,
    )
    for index in range(rounds):
        services.readings = {
            "ingest": ServiceReading("ingest", rss_bytes=(0.5 + index * 0.01) * GIB, limit_bytes=GIB),
            "annotation": ServiceReading("annotation", rss_bytes=0.2 * GIB, limit_bytes=GIB) if index % 2 else None,
        }
        lag.lags = [GroupLag("michi.warehouse", 100 * index, 1_773_446_400.0), GroupLag("michi.monitor", 5)]
        watch.labels_seen(1)
        watch.tick(1_773_446_400.0 + 5.0 * index)
    return watch


def test_resources_are_the_watchs_last_rounds_as_columns() -> None:
    view = resources_view(watched(4))
    assert view["watching"] is True
    assert view["at"] == [1_773_446_400.0 + 5.0 * index for index in range(4)]
    assert view["memory"]["ingest"] == pytest.approx([0.5, 0.51, 0.52, 0.53])
    assert view["memory"]["annotation"] == [None, pytest.approx(0.2), None, pytest.approx(0.2)]
    assert view["lag_records"] == {"michi.warehouse": [0, 100, 200, 300]}  # the monitor's own group left out
    assert view["lag_age_s"]["michi.warehouse"] == [0.0, 5.0, 10.0, 15.0]
    assert view["cost_usd"] == pytest.approx([0.05, 0.10, 0.15, 0.20])  # a label at 0.05 USD per round
    assert view["day"] == ["2026-03-14"] * 4
    assert (view["memory_threshold"], view["lag_records_threshold"], view["daily_budget_usd"]) == (0.85, 10_000, 1.0)
    assert view["today"]["day"] == "2026-03-14" and view["today"]["labels"] == 4.0
    assert resources_view(None) == {"watching": False}


def test_the_history_is_a_ring_of_the_last_rounds() -> None:
    watch = watched(12, history_rounds=5)
    rounds = watch.history()
    assert len(rounds) == 5 and [round_.at for round_ in rounds] == [1_773_446_400.0 + 5.0 * i for i in range(7, 12)]
    assert rounds[-1].memory["ingest"] == pytest.approx(0.61) and rounds[-1].lag["michi.warehouse"] == (1100, 55.0)


def test_evidence_links_to_a_window_or_an_episode() -> None:
    assert evidence_url("", window_id="w-1") is None
    assert evidence_url("https://monitor.example.org/", window_id="w 1") == "https://monitor.example.org/?window=w+1"
    assert evidence_url("https://m.example.org", episode="e-1") == "https://m.example.org/?episode=e-1"
    assert (
        evidence_url("https://m.example.org", window_id="w", episode="e") == "https://m.example.org/?window=w&episode=e"
    )


def test_loopback_addresses() -> None:
    assert all(is_loopback(host) for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2", "[::1]"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "::", "10.0.0.4", "monitor.internal", ""))


def test_the_page_allows_its_own_script_and_style_by_hash_and_nothing_else() -> None:
    body, policy = page_html()
    assert body.startswith(b"<!doctype html>") and b"<script>" in body
    assert "script-src 'sha256-" in policy and "style-src 'sha256-" in policy
    assert "unsafe-inline" not in policy and "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert b"innerHTML" not in body and b"outerHTML" not in body and b"insertAdjacentHTML" not in body
    assert b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b"") and b"https://" not in body


# --- through the server


Serve = Callable[[Mapping[str, PageHandler]], httpx.Client]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Serves pages with `serve_operations` on a free loopback port; a client of it per call."""
    servers = []
    clients: list[httpx.Client] = []

    def start(pages: Mapping[str, PageHandler]) -> httpx.Client:
        server = serve_operations("monitor", 0, alive=lambda: True, registry=CollectorRegistry(), pages=pages)
        servers.append(server)
        client = httpx.Client(base_url=f"http://127.0.0.1:{server.server_address[1]}", timeout=10)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.shutdown()
        server.server_close()


def settings_of(**values: object) -> MonitorSettings:
    return MonitorSettings(**values)  # type: ignore[arg-type]


def test_open_on_loopback_in_dev_with_the_operations_pages_as_they_were(store: MonitorStore, serve: Serve) -> None:
    keep(store, closed("w-1", {"speed": 0.4}, shapes={"speed": HISTOGRAM}))
    client = serve(pages_of(settings_of(), store, watched(2)))
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == page_html()[1]
    assert page.headers["cache-control"] == "no-store" and page.headers["x-content-type-options"] == "nosniff"
    windows = client.get("/v1/monitor/windows")
    assert windows.status_code == 200 and windows.json()["windows"][0]["window_id"] == "w-1"
    assert client.get("/v1/monitor/windows/w-1").json()["figures"]["speed"]["histogram"] == HISTOGRAM
    assert client.get("/v1/monitor/episodes").json() == {"episodes": []}
    assert client.get("/v1/monitor/error-rate").json()["labels"] == 0
    assert client.get("/v1/monitor/resources").json()["memory"]["ingest"] == pytest.approx([0.5, 0.51])
    assert client.get("/favicon.ico").status_code == 204
    health = client.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok", "service": "monitor"})
    assert client.get("/readyz").json()["ready"] is True
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    assert client.get("/nothing").status_code == 404


def test_the_token_is_needed_as_a_bearer_or_in_the_query(store: MonitorStore, serve: Serve) -> None:
    keep(store, closed("w-1", {"speed": 0.4}))
    client = serve(pages_of(settings_of(monitor_page_token=TOKEN), store, None))
    missing = client.get("/v1/monitor/windows")
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["reason"]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = client.get("/v1/monitor/windows", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401 and wrong.json()["reason"] == "the page token given is not the monitor's"
    assert client.get("/v1/monitor/windows", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert client.get("/v1/monitor/windows", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/v1/monitor/windows", headers={"Authorization": f"bearer  {TOKEN}"}).status_code == 200
    assert client.get("/v1/monitor/windows", params={"token": TOKEN}).status_code == 200
    assert client.get("/v1/monitor/resources", params={"token": TOKEN}).json() == {"watching": False}
    assert client.get("/", params={"token": TOKEN}).status_code == 200
    as_json = client.get("/")
    assert as_json.status_code == 401 and as_json.json()["status"] == "unauthorized"
    # A browser gets the page's code (no data in it) with the 401; it asks for the token and sends it itself.
    in_a_browser = client.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert in_a_browser.status_code == 401 and in_a_browser.content == page_html()[0]
    assert in_a_browser.headers["content-security-policy"] == page_html()[1]
    assert TOKEN not in in_a_browser.text
    assert client.get("/metrics").status_code == 200 and client.get("/healthz").status_code == 200


def test_outside_dev_on_an_open_address_without_a_token_the_page_is_forbidden(
    store: MonitorStore, serve: Serve
) -> None:
    secret = "a real token secret that is long enough"
    production = settings_of(env="production", token_secret=secret, monitor_host="0.0.0.0")
    client = serve(pages_of(production, store, None))
    for path in ("/", "/v1/monitor/windows", "/v1/monitor/resources"):
        answer = client.get(path, headers={"Accept": "text/html"})
        assert answer.status_code == 403, path
        assert "set MICHI_MONITOR_PAGE_TOKEN" in answer.json()["reason"]
    assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200
    # On loopback, or with a token, it is served.
    loopback = serve(pages_of(settings_of(env="production", token_secret=secret), store, None))
    assert loopback.get("/v1/monitor/windows").status_code == 200
    guarded = serve(pages_of(settings_of(env="production", token_secret=secret, monitor_page_token=TOKEN,
                                         monitor_host="0.0.0.0"), store, None))  # fmt: skip
    assert guarded.get("/v1/monitor/windows", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    with pytest.raises(ValueError, match="MICHI_MONITOR_PAGE_TOKEN"):
        settings_of(env="production", token_secret=secret, monitor_page_token="changethis")
    assert settings_of(monitor_page_token="").monitor_page_token is None
    assert TOKEN not in repr(settings_of(monitor_page_token=TOKEN))


def test_without_a_token_only_this_monitors_host_names_are_answered(store: MonitorStore, serve: Serve) -> None:
    """A web page elsewhere that rebinds its own name to 127.0.0.1 sends that name: it reads nothing."""
    settings = settings_of(monitor_page_url="https://monitor.example.org/michi")
    client = serve(pages_of(settings, store, None))
    port = client.base_url.port
    for host in (
        f"127.0.0.1:{port}",
        f"localhost:{port}",
        "LOCALHOST",
        f"[::1]:{port}",
        "10.1.2.3",
        "monitor.example.org",
    ):
        assert client.get("/v1/monitor/episodes", headers={"Host": host}).status_code == 200, host
    for host in ("rebound.example.net", f"attacker.example:{port}", "", "monitor.example.org.evil"):
        refused = client.get("/", headers={"Host": host})
        assert refused.status_code == 403, host
        assert "MICHI_MONITOR_PAGE_TOKEN" in refused.json()["reason"]
    assert client.get("/metrics", headers={"Host": "rebound.example.net"}).status_code == 200
    # With a token the token decides, whatever the name.
    guarded = serve(pages_of(settings_of(monitor_page_token=TOKEN), store, None))
    answer = guarded.get(
        "/v1/monitor/episodes", headers={"Host": "rebound.example.net", "Authorization": f"Bearer {TOKEN}"}
    )
    assert answer.status_code == 200


def test_queries_are_bounded(store: MonitorStore, serve: Serve) -> None:
    keep(store, closed("w-1", {"speed": 0.4}), closed("w-2", {"speed": 0.1}), closed("w-3", {"speed": 0.1}))
    client = serve(pages_of(settings_of(), store, None))
    assert client.get("/v1/monitor/windows", params={"limit": "many"}).status_code == 400
    assert len(client.get("/v1/monitor/windows", params={"limit": "0"}).json()["windows"]) == 1
    assert len(client.get("/v1/monitor/windows", params={"limit": "-4"}).json()["windows"]) == 1
    assert len(client.get("/v1/monitor/windows", params={"limit": "5000"}).json()["windows"]) == 3
    long_version = client.get("/v1/monitor/windows", params={"model_version": "7" * 129})
    assert long_version.status_code == 400 and "model_version" in long_version.json()["reason"]
    assert client.get("/v1/monitor/windows", params={"cohort": "c" * 161}).status_code == 400
    assert client.get("/v1/monitor/windows/" + "w" * 65).status_code == 400
    assert client.get("/v1/monitor/windows/w-9").status_code == 404
    assert client.get("/v1/monitor/episodes/e-9").status_code == 404
    assert client.get("/v1/monitor/elsewhere").status_code == 404
    assert client.get("/v1/monitor/windows?" + "x" * MAX_PAGE_TARGET).status_code == 414
    many = "&".join(f"p{index}=1" for index in range(40))
    assert client.get("/v1/monitor/windows?" + many).status_code == 400


def test_the_operations_paths_cannot_be_taken_and_a_failing_page_is_a_500(store: MonitorStore, serve: Serve) -> None:
    def failing(request: PageRequest) -> PageAnswer:
        raise RuntimeError("boom")

    with pytest.raises(ValueError, match="/metrics"):
        serve_operations("monitor", 0, alive=lambda: True, registry=CollectorRegistry(), pages={"/metrics": failing})

    client = serve({"/broken": failing})
    assert client.get("/broken").status_code == 500
    sources = PageSources(store=store, watch=None, psi_threshold=THRESHOLD, adwin_delta=0.002)
    pages = monitor_pages(sources, PageAccess(None, open_without_token=True))
    request = PageRequest("/v1/monitor/windows", {"cohort": ["<img src=x>"]}, {"host": "127.0.0.1:8083"})
    answer = pages["/v1/monitor/*"](request)
    assert answer.status == 200 and answer.content_type == "application/json"
    assert answer_api(sources, PageRequest("/v1/monitor/windows", {"limit": ["x"]})).status == 400


class NoProfiles:
    def profile(self, model_name: str, model_version: str) -> None:
        return None


def test_the_monitor_serves_the_page_over_the_store_its_consumer_writes(store: MonitorStore, serve: Serve) -> None:
    settings = settings_of(kafka_bootstrap="127.0.0.1:1")  # never reached: the consumer is not run
    consumer = build_consumer(settings, producer=cast(EventProducer, object()), store=store, profiles=NoProfiles())
    try:
        client = serve(page_routes(settings, consumer))
        keep(store, closed("w-1", {"speed": 0.4}))
        assert [window["window_id"] for window in client.get("/v1/monitor/windows").json()["windows"]] == ["w-1"]
        assert client.get("/v1/monitor/resources").json() == {"watching": False}  # built without the watch
    finally:
        consumer.consumer.close()
