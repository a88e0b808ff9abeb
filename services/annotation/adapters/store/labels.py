"""`LabelStore`: labels, written in the transaction that decides their task, and their outbox.

A label waits in SQL until Kafka acknowledges it (`mark_published`); upkeep re-sends what waits
(`unpublished_labels`) with the same event id.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from michi.contracts.v1 import labels_pb2
from services.annotation.adapters.store.database import SqlStore
from services.annotation.adapters.tables import LabelRow, TaskRow
from services.annotation.domain.publication import CountedVote, build_label
from services.annotation.domain.tasks import TaskStatus


class LabelStore(SqlStore):
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


def label_task(
    session: Session,
    task: TaskRow,
    event_type: int,
    source: int,
    votes: Sequence[CountedVote],
    agreement: float,
    now: datetime,
    adjudicator: str = "",
) -> labels_pb2.Label:
    """Decide `task` as `event_type` in the caller's transaction: mark it labeled and store its label."""
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
