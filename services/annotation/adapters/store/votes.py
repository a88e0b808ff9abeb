"""`VoteStore`: answers and skips, and what each decides about its task, in one transaction per answer.

A vote locks its task's row, is recorded, and (when it counts) decides the task by weighted consensus:
more votes, a label, or a lead. `counted_votes` and `gold_results_in` serve adjudication too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from michi.contracts.v1 import labels_pb2
from services.annotation.adapters.store.database import SqlStore, utc
from services.annotation.adapters.store.labels import label_task
from services.annotation.adapters.store.tasks import UnknownTask, live_form, locked_task
from services.annotation.adapters.tables import AuditRow, SkipRow, VoteRow
from services.annotation.domain.consensus import ConsensusPolicy, Outcome, WeightedVote, decide
from services.annotation.domain.publication import CountedVote
from services.annotation.domain.quality import Quality, QualityPolicy, assess
from services.annotation.domain.tasks import LiveTask, TaskStatus


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
class VoteRecord:
    annotator: str
    event_type: int
    counted: bool
    late: bool
    created_at: datetime


class VoteStore(SqlStore):
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
            task = locked_task(session, task_id)
            if task is None:
                raise UnknownTask(task_id)
            if session.exec(
                select(VoteRow.id).where(VoteRow.task_id == task_id, VoteRow.annotator == annotator)
            ).first():
                return VoteResult(VoteOutcome.EXTRA, False, True, None, live_form(session, task), None)
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
                votes = counted_votes(session, task_id, quality, consensus.votes_required)
                decision = decide(
                    [WeightedVote(vote.annotator, vote.event_type, vote.weight) for vote in votes], consensus
                )
                detail["decision"] = decision.outcome.value
                if decision.outcome is Outcome.CONSENSUS and decision.event_type is not None:
                    label = label_task(
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
            live = live_form(session, task, excluded=False)
            session.commit()
        return VoteResult(outcome, counts, False, correct, live, label)

    def record_skip(
        self, task_id: str, annotator: str, reason: str, *, lease_id: str, now: datetime, max_skips: int
    ) -> SkipResult:
        with self._writing() as session:
            task = locked_task(session, task_id)
            if task is None:
                raise UnknownTask(task_id)
            if session.exec(
                select(SkipRow.id).where(SkipRow.task_id == task_id, SkipRow.annotator == annotator)
            ).first():
                return SkipResult(VoteOutcome.EXTRA, True, live_form(session, task))
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
            live = live_form(session, task, excluded=False)
            session.commit()
        return SkipResult(outcome, False, live)

    def gold_results(self, annotator: str, window: int) -> list[bool]:
        with Session(self.engine) as session:
            return gold_results_in(session, annotator, window)

    def votes_of(self, task_id: str) -> list[VoteRecord]:
        with Session(self.engine) as session:
            rows = session.exec(select(VoteRow).where(VoteRow.task_id == task_id).order_by(col(VoteRow.id))).all()
        return [VoteRecord(row.annotator, row.event_type, row.counted, row.late, utc(row.created_at)) for row in rows]


def counted_votes(session: Session, task_id: str, quality: QualityPolicy, weigh_from: int = 0) -> list[CountedVote]:
    """The task's counted votes with their annotators' quality (the prior alone below `weigh_from` votes)."""
    rows = session.exec(
        select(VoteRow).where(VoteRow.task_id == task_id, VoteRow.counted == True).order_by(col(VoteRow.id))  # noqa: E712
    ).all()
    weigh = len(rows) >= weigh_from
    qualities: dict[str, Quality] = {}
    for row in rows:
        if row.annotator not in qualities:
            results = gold_results_in(session, row.annotator, quality.window) if weigh else []
            qualities[row.annotator] = assess(results, quality)
    return [
        CountedVote(
            row.annotator,
            row.event_type,
            qualities[row.annotator].weight,
            qualities[row.annotator],
            utc(row.created_at),
        )
        for row in rows
    ]


def gold_results_in(session: Session, annotator: str, window: int) -> list[bool]:
    rows = session.exec(
        select(VoteRow.correct)
        .where(VoteRow.annotator == annotator, VoteRow.gold == True)  # noqa: E712
        .order_by(col(VoteRow.created_at).desc(), col(VoteRow.id).desc())
        .limit(window)
    ).all()
    return [bool(value) for value in rows]
