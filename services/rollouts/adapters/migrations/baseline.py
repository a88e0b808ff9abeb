"""The rollout controller's tables as revision 0001 made them: frozen.

Revision 0001 creates these (only those missing). Never edit: a schema change is a new revision.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

sa.Table(
    "rollouts_qa_window",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("window_id", sa.String(length=128), nullable=False),
    sa.Column("model_name", sa.String(length=128), nullable=False),
    sa.Column("model_version", sa.String(length=128), nullable=False),
    sa.Column("predicted", sa.Integer(), nullable=True),
    sa.Column("predicted_at_s", sa.Float(), nullable=True),
    sa.Column("labelled", sa.Integer(), nullable=True),
    sa.Column("label_event_id", sa.String(length=128), nullable=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("window_id", "model_version"),
    sa.Index("ix_rollouts_qa_window_model_version", "model_version"),
)

sa.Table(
    "rollouts_progress",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("rollout_id", sa.String(length=300), nullable=False),
    sa.Column("model_name", sa.String(length=128), nullable=False),
    sa.Column("state", sa.JSON(), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("rollout_id"),
)
