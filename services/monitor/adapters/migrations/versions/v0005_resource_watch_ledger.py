"""The resource watch's ledger: monitor_condition_episode (memory, lag, budget episodes) and monitor_cost_day (sums per UTC day).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 13:04:55.417335
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_condition_episode",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("episode_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.JSON(), nullable=False),
        sa.Column("started_at_s", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("episode_id"),
    )
    with op.batch_alter_table("monitor_condition_episode", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_monitor_condition_episode_status"), ["status"], unique=False)

    op.create_table(
        "monitor_cost_day",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("first_seen_s", sa.Float(), nullable=False),
        sa.Column("last_seen_s", sa.Float(), nullable=False),
        sa.Column("cpu_seconds", sa.JSON(), nullable=False),
        sa.Column("predictions", sa.Integer(), nullable=False),
        sa.Column("labels", sa.Integer(), nullable=False),
        sa.Column("training_runs", sa.Float(), nullable=False),
        sa.Column("training_run_seconds", sa.Float(), nullable=False),
        sa.Column("reported", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("day"),
    )


def downgrade() -> None:
    op.drop_table("monitor_cost_day")
    with op.batch_alter_table("monitor_condition_episode", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_monitor_condition_episode_status"))

    op.drop_table("monitor_condition_episode")
