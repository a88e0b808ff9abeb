"""`AnnotationStore`: the durable record in SQL (SQLite by default, PostgreSQL in production).

Only portable SQLModel/SQLAlchemy; the URL is the only difference. Decisions about one task
(votes, skips, adjudication, gold) run in one transaction that first locks the task's row
(`SELECT ... FOR UPDATE` on PostgreSQL; on SQLite this process serialises its writes, and WAL
mode with a busy timeout covers other processes), so two answers to one task never decide it twice.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, func, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, create_engine, select

from michi.contracts.v1 import labels_pb2
from services.annotation.adapters.tables import (
    TABLES,
    AnnotatorRow,
    AuditRow,
    LabelRow,
    RequestRow,
    SessionRow,
    SkipRow,
    TaskRow,
    VoteRow,
)
from services.annotation.domain.consensus import ConsensusPolicy, Outcome, WeightedVote, decide, weighted_share
from services.annotation.domain.publication import CountedVote, build_label
from services.annotation.domain.quality import Quality, QualityPolicy, assess
from services.annotation.domain.roles import Role
from services.annotation.domain.tasks import GOLD_POOL, LiveTask, TaskStatus, queue_for, queue_score

logger = logging.getLogger(__name__)


class UnknownTask(LookupError):
    pass


class AnnotatorExists(ValueError):
    pass


class UnknownAnnotator(LookupError):
    pass


class NotDisputed(ValueError):
    """Adjudication asked for a task that is not waiting for it."""


class NotGoldable(ValueError):
    """A task cannot become gold without an answer to use as the known answer."""


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were written in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class AnnotatorRecord:
    name: str
    role: Role
    password_hash: str
    created_at: datetime
    disabled: bool


@dataclass(frozen=True)
class SessionRecord:
    annotator: str
    role: Role
    expires_at: datetime


@dataclass(frozen=True)
class IntakeResult:
    new_request: bool
    new_task: bool
    status: TaskStatus
    # What Redis must hold for the task; None when it is no longer served (labeled or disputed).
    live: LiveTask | None


class VoteOutcome:
    REQUEUE = "requeue"  # back to its queue or the gold pool for more answers
    DONE = "done"  # labeled: leaves the live queues
    ADJUDICATE = "adjudicate"  # to a lead: leaves the live queues
    EXTRA = "extra"  # an extra vote on a task someone else holds or that is decided: nothing to move


@dataclass(frozen=True)
class VoteResult:
    outcome: str
    counted: bool
    duplicate: bool
    gold_result: bool | None
    live: LiveTask | None
    label: labels_pb2.Label | None


@dataclass(frozen=True)
class SkipResult:
    outcome: str
    duplicate: bool
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


@dataclass(frozen=True)
class VoteRecord:
    annotator: str
    event_type: int
    counted: bool
    late: bool
    created_at: datetime


@dataclass(frozen=True)
class DisputedTask:
    task: TaskRecord
    votes: list[VoteRecord]
    skips: list[tuple[str, str]]


@dataclass(frozen=True)
class WorkCounts:
    votes_total: int
    votes_last_hour: int
    votes_last_day: int
    skips_total: int
    last_vote_at: datetime | None


@dataclass(frozen=True)
class QueueCounts:
    queue: str
    open: int
    adjudication: int
    labeled_last_hour: int
    votes_last_hour: int
    oldest_open_at: datetime | None


class AnnotationStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        # SQLite takes one writer at a time: this process queues its own writers instead of failing.
        self._write_lock: threading.Lock | None = threading.Lock() if self.sqlite else None

    @classmethod
    def from_url(cls, database_url: str) -> AnnotationStore:
        url = make_url(database_url)
        arguments: dict[str, Any] = {"pool_pre_ping": True}
        if url.drivername.startswith("sqlite"):
            arguments["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            arguments.update(pool_size=10, max_overflow=20)
        engine = create_engine(database_url, **arguments)
        if url.drivername.startswith("sqlite"):

            @event.listens_for(engine, "connect")
            def _pragmas(connection: Any, _record: Any) -> None:
                cursor = connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

        return cls(engine)

    def create_tables(self) -> None:
        # Only this service's tables: other services' SQLModel tables are theirs to create.
        SQLModel.metadata.create_all(self.engine, tables=[table.__table__ for table in TABLES])  # type: ignore[attr-defined,union-attr]

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Session]:
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
        finally:
            if lock is not None:
                lock.release()

    def _locked_task(self, session: Session, task_id: str) -> TaskRow | None:
        return session.exec(select(TaskRow).where(TaskRow.task_id == task_id).with_for_update()).first()

    # ------------------------------------------------------------------ accounts and sessions

    def add_annotator(self, name: str, role: Role, password_hash: str, *, actor: str, now: datetime) -> None:
        with self._writing() as session:
            if session.get(AnnotatorRow, name) is not None:
                raise AnnotatorExists(f"annotator {name} exists")
            session.add(
                AnnotatorRow(name=name, role=role.value, password_hash=password_hash, created_at=now, created_by=actor)
            )
            session.add(
                AuditRow(at=now, actor=actor, action="annotator-added", detail={"name": name, "role": role.value})
            )
            try:
                session.commit()
            except IntegrityError as error:
                raise AnnotatorExists(f"annotator {name} exists") from error

    def set_password(self, name: str, password_hash: str, *, actor: str, now: datetime) -> None:
        """New password; every session of the account ends."""
        with self._writing() as session:
            row = session.get(AnnotatorRow, name)
            if row is None:
                raise UnknownAnnotator(name)
            row.password_hash = password_hash
            session.add(row)
            self._revoke_all(session, name, now)
            session.add(AuditRow(at=now, actor=actor, action="password-reset", detail={"name": name}))
            session.commit()

    def set_disabled(self, name: str, disabled: bool, *, actor: str, now: datetime) -> None:
        with self._writing() as session:
            row = session.get(AnnotatorRow, name)
            if row is None:
                raise UnknownAnnotator(name)
            row.disabled_at = now if disabled else None
            session.add(row)
            if disabled:
                self._revoke_all(session, name, now)
            action = "annotator-disabled" if disabled else "annotator-enabled"
            session.add(AuditRow(at=now, actor=actor, action=action, detail={"name": name}))
            session.commit()

    @staticmethod
    def _revoke_all(session: Session, name: str, now: datetime) -> None:
        for row in session.exec(
            select(SessionRow).where(SessionRow.annotator == name, col(SessionRow.revoked_at).is_(None))
        ):
            row.revoked_at = now
            session.add(row)

    def annotator(self, name: str) -> AnnotatorRecord | None:
        with Session(self.engine) as session:
            row = session.get(AnnotatorRow, name)
            return None if row is None else self._annotator_record(row)

    def annotators(self) -> list[AnnotatorRecord]:
        with Session(self.engine) as session:
            return [
                self._annotator_record(row)
                for row in session.exec(select(AnnotatorRow).order_by(col(AnnotatorRow.name)))
            ]

    @staticmethod
    def _annotator_record(row: AnnotatorRow) -> AnnotatorRecord:
        return AnnotatorRecord(
            row.name, Role(row.role), row.password_hash, _utc(row.created_at), row.disabled_at is not None
        )

    def create_session(self, name: str, token_hash: str, *, now: datetime, expires_at: datetime) -> None:
        with self._writing() as session:
            session.add(SessionRow(token_hash=token_hash, annotator=name, created_at=now, expires_at=expires_at))
            session.add(AuditRow(at=now, actor=name, action="signed-in", detail={"expires_at": expires_at.isoformat()}))
            session.commit()

    def session(self, token_hash: str, now: datetime) -> SessionRecord | None:
        """The live session behind a token hash (None: unknown, expired, revoked, or account disabled)."""
        with Session(self.engine) as session:
            found = session.exec(
                select(SessionRow, AnnotatorRow)
                .join(AnnotatorRow, col(AnnotatorRow.name) == col(SessionRow.annotator))
                .where(SessionRow.token_hash == token_hash)
            ).first()
        if found is None:
            return None
        row, annotator = found
        expires_at = _utc(row.expires_at)
        if row.revoked_at is not None or expires_at <= now or annotator.disabled_at is not None:
            return None
        return SessionRecord(annotator.name, Role(annotator.role), expires_at)

    def revoke_session(self, token_hash: str, now: datetime) -> None:
        with self._writing() as session:
            row = session.get(SessionRow, token_hash)
            if row is not None and row.revoked_at is None:
                row.revoked_at = now
                session.add(row)
                session.add(AuditRow(at=now, actor=row.annotator, action="signed-out", detail={}))
                session.commit()

    def audit(self, actor: str, action: str, *, now: datetime, task_id: str | None = None, **detail: Any) -> None:
        with self._writing() as session:
            session.add(AuditRow(at=now, actor=actor, action=action, task_id=task_id, detail=detail))
            session.commit()

    def audit_trail(self, *, task_id: str | None = None, actor: str | None = None, limit: int = 200) -> list[AuditRow]:
        with Session(self.engine) as session:
            query = select(AuditRow)
            if task_id is not None:
                query = query.where(AuditRow.task_id == task_id)
            if actor is not None:
                query = query.where(AuditRow.actor == actor)
            return list(session.exec(query.order_by(col(AuditRow.id)).limit(limit)))

    # ------------------------------------------------------------------ intake

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
                return IntakeResult(False, False, TaskStatus(task.status), self._live(session, task))
            session.add(
                RequestRow(
                    event_id=request.event_id,
                    task_id=task_id,
                    reason=int(request.reason),
                    priority=int(request.priority),
                    received_at=now,
                )
            )
            task = self._locked_task(session, task_id)
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
            live = self._live(session, task, excluded=not new_task)
            status = TaskStatus(task.status)
            session.commit()
        return IntakeResult(True, new_task, status, live)

    def _live(self, session: Session, task: TaskRow, *, excluded: bool = True) -> LiveTask | None:
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
            score=queue_score(task.priority, _utc(task.created_at).timestamp()),
            excluded=frozenset(voters) | frozenset(skippers),
        )

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
                        queue_score(row.priority, _utc(row.created_at).timestamp()),
                        frozenset(voters[row.task_id]),
                    )
                last = rows[-1].task_id

    def live_task(self, task_id: str) -> tuple[TaskStatus, LiveTask | None] | None:
        """The task's status and what Redis should hold for it (None: no such task)."""
        with Session(self.engine) as session:
            task = session.get(TaskRow, task_id)
            if task is None:
                return None
            return TaskStatus(task.status), self._live(session, task)

    # ------------------------------------------------------------------ quality

    def gold_results(self, annotator: str, window: int) -> list[bool]:
        with Session(self.engine) as session:
            return self._gold_results(session, annotator, window)

    @staticmethod
    def _gold_results(session: Session, annotator: str, window: int) -> list[bool]:
        rows = session.exec(
            select(VoteRow.correct)
            .where(VoteRow.annotator == annotator, VoteRow.gold == True)  # noqa: E712
            .order_by(col(VoteRow.created_at).desc(), col(VoteRow.id).desc())
            .limit(window)
        ).all()
        return [bool(value) for value in rows]

    # ------------------------------------------------------------------ votes, skips, decisions

    def record_vote(
        self,
        task_id: str,
        annotator: str,
        event_type: int,
        *,
        lease_id: str,
        counted: bool,
        late: bool,
        now: datetime,
        consensus: ConsensusPolicy,
        quality: QualityPolicy,
    ) -> VoteResult:
        """Record an answer and decide what the task needs next, in one transaction."""
        with self._writing() as session:
            task = self._locked_task(session, task_id)
            if task is None:
                raise UnknownTask(task_id)
            if session.exec(
                select(VoteRow.id).where(VoteRow.task_id == task_id, VoteRow.annotator == annotator)
            ).first():
                return VoteResult(VoteOutcome.EXTRA, False, True, None, self._live(session, task), None)
            status = TaskStatus(task.status)
            gold = status is TaskStatus.GOLD
            counts = counted and status is TaskStatus.OPEN
            correct = (event_type == task.known_answer) if gold else None
            session.add(
                VoteRow(
                    task_id=task_id,
                    annotator=annotator,
                    event_type=event_type,
                    counted=counts,
                    late=late,
                    gold=gold,
                    correct=correct,
                    lease_id=lease_id,
                    created_at=now,
                )
            )
            session.flush()
            outcome = VoteOutcome.REQUEUE if (gold or counts) else VoteOutcome.EXTRA
            label: labels_pb2.Label | None = None
            detail: dict[str, Any] = {"event_type": event_type, "counted": counts, "late": late, "lease_id": lease_id}
            if counts:
                # Weights are read only once enough votes are in to decide anything.
                votes = self._counted_votes(session, task_id, quality, consensus.votes_required)
                decision = decide(
                    [WeightedVote(vote.annotator, vote.event_type, vote.weight) for vote in votes], consensus
                )
                detail["decision"] = decision.outcome.value
                if decision.outcome is Outcome.CONSENSUS and decision.event_type is not None:
                    label = self._resolve(
                        session,
                        task,
                        decision.event_type,
                        labels_pb2.LABEL_SOURCE_CONSENSUS,
                        votes,
                        decision.agreement,
                        now,
                    )
                    outcome = VoteOutcome.DONE
                elif decision.outcome is Outcome.ADJUDICATE:
                    task.status = TaskStatus.ADJUDICATION.value
                    task.agreement = decision.agreement
                    task.updated_at = now
                    session.add(task)
                    outcome = VoteOutcome.ADJUDICATE
            session.add(AuditRow(at=now, actor=annotator, action="voted", task_id=task_id, detail=detail))
            live = self._live(session, task, excluded=False)
            session.commit()
        return VoteResult(outcome, counts, False, correct, live, label)

    def _counted_votes(
        self, session: Session, task_id: str, quality: QualityPolicy, weigh_from: int = 0
    ) -> list[CountedVote]:
        """The task's counted votes with their annotators' quality (the prior alone below `weigh_from` votes)."""
        rows = session.exec(
            select(VoteRow).where(VoteRow.task_id == task_id, VoteRow.counted == True).order_by(col(VoteRow.id))  # noqa: E712
        ).all()
        weigh = len(rows) >= weigh_from
        qualities: dict[str, Quality] = {}
        for row in rows:
            if row.annotator not in qualities:
                results = self._gold_results(session, row.annotator, quality.window) if weigh else []
                qualities[row.annotator] = assess(results, quality)
        return [
            CountedVote(
                row.annotator,
                row.event_type,
                qualities[row.annotator].weight,
                qualities[row.annotator],
                _utc(row.created_at),
            )
            for row in rows
        ]

    def _resolve(
        self,
        session: Session,
        task: TaskRow,
        event_type: int,
        source: int,
        votes: Sequence[CountedVote],
        agreement: float,
        now: datetime,
        adjudicator: str = "",
    ) -> labels_pb2.Label:
        request = labels_pb2.LabelRequest.FromString(task.request)
        location = (task.latitude, task.longitude) if task.latitude is not None and task.longitude is not None else None
        label = build_label(
            request,
            event_type=event_type,
            source=source,
            votes=votes,
            agreement=agreement,
            decided_at=now,
            location=location,
            adjudicator=adjudicator,
        )
        task.status = TaskStatus.LABELED.value
        task.label_event_type = event_type
        task.label_source = source
        task.agreement = agreement
        task.resolved_at = now
        task.updated_at = now
        session.add(task)
        session.add(
            LabelRow(event_id=label.event_id, task_id=task.task_id, payload=label.SerializeToString(), created_at=now)
        )
        return label

    def record_skip(
        self, task_id: str, annotator: str, reason: str, *, lease_id: str, now: datetime, max_skips: int
    ) -> SkipResult:
        with self._writing() as session:
            task = self._locked_task(session, task_id)
            if task is None:
                raise UnknownTask(task_id)
            if session.exec(
                select(SkipRow.id).where(SkipRow.task_id == task_id, SkipRow.annotator == annotator)
            ).first():
                return SkipResult(VoteOutcome.EXTRA, True, self._live(session, task))
            session.add(SkipRow(task_id=task_id, annotator=annotator, reason=reason, created_at=now))
            outcome = VoteOutcome.REQUEUE
            if TaskStatus(task.status) is TaskStatus.OPEN:
                task.skip_count += 1
                if task.skip_count >= max_skips:
                    task.status = TaskStatus.ADJUDICATION.value
                    outcome = VoteOutcome.ADJUDICATE
                task.updated_at = now
                session.add(task)
            session.add(
                AuditRow(
                    at=now,
                    actor=annotator,
                    action="skipped",
                    task_id=task_id,
                    detail={"reason": reason, "lease_id": lease_id},
                )
            )
            live = self._live(session, task, excluded=False)
            session.commit()
        return SkipResult(outcome, False, live)

    def adjudicate(
        self, task_id: str, lead: str, event_type: int, *, note: str, now: datetime, quality: QualityPolicy
    ) -> labels_pb2.Label:
        """A lead's decision on a disputed task; returns the label to publish."""
        with self._writing() as session:
            task = self._locked_task(session, task_id)
            if task is None:
                raise UnknownTask(task_id)
            if task.status != TaskStatus.ADJUDICATION.value:
                raise NotDisputed(f"task {task_id} is {task.status}, not waiting for adjudication")
            votes = self._counted_votes(session, task_id, quality)
            weighted = [WeightedVote(vote.annotator, vote.event_type, vote.weight) for vote in votes]
            agreement = weighted_share(weighted, event_type) if weighted else 0.0
            label = self._resolve(
                session, task, event_type, labels_pb2.LABEL_SOURCE_ADJUDICATION, votes, agreement, now, lead
            )
            session.add(
                AuditRow(
                    at=now,
                    actor=lead,
                    action="adjudicated",
                    task_id=task_id,
                    detail={"event_type": event_type, "note": note},
                )
            )
            session.commit()
        return label

    def make_gold(self, task_id: str, lead: str, known_answer: int | None, *, now: datetime) -> LiveTask:
        """Turn a task into a gold task (known answer: given, or its label). Returns its live form."""
        with self._writing() as session:
            task = self._locked_task(session, task_id)
            if task is None:
                raise UnknownTask(task_id)
            answer = known_answer or task.label_event_type
            if not answer:
                raise NotGoldable(f"task {task_id} has no label yet: give the known answer")
            task.known_answer = answer
            task.status = TaskStatus.GOLD.value
            task.updated_at = now
            session.add(task)
            session.add(
                AuditRow(at=now, actor=lead, action="made-gold", task_id=task_id, detail={"known_answer": answer})
            )
            session.flush()
            live = self._live(session, task)
            session.commit()
        assert live is not None
        return live

    # ------------------------------------------------------------------ labels outbox

    def unpublished_labels(self, *, created_before: datetime, limit: int = 100) -> list[labels_pb2.Label]:
        with Session(self.engine) as session:
            rows = session.exec(
                select(LabelRow.payload)
                .where(col(LabelRow.published_at).is_(None), LabelRow.created_at <= created_before)
                .order_by(col(LabelRow.created_at))
                .limit(limit)
            ).all()
        return [labels_pb2.Label.FromString(payload) for payload in rows]

    def mark_published(self, event_ids: Sequence[str], now: datetime) -> None:
        if not event_ids:
            return
        with self._writing() as session:
            for row in session.exec(select(LabelRow).where(col(LabelRow.event_id).in_(list(event_ids)))):
                if row.published_at is None:
                    row.published_at = now
                    session.add(row)
            session.commit()

    def label_of(self, task_id: str) -> labels_pb2.Label | None:
        with Session(self.engine) as session:
            payload = session.exec(select(LabelRow.payload).where(LabelRow.task_id == task_id)).first()
        return None if payload is None else labels_pb2.Label.FromString(payload)

    # ------------------------------------------------------------------ reading

    def task(self, task_id: str) -> TaskRecord | None:
        with Session(self.engine) as session:
            row = session.get(TaskRow, task_id)
            return None if row is None else self._task_record(row)

    @staticmethod
    def _task_record(row: TaskRow) -> TaskRecord:
        return TaskRecord(
            task_id=row.task_id,
            queue=row.queue,
            status=TaskStatus(row.status),
            priority=row.priority,
            request=labels_pb2.LabelRequest.FromString(row.request),
            created_at=_utc(row.created_at),
            skip_count=row.skip_count,
        )

    def votes_of(self, task_id: str) -> list[VoteRecord]:
        with Session(self.engine) as session:
            rows = session.exec(select(VoteRow).where(VoteRow.task_id == task_id).order_by(col(VoteRow.id))).all()
        return [VoteRecord(row.annotator, row.event_type, row.counted, row.late, _utc(row.created_at)) for row in rows]

    def queues(self) -> list[str]:
        with Session(self.engine) as session:
            return sorted(set(session.exec(select(TaskRow.queue).distinct()).all()))

    def status_counts(self) -> dict[str, int]:
        with Session(self.engine) as session:
            rows = session.exec(select(TaskRow.status, func.count()).group_by(TaskRow.status)).all()
        return {status: int(count) for status, count in rows}

    def work_counts(self, annotator: str, now: datetime) -> WorkCounts:
        with Session(self.engine) as session:

            def votes_since(moment: datetime | None) -> int:
                query = select(func.count()).select_from(VoteRow).where(VoteRow.annotator == annotator)
                if moment is not None:
                    query = query.where(VoteRow.created_at >= moment)
                return int(session.exec(query).one())

            skips = int(
                session.exec(select(func.count()).select_from(SkipRow).where(SkipRow.annotator == annotator)).one()
            )
            last = session.exec(select(func.max(VoteRow.created_at)).where(VoteRow.annotator == annotator)).one()
            return WorkCounts(
                votes_total=votes_since(None),
                votes_last_hour=votes_since(now - timedelta(hours=1)),
                votes_last_day=votes_since(now - timedelta(days=1)),
                skips_total=skips,
                last_vote_at=_utc(last) if last is not None else None,
            )

    def consensus_matches(self) -> dict[str, tuple[int, int]]:
        """Per annotator: (votes on labeled tasks, of which matched the label)."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(VoteRow.annotator, VoteRow.event_type, TaskRow.label_event_type)
                .join(TaskRow, col(TaskRow.task_id) == col(VoteRow.task_id))
                .where(TaskRow.label_event_type != 0, VoteRow.gold == False)  # noqa: E712
            ).all()
        result: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
        for annotator, answer, label in rows:
            result[annotator][0] += 1
            result[annotator][1] += int(answer == label)
        return {annotator: (total, matched) for annotator, (total, matched) in result.items()}

    def queue_counts(self, now: datetime) -> list[QueueCounts]:
        hour_ago = now - timedelta(hours=1)
        with Session(self.engine) as session:
            by_status = session.exec(
                select(TaskRow.queue, TaskRow.status, func.count())
                .where(TaskRow.status != TaskStatus.GOLD.value)
                .group_by(TaskRow.queue, TaskRow.status)
            ).all()
            oldest = dict(
                session.exec(
                    select(TaskRow.queue, func.min(TaskRow.created_at))
                    .where(TaskRow.status == TaskStatus.OPEN.value)
                    .group_by(TaskRow.queue)
                ).all()
            )
            labeled = dict(
                session.exec(
                    select(TaskRow.queue, func.count())
                    .where(col(TaskRow.resolved_at) >= hour_ago)
                    .group_by(TaskRow.queue)
                ).all()
            )
            voted = dict(
                session.exec(
                    select(TaskRow.queue, func.count())
                    .select_from(VoteRow)
                    .join(TaskRow, col(TaskRow.task_id) == col(VoteRow.task_id))
                    .where(VoteRow.created_at >= hour_ago, VoteRow.gold == False)  # noqa: E712
                    .group_by(TaskRow.queue)
                ).all()
            )
        counts: defaultdict[str, dict[str, int]] = defaultdict(dict)
        for queue, status, count in by_status:
            counts[queue][status] = int(count)
        return [
            QueueCounts(
                queue=queue,
                open=counts[queue].get(TaskStatus.OPEN.value, 0),
                adjudication=counts[queue].get(TaskStatus.ADJUDICATION.value, 0),
                labeled_last_hour=int(labeled.get(queue, 0)),
                votes_last_hour=int(voted.get(queue, 0)),
                oldest_open_at=_utc(oldest[queue]) if oldest.get(queue) is not None else None,
            )
            for queue in sorted(counts)
        ]

    def agreement_items(
        self, *, queue: str | None = None, since: datetime | None = None
    ) -> list[list[tuple[str, int]]]:
        """Answers per non-gold task with at least two, each list in answer order."""
        with Session(self.engine) as session:
            query = (
                select(VoteRow.task_id, VoteRow.annotator, VoteRow.event_type)
                .join(TaskRow, col(TaskRow.task_id) == col(VoteRow.task_id))
                .where(VoteRow.gold == False)  # noqa: E712
                .order_by(col(VoteRow.task_id), col(VoteRow.id))
            )
            if queue is not None:
                query = query.where(TaskRow.queue == queue)
            if since is not None:
                query = query.where(VoteRow.created_at >= since)
            rows = session.exec(query).all()
        items: dict[str, list[tuple[str, int]]] = {}
        for task_id, annotator, event_type in rows:
            items.setdefault(task_id, []).append((annotator, event_type))
        return [answers for answers in items.values() if len(answers) >= 2]

    def disputed(self, limit: int = 100) -> list[DisputedTask]:
        with Session(self.engine) as session:
            rows = session.exec(
                select(TaskRow)
                .where(TaskRow.status == TaskStatus.ADJUDICATION.value)
                .order_by(col(TaskRow.updated_at))
                .limit(limit)
            ).all()
            ids = [row.task_id for row in rows]
            votes: defaultdict[str, list[VoteRecord]] = defaultdict(list)
            for vote in session.exec(select(VoteRow).where(col(VoteRow.task_id).in_(ids)).order_by(col(VoteRow.id))):
                votes[vote.task_id].append(
                    VoteRecord(vote.annotator, vote.event_type, vote.counted, vote.late, _utc(vote.created_at))
                )
            skips: defaultdict[str, list[tuple[str, str]]] = defaultdict(list)
            for skip in session.exec(select(SkipRow).where(col(SkipRow.task_id).in_(ids)).order_by(col(SkipRow.id))):
                skips[skip.task_id].append((skip.annotator, skip.reason))
            return [DisputedTask(self._task_record(row), votes[row.task_id], skips[row.task_id]) for row in rows]
