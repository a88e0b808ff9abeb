"""The registry's SQL tables (SQLModel), portable across SQLite and PostgreSQL.

`registry_model_version` holds one row per registered version; `(name, number)` is
unique, which is what makes concurrent registrations safe (the loser retries).
`registry_stage_change` is the audit trail; `(model_name, sequence)` is unique, so two
concurrent stage changes of one model cannot both commit from the same state.
`registry_rollout` holds one row per rollout (`michi rollouts start`); its `active_model` is the model name
while the rollout runs or is paused and NULL once it ended, and is unique, so a second rollout of a model
cannot start beside one that serves (NULLs never collide, on SQLite as on PostgreSQL). Its `revision` is
the model's plan revision, compared and set by every plan change while the rollout serves, so two
concurrent changes of one model cannot both commit from the same state.
`registry_rollout_decision` is the rollouts' audit trail: one row per plan revision a rollout caused.
`registry_rollout_candidate` holds the candidates of a rollout beyond its first (a bandit over more than two arms):
one row per candidate, in plan order after `registry_rollout.candidate_version`, with its share of the devices.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Float, UniqueConstraint
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
    # 1, 2, 3... per model name: the order of the audit trail.
    sequence: int
    version: str = Field(max_length=32)
    from_stage: str = Field(max_length=16)
    to_stage: str = Field(max_length=16)
    kind: str = Field(max_length=16)
    reason: str = Field(default="", max_length=2000)
    actor: str = Field(max_length=128)
    changed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    # The plan revision the change was published in: the changes of one decision (a promotion makes the candidate
    # champion and retires the old one) share one. None on rows written before the column: their `sequence` (a
    # revision then counted stage changes). Last, where revision 0003 added it.
    revision: int | None = None


class RolloutRow(SQLModel, table=True):
    """One rollout of a candidate against the champion: what it serves, where it stands, who started it."""

    __tablename__ = "registry_rollout"
    __table_args__ = (
        UniqueConstraint("rollout_id", name="registry_rollout_rollout_id"),
        UniqueConstraint("active_model", name="registry_rollout_active_model"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # ro-<model>-<candidate>-<8 hex>: what every plan revision of the rollout carries as `rollout_id`.
    rollout_id: str = Field(max_length=200)
    model_name: str = Field(index=True, max_length=128)
    # The model name while running or paused, NULL once ended: unique, so one serving rollout per model.
    active_model: str | None = Field(default=None, max_length=128)
    candidate_version: str = Field(max_length=32)
    champion_version: str = Field(max_length=32)
    strategy: str = Field(max_length=16)
    # The rollout document as parsed (JSON), or NULL for a rollout at a single weight.
    document: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    status: str = Field(max_length=16)
    step_index: int | None = Field(default=None)
    # Percent of devices on the candidate, in [0, 100].
    weight_percent: float = Field(sa_column=Column(Float, nullable=False))
    # The model's plan revision as of the rollout's last change (compare-and-set while it serves).
    revision: int
    started_by: str = Field(max_length=128)
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    ended_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


class RolloutCandidateRow(SQLModel, table=True):
    """A candidate of a rollout beyond its first (`RolloutRow.candidate_version`): a bandit over more arms."""

    __tablename__ = "registry_rollout_candidate"
    __table_args__ = (
        UniqueConstraint("rollout_id", "position", name="registry_rollout_candidate_rollout_position"),
        UniqueConstraint("rollout_id", "version", name="registry_rollout_candidate_rollout_version"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # Looked up by the unique (rollout_id, position), whose index leads with the rollout id.
    rollout_id: str = Field(max_length=200)
    # 1, 2, ...: its place in the plan after the first candidate (the champion comes last).
    position: int
    version: str = Field(max_length=32)
    # Percent of devices on this candidate, in [0, 100]; changed with the rollout row, under its revision.
    weight_percent: float = Field(sa_column=Column(Float, nullable=False))


class RolloutDecisionRow(SQLModel, table=True):
    """One plan revision a rollout caused: the action, who or which policy, why, the evidence, the plan before."""

    __tablename__ = "registry_rollout_decision"
    __table_args__ = (UniqueConstraint("model_name", "revision", name="registry_rollout_decision_model_revision"),)

    id: int | None = Field(default=None, primary_key=True)
    rollout_id: str = Field(index=True, max_length=200)
    model_name: str = Field(index=True, max_length=128)
    # The revision of the RolloutPlan this decision published.
    revision: int
    action: str = Field(max_length=16)
    # `$USER` for a person, `policy:<name>` for the controller.
    actor: str = Field(max_length=128)
    reason: str = Field(default="", max_length=2000)
    evidence: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # The plan in force before this decision (the RolloutPlan as a JSON mapping, proto field names).
    previous_plan: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
