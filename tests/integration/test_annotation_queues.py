"""The annotation service's queues on a real redis-server and SQLite: leases, answers, consensus, gold, rebuild.

Time is a manual clock handed to the service through `wiring.build_wiring`, so lease expiry is a
clock move, not a sleep. Each test has its own key prefix (Redis) and database file.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from michi.contracts.v1 import common_pb2, labels_pb2
from services.annotation.adapters.store import AnnotationStore
from services.annotation.adapters.tables import LabelRow
from services.annotation.domain.roles import Role
from services.annotation.domain.tasks import TaskStatus
from services.annotation.handlers import Refused
from services.annotation.wiring import Wiring, build_wiring

from .annotation_support import (
    TEST_PASSWORD_WORK,
    ManualClock,
    RecordingPublisher,
    make_request,
    principal,
    settings_for,
    wire,
)

BRAKING = common_pb2.EVENT_TYPE_HARSH_BRAKING
NORMAL = common_pb2.EVENT_TYPE_NORMAL
ANSWER = {
    common_pb2.EVENT_TYPE_NORMAL: "normal",
    BRAKING: "harsh-braking",
    common_pb2.EVENT_TYPE_CONFOUNDER: "confounder",
}
LEAD = principal("lead-1", Role.LEAD)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def wiring(tmp_path: Path, redis_url: str, clock: ManualClock, publisher: RecordingPublisher) -> Iterator[Wiring]:
    built = wire(settings_for(tmp_path, redis_url, annotation_lease_s=60), publisher=publisher, clock=clock)
    try:
        yield built
    finally:
        built.close()


def _lease_and_answer(wiring: Wiring, name: str, answer: str, queue: str = "uncertain") -> str:
    who = principal(name)
    view = wiring.service.lease(who, queue)
    assert view is not None, f"{name} got no task"
    return wiring.service.submit(who, view.task_id, view.lease_id, answer).recorded_as


def test_requests_merge_by_window_and_redelivery_changes_nothing(wiring: Wiring, publisher: RecordingPublisher) -> None:
    service = wiring.service
    first = make_request("window-a", priority=10)
    assert service.intake(first).new_task
    again = service.intake(first)
    assert not again.new_request and not again.new_task
    merged = service.intake(make_request("window-a", reason=labels_pb2.LABEL_REASON_RANDOM_QA, priority=90))
    assert merged.new_request and not merged.new_task
    assert wiring.queues.waiting(["uncertain", "random-qa"]) == {"uncertain": 1, "random-qa": 0}
    # The merged, higher priority puts window-a ahead of a newer priority-50 window.
    service.intake(make_request("window-b", priority=50))
    view = service.lease(principal("ann-1"), "uncertain")
    assert view is not None and view.task_id == "window-a"
    # Once labeled, a new request for the window is recorded but not queued again.
    service.submit(principal("ann-1"), view.task_id, view.lease_id, "harsh-braking")
    assert _lease_and_answer(wiring, "ann-2", "harsh-braking") == "counted"  # window-a's second vote
    labeled = [task for task in ("window-a", "window-b") if wiring.store.task(task).status is TaskStatus.LABELED]  # type: ignore[union-attr]
    assert labeled == ["window-a"]
    after = service.intake(make_request("window-a", reason=labels_pb2.LABEL_REASON_DRIFT_SAMPLE, priority=99))
    assert after.new_request and after.live is None
    assert wiring.queues.waiting(["uncertain", "drift-sample"]) == {"uncertain": 1, "drift-sample": 0}
    # The label says every reason its window was asked for by its decision, each once; not the later one.
    [label] = publisher.labels
    reasons = [labels_pb2.LABEL_REASON_UNCERTAIN, labels_pb2.LABEL_REASON_RANDOM_QA]
    assert list(label.request_reasons) == reasons
    assert list(wiring.store.label_of("window-a").request_reasons) == reasons  # type: ignore[union-attr]


def test_queue_order_is_priority_then_age(wiring: Wiring, clock: ManualClock) -> None:
    for window_id, priority in (("old-low", 10), ("old-high", 90), ("new-high", 90)):
        wiring.service.intake(make_request(window_id, priority=priority))
        clock.advance(1)
    served = []
    for index in range(3):
        view = wiring.service.lease(principal(f"ann-{index}"), "uncertain")
        assert view is not None
        served.append(view.task_id)
    assert served == ["old-high", "new-high", "old-low"]


def test_no_two_annotators_hold_a_task_and_expired_leases_return(wiring: Wiring, clock: ManualClock) -> None:
    service = wiring.service
    service.intake(make_request("only"))
    first = service.lease(principal("ann-1"), "uncertain")
    assert first is not None
    assert service.lease(principal("ann-2"), "uncertain") is None
    # Leasing again while holding gives the same lease (a reloaded page).
    again = service.lease(principal("ann-1"), "uncertain")
    assert again is not None and (again.task_id, again.lease_id) == (first.task_id, first.lease_id)
    clock.advance(61)
    second = service.lease(principal("ann-2"), "uncertain")
    assert second is not None and second.task_id == "only" and second.lease_id != first.lease_id
    # ann-1's answer on the lease that ran out, after ann-2 took the task: an extra vote.
    assert service.submit(principal("ann-1"), "only", first.lease_id, "normal").recorded_as == "extra"
    assert service.submit(principal("ann-2"), "only", second.lease_id, "harsh-braking").recorded_as == "counted"
    votes = {vote.annotator: vote.counted for vote in wiring.store.votes_of("only")}
    assert votes == {"ann-1": False, "ann-2": True}
    # ann-1 answered already: the task is not served to them again; ann-3 gets the second counted vote.
    assert service.lease(principal("ann-1"), "uncertain") is None
    assert _lease_and_answer(wiring, "ann-3", "harsh-braking") == "counted"
    assert wiring.store.task("only").status is TaskStatus.LABELED  # type: ignore[union-attr]


def test_a_late_answer_counts_when_nobody_took_the_task(wiring: Wiring, clock: ManualClock) -> None:
    service = wiring.service
    service.intake(make_request("late-1"))
    service.intake(make_request("late-2"))
    for task_id, reclaim_first in (("late-1", True), ("late-2", False)):
        view = service.lease(principal("ann-1"), "uncertain")
        assert view is not None and view.task_id == task_id
        clock.advance(61)
        if reclaim_first:
            assert service.upkeep()["reclaimed"] == 1  # back in its queue, not re-leased
        assert service.submit(principal("ann-1"), task_id, view.lease_id, "normal").recorded_as == "counted"
        assert [vote.late for vote in wiring.store.votes_of(task_id)] == [True]
    # Both still need a second vote and are waiting for others.
    assert wiring.queues.waiting(["uncertain"]) == {"uncertain": 2}
    # A lease id that was never issued is refused; so is another annotator's lease.
    view = service.lease(principal("ann-2"), "uncertain")
    assert view is not None
    with pytest.raises(Refused) as refused:
        service.submit(principal("ann-3"), view.task_id, view.lease_id, "normal")
    assert (refused.value.status, refused.value.reason) == (409, "unknown-lease")


def test_consensus_publishes_one_label_with_lineage_and_votes(wiring: Wiring, publisher: RecordingPublisher) -> None:
    request = make_request("agreed", suggested=BRAKING, confidence=0.55)
    wiring.service.intake(request)
    assert _lease_and_answer(wiring, "ann-1", "harsh-braking") == "counted"
    assert publisher.labels == []
    assert _lease_and_answer(wiring, "ann-2", "harsh-braking") == "counted"
    [label] = publisher.labels
    assert label.lineage == request.lineage
    assert label.window == request.window
    assert label.detection_event_id == request.detection_event_id
    assert label.event_type == BRAKING and label.source == labels_pb2.LABEL_SOURCE_CONSENSUS
    assert list(label.annotators) == ["ann-1", "ann-2"] and label.agreement == pytest.approx(1.0)
    assert [(vote.annotator, vote.event_type) for vote in label.votes] == [("ann-1", BRAKING), ("ann-2", BRAKING)]
    assert not label.gold_checked  # nobody has answered enough gold tasks yet
    assert all(vote.weight == pytest.approx(0.8) for vote in label.votes)  # the prior: 4 of 5
    assert wiring.store.label_of("agreed") == label
    assert wiring.service.lease(principal("ann-3"), "uncertain") is None
    # The label is marked published: upkeep sends nothing again.
    assert wiring.service.upkeep()["republished"] == 0


def test_split_votes_get_a_third_then_a_lead_decides(wiring: Wiring, publisher: RecordingPublisher) -> None:
    wiring.service.intake(make_request("split"))
    _lease_and_answer(wiring, "ann-1", "harsh-braking")
    _lease_and_answer(wiring, "ann-2", "normal")
    assert wiring.store.task("split").status is TaskStatus.OPEN  # type: ignore[union-attr]
    _lease_and_answer(wiring, "ann-3", "confounder")
    assert wiring.store.task("split").status is TaskStatus.ADJUDICATION  # type: ignore[union-attr]
    assert wiring.service.lease(principal("ann-4"), "uncertain") is None
    [disputed] = wiring.service.disputed(LEAD)
    assert [vote.annotator for vote in disputed.votes] == ["ann-1", "ann-2", "ann-3"]
    with pytest.raises(Refused) as refused:
        wiring.service.adjudicate(principal("ann-1"), "split", "normal")
    assert refused.value.status == 403
    label = wiring.service.adjudicate(LEAD, "split", "harsh-braking", "clear dip in x")
    assert label.source == labels_pb2.LABEL_SOURCE_ADJUDICATION and label.adjudicator == "lead-1"
    assert list(label.request_reasons) == [labels_pb2.LABEL_REASON_UNCERTAIN]
    assert label.event_type == BRAKING and label.agreement == pytest.approx(1 / 3)
    assert publisher.labels == [label]
    with pytest.raises(Refused) as again:
        wiring.service.adjudicate(LEAD, "split", "normal")
    assert again.value.reason == "not-disputed"
    assert [row.action for row in wiring.store.audit_trail(task_id="split")][-1] == "adjudicated"


def test_gold_accuracy_weights_votes_and_feeds_more_gold_to_weak_annotators(
    tmp_path: Path, redis_url: str, clock: ManualClock
) -> None:
    publisher = RecordingPublisher()
    preference = {"gold": True}
    wiring = wire(
        settings_for(tmp_path, redis_url),
        publisher=publisher,
        clock=clock,
        chance=lambda: 0.0 if preference["gold"] else 1.0,
    )
    try:
        service = wiring.service
        for index in range(10):
            service.intake(
                make_request(
                    f"gold-{index}", reason=labels_pb2.LABEL_REASON_GOLD, known_answer=BRAKING, suggested=BRAKING
                )
            )
        service.intake(make_request("real-work"))  # gold is only served while real work waits
        answers = {"good": "harsh-braking", "weak-1": "normal", "weak-2": "confounder"}
        for name, answer in answers.items():
            for _ in range(10):
                view = service.lease(principal(name), "uncertain")
                assert view is not None and view.task_id.startswith("gold-")
                # Nothing in what the annotator sees or gets back tells a gold task apart.
                assert view.queue == "uncertain" and view.suggestion == "harsh-braking"
                assert service.submit(principal(name), view.task_id, view.lease_id, answer).recorded_as == "counted"
        qualities = {name: service.quality(name) for name in answers}
        assert qualities["good"].accuracy == 1.0 and not qualities["good"].below_threshold
        assert qualities["weak-1"].accuracy == 0.0 and qualities["weak-1"].below_threshold
        assert qualities["weak-1"].gold_rate > qualities["good"].gold_rate
        assert qualities["weak-1"].weight < qualities["good"].weight / 5
        assert service.my_stats(principal("weak-1")).gold_accuracy == 0.0
        # Gold answers never become labels.
        assert publisher.labels == []

        preference["gold"] = False
        # The two weak annotators agree, but together weigh too little: a third vote is asked for,
        # and the strong annotator's answer wins although it is outnumbered.
        _lease_and_answer(wiring, "weak-1", "normal")
        _lease_and_answer(wiring, "weak-2", "normal")
        assert wiring.store.task("real-work").status is TaskStatus.OPEN  # type: ignore[union-attr]
        _lease_and_answer(wiring, "good", "harsh-braking")
        [label] = publisher.labels
        assert label.event_type == BRAKING and label.gold_checked
        assert label.min_gold_accuracy == 0.0
        weights = {vote.annotator: vote.weight for vote in label.votes}
        assert weights["good"] > weights["weak-1"] + weights["weak-2"]
        assert label.agreement == pytest.approx(weights["good"] / sum(weights.values()), rel=1e-5)
        # A lead sees who is below the threshold; an annotator may not look.
        for name in answers:
            wiring.accounts.add(name, Role.ANNOTATOR, actor="test")
        stats = {item.annotator: item for item in service.annotator_stats(LEAD)}
        assert stats["weak-2"].below_threshold and not stats["good"].below_threshold
        assert stats["good"].consensus_agreement == 1.0 and stats["weak-1"].consensus_agreement == 0.0
        with pytest.raises(Refused):
            service.annotator_stats(principal("weak-1"))
    finally:
        wiring.close()


def test_a_lead_makes_a_labeled_task_gold(tmp_path: Path, redis_url: str) -> None:
    wiring = wire(settings_for(tmp_path, redis_url), chance=lambda: 0.0)  # always prefer gold when offered
    try:
        service = wiring.service
        service.intake(make_request("settled"))
        _lease_and_answer(wiring, "ann-1", "harsh-braking")
        _lease_and_answer(wiring, "ann-2", "harsh-braking")
        with pytest.raises(Refused) as forbidden:
            service.make_gold(principal("ann-1"), "settled", None)
        assert forbidden.value.status == 403
        service.make_gold(LEAD, "settled", None)  # the known answer is its label
        assert service.gold_pool_size() == 1
        service.intake(make_request("waiting-1", priority=60))
        service.intake(make_request("waiting-2"))
        # Its voters are never served it again; a newcomer gets it instead of real work, and is measured.
        first = service.lease(principal("ann-1"), "uncertain")
        assert first is not None and first.task_id == "waiting-1"
        view = service.lease(principal("ann-3"), "uncertain")
        assert view is not None and view.task_id == "settled"
        service.submit(principal("ann-3"), "settled", view.lease_id, "normal")
        assert wiring.store.gold_results("ann-3", 10) == [False]
        assert service.gold_pool_size() == 1  # back in the pool for others
    finally:
        wiring.close()


def test_skips_return_the_task_to_others_and_too_many_go_to_a_lead(tmp_path: Path, redis_url: str) -> None:
    wiring = wire(settings_for(tmp_path, redis_url, annotation_max_skips=2))
    try:
        service = wiring.service
        service.intake(make_request("hard"))
        view = service.lease(principal("ann-1"), "uncertain")
        assert view is not None
        with pytest.raises(Refused) as empty:
            service.skip(principal("ann-1"), "hard", view.lease_id, "  ")
        assert empty.value.status == 422
        assert service.skip(principal("ann-1"), "hard", view.lease_id, "cannot tell") == "skipped"
        assert service.skip(principal("ann-1"), "hard", view.lease_id, "cannot tell") == "duplicate"
        assert service.lease(principal("ann-1"), "uncertain") is None
        second = service.lease(principal("ann-2"), "uncertain")
        assert second is not None and second.task_id == "hard"
        service.skip(principal("ann-2"), "hard", second.lease_id, "data missing")
        assert wiring.store.task("hard").status is TaskStatus.ADJUDICATION  # type: ignore[union-attr]
        [disputed] = service.disputed(LEAD)
        assert disputed.skips == [("ann-1", "cannot tell"), ("ann-2", "data missing")]
    finally:
        wiring.close()


def test_rebuild_restores_the_live_queues_from_sql(wiring: Wiring) -> None:
    service = wiring.service
    for window_id, priority in (("labeled", 90), ("voted", 50), ("fresh", 10)):
        service.intake(make_request(window_id, priority=priority))
    service.intake(make_request("gold-1", reason=labels_pb2.LABEL_REASON_GOLD, known_answer=NORMAL))
    _lease_and_answer(wiring, "ann-1", "normal")
    _lease_and_answer(wiring, "ann-2", "normal")
    assert wiring.store.task("labeled").status is TaskStatus.LABELED  # type: ignore[union-attr]
    _lease_and_answer(wiring, "ann-1", "normal")  # "voted" has ann-1's vote and needs another
    held = service.lease(principal("ann-3"), "uncertain")
    assert held is not None and held.task_id == "voted"
    assert wiring.queues.waiting(["uncertain"]) == {"uncertain": 1}

    wiring.redis.flushdb()  # Redis loses everything
    assert service.lease(principal("ann-4"), "uncertain") is None
    assert service.upkeep()["rebuilt"] == 3  # two open tasks and the gold task; the labeled one is gone
    assert service.gold_pool_size() == 1
    # The lease in flight was dropped: its task waits again.
    assert wiring.queues.waiting(["uncertain"]) == {"uncertain": 2}
    # Who answered what survives: ann-1 is not served "voted" again, ann-2 is.
    first = service.lease(principal("ann-1"), "uncertain")
    assert first is not None and first.task_id == "fresh"
    second = service.lease(principal("ann-2"), "uncertain")
    assert second is not None and second.task_id == "voted"
    rebuilt = [row for row in wiring.store.audit_trail(actor="upkeep") if row.action == "queues-rebuilt"]
    assert rebuilt and rebuilt[-1].detail == {"tasks": 3}


def test_unacknowledged_labels_are_sent_again_with_the_same_id(
    wiring: Wiring, publisher: RecordingPublisher, clock: ManualClock
) -> None:
    wiring.service.intake(make_request("outbox"))
    publisher.failing = True
    _lease_and_answer(wiring, "ann-1", "normal")
    assert _lease_and_answer(wiring, "ann-2", "normal") == "counted"
    assert publisher.labels == [] and wiring.store.task("outbox").status is TaskStatus.LABELED  # type: ignore[union-attr]
    publisher.failing = False
    assert wiring.service.upkeep()["republished"] == 0  # too young: its own request may still send it
    clock.advance(10)
    assert wiring.service.upkeep()["republished"] == 1
    assert wiring.service.upkeep()["republished"] == 0
    [label] = publisher.labels
    assert label.event_id == wiring.store.label_of("outbox").event_id  # type: ignore[union-attr]
    assert list(label.request_reasons) == [labels_pb2.LABEL_REASON_UNCERTAIN]


def test_a_label_stored_before_labels_carried_reasons_is_sent_again_with_them(
    wiring: Wiring, publisher: RecordingPublisher, clock: ManualClock
) -> None:
    wiring.service.intake(make_request("legacy", reason=labels_pb2.LABEL_REASON_SHADOW_DISAGREEMENT))
    wiring.service.intake(make_request("legacy", reason=labels_pb2.LABEL_REASON_RANDOM_QA))
    publisher.failing = True
    _lease_and_answer(wiring, "ann-1", "normal", queue="shadow-disagreement")
    assert _lease_and_answer(wiring, "ann-2", "normal", queue="shadow-disagreement") == "counted"
    # As an older version stored it: no request_reasons.
    with Session(wiring.store.engine) as session:
        row = session.exec(select(LabelRow).where(LabelRow.task_id == "legacy")).one()
        stored = labels_pb2.Label.FromString(row.payload)
        assert list(stored.request_reasons) == [
            labels_pb2.LABEL_REASON_SHADOW_DISAGREEMENT,
            labels_pb2.LABEL_REASON_RANDOM_QA,
        ]
        stored.ClearField("request_reasons")
        row.payload = stored.SerializeToString()
        session.add(row)
        session.commit()
    clock.advance(10)
    # A request after the decision is not why the label was made.
    wiring.service.intake(make_request("legacy", reason=labels_pb2.LABEL_REASON_DRIFT_SAMPLE))
    publisher.failing = False
    assert wiring.service.upkeep()["republished"] == 1
    [label] = publisher.labels
    assert list(label.request_reasons) == [
        labels_pb2.LABEL_REASON_SHADOW_DISAGREEMENT,
        labels_pb2.LABEL_REASON_RANDOM_QA,
    ]
    assert label.event_id == stored.event_id


class FlakyStore(AnnotationStore):
    """Fails the next vote once, as a database that dropped the connection would."""

    fail_next = False

    def record_vote(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail_next:
            self.fail_next = False
            raise OperationalError("INSERT", {}, Exception("connection lost"))
        return super().record_vote(*args, **kwargs)


def test_a_failed_database_write_gives_the_lease_back(tmp_path: Path, redis_url: str, clock: ManualClock) -> None:
    settings = settings_for(tmp_path, redis_url)
    store = FlakyStore.from_url(settings.resolved_database_url())
    store.create_tables()
    wiring = build_wiring(
        settings,
        publisher=RecordingPublisher(),
        store=store,
        clock=clock,
        chance=lambda: 1.0,
        password_work=TEST_PASSWORD_WORK,
    )
    wiring.service.rebuild("startup")
    try:
        wiring.service.intake(make_request("flaky"))
        view = wiring.service.lease(principal("ann-1"), "uncertain")
        assert view is not None
        store.fail_next = True  # type: ignore[attr-defined]
        with pytest.raises(OperationalError):
            wiring.service.submit(principal("ann-1"), "flaky", view.lease_id, "normal")
        assert wiring.queues.holder("flaky") == "ann-1"
        assert wiring.service.submit(principal("ann-1"), "flaky", view.lease_id, "normal").recorded_as == "counted"
        # The same answer sent again (a client retry) is recognised.
        assert wiring.service.submit(principal("ann-1"), "flaky", view.lease_id, "normal").recorded_as == "duplicate"
    finally:
        wiring.close()
        store.close()


def test_an_answer_abandoned_by_a_crash_is_repaired_from_sql(wiring: Wiring, clock: ManualClock) -> None:
    wiring.service.intake(make_request("crash"))
    view = wiring.service.lease(principal("ann-1"), "uncertain")
    assert view is not None
    # The process took the task off its lease, then died before writing SQL.
    assert wiring.queues.take("crash", view.lease_id, "ann-1", now_s=clock(), allow_late=True) == "current"
    assert wiring.service.lease(principal("ann-2"), "uncertain") is None
    clock.advance(61)
    assert wiring.service.upkeep()["repaired"] == 1
    again = wiring.service.lease(principal("ann-2"), "uncertain")
    assert again is not None and again.task_id == "crash"


def test_fifty_annotators_never_share_a_task_and_every_task_reaches_consensus(tmp_path: Path, redis_url: str) -> None:
    publisher = RecordingPublisher()
    wiring = wire(settings_for(tmp_path, redis_url), publisher=publisher)
    tasks = 120
    truth = {f"window-{index:03d}": BRAKING if index % 3 else NORMAL for index in range(tasks)}
    wrong = {BRAKING: common_pb2.EVENT_TYPE_CONFOUNDER, NORMAL: common_pb2.EVENT_TYPE_CONFOUNDER}
    for index, window_id in enumerate(truth):
        wiring.service.intake(make_request(window_id, priority=index % 7))
    holders: dict[str, str] = {}
    lock = threading.Lock()
    double_leases: list[tuple[str, str, str]] = []
    answered: Counter[str] = Counter()
    errors: list[BaseException] = []

    def annotator(number: int) -> None:
        name = f"annotator-{number:02d}"
        who = principal(name)
        chooser = random.Random(number)
        try:
            # Until every window is labeled: a task may come back needing a third vote at any time.
            while len(publisher.labels) < tasks and time.monotonic() < deadline:
                view = wiring.service.lease(who, "uncertain")
                if view is None:
                    time.sleep(0.02)
                    continue
                with lock:
                    if view.task_id in holders:
                        double_leases.append((view.task_id, holders[view.task_id], name))
                    holders[view.task_id] = name
                correct = truth[view.task_id]
                # One answer in ten is wrong, always the same way: a split never has three sides.
                event_type = correct if chooser.random() > 0.1 else wrong[correct]
                # The holder is forgotten only once its answer is in: a lease given to someone else
                # while this one still holds the task is a double lease. Registering happens after the
                # lease is granted, so submitting under the lock keeps a lease granted just after this
                # answer from being mistaken for one.
                with lock:
                    wiring.service.submit(who, view.task_id, view.lease_id, ANSWER[event_type])
                    if holders.get(view.task_id) == name:
                        del holders[view.task_id]
                    answered[view.task_id] += 1
        except BaseException as error:  # surfaced below
            errors.append(error)

    deadline = time.monotonic() + 120
    threads = [threading.Thread(target=annotator, args=(number,)) for number in range(50)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors[:3]
        assert double_leases == []
        labels = publisher.by_window()
        assert set(labels) == set(truth), "every task reaches consensus and is published"
        assert all(len(items) == 1 for items in labels.values()), "exactly one label per window"
        statuses = Counter(wiring.store.task(window_id).status for window_id in truth)  # type: ignore[union-attr]
        assert statuses == {TaskStatus.LABELED: tasks}
        assert all(2 <= answered[window_id] <= 3 for window_id in truth)
        correct_labels = sum(1 for window_id, [label] in labels.items() if label.event_type == truth[window_id])
        assert correct_labels >= tasks * 0.95
        # Nothing is left in the live queues: nothing leased, nothing half-processed, nothing lost.
        assert wiring.queues.waiting(["uncertain"]) == {"uncertain": 0}
        assert wiring.queues.leased_count() == 0
        assert wiring.redis.zcard(wiring.queues.processing_key) == 0
    finally:
        wiring.close()
