"""Baseline: the camera service's tables (uploads and media of the join, analysis states per stream).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from services.camera.adapters.migrations.baseline import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    metadata.create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
