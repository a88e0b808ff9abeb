"""monitor_cohort_progress: per model version, cohort and partition, where its closed windows ended.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 12:42:56.460160
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_cohort_progress",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("cohort", sa.String(length=160), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_name", "model_version", "cohort", "topic", "partition"),
    )


def downgrade() -> None:
    op.drop_table("monitor_cohort_progress")
