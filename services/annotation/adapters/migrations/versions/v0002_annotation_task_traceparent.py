"""annotation_task traceparent: the trace context of the span that made the task (nullable, additive).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 10:30:04.399460
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("annotation_task", schema=None) as batch_op:
        batch_op.add_column(sa.Column("traceparent", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("annotation_task", schema=None) as batch_op:
        batch_op.drop_column("traceparent")
