"""registry_rollout_candidate: the candidates of a rollout beyond its first (a bandit over more than two arms), in
plan order, each with its share. Additive: a new table only; `registry_rollout.candidate_version` stays the first
candidate, and a rollout with one candidate has no row here.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 02:59:38.033780
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registry_rollout_candidate",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rollout_id", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("weight_percent", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("rollout_id", "position", name="registry_rollout_candidate_rollout_position"),
        sa.UniqueConstraint("rollout_id", "version", name="registry_rollout_candidate_rollout_version"),
    )


def downgrade() -> None:
    op.drop_table("registry_rollout_candidate")
