"""The rollouts section of the monitor page: every rollout the registry keeps, with its arms and shares, what the
monitor saw of each arm's version while it served (random-QA agreement, drift windows), and its decisions with
the candidate's share over time — over one real SQLite database holding the registry's and the monitor's tables,
as under `michi up`, and through the page's own route."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from michi.readiness import PageRequest
from michi.registry import ModelRegistry
from services.monitor.adapters.store import MonitorStore
from services.monitor.adapters.tables import MonitorWindowRow
from services.monitor.adapters.version_figures import version_period_figures
from services.monitor.entrypoints.page import PageSources, answer_api, rollouts_view

from ..fakes import RecordingPlanPublisher
from .test_monitor_page import closed

MODEL = "michi-risk"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'michi.db'}"


@pytest.fixture
def registry(database_url: str) -> Iterator[ModelRegistry]:
    """Versions 1 (champion), 2 and 3 of the model."""
    built = ModelRegistry.from_url(database_url, RecordingPlanPublisher())
    for number in (1, 2, 3):
        built.register(
            MODEL, f"file:///{number}.onnx", f"{number}" * 64, "code", f"data-{number}", {}, {}, created_by="test"
        )
    built.promote(MODEL, "1", actor="test", reason="bootstrap")
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def store(database_url: str, registry: ModelRegistry) -> Iterator[MonitorStore]:
    built = MonitorStore.from_url(database_url)
    yield built
    built.close()


def label(store: MonitorStore, window: str, version: str, at: datetime, *, predicted: int, labelled: int) -> None:
    """A random-QA window of `version` predicted at `at`, and its human label."""
    store.record_prediction(window, MODEL, version, predicted, 0.8, at.timestamp())
    store.record_label(window, MODEL, version, labelled, f"label-{window}-{version}")


def close_window(store: MonitorStore, window_id: str, version: str, at: datetime, *, psi: float) -> None:
    store.record_close(closed(window_id, {"speed": psi}, version=version), at.timestamp(), None)
    with Session(store.engine) as session:
        row = session.exec(select(MonitorWindowRow).where(col(MonitorWindowRow.window_id) == window_id)).one()
        row.closed_at = at
        session.add(row)
        session.commit()


def test_a_running_canary_shows_its_arms_figures_and_the_share_over_time(
    registry: ModelRegistry, store: MonitorStore
) -> None:
    registry.start_rollout(MODEL, "2", actor="dana", reason="new tyres data", weight=10)
    started = registry.active_rollout(MODEL)
    assert started is not None
    registry.set_rollout_weight(MODEL, 50, actor="policy:rollout-steps", reason="step 3: set weight 50")
    registry.pause_rollout(MODEL, actor="dana", reason="holiday traffic")
    during = started.started_at + timedelta(seconds=5)
    # Labels of the period: the candidate right 3 of 4 times, the champion 1 of 2; one candidate label of a window
    # predicted before the rollout started does not count, nor does a label still waiting for its prediction.
    for index, (predicted, labelled) in enumerate([(1, 1), (2, 2), (3, 3), (1, 0)]):
        label(store, f"c{index}", "2", during, predicted=predicted, labelled=labelled)
    label(store, "before", "2", started.started_at - timedelta(hours=1), predicted=1, labelled=1)
    label(store, "h0", "1", during, predicted=0, labelled=0)
    label(store, "h1", "1", during, predicted=2, labelled=0)
    store.record_label("waiting", MODEL, "2", 1, "label-waiting")
    store.sequence_ready()
    close_window(store, "w-ok", "2", during, psi=0.01)
    close_window(store, "w-drift", "2", during + timedelta(seconds=1), psi=0.9)
    close_window(store, "w-old", "2", started.started_at - timedelta(days=1), psi=0.9)

    view = rollouts_view(registry, store, now=datetime.now(UTC) + timedelta(minutes=1))
    assert view["registry"] is None
    [rollout] = view["rollouts"]
    assert (rollout["model_name"], rollout["candidate_version"], rollout["champion_version"]) == (MODEL, "2", "1")
    assert (rollout["status"], rollout["strategy"], rollout["ended_at"]) == ("paused", "canary", None)
    arms = {arm["model_version"]: arm for arm in rollout["arms"]}
    assert {version: (arm["variant"], arm["share"]) for version, arm in arms.items()} == {
        "1": ("champion", 0.5),
        "2": ("canary", 0.5),
    }
    candidate, champion = arms["2"], arms["1"]
    assert (candidate["labelled"], candidate["agreed"], candidate["agreement"]) == (4, 3, 0.75)
    low, high = candidate["agreement_interval"]
    assert 0.2 < low < 0.75 < high < 1.0
    assert (champion["labelled"], champion["agreed"]) == (2, 1)
    assert (candidate["windows"], candidate["drifting_windows"], candidate["last_verdict"]) == (2, 1, "drift")
    assert champion["windows"] == 0 and champion["agreement_interval"] is not None
    # Every decision, oldest first, with the candidate's share after it (a pause leaves it as it was).
    assert [
        (decision["action"], decision["actor"], decision["candidate_percent"]) for decision in rollout["decisions"]
    ] == [
        ("start", "dana", 10.0),
        ("set-weight", "policy:rollout-steps", 50.0),
        ("pause", "dana", None),
    ]
    assert rollout["decisions"][2]["reason"] == "holiday traffic"
    json.dumps(view)  # JSON-ready as the route sends it


def test_ended_rollouts_follow_the_running_one_with_their_last_shares(
    registry: ModelRegistry, store: MonitorStore
) -> None:
    registry.start_rollout(MODEL, "2", actor="dana", reason="first try", weight=20)
    registry.rollback_rollout(MODEL, actor="policy:rollout-steps", reason="agreement 0.71 < champion - 0.02")
    registry.start_rollout(MODEL, "3", actor="dana", reason="second try", strategy="ab")
    registry.promote_rollout(MODEL, actor="policy:ab-test", reason="treatment better, p 0.01")
    registry.start_rollout(MODEL, "2", actor="dana", reason="third try", weight=5)

    rollouts = rollouts_view(registry, store)["rollouts"]
    assert [(rollout["candidate_version"], rollout["status"]) for rollout in rollouts] == [
        ("2", "running"),
        ("3", "promoted"),
        ("2", "rolled-back"),
    ]
    assert sorted(arm["variant"] for arm in rollouts[0]["arms"]) == ["canary", "champion"]
    assert rollouts[0]["champion_version"] == "3"
    promoted, rolled_back = rollouts[1], rollouts[2]
    assert promoted["ended_at"] is not None and promoted["decisions"][-1]["candidate_percent"] == 100.0
    assert [decision["action"] for decision in rolled_back["decisions"]] == ["start", "rollback"]
    assert rolled_back["decisions"][-1]["candidate_percent"] == 0.0
    assert rollouts_view(registry, store, limit=1)["rollouts"][0]["status"] == "running"


def test_a_bandit_over_three_arms_shows_every_arm_running_and_ended(
    registry: ModelRegistry, store: MonitorStore
) -> None:
    registry.start_rollout(MODEL, "2", actor="dana", reason="three arms", strategy="bandit", more_versions=["3"])
    running = rollouts_view(registry, store)["rollouts"][0]
    assert running["candidates"] == ["2", "3"]
    assert sorted(arm["model_version"] for arm in running["arms"]) == ["1", "2", "3"]
    assert sum(arm["share"] for arm in running["arms"]) == pytest.approx(1.0)
    registry.set_rollout_shares(MODEL, {"2": 5.0, "3": 90.0}, actor="policy:bandit", reason="posteriors")
    registry.abort_rollout(MODEL, actor="dana", reason="enough")
    ended = rollouts_view(registry, store)["rollouts"][0]
    assert ended["status"] == "aborted" and ended["candidates"] == ["2", "3"]
    shares = {arm["model_version"]: (arm["variant"], arm["share"]) for arm in ended["arms"]}
    assert set(shares) == {"1", "2", "3"} and shares["1"][0] == "champion"
    assert sum(share for _, share in shares.values()) == pytest.approx(1.0)


def test_without_the_registrys_tables_the_section_says_so(tmp_path: Path) -> None:
    alone = MonitorStore.from_url(f"sqlite:///{tmp_path / 'monitor-only.db'}")
    try:
        view = rollouts_view(ModelRegistry(alone.engine), alone)
        assert view == {"registry": "the registry's tables are not in the monitor's database", "rollouts": []}
        assert rollouts_view(None, alone)["rollouts"] == []
    finally:
        alone.close()


def test_the_route_answers_with_the_view_and_bounds_its_limit(registry: ModelRegistry, store: MonitorStore) -> None:
    registry.start_rollout(MODEL, "2", actor="dana", reason="try", weight=10)
    sources = PageSources(store=store, watch=None, psi_threshold=0.2, adwin_delta=0.002, registry=registry)
    answer = answer_api(sources, PageRequest("/v1/monitor/rollouts", {"limit": ["5"]}))
    assert answer.status == 200
    assert json.loads(answer.body)["rollouts"][0]["candidate_version"] == "2"
    assert answer_api(sources, PageRequest("/v1/monitor/rollouts", {"limit": ["many"]})).status == 400


def test_figures_of_a_version_count_labels_by_prediction_time(store: MonitorStore) -> None:
    moment = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    label(store, "a", "5", moment, predicted=1, labelled=1)
    label(store, "b", "5", moment + timedelta(hours=2), predicted=1, labelled=0)
    store.sequence_ready()
    inside = version_period_figures(store.engine, MODEL, "5", moment, moment + timedelta(hours=1))
    assert (inside.labelled, inside.agreed, inside.agreement) == (1, 1, 1.0)
    nothing = version_period_figures(store.engine, MODEL, "6", moment, moment + timedelta(hours=1))
    assert (nothing.labelled, nothing.agreement, nothing.agreement_interval(), nothing.expected_accuracy) == (
        0,
        None,
        None,
        None,
    )
