"""`StatisticsStore`: counts for the lead view and the annotators' own figures (reads only)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, col, select

from services.annotation.adapters.store.database import SqlStore, utc
from services.annotation.adapters.tables import RequestRow, SkipRow, TaskRow, VoteRow
from services.annotation.domain.tasks import TaskStatus


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


class StatisticsStore(SqlStore):
    def status_counts(self) -> dict[str, int]:
        with Session(self.engine) as session:
            rows = session.exec(select(TaskRow.status, func.count()).group_by(TaskRow.status)).all()
        return {status: int(count) for status, count in rows}

    def labeled_by_reason(self) -> dict[int, int]:
        """Labelled tasks per reason they were asked for (`LabelReason` values): a task asked for under two
        reasons counts under each, a task asked for twice under one reason once."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(RequestRow.reason, func.count(func.distinct(col(RequestRow.task_id))))
                .join(TaskRow, col(TaskRow.task_id) == col(RequestRow.task_id))
                .where(TaskRow.status == TaskStatus.LABELED.value)
                .group_by(col(RequestRow.reason))
            ).all()
        return {int(reason): int(count) for reason, count in rows}

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
                last_vote_at=utc(last) if last is not None else None,
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
                oldest_open_at=utc(oldest[queue]) if oldest.get(queue) is not None else None,
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
