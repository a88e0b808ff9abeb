"""The annotation service's SQL tables (SQLModel), portable across SQLite and PostgreSQL.

SQL is the durable record: accounts and sessions, tasks, every request merged into a task, every
vote and skip, the labels (with whether Kafka acknowledged them), and an audit trail. The live
queues in Redis are rebuilt from these tables after a Redis loss.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


def _moment(nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable, index=index))


class AnnotatorRow(SQLModel, table=True):
    """One account: annotator, lead or admin."""

    __tablename__ = "annotation_annotator"

    name: str = Field(primary_key=True, max_length=64)
    role: str = Field(max_length=16)
    password_hash: str = Field(max_length=200)
    created_at: datetime = _moment()
    created_by: str = Field(default="", max_length=64)
    disabled_at: datetime | None = _moment(nullable=True)


class SessionRow(SQLModel, table=True):
    """A signed-in session; only the token's sha256 is stored."""

    __tablename__ = "annotation_session"

    token_hash: str = Field(primary_key=True, max_length=64)
    annotator: str = Field(index=True, max_length=64)
    created_at: datetime = _moment()
    expires_at: datetime = _moment()
    revoked_at: datetime | None = _moment(nullable=True)


class TaskRow(SQLModel, table=True):
    """One window to label (task_id is the window_id: requests for the same window merge here)."""

    __tablename__ = "annotation_task"
    __table_args__ = (Index("annotation_task_queue_status", "queue", "status"),)

    task_id: str = Field(primary_key=True, max_length=128)
    queue: str = Field(max_length=40)
    status: str = Field(index=True, max_length=16)
    priority: int = 0
    # The first request for this window (serialized LabelRequest): lineage, window, suggestion.
    request: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    requests: int = 1
    # For gold tasks: the verified answer (an EventType value), else 0.
    known_answer: int = 0
    latitude: float | None = None
    longitude: float | None = None
    skip_count: int = 0
    created_at: datetime = _moment()
    updated_at: datetime = _moment()
    resolved_at: datetime | None = _moment(nullable=True, index=True)
    label_event_type: int = 0
    label_source: int = 0
    agreement: float | None = None
    # W3C traceparent of the span that made the task (its first request's consumer span, in the trace of the
    # upload the window came from): the label's publish span links to it. None: no trace, or made before.
    traceparent: str | None = Field(default=None, max_length=64)


class RequestRow(SQLModel, table=True):
    """Every LabelRequest event received (its event_id makes redelivery a no-op)."""

    __tablename__ = "annotation_request"

    event_id: str = Field(primary_key=True, max_length=128)
    task_id: str = Field(index=True, max_length=128)
    reason: int
    priority: int
    received_at: datetime = _moment()


class VoteRow(SQLModel, table=True):
    """One annotator's answer to one task (at most one per annotator and task)."""

    __tablename__ = "annotation_vote"
    __table_args__ = (
        UniqueConstraint("task_id", "annotator", name="annotation_vote_task_annotator"),
        Index("annotation_vote_annotator_gold", "annotator", "gold", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    task_id: str = Field(index=True, max_length=128)
    annotator: str = Field(max_length=64)
    event_type: int
    # Counted towards consensus (False: an extra vote, e.g. a late answer after the task was re-leased).
    counted: bool = True
    late: bool = False
    # An answer to a gold task, and whether it matched the known answer.
    gold: bool = False
    correct: bool | None = None
    lease_id: str = Field(default="", max_length=64)
    created_at: datetime = _moment(index=True)


class SkipRow(SQLModel, table=True):
    __tablename__ = "annotation_skip"
    __table_args__ = (UniqueConstraint("task_id", "annotator", name="annotation_skip_task_annotator"),)

    id: int | None = Field(default=None, primary_key=True)
    task_id: str = Field(index=True, max_length=128)
    annotator: str = Field(index=True, max_length=64)
    reason: str = Field(max_length=200)
    created_at: datetime = _moment()


class LabelRow(SQLModel, table=True):
    """A decided label (serialized michi.v1.Label); published_at is set once Kafka acknowledged it."""

    __tablename__ = "annotation_label"

    event_id: str = Field(primary_key=True, max_length=64)
    task_id: str = Field(unique=True, max_length=128)
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = _moment()
    published_at: datetime | None = _moment(nullable=True, index=True)


class AuditRow(SQLModel, table=True):
    """Who did what, when: accounts, sign-ins, votes, skips, adjudications, gold, rebuilds."""

    __tablename__ = "annotation_audit"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _moment(index=True)
    actor: str = Field(index=True, max_length=64)
    action: str = Field(max_length=32)
    task_id: str | None = Field(default=None, max_length=128)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


TABLES = (AnnotatorRow, SessionRow, TaskRow, RequestRow, VoteRow, SkipRow, LabelRow, AuditRow)
