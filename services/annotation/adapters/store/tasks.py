"""`TaskStore`: tasks, one per window: label requests recorded into them, and what Redis should hold for them.

`locked_task`, `live_form` and `task_record` are used by the other stores inside their own
transactions (a decision about a task locks its row first).

A new task keeps the traceparent of the span it is made in (the request's consumer span, in the trace of
the upload the window came from); `traceparents` hands it to the label's publish span, which links to it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from michi.bus.headers import current_traceparent
from michi.contracts.v1 import labels_pb2
from services.annotation.adapters.store.database import SqlStore, utc
from services.annotation.adapters.tables import AuditRow, RequestRow, SkipRow, TaskRow, VoteRow
from services.annotation.domain.tasks import GOLD_POOL, LiveTask, TaskStatus, queue_for, queue_score


class UnknownTask(LookupError):
    pass


@dataclass(frozen=True)
class IntakeResult:
    new_request: bool
    new_task: bool
    status: TaskStatus
    # What Redis must hold for the task; None when it is no longer served (labeled or disputed).
    live: LiveTask | None


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    queue: str
    status: TaskStatus
    priority: int
    request: labels_pb2.LabelRequest
    created_at: datetime
    skip_count: int


class TaskStore(SqlStore):
    def record_request(
        self, request: labels_pb2.LabelRequest, *, now: datetime, location: tuple[float, float] | None = None
    ) -> IntakeResult:
        """Record a LabelRequest: a new task, or merged into the window's task. Redelivery changes nothing."""
        for attempt in range(3):
            try:
                return self._record_request(request, now, location)
            except IntegrityError:
                # A concurrent writer created the same request or task first: read what it wrote.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _record_request(
        self, request: labels_pb2.LabelRequest, now: datetime, location: tuple[float, float] | None
    ) -> IntakeResult:
        task_id = request.lineage.window_id
        gold = request.reason == labels_pb2.LABEL_REASON_GOLD
        with self._writing() as session:
            if session.get(RequestRow, request.event_id) is not None:
                task = session.get(TaskRow, task_id)
                if task is None:  # recorded under another window id: nothing to serve
                    return IntakeResult(False, False, TaskStatus.LABELED, None)
                return IntakeResult(False, False, TaskStatus(task.status), live_form(session, task))
            session.add(
                RequestRow(
                    event_id=request.event_id,
                    task_id=task_id,
                    reason=int(request.reason),
                    priority=int(request.priority),
                    received_at=now,
                )
            )
            task = locked_task(session, task_id)
            new_task = task is None
            if task is None:
                task = TaskRow(
                    task_id=task_id,
                    # A gold window still belongs to a queue (the one its suggestion would have put it in).
                    queue="general" if gold else queue_for(request.reason),
                    status=(TaskStatus.GOLD if gold else TaskStatus.OPEN).value,
                    priority=int(request.priority),
                    request=request.SerializeToString(),
                    known_answer=int(request.known_answer) if gold else 0,
                    latitude=location[0] if location else None,
                    longitude=location[1] if location else None,
                    created_at=now,
                    updated_at=now,
                    # Recorded inside the request's consumer span: the trace of the upload the window came from.
                    traceparent=current_traceparent() or None,
                )
                action = "task-created"
            else:
                task.requests += 1
                task.priority = max(task.priority, int(request.priority))
                if gold:
                    task.known_answer = int(request.known_answer)
                    task.status = TaskStatus.GOLD.value
                if task.latitude is None and location is not None:
                    task.latitude, task.longitude = location
                task.updated_at = now
                action = "request-merged"
            session.add(task)
            session.add(
                AuditRow(
                    at=now,
                    actor="label-requests",
                    action=action,
                    task_id=task_id,
                    detail={
                        "event_id": request.event_id,
                        "reason": int(request.reason),
                        "priority": int(request.priority),
                    },
                )
            )
            session.flush()
            live = live_form(session, task, excluded=not new_task)
            status = TaskStatus(task.status)
            session.commit()
        return IntakeResult(True, new_task, status, live)

    def live_tasks(self, batch: int = 1000) -> Iterator[LiveTask]:
        """Every task the live queues should hold (open and gold), for rebuilding Redis."""
        last = ""
        while True:
            with Session(self.engine) as session:
                rows = session.exec(
                    select(TaskRow)
                    .where(
                        col(TaskRow.status).in_([TaskStatus.OPEN.value, TaskStatus.GOLD.value]), TaskRow.task_id > last
                    )
                    .order_by(col(TaskRow.task_id))
                    .limit(batch)
                ).all()
                if not rows:
                    return
                voters: defaultdict[str, set[str]] = defaultdict(set)
                ids = [row.task_id for row in rows]
                for task_id, annotator in session.exec(
                    select(VoteRow.task_id, VoteRow.annotator).where(col(VoteRow.task_id).in_(ids))
                ):
                    voters[task_id].add(annotator)
                for task_id, annotator in session.exec(
                    select(SkipRow.task_id, SkipRow.annotator).where(col(SkipRow.task_id).in_(ids))
                ):
                    voters[task_id].add(annotator)
                for row in rows:
                    gold = row.status == TaskStatus.GOLD.value
                    yield LiveTask(
                        row.task_id,
                        row.queue,
                        GOLD_POOL if gold else row.queue,
                        queue_score(row.priority, utc(row.created_at).timestamp()),
                        frozenset(voters[row.task_id]),
                    )
                last = rows[-1].task_id

    def live_task(self, task_id: str) -> tuple[TaskStatus, LiveTask | None] | None:
        """The task's status and what Redis should hold for it (None: no such task)."""
        with Session(self.engine) as session:
            task = session.get(TaskRow, task_id)
            if task is None:
                return None
            return TaskStatus(task.status), live_form(session, task)

    def task(self, task_id: str) -> TaskRecord | None:
        with Session(self.engine) as session:
            row = session.get(TaskRow, task_id)
            return None if row is None else task_record(row)

    def traceparents(self, task_ids: Sequence[str]) -> dict[str, str]:
        """The traceparent each of these tasks was made in (tasks without one are left out)."""
        if not task_ids:
            return {}
        with Session(self.engine) as session:
            rows = session.exec(
                select(TaskRow.task_id, TaskRow.traceparent).where(col(TaskRow.task_id).in_(list(task_ids)))
            ).all()
        return {task_id: traceparent for task_id, traceparent in rows if traceparent}

    def queues(self) -> list[str]:
        with Session(self.engine) as session:
            return sorted(set(session.exec(select(TaskRow.queue).distinct()).all()))


def locked_task(session: Session, task_id: str) -> TaskRow | None:
    return session.exec(select(TaskRow).where(TaskRow.task_id == task_id).with_for_update()).first()


def live_form(session: Session, task: TaskRow, *, excluded: bool = True) -> LiveTask | None:
    """What Redis should hold for `task` (None when it is not served).

    `excluded=False` leaves out who answered or skipped (the caller's answer adds its one name in Redis).
    """
    status = TaskStatus(task.status)
    if status not in (TaskStatus.OPEN, TaskStatus.GOLD):
        return None
    voters: Sequence[str] = ()
    skippers: Sequence[str] = ()
    if excluded:
        voters = session.exec(select(VoteRow.annotator).where(VoteRow.task_id == task.task_id)).all()
        skippers = session.exec(select(SkipRow.annotator).where(SkipRow.task_id == task.task_id)).all()
    return LiveTask(
        task_id=task.task_id,
        queue=task.queue,
        pool=GOLD_POOL if status is TaskStatus.GOLD else task.queue,
        score=queue_score(task.priority, utc(task.created_at).timestamp()),
        excluded=frozenset(voters) | frozenset(skippers),
    )


def task_record(row: TaskRow) -> TaskRecord:
    return TaskRecord(
        task_id=row.task_id,
        queue=row.queue,
        status=TaskStatus(row.status),
        priority=row.priority,
        request=labels_pb2.LabelRequest.FromString(row.request),
        created_at=utc(row.created_at),
        skip_count=row.skip_count,
    )
