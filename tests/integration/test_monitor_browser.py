"""The monitor page in a real headless Chromium (Debian's `chromium`, driven by Playwright).

A SQLite store with closed windows (one drifted, with histograms), drift episodes, random-QA outcomes whose error
rate steps up, and a resource watch with history, served by `serve_operations` as the monitor serves them: the PSI
chart has a point per window and feature, `?window=` opens that window's histograms (both series), `?episode=`
that episode, the error-rate, memory, lag and cost charts are drawn, nothing logs an error, and a feature and a
cohort named `<img src=x onerror=alert(1)>` are shown as text (no image, no dialog). With a token, `?token=` opens
the page, leaves the address and lasts a reload. A screenshot is saved in the test's tmp folder and in
`.michi/test-artifacts/monitor.png`. Skipped only when Chromium is missing outside CI.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import random
import shutil
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from sqlmodel import Session, col, select

from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import common_pb2, labels_pb2, operations_pb2
from michi.readiness import PageHandler, serve_operations
from michi.registry import ModelRegistry
from michi.registry.tables import RolloutRow
from services.monitor.adapters.store import MonitorStore
from services.monitor.adapters.tables import MonitorWindowRow
from services.monitor.domain.drift import DRIFT, OK, FeatureDrift
from services.monitor.domain.performance import ExpectedPerformance
from services.monitor.domain.resources import GroupLag, ServiceReading
from services.monitor.entrypoints.page import pages_of
from services.monitor.handlers import (
    FULL,
    VERDICT_DRIFT,
    VERDICT_OK,
    ClosedWindow,
    ConceptDriftMonitor,
    ConceptPolicy,
    DriftEpisode,
    LabelOutcome,
)
from services.monitor.resources import ResourcePolicy, ResourceWatch
from services.monitor.settings import MonitorSettings

from ..fakes import RecordingPlanPublisher

CHROMIUM = os.environ.get("MICHI_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / ".michi" / "test-artifacts"
MODEL = "michi-risk"
HOSTILE = "<img src=x onerror=alert(1)>"
FEATURES = ("speed_mean_mps", "braking_peak_mps2", HOSTILE)
WINDOWS = 6
DRIFTED_WINDOW = "w-0003"
TOKEN = "a-page-token-for-the-browser"
START = datetime(2026, 3, 14, 8, 0, tzinfo=UTC)
GIB = 1024.0**3

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium); required in CI",
)


def shares(center: float, width: float, edges: list[float]) -> list[float]:
    """Shares of a normal distribution on the bins of `edges`."""
    weights = [
        math.exp(-(((low + high) / 2 - center) ** 2) / (2 * width**2)) for low, high in itertools.pairwise(edges)
    ]
    total = sum(weights)
    return [round(weight / total, 6) for weight in weights]


def histogram(shift: float) -> dict[str, list[float]]:
    edges = [round(index * 0.5, 6) for index in range(31)]
    return {"edges": edges, "reference": shares(6.0, 2.0, edges), "current": shares(6.0 + shift, 2.0, edges)}


def closed(window_id: str, *, drifted: bool, cohort: str = "all") -> ClosedWindow:
    psi = {feature: (0.35 + index * 0.1 if drifted and feature != "braking_peak_mps2" else 0.02 + index * 0.03)
           for index, feature in enumerate(FEATURES)}  # fmt: skip
    features = tuple(
        FeatureDrift(feature, DRIFT if value >= 0.2 else OK, 2000, value, value / 2, value / 3, value / 4, 0.01)
        for feature, value in psi.items()
    )
    names = tuple(sorted(result.feature for result in features if result.status == DRIFT))
    return ClosedWindow(
        MODEL,
        "7",
        cohort,
        window_id,
        2000,
        FULL,
        features,
        names,
        "reference-profile-2",
        False,
        None,
        verdict=VERDICT_DRIFT if names else VERDICT_OK,
        shapes={feature: histogram(2.5 if feature in names else 0.2) for feature in FEATURES},
        performance=ExpectedPerformance(0.81 if names else 0.93, 0.4 if names else 0.2, 40, True, 500),
    )


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


def fill_store(store: MonitorStore) -> str:
    """Closed windows (one drifted), two episodes (one of the hostile cohort), random-QA outcomes whose error rate
    steps from 5 % to 60 %; the id of the episode the drifted window opened."""
    windows = [closed(f"w-{index:04d}", drifted=f"w-{index:04d}" == DRIFTED_WINDOW) for index in range(WINDOWS)]
    windows.append(closed("w-hostile", drifted=True, cohort=HOSTILE))
    for window in windows:
        store.record_close(window, START.timestamp(), None)
    with Session(store.engine) as session:
        for index, row in enumerate(session.exec(select(MonitorWindowRow).order_by(col(MonitorWindowRow.id))).all()):
            row.closed_at = START + timedelta(minutes=10 * index)
            session.add(row)
        session.commit()
    drifted = next(window for window in windows if window.window_id == DRIFTED_WINDOW)
    episode = DriftEpisode(
        "episode-1", MODEL, "7", "all", [DRIFTED_WINDOW], list(drifted.drifted), "alert-1", samples=5
    )
    episode.status, episode.resolved_event_id, episode.resolved_window_id = "resolved", "resolved-1", "w-0004"
    store.save_episode(episode)
    store.save_episode(DriftEpisode("episode-2", MODEL, "7", HOSTILE, ["w-hostile"], [HOSTILE], "alert-2"))

    concept = ConceptDriftMonitor(
        outcomes=store, publisher=RecordingPublisher(), reports=SilentReports(), policy=ConceptPolicy()
    )
    draw = random.Random(11)
    for index in range(500):
        lineage = common_pb2.Lineage(window_id=f"qa-{index:04d}", model_name=MODEL, model_version="7")
        concept.request(
            labels_pb2.LabelRequest(
                event_id=f"request-{index}",
                lineage=lineage,
                reason=labels_pb2.LABEL_REASON_RANDOM_QA,
                suggested=common_pb2.EVENT_TYPE_NORMAL,
                confidence=0.9,
                occurred_at=timestamp_from_seconds(START.timestamp() + index),
            )
        )
        wrong = draw.random() < (0.05 if index < 250 else 0.6)
        concept.label(
            labels_pb2.Label(
                event_id=f"label-{index}",
                lineage=lineage,
                event_type=common_pb2.EVENT_TYPE_HARSH_BRAKING if wrong else common_pb2.EVENT_TYPE_NORMAL,
                request_reasons=[labels_pb2.LABEL_REASON_RANDOM_QA],
            )
        )
    concept.settle()
    return episode.episode_id


def fill_registry(store: MonitorStore) -> None:
    """The model registry in the monitor's database, as under `michi up`: version 7 the champion, version 8 on a
    canary moved from 10 % to 25 % with a reason naming a hostile text, and labels of both arms' windows."""
    registry = ModelRegistry(store.engine, RecordingPlanPublisher())
    registry.create_tables()
    for number in range(1, 9):  # versions are numbered by the registry: 1 to 8
        registry.register(MODEL, f"file:///{number}.onnx", f"{number}" * 64, "code", "data", {}, {}, created_by="test")
    registry.promote(MODEL, "7", actor="test", reason="bootstrap")
    registry.start_rollout(MODEL, "8", actor="dana", reason="new data", weight=10)
    registry.set_rollout_weight(MODEL, 25, actor="policy:rollout-steps", reason=HOSTILE)
    # Started the day before the monitor's windows, so that the error-rate chart still opens on version 7.
    started = START - timedelta(days=1)
    with Session(store.engine) as session:
        row = session.exec(select(RolloutRow).where(RolloutRow.model_name == MODEL)).one()
        row.started_at = started
        session.add(row)
        session.commit()
    for index in range(20):
        at = started.timestamp() + 1 + index
        store.record_prediction(f"canary-{index}", MODEL, "8", 0, 0.9, at)
        store.record_label(f"canary-{index}", MODEL, "8", 0 if index % 5 else 1, f"canary-label-{index}")
    store.sequence_ready()


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


def watched(rounds: int = 30) -> ResourceWatch:
    services, lag = FakeServices(), FakeLag()
    watch = ResourceWatch(policy=ResourcePolicy(daily_budget=2.0), services=services, lag=lag)
    now = START.timestamp()
    for index in range(rounds):
        services.readings = {
            "ingest": ServiceReading("ingest", rss_bytes=(0.6 + 0.01 * index) * GIB, limit_bytes=GIB),
            "inference": ServiceReading("inference", rss_bytes=0.3 * GIB, limit_bytes=2 * GIB),
        }
        lag.lags = [GroupLag("michi.warehouse", 40 * index, now - 3), GroupLag(HOSTILE, 5, now - 1)]
        watch.labels_seen(2)
        watch.tick(now + 5.0 * index)
    return watch


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MonitorStore]:
    store = MonitorStore.from_url(f"sqlite:///{tmp_path / 'monitor.db'}")
    yield store
    store.close()


@contextlib.contextmanager
def serving(pages: Mapping[str, PageHandler]) -> Iterator[str]:
    """The pages on a free loopback port, as the monitor serves them beside /metrics; yields the base URL."""
    server = serve_operations("monitor", 0, alive=lambda: True, registry=CollectorRegistry(), pages=pages)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Watched:
    """What a page did that it should not have: console errors, uncaught exceptions, dialogs."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("dialog", self._dialog)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def count(page: Any, selector: str) -> int:
    return int(page.locator(selector).count())


def test_the_page_draws_drift_histograms_episodes_error_rate_and_resources(tmp_path: Path, store: MonitorStore) -> None:
    from playwright.sync_api import sync_playwright

    episode_id = fill_store(store)
    fill_registry(store)
    pages = pages_of(MonitorSettings(env="dev", monitor_page_token=None), store, watched())
    with serving(pages) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            watched_page = Watched(page)
            page.goto(f"{url}/?window={DRIFTED_WINDOW}")
            page.wait_for_selector(f"body[data-state='ready'][data-window='{DRIFTED_WINDOW}']", timeout=20_000)

            # PSI over time: the two features that drifted last, one point per window each, the drifted ones marked.
            chosen = page.eval_on_selector_all(
                "#feature-choice input:checked", "boxes => boxes.map(b => b.dataset.feature)"
            )
            assert sorted(chosen) == sorted([HOSTILE, "speed_mean_mps"])
            assert count(page, "#drift-chart circle.point") == WINDOWS * 2
            assert count(page, "#drift-chart circle.point.drifted") == 2
            assert count(page, "#drift-chart polyline") == 2
            assert count(page, "#drift-chart line.rule") == 1 and count(page, "#drift-chart rect.drift-band") == 1
            # The window's histograms: reference and current overlaid, 30 bins each.
            assert count(page, "#histogram rect.bar.reference") == 30
            assert count(page, "#histogram rect.bar.current") == 30
            assert page.input_value("#histogram-feature") in (HOSTILE, "speed_mean_mps")
            assert count(page, "#window-figures tbody tr") == len(FEATURES)
            # Episodes, the error rate with the change ADWIN found, memory, lag and cost.
            assert count(page, "#episodes tbody tr") == 2
            assert count(page, "#error-chart polyline") >= 1 and count(page, "#error-chart line.mark") >= 1
            # Expected accuracy and false-alert share per window, the realised accuracy of the random labels beside.
            page.wait_for_selector("#performance-chart line.rule", state="attached", timeout=10_000)
            assert count(page, "#performance-chart circle.point") == WINDOWS * 2
            assert "realised" in page.inner_text("#performance-summary")
            assert "worse" in page.inner_text("#changes")
            assert count(page, "#memory-chart polyline") == 2 and count(page, "#memory-chart line.rule") == 1
            assert count(page, "#lag-chart polyline") == 2
            assert count(page, "#cost-chart polyline") == 1
            assert "USD" in page.inner_text("#today")
            # The rollout: both arms with their shares, the canary's agreement with its 20 labels, the share over
            # time as steps (10 % then 25 %), and its decisions with a hostile reason shown as text.
            assert count(page, "#rollouts table.arms tbody tr") == 2
            arms = page.inner_text("#rollouts table.arms")
            assert "75.0 %" in arms and "25.0 %" in arms and "80.0 % of 20" in arms
            assert count(page, "#rollouts svg.chart polyline") == 1
            assert count(page, "#rollouts table.decisions tbody tr") == 2
            assert HOSTILE in page.inner_text("#rollouts table.decisions")

            # Hostile names from the data are text: no element made of them, no dialog.
            assert HOSTILE in page.inner_text("#feature-choice")
            assert HOSTILE in page.inner_text("#window-figures")
            assert HOSTILE in page.inner_text("#episodes")
            assert HOSTILE in page.inner_text("#lag-legend")
            assert any(
                HOSTILE in text for text in page.eval_on_selector_all("#series option", "o => o.map(x => x.text)")
            )
            assert page.evaluate("document.querySelectorAll('img').length") == 0

            screenshot = tmp_path / "monitor.png"
            page.screenshot(path=str(screenshot), full_page=True)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(screenshot, ARTIFACTS / "monitor.png")

            # A point of the chart opens its window; the address follows.
            page.click("#drift-chart circle.point[data-window='w-0000']")
            page.wait_for_selector("body[data-window='w-0000']", timeout=10_000)
            assert "window=w-0000" in page.url
            # The hostile cohort's series, chosen from the list, is drawn as well.
            page.select_option("#series", label=page.eval_on_selector_all(
                "#series option", "o => o.map(x => x.text).find(t => t.includes('<img'))"))  # fmt: skip
            # (A wait on a selector: the page's policy refuses the eval `wait_for_function` needs.)
            page.wait_for_selector("#drift-chart circle.point[data-window='w-hostile']", timeout=10_000)
            assert count(page, "#drift-chart circle.point") == 2

            # ?episode= selects that episode and opens the window that opened it.
            page.goto(f"{url}/?episode={episode_id}")
            page.wait_for_selector(f"body[data-state='ready'][data-window='{DRIFTED_WINDOW}']", timeout=20_000)
            assert page.get_attribute("#episodes tr.selected", "data-episode") == episode_id

            assert watched_page.dialogs == []
            assert watched_page.errors == []
        finally:
            browser.close()


def test_with_a_token_the_page_opens_with_it_once_and_keeps_it_for_the_tab(tmp_path: Path, store: MonitorStore) -> None:
    from playwright.sync_api import sync_playwright

    fill_store(store)
    pages = pages_of(MonitorSettings(env="dev", monitor_page_token=SecretStr(TOKEN)), store, None)
    with serving(pages) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            watched_page = Watched(page)
            page.goto(f"{url}/")
            page.wait_for_selector("body[data-state='unauthorized']", timeout=20_000)
            assert page.is_visible("#token-input")
            assert count(page, "#drift-chart circle.point") == 0

            page.goto(f"{url}/?token={TOKEN}&window={DRIFTED_WINDOW}")
            page.wait_for_selector("body[data-state='ready']", timeout=20_000)
            assert TOKEN not in page.url and f"window={DRIFTED_WINDOW}" in page.url
            assert count(page, "#drift-chart circle.point") == WINDOWS * 2
            assert "does not run" in page.inner_text("#today")

            page.reload()  # the address has no token now: the tab's sessionStorage has it
            page.wait_for_selector("body[data-state='ready']", timeout=20_000)
            assert count(page, "#histogram rect.bar.current") == 30
            page.evaluate("sessionStorage.clear()")
            page.click("#refresh")
            page.wait_for_selector("body[data-state='unauthorized']", timeout=20_000)
            page.fill("#token-input", TOKEN)  # typed in, the same
            page.click("#token-use")
            page.wait_for_selector("body[data-state='ready']", timeout=20_000)
            assert watched_page.dialogs == []
            # Only the answers refused before the token was given.
            assert all("401" in error for error in watched_page.errors), watched_page.errors
        finally:
            browser.close()
