"""The device registry's tables (ingest) as `create_all` made them before migrations existed: frozen.

Revision 0001 creates these (only those missing, so a database made before migrations keeps every
row), and start-up recognises such a database by them. Never edit: a schema change is a new revision.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

sa.Table(
    "ingest_device",
    metadata,
    sa.Column("token_id", sa.String(length=32), primary_key=True),
    sa.Column("device_id", sa.String(length=128), nullable=False),
    sa.Column("token_hash", sa.String(length=64), nullable=False),
    sa.Column("label", sa.String(length=200), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("token_hash"),
    sa.Index("ix_ingest_device_device_id", "device_id"),
)

sa.Table(
    "ingest_device_registry",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("version", sa.Integer(), nullable=False),
)
