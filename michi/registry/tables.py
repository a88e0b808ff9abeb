"""The registry's SQL tables (SQLModel), portable across SQLite and PostgreSQL.

`registry_model_version` holds one row per registered version; `(name, number)` is
unique, which is what makes concurrent registrations safe (the loser retries).
`registry_stage_change` is the audit trail; `(model_name, sequence)` is unique, so two
concurrent stage changes of one model cannot both commit from the same state.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel


class ModelVersionRow(SQLModel, table=True):
    """One registered version of one model, with its lineage."""

    __tablename__ = "registry_model_version"
    __table_args__ = (
        UniqueConstraint("name", "number", name="registry_model_version_name_number"),
        UniqueConstraint("name", "version", name="registry_model_version_name_version"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, max_length=128)
    # The version as shown to people ("3") and its number, for ordering and atomic assignment.
    version: str = Field(max_length=32)
    number: int
    stage: str = Field(max_length=16)
    artifact_uri: str = Field(max_length=1000)
    artifact_sha256: str = Field(max_length=64)
    code_version: str = Field(max_length=64)
    data_version: str = Field(max_length=128)
    parameters: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    parent_version: str | None = Field(default=None, max_length=32)
    created_by: str = Field(max_length=128)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class StageChangeRow(SQLModel, table=True):
    """One version moving between stages: who, when, from, to, why."""

    __tablename__ = "registry_stage_change"
    __table_args__ = (UniqueConstraint("model_name", "sequence", name="registry_stage_change_model_sequence"),)

    id: int | None = Field(default=None, primary_key=True)
    model_name: str = Field(index=True, max_length=128)
    # 1, 2, 3... per model name; the rollout plan's revision is the highest sequence.
    sequence: int
    version: str = Field(max_length=32)
    from_stage: str = Field(max_length=16)
    to_stage: str = Field(max_length=16)
    kind: str = Field(max_length=16)
    reason: str = Field(default="", max_length=2000)
    actor: str = Field(max_length=128)
    changed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
