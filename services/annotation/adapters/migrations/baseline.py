"""The annotation service's tables as `create_all` made them before migrations existed: frozen.

Revision 0001 creates these (only those missing, so a database made before migrations keeps every
row), and start-up recognises such a database by them. Never edit: a schema change is a new revision.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

sa.Table(
    "annotation_annotator",
    metadata,
    sa.Column("name", sa.String(length=64), primary_key=True),
    sa.Column("role", sa.String(length=16), nullable=False),
    sa.Column("password_hash", sa.String(length=200), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(length=64), nullable=False),
    sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
)

sa.Table(
    "annotation_session",
    metadata,
    sa.Column("token_hash", sa.String(length=64), primary_key=True),
    sa.Column("annotator", sa.String(length=64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_annotation_session_annotator", "annotator"),
)

sa.Table(
    "annotation_task",
    metadata,
    sa.Column("task_id", sa.String(length=128), primary_key=True),
    sa.Column("queue", sa.String(length=40), nullable=False),
    sa.Column("status", sa.String(length=16), nullable=False),
    sa.Column("priority", sa.Integer(), nullable=False),
    sa.Column("request", sa.LargeBinary(), nullable=False),
    sa.Column("requests", sa.Integer(), nullable=False),
    sa.Column("known_answer", sa.Integer(), nullable=False),
    sa.Column("latitude", sa.Float(), nullable=True),
    sa.Column("longitude", sa.Float(), nullable=True),
    sa.Column("skip_count", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("label_event_type", sa.Integer(), nullable=False),
    sa.Column("label_source", sa.Integer(), nullable=False),
    sa.Column("agreement", sa.Float(), nullable=True),
    sa.Index("annotation_task_queue_status", "queue", "status"),
    sa.Index("ix_annotation_task_resolved_at", "resolved_at"),
    sa.Index("ix_annotation_task_status", "status"),
)

sa.Table(
    "annotation_request",
    metadata,
    sa.Column("event_id", sa.String(length=128), primary_key=True),
    sa.Column("task_id", sa.String(length=128), nullable=False),
    sa.Column("reason", sa.Integer(), nullable=False),
    sa.Column("priority", sa.Integer(), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_annotation_request_task_id", "task_id"),
)

sa.Table(
    "annotation_vote",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("task_id", sa.String(length=128), nullable=False),
    sa.Column("annotator", sa.String(length=64), nullable=False),
    sa.Column("event_type", sa.Integer(), nullable=False),
    sa.Column("counted", sa.Boolean(), nullable=False),
    sa.Column("late", sa.Boolean(), nullable=False),
    sa.Column("gold", sa.Boolean(), nullable=False),
    sa.Column("correct", sa.Boolean(), nullable=True),
    sa.Column("lease_id", sa.String(length=64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("task_id", "annotator", name="annotation_vote_task_annotator"),
    sa.Index("annotation_vote_annotator_gold", "annotator", "gold", "created_at"),
    sa.Index("ix_annotation_vote_created_at", "created_at"),
    sa.Index("ix_annotation_vote_task_id", "task_id"),
)

sa.Table(
    "annotation_skip",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("task_id", sa.String(length=128), nullable=False),
    sa.Column("annotator", sa.String(length=64), nullable=False),
    sa.Column("reason", sa.String(length=200), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("task_id", "annotator", name="annotation_skip_task_annotator"),
    sa.Index("ix_annotation_skip_annotator", "annotator"),
    sa.Index("ix_annotation_skip_task_id", "task_id"),
)

sa.Table(
    "annotation_label",
    metadata,
    sa.Column("event_id", sa.String(length=64), primary_key=True),
    sa.Column("task_id", sa.String(length=128), nullable=False),
    sa.Column("payload", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("task_id"),
    sa.Index("ix_annotation_label_published_at", "published_at"),
)

sa.Table(
    "annotation_audit",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(length=64), nullable=False),
    sa.Column("action", sa.String(length=32), nullable=False),
    sa.Column("task_id", sa.String(length=128), nullable=True),
    sa.Column("detail", sa.JSON(), nullable=False),
    sa.Index("ix_annotation_audit_actor", "actor"),
    sa.Index("ix_annotation_audit_at", "at"),
)
