"""The annotation store on both SQL backends: SQLite (the default) and a real PostgreSQL (`postgres_url`).

Each PostgreSQL test gets a database of its own, so counts and rebuilds see only its rows.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from michi.contracts.v1 import common_pb2, labels_pb2
from services.annotation.adapters.store import AnnotationStore, AnnotatorExists, VoteOutcome
from services.annotation.domain.consensus import ConsensusPolicy
from services.annotation.domain.credentials import hash_password, token_hash
from services.annotation.domain.quality import QualityPolicy
from services.annotation.domain.roles import Role
from services.annotation.domain.tasks import GOLD_POOL, TaskStatus

from .annotation_support import RecordingPublisher, make_request, principal, settings_for, wire

BRAKING = common_pb2.EVENT_TYPE_HARSH_BRAKING
NORMAL = common_pb2.EVENT_TYPE_NORMAL
CONSENSUS = ConsensusPolicy()
QUALITY = QualityPolicy()
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _fresh_postgres_database(server_url: str) -> str:
    name = f"annotation_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres])])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'annotation.db'}"
    return _fresh_postgres_database(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(database_url: str) -> Iterator[AnnotationStore]:
    built = AnnotationStore.from_url(database_url)
    built.create_tables()
    try:
        yield built
    finally:
        built.close()


def _vote(store: AnnotationStore, task_id: str, annotator: str, event_type: int, *, counted: bool = True) -> str:
    return store.record_vote(
        task_id,
        annotator,
        event_type,
        lease_id=uuid.uuid4().hex,
        counted=counted,
        late=False,
        now=NOW,
        consensus=CONSENSUS,
        quality=QUALITY,
    ).outcome


def test_accounts_and_sessions(store: AnnotationStore) -> None:
    store.add_annotator("alice", Role.LEAD, hash_password("correct horse battery", n=2**10), actor="admin", now=NOW)
    with pytest.raises(AnnotatorExists):
        store.add_annotator("alice", Role.ANNOTATOR, "x", actor="admin", now=NOW)
    record = store.annotator("alice")
    assert record is not None and record.role is Role.LEAD and not record.disabled
    digest = token_hash("mas1.some-token-value-for-alice")
    store.create_session("alice", digest, now=NOW, expires_at=NOW + timedelta(hours=1))
    assert store.session(digest, NOW + timedelta(minutes=5)) is not None
    assert store.session(digest, NOW + timedelta(hours=2)) is None  # expired
    store.set_disabled("alice", True, actor="admin", now=NOW)
    assert store.session(digest, NOW) is None  # disabling ends every session
    store.set_disabled("alice", False, actor="admin", now=NOW)
    second = token_hash("mas1.another-token-for-alice")
    store.create_session("alice", second, now=NOW, expires_at=NOW + timedelta(hours=1))
    store.revoke_session(second, NOW)
    assert store.session(second, NOW) is None
    assert [row.action for row in store.audit_trail(actor="admin")] == [
        "annotator-added",
        "annotator-disabled",
        "annotator-enabled",
    ]


def test_requests_are_idempotent_and_merge_by_window(store: AnnotationStore) -> None:
    request = make_request("window-1", priority=20)
    first = store.record_request(request, now=NOW, location=(35.0, 139.0))
    assert first.new_request and first.new_task and first.live is not None and first.live.pool == "uncertain"
    assert not store.record_request(request, now=NOW).new_request
    merged = store.record_request(
        make_request("window-1", reason=labels_pb2.LABEL_REASON_DRIFT_SAMPLE, priority=70), now=NOW
    )
    assert merged.new_request and not merged.new_task and merged.live is not None
    assert merged.live.score < first.live.score  # the higher priority moves it forward
    gold = store.record_request(
        make_request("window-1", reason=labels_pb2.LABEL_REASON_GOLD, known_answer=BRAKING), now=NOW
    )
    assert gold.status is TaskStatus.GOLD and gold.live is not None and gold.live.pool == GOLD_POOL
    record = store.task("window-1")
    assert record is not None and record.request.lineage.window_id == "window-1"


def test_votes_decide_once_and_labels_wait_for_acknowledgement(store: AnnotationStore) -> None:
    store.record_request(make_request("window-2"), now=NOW, location=(35.5, 139.5))
    assert _vote(store, "window-2", "ann-1", BRAKING) == VoteOutcome.REQUEUE
    duplicate = store.record_vote(
        "window-2",
        "ann-1",
        NORMAL,
        lease_id="x",
        counted=True,
        late=False,
        now=NOW,
        consensus=CONSENSUS,
        quality=QUALITY,
    )
    assert duplicate.duplicate
    result = store.record_vote(
        "window-2",
        "ann-2",
        BRAKING,
        lease_id="y",
        counted=True,
        late=True,
        now=NOW,
        consensus=CONSENSUS,
        quality=QUALITY,
    )
    assert result.outcome == VoteOutcome.DONE and result.label is not None and result.live is None
    assert result.label.location.latitude == pytest.approx(35.5)
    # A vote after the decision is kept, but changes nothing.
    assert _vote(store, "window-2", "ann-3", NORMAL) == VoteOutcome.EXTRA
    assert [vote.counted for vote in store.votes_of("window-2")] == [True, True, False]
    pending = store.unpublished_labels(created_before=NOW)
    assert [label.event_id for label in pending] == [result.label.event_id]
    store.mark_published([result.label.event_id], NOW)
    assert store.unpublished_labels(created_before=NOW) == []


def test_gold_answers_measure_annotators(store: AnnotationStore) -> None:
    store.record_request(make_request("gold-a", reason=labels_pb2.LABEL_REASON_GOLD, known_answer=BRAKING), now=NOW)
    store.record_request(make_request("gold-b", reason=labels_pb2.LABEL_REASON_GOLD, known_answer=NORMAL), now=NOW)
    assert _vote(store, "gold-a", "ann-1", BRAKING) == VoteOutcome.REQUEUE
    assert _vote(store, "gold-b", "ann-1", BRAKING) == VoteOutcome.REQUEUE
    assert sorted(store.gold_results("ann-1", 50)) == [False, True]
    assert store.task("gold-a").status is TaskStatus.GOLD  # type: ignore[union-attr]


def test_concurrent_last_votes_decide_a_task_exactly_once(store: AnnotationStore) -> None:
    decided = []
    for round_number in range(5):
        task_id = f"race-{round_number}"
        store.record_request(make_request(task_id), now=NOW)
        _vote(store, task_id, "ann-0", BRAKING)
        barrier = threading.Barrier(4)
        outcomes: list[str] = []
        errors: list[BaseException] = []

        def vote(
            name: str,
            task_id: str = task_id,
            barrier: threading.Barrier = barrier,
            outcomes: list[str] = outcomes,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                barrier.wait()
                outcomes.append(_vote(store, task_id, name, BRAKING))
            except BaseException as error:  # a voter's failure must fail the test, not vanish with its thread
                errors.append(error)

        threads = [threading.Thread(target=vote, args=(f"ann-{index}",)) for index in range(1, 5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads), "a voter hung"
        assert errors == []
        # Every voter got an outcome, and exactly one of them decided the task.
        assert len(outcomes) == 4
        decided.append(outcomes.count(VoteOutcome.DONE))
    assert decided == [1, 1, 1, 1, 1]


def test_live_tasks_carry_who_answered_or_skipped(store: AnnotationStore) -> None:
    for index in range(5):
        store.record_request(make_request(f"live-{index}"), now=NOW)
    _vote(store, "live-1", "ann-1", BRAKING)
    store.record_skip("live-2", "ann-2", "cannot tell", lease_id="z", now=NOW, max_skips=5)
    _vote(store, "live-3", "ann-1", BRAKING)
    _vote(store, "live-3", "ann-2", BRAKING)  # labeled: not live
    live = {task.task_id: task for task in store.live_tasks(batch=2)}
    assert sorted(live) == ["live-0", "live-1", "live-2", "live-4"]
    assert live["live-1"].excluded == {"ann-1"} and live["live-2"].excluded == {"ann-2"}


def test_statistics(store: AnnotationStore) -> None:
    for index in range(4):
        store.record_request(make_request(f"stat-{index}"), now=NOW)
    _vote(store, "stat-0", "ann-1", BRAKING)
    _vote(store, "stat-0", "ann-2", BRAKING)
    _vote(store, "stat-1", "ann-1", BRAKING)
    _vote(store, "stat-1", "ann-2", NORMAL)
    [counts] = store.queue_counts(NOW + timedelta(minutes=1))
    assert (counts.queue, counts.open, counts.votes_last_hour, counts.labeled_last_hour) == ("uncertain", 3, 4, 1)
    assert counts.oldest_open_at == NOW
    items = store.agreement_items()
    assert sorted(items) == sorted([[("ann-1", BRAKING), ("ann-2", BRAKING)], [("ann-1", BRAKING), ("ann-2", NORMAL)]])
    work = store.work_counts("ann-1", NOW + timedelta(minutes=1))
    assert (work.votes_total, work.votes_last_hour, work.skips_total) == (2, 2, 0)
    assert store.consensus_matches() == {"ann-1": (1, 1), "ann-2": (1, 1)}


def test_labeled_tasks_are_counted_per_reason_they_were_asked_for(store: AnnotationStore) -> None:
    store.record_request(make_request("reason-a", reason=labels_pb2.LABEL_REASON_UNCERTAIN), now=NOW)
    store.record_request(make_request("reason-a", reason=labels_pb2.LABEL_REASON_UNCERTAIN), now=NOW)
    store.record_request(make_request("reason-a", reason=labels_pb2.LABEL_REASON_DRIFT_SAMPLE), now=NOW)
    store.record_request(make_request("reason-b", reason=labels_pb2.LABEL_REASON_RANDOM_QA), now=NOW)
    store.record_request(make_request("reason-c", reason=labels_pb2.LABEL_REASON_RANDOM_QA), now=NOW)
    assert store.labeled_by_reason() == {}
    for task in ("reason-a", "reason-b"):
        _vote(store, task, "ann-1", BRAKING)
        _vote(store, task, "ann-2", BRAKING)
    # reason-a counts once under each of its two reasons; reason-c is still open.
    assert store.labeled_by_reason() == {
        labels_pb2.LABEL_REASON_UNCERTAIN: 1,
        labels_pb2.LABEL_REASON_DRIFT_SAMPLE: 1,
        labels_pb2.LABEL_REASON_RANDOM_QA: 1,
    }


def test_the_live_queues_are_rebuilt_from_this_database(tmp_path: Path, redis_url: str, database_url: str) -> None:
    publisher = RecordingPublisher()
    wiring = wire(settings_for(tmp_path, redis_url, database_url=database_url), publisher=publisher)
    try:
        service = wiring.service
        for index in range(6):
            service.intake(make_request(f"rebuild-{index}", priority=index))
        view = service.lease(principal("ann-1"), "uncertain")
        assert view is not None
        service.submit(principal("ann-1"), view.task_id, view.lease_id, "normal")
        wiring.redis.flushdb()
        assert service.rebuild("test") == 6
        seen = set()
        while (next_view := service.lease(principal("ann-1"), "uncertain")) is not None:
            seen.add(next_view.task_id)
            service.skip(principal("ann-1"), next_view.task_id, next_view.lease_id, "testing")
        assert seen == {f"rebuild-{index}" for index in range(6)} - {view.task_id}
    finally:
        wiring.close()
