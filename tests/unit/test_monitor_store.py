"""The monitor's SQL store on SQLite: closed windows stored once, drift episodes saved, found open and resolved."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.monitor.adapters.store import MonitorStore
from services.monitor.domain.drift import FeatureDrift
from services.monitor.handlers import FULL, VERDICT_DRIFT, ClosedWindow, DriftEpisode


@pytest.fixture
def store(tmp_path: Path) -> MonitorStore:
    store = MonitorStore.from_url(f"sqlite:///{tmp_path / 'michi.db'}")
    yield store  # type: ignore[misc]
    store.close()


def closed_window(window_id: str) -> ClosedWindow:
    features = (
        FeatureDrift("speed", "drift", 1000, psi=0.4, jensen_shannon=0.2, wasserstein=0.5, ks_statistic=0.3),
        FeatureDrift("braking", "insufficient-data", 10),
    )
    return ClosedWindow(
        "risk",
        "v1",
        "all",
        window_id,
        1000,
        FULL,
        features,
        ("speed",),
        "reference-profile-2",
        False,
        None,
        verdict=VERDICT_DRIFT,
    )


def test_a_closed_window_is_stored_once_with_its_figures(store: MonitorStore) -> None:
    store.record_close(closed_window("w-1"), 1_790_000_000.0, None)
    store.record_close(closed_window("w-1"), 1_790_000_000.0, None)  # read again after a crash
    (row,) = store.windows()
    assert (row.window_id, row.verdict, row.drifted, row.rows) == ("w-1", "drift", ["speed"], 1000)
    assert row.figures["speed"]["psi"] == pytest.approx(0.4)
    assert row.figures["braking"] == {
        "status": "insufficient-data",
        "rows": 10,
        "psi": None,
        "jensen_shannon": None,
        "wasserstein": None,
        "ks": None,
    }


def test_an_episode_is_open_until_resolved_and_saved_in_place(store: MonitorStore) -> None:
    episode = DriftEpisode("e-1", "risk", "v1", "all", ["w-1"], ["speed"], "alert-1", samples=10)
    store.save_episode(episode)
    found = store.open_episode("risk", "v1", "all")
    assert found == episode
    assert store.open_episode("risk", "v2", "all") is None and store.open_episode("risk", "v1", "rate:50") is None
    episode.windows.append("w-2")
    episode.retrain_event_id = "retrain-1"
    store.save_episode(episode)
    assert store.open_episode("risk", "v1", "all") == episode
    episode.status, episode.resolved_event_id, episode.resolved_window_id = "resolved", "resolved-1", "w-3"
    store.save_episode(episode)
    assert store.open_episode("risk", "v1", "all") is None
    (row,) = store.episodes()
    assert (row.status, row.windows, row.resolved_window_id) == ("resolved", ["w-1", "w-2"], "w-3")
    assert row.resolved_at is not None


def test_a_windows_histograms_are_kept_for_people_and_old_windows_are_pruned(store: MonitorStore) -> None:
    closed = dataclasses.replace(
        closed_window("w-2"),
        shapes={"speed": {"edges": [0.0, 1.0, 2.0], "reference": [0.5, 0.5], "current": [0.9, 0.1]}},
    )
    store.record_close(closed, 1_790_000_000.0, None)
    (row,) = store.windows()
    assert row.figures["speed"]["histogram"] == {
        "edges": [0.0, 1.0, 2.0],
        "reference": [0.5, 0.5],
        "current": [0.9, 0.1],
    }
    assert "histogram" not in row.figures["braking"]
    assert store.prune_windows(datetime.now(UTC) - timedelta(days=1)) == 0
    assert store.prune_windows(datetime.now(UTC) + timedelta(seconds=1)) == 1 and store.windows() == []
