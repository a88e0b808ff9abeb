"""The model registry's tables as `create_all` made them before migrations existed: frozen.

Revision 0001 creates these (only those missing, so a database made before migrations keeps every
row), and start-up recognises such a database by them. Never edit: a schema change is a new revision.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

sa.Table(
    "registry_model_version",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("name", sa.String(length=128), nullable=False),
    sa.Column("version", sa.String(length=32), nullable=False),
    sa.Column("number", sa.Integer(), nullable=False),
    sa.Column("stage", sa.String(length=16), nullable=False),
    sa.Column("artifact_uri", sa.String(length=1000), nullable=False),
    sa.Column("artifact_sha256", sa.String(length=64), nullable=False),
    sa.Column("code_version", sa.String(length=64), nullable=False),
    sa.Column("data_version", sa.String(length=128), nullable=False),
    sa.Column("parameters", sa.JSON(), nullable=False),
    sa.Column("metrics", sa.JSON(), nullable=False),
    sa.Column("parent_version", sa.String(length=32), nullable=True),
    sa.Column("created_by", sa.String(length=128), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("name", "number", name="registry_model_version_name_number"),
    sa.UniqueConstraint("name", "version", name="registry_model_version_name_version"),
    sa.Index("ix_registry_model_version_name", "name"),
)

sa.Table(
    "registry_stage_change",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("model_name", sa.String(length=128), nullable=False),
    sa.Column("sequence", sa.Integer(), nullable=False),
    sa.Column("version", sa.String(length=32), nullable=False),
    sa.Column("from_stage", sa.String(length=16), nullable=False),
    sa.Column("to_stage", sa.String(length=16), nullable=False),
    sa.Column("kind", sa.String(length=16), nullable=False),
    sa.Column("reason", sa.String(length=2000), nullable=False),
    sa.Column("actor", sa.String(length=128), nullable=False),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("model_name", "sequence", name="registry_stage_change_model_sequence"),
    sa.Index("ix_registry_stage_change_model_name", "model_name"),
)
