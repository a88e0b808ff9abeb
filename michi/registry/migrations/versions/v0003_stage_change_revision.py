"""registry_stage_change revision: the plan revision a stage change was published in (nullable, additive;
NULL on older rows, whose revision is their sequence).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 22:55:59.838610
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("registry_stage_change", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revision", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("registry_stage_change", schema=None) as batch_op:
        batch_op.drop_column("revision")
