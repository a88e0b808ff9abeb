"""Rollouts by hand: registry_rollout (one row per rollout; unique active_model: one serving rollout per model)
and registry_rollout_decision (one row per plan revision a rollout caused). Additive: new tables only.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 19:57:08.048607
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
        "registry_rollout",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rollout_id", sa.String(length=200), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("active_model", sa.String(length=128), nullable=True),
        sa.Column("candidate_version", sa.String(length=32), nullable=False),
        sa.Column("champion_version", sa.String(length=32), nullable=False),
        sa.Column("strategy", sa.String(length=16), nullable=False),
        sa.Column("document", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=True),
        sa.Column("weight_percent", sa.Float(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("started_by", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("active_model", name="registry_rollout_active_model"),
        sa.UniqueConstraint("rollout_id", name="registry_rollout_rollout_id"),
    )
    with op.batch_alter_table("registry_rollout", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_registry_rollout_model_name"), ["model_name"], unique=False)

    op.create_table(
        "registry_rollout_decision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rollout_id", sa.String(length=200), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=2000), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("previous_plan", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_name", "revision", name="registry_rollout_decision_model_revision"),
    )
    with op.batch_alter_table("registry_rollout_decision", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_registry_rollout_decision_model_name"), ["model_name"], unique=False)
        batch_op.create_index(batch_op.f("ix_registry_rollout_decision_rollout_id"), ["rollout_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("registry_rollout_decision", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_registry_rollout_decision_rollout_id"))
        batch_op.drop_index(batch_op.f("ix_registry_rollout_decision_model_name"))

    op.drop_table("registry_rollout_decision")
    with op.batch_alter_table("registry_rollout", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_registry_rollout_model_name"))

    op.drop_table("registry_rollout")
