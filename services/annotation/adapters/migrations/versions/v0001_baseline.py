"""Baseline: the annotation service's tables as `create_all` made them before migrations.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from services.annotation.adapters.migrations.baseline import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # checkfirst: a table an older create_all already made stays as it is, rows and all.
    metadata.create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
