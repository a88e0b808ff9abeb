"""`AdjudicationStore`: what leads decide about a task: disputes and their adjudication, and gold."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from michi.contracts.v1 import labels_pb2
from services.annotation.adapters.store.database import SqlStore, utc
from services.annotation.adapters.store.labels import label_task
from services.annotation.adapters.store.tasks import TaskRecord, UnknownTask, live_form, locked_task, task_record
from services.annotation.adapters.store.votes import VoteRecord, counted_votes
from services.annotation.adapters.tables import AuditRow, SkipRow, TaskRow, VoteRow
from services.annotation.domain.consensus import WeightedVote, weighted_share
from services.annotation.domain.quality import QualityPolicy
from services.annotation.domain.tasks import LiveTask, TaskStatus


class NotDisputed(ValueError):
    """Adjudication asked for a task that is not waiting for it."""


class NotGoldable(ValueError):
    """A task cannot become gold without an answer to use as the known answer."""


@dataclass(frozen=True)
class DisputedTask:
    task: TaskRecord
    votes: list[VoteRecord]
    skips: list[tuple[str, str]]


class AdjudicationStore(SqlStore):
    def adjudicate(
        self, task_id: str, lead: str, event_type: int, *, note: str, now: datetime, quality: QualityPolicy
    ) -> labels_pb2.Label:
        """A lead's decision on a disputed task; returns the label to publish."""
        with self._writing() as session:
            task = locked_task(session, task_id)
            if task is None:
                raise UnknownTask(task_id)
            if task.status != TaskStatus.ADJUDICATION.value:
                raise NotDisputed(f"task {task_id} is {task.status}, not waiting for adjudication")
            votes = counted_votes(session, task_id, quality)
            weighted = [WeightedVote(vote.annotator, vote.event_type, vote.weight) for vote in votes]
            agreement = weighted_share(weighted, event_type) if weighted else 0.0
            label = label_task(
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
            task = locked_task(session, task_id)
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
            live = live_form(session, task)
            session.commit()
        assert live is not None
        return live

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
                    VoteRecord(vote.annotator, vote.event_type, vote.counted, vote.late, utc(vote.created_at))
                )
            skips: defaultdict[str, list[tuple[str, str]]] = defaultdict(list)
            for skip in session.exec(select(SkipRow).where(col(SkipRow.task_id).in_(ids)).order_by(col(SkipRow.id))):
                skips[skip.task_id].append((skip.annotator, skip.reason))
            return [DisputedTask(task_record(row), votes[row.task_id], skips[row.task_id]) for row in rows]
