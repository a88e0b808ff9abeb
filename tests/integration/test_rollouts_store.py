"""The rollout controller's store on each SQL backend (SQLite, and a real PostgreSQL via `postgres_url`): a batch of
random-QA requests and labels kept in one transaction, each window once per model version, the first request and
the first label counting (in a batch and across batches); a redelivered batch changes nothing; controllers
writing overlapping batches at once all succeed with every window once; the arms' signals likewise.

Run: .venv/bin/python -m pytest tests/integration/test_rollouts_store.py -q
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from michi.labels.outcomes import QaLabel, QaPrediction
from services.rollouts.adapters.store import RolloutsStore
from services.rollouts.domain.signals import FIRING, RESOLVED, DriftSeen, SegmentSeen, SignalBatch, WindowLabelSeen

MODEL = "risk"
BRAKING, NORMAL = 3, 1


def _fresh_postgres_database(server_url: str) -> str:
    name = f"rollouts_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres])])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'michi.db'}"
    return _fresh_postgres_database(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(database_url: str) -> Iterator[RolloutsStore]:
    opened = RolloutsStore.from_url(database_url)
    try:
        yield opened
    finally:
        opened.close()


def prediction(window: str, version: str = "2", predicted: int = BRAKING, at: float = 1000.0) -> QaPrediction:
    return QaPrediction(window, MODEL, version, predicted, 0.9, at)


def label(window: str, version: str = "2", labelled: int = BRAKING, event: str | None = None) -> QaLabel:
    return QaLabel(window, MODEL, version, labelled, event or f"label-{window}")


def counts(store: RolloutsStore, version: str = "2", since: float = 0.0) -> tuple[int, int, int]:
    found = store.arm_counts(MODEL, version, since)
    return found.requested, found.labelled, found.correct


def test_a_batch_is_kept_once_per_window_and_the_first_of_each_side_counts(store: RolloutsStore) -> None:
    store.record_outcomes(
        [prediction("w1"), prediction("w2"), prediction("w1", predicted=NORMAL, at=5.0), prediction("w1", "1")],
        [
            label("w1"),
            label("w1", labelled=NORMAL, event="a-later-label"),  # the first label of the window counts
            label("w3"),  # labelled before its request comes
            label("w1", "1", labelled=NORMAL),
        ],
    )
    assert counts(store) == (2, 1, 1)
    assert counts(store, "1") == (1, 1, 0)
    assert counts(store, since=1000.5) == (0, 0, 0), "w1 kept the time of its first request"
    store.record_outcomes([prediction("w3", predicted=NORMAL), prediction("w2")], [label("w2", labelled=NORMAL)])
    assert counts(store) == (3, 3, 1), "w3's request fills its row; w2's first label comes"
    again = ([prediction("w1"), prediction("w2"), prediction("w3")], [label("w1", labelled=NORMAL), label("w2")])
    store.record_outcomes(*again)
    store.record_outcomes(*again)
    assert counts(store) == (3, 3, 1), "a redelivered batch, or another label of a labelled window, changes nothing"
    store.record_outcomes([], [])
    store.record_prediction(prediction("w4"))
    store.record_label(label("w4"))
    assert counts(store) == (4, 4, 2)


def test_a_batch_larger_than_one_lookup_is_kept_whole(store: RolloutsStore) -> None:
    windows = [f"w-{index:05d}" for index in range(1_200)]
    store.record_outcomes([prediction(window) for window in windows[:700]], [label(window) for window in windows[::2]])
    store.record_outcomes([prediction(window) for window in windows], [label(window) for window in windows])
    assert counts(store) == (1_200, 1_200, 1_200)


def test_controllers_writing_overlapping_batches_at_once_keep_every_window_and_signal_once(database_url: str) -> None:
    """Four controllers write overlapping batches of random-QA windows and signals at the same moment, two in
    window order and two backwards: none fails (no lost insert race, no deadlock, no lock timeout) and every
    window, segment, label and drift episode is kept once."""
    stores = [RolloutsStore.from_url(database_url) for _ in range(4)]
    windows = [f"w-{index:04d}" for index in range(400)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def write(store: RolloutsStore, offset: int, backwards: bool) -> Callable[[], None]:
        def run() -> None:
            try:
                barrier.wait()
                starts = list(range(offset, len(windows), 50))
                for start in reversed(starts) if backwards else starts:
                    chunk = windows[start : start + 100]
                    store.record_outcomes([prediction(window) for window in chunk], [label(window) for window in chunk])
                    signals = SignalBatch()
                    signals.segments += [SegmentSeen(f"seg-{window}", "device-1", 1000.0, 10.0, 2) for window in chunk]
                    signals.labels += [WindowLabelSeen(window, BRAKING, f"label-{window}") for window in chunk]
                    signals.drift += [
                        DriftSeen(f"episode-{window}", MODEL, "2", RESOLVED if backwards else FIRING, 1000.0)
                        for window in chunk
                        if window.endswith("0")
                    ]
                    store.record_signals(signals)
            except BaseException as error:  # reported below, with the thread's failure
                errors.append(error)

        return run

    threads = [
        threading.Thread(target=write(store, (index % 2) * 25, backwards=index >= 2))
        for index, store in enumerate(stores)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    try:
        assert not errors, errors
        assert counts(stores[0]) == (400, 400, 400)
        totals = stores[0].device_totals(0.0)
        assert totals.uploads == {"device-1": 400}
        assert totals.metres == {"device-1": 4_000.0}
        assert stores[0].drift_alerts(MODEL, ["2"], 0.0, 2000.0) == {"2": 40}, "each episode once, fired"
        assert stores[0].drift_alerts(MODEL, ["2"], 1000.5, 2000.0) == {}, "and resolved, whichever came first"
    finally:
        for store in stores:
            store.close()


def test_the_arms_signals_are_kept_once_by_their_ids(store: RolloutsStore) -> None:
    batch = SignalBatch()
    batch.segments += [SegmentSeen(f"seg-{index}", "device-1", 1000.0 + index, 200.0, 3) for index in range(3)]
    batch.labels += [WindowLabelSeen("w1", NORMAL, "label-1"), WindowLabelSeen("w1", BRAKING, "label-2")]
    store.record_signals(batch)
    store.record_signals(batch)
    totals = store.device_totals(0.0)
    assert totals.uploads == {"device-1": 3}
    assert totals.metres == {"device-1": 600.0}
