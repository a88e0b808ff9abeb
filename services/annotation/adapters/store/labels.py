"""`LabelStore`: labels, written in the transaction that decides their task, and their outbox.

A label waits in SQL until Kafka acknowledges it (`mark_published`); upkeep re-sends what waits
(`unpublished_labels`) with the same event id.

A label carries the reasons of the requests recorded for its window when it is decided (`request_reasons`,
read from `annotation_request` in the deciding transaction). A label stored before labels carried them
gets them when upkeep re-sends it, from the requests recorded up to its decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from michi.contracts.v1 import labels_pb2
from services.annotation.adapters.store.database import SqlStore
from services.annotation.adapters.tables import LabelRow, RequestRow, TaskRow
from services.annotation.domain.publication import CountedVote, build_label, request_reasons
from services.annotation.domain.tasks import TaskStatus


class LabelStore(SqlStore):
    def unpublished_labels(self, *, created_before: datetime, limit: int = 100) -> list[labels_pb2.Label]:
        labels = []
        with Session(self.engine) as session:
            rows = session.exec(
                select(LabelRow.task_id, LabelRow.payload, LabelRow.created_at)
                .where(col(LabelRow.published_at).is_(None), LabelRow.created_at <= created_before)
                .order_by(col(LabelRow.created_at))
                .limit(limit)
            ).all()
            for task_id, payload, decided_at in rows:
                label = labels_pb2.Label.FromString(payload)
                task = session.get(TaskRow, task_id)
                if not label.request_reasons and task is not None:  # stored before labels carried them
                    first = labels_pb2.LabelRequest.FromString(task.request).reason
                    reasons = request_reasons(first, recorded_reasons(session, task_id, received_by=decided_at))
                    label.request_reasons.extend(reasons)  # type: ignore[arg-type]
                labels.append(label)
        return labels

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
    reasons = request_reasons(request.reason, recorded_reasons(session, task.task_id))
    label = build_label(
        request,
        event_type=event_type,
        source=source,
        votes=votes,
        agreement=agreement,
        decided_at=now,
        location=location,
        reasons=reasons,
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


def recorded_reasons(session: Session, task_id: str, *, received_by: datetime | None = None) -> list[int]:
    """The reason of every request recorded for the task (up to `received_by`), in the order they arrived."""
    query = select(RequestRow.reason).where(RequestRow.task_id == task_id)
    if received_by is not None:
        query = query.where(RequestRow.received_at <= received_by)
    return list(session.exec(query.order_by(col(RequestRow.received_at), col(RequestRow.event_id))).all())
