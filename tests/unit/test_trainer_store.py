"""`TrainerStore`'s readers of runs and alerts on SQLite: a run's recorded facts and the run a retrain alert started,
as `michi maturity` reads them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.trainer.adapters.store import TrainerStore
from services.trainer.adapters.tables import TrainerRunRow

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
FACTS = {
    "training": {"epoch_losses": [1.2, 0.6, 0.3]},
    "export": {"parity_max_abs_diff": 3e-7, "tolerance": 1e-4},
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TrainerStore]:
    built = TrainerStore.from_url(f"sqlite:///{tmp_path / 'michi.db'}")
    try:
        yield built
    finally:
        built.close()


def _start(store: TrainerStore, run_id: str) -> None:
    store.start_run(
        TrainerRunRow(
            run_id=run_id,
            model_name="risk",
            trigger="alert",
            trigger_reason="",
            status="running",
            started_at=NOW,
            code_version="src-abc",
        )
    )


def test_run_facts_are_what_the_run_recorded_and_empty_for_none(store: TrainerStore) -> None:
    _start(store, "run-1")
    _start(store, "run-2")
    assert store.run_facts("run-1") == {}
    store.update_run("run-1", facts=FACTS)
    assert store.run_facts("run-1") == FACTS
    assert store.run_facts("run-2") == {}
    assert store.run_facts("run-unknown") == {}


def test_an_alert_is_read_as_received_and_then_with_the_run_it_started(store: TrainerStore) -> None:
    assert store.alert("retrain-1") is None
    assert store.add_alert("retrain-1", "retrain", "sustained drift")
    received = store.alert("retrain-1")
    assert received is not None
    assert (received.event_id, received.kind, received.message, received.run_id) == (
        "retrain-1",
        "retrain",
        "sustained drift",
        None,
    )
    assert received.received_at.tzinfo is not None
    _start(store, "run-1")
    store.claim_alert("retrain-1", "run-1")
    claimed = store.alert("retrain-1")
    assert claimed is not None and claimed.run_id == "run-1"
