"""Random-QA windows (what the model and people said) and concept-drift changes: monitor_qa_window, monitor_concept_drift.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 12:32:53.325017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_concept_drift",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("error_rate_before", sa.Float(), nullable=False),
        sa.Column("error_rate_after", sa.Float(), nullable=False),
        sa.Column("retrain_event_id", sa.String(length=128), nullable=True),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    with op.batch_alter_table("monitor_concept_drift", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_monitor_concept_drift_model_version"), ["model_version"], unique=False)

    op.create_table(
        "monitor_qa_window",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("window_id", sa.String(length=128), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("predicted", sa.Integer(), nullable=True),
        sa.Column("predicted_at_s", sa.Float(), nullable=True),
        sa.Column("labelled", sa.Integer(), nullable=True),
        sa.Column("label_event_id", sa.String(length=128), nullable=True),
        sa.Column("sequence", sa.Integer(), nullable=True),
        sa.Column("correct", sa.Boolean(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_version", "sequence"),
        sa.UniqueConstraint("window_id", "model_version"),
    )
    with op.batch_alter_table("monitor_qa_window", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_monitor_qa_window_model_version"), ["model_version"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("monitor_qa_window", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_monitor_qa_window_model_version"))

    op.drop_table("monitor_qa_window")
    with op.batch_alter_table("monitor_concept_drift", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_monitor_concept_drift_model_version"))

    op.drop_table("monitor_concept_drift")
