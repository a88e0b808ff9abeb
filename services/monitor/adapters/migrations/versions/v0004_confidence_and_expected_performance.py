"""monitor_qa_window.confidence (the model's confidence in its random-QA call) and monitor_window.performance (expected accuracy and false-alert rate).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 12:47:40.548852
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("monitor_qa_window", schema=None) as batch_op:
        batch_op.add_column(sa.Column("confidence", sa.Float(), nullable=True))

    with op.batch_alter_table("monitor_window", schema=None) as batch_op:
        batch_op.add_column(sa.Column("performance", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("monitor_window", schema=None) as batch_op:
        batch_op.drop_column("performance")

    with op.batch_alter_table("monitor_qa_window", schema=None) as batch_op:
        batch_op.drop_column("confidence")
