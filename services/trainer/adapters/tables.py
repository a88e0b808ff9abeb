"""The trainer's SQL tables (SQLModel; SQLite by default, PostgreSQL in production).

- `trainer_label`: every label consumed from `michi.labels.v1`, one row per event id (unique), so
  a redelivered label is stored once; the newest per window counts (`domain/labels.py`).
- `trainer_alert`: every retrain alert consumed from `michi.alerts.v1`, once per event id, with the
  run it started.
- `trainer_run`: one row per workflow run: trigger, status and its reason, versions, parameters,
  metrics, gate decision, the registered version, and the experiment record (facts and Markdown).
- `trainer_step`: each step of a run (fetch, preprocess, train, evaluate, register, shadow) with
  its timing, status and error.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class TrainerLabelRow(SQLModel, table=True):
    __tablename__ = "trainer_label"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=128, unique=True)
    window_id: str = Field(index=True, max_length=128)
    upload_id: str = Field(max_length=128)
    device_id: str = Field(max_length=128)
    trip_id: str = Field(default="", max_length=128)
    driver_id: str = Field(default="", max_length=128)
    event_type: int
    source: int
    occurred_at_s: float
    window_started_at_s: float
    window_ended_at_s: float
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class TrainerAlertRow(SQLModel, table=True):
    __tablename__ = "trainer_alert"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=128, unique=True)
    kind: str = Field(max_length=128)
    message: str = Field(default="", max_length=2000)
    run_id: str | None = Field(default=None, max_length=64)
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    # W3C traceparent of the span the alert was received in (its consumer span, in the alert's trace): the
    # span of the run it starts links to it. None: no trace, or received before.
    traceparent: str | None = Field(default=None, max_length=64)


class TrainerRunRow(SQLModel, table=True):
    __tablename__ = "trainer_run"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(max_length=64, unique=True)
    model_name: str = Field(index=True, max_length=128)
    trigger: str = Field(max_length=32)
    trigger_reason: str = Field(default="", max_length=2000)
    status: str = Field(max_length=16)
    status_reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    code_version: str = Field(max_length=64)
    data_version: str = Field(default="", max_length=128)
    parameters: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    champion_metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    gate: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    registered_version: str | None = Field(default=None, max_length=32)
    stage: str | None = Field(default=None, max_length=16)
    artifact_uri: str = Field(default="", max_length=1000)
    experiment_uri: str = Field(default="", max_length=1000)
    # Highest trainer_label.id the run's dataset could include (new labels are counted above it).
    label_watermark: int = 0
    facts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    experiment: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    experiment_markdown: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


class TrainerStepRow(SQLModel, table=True):
    __tablename__ = "trainer_step"
    __table_args__ = (UniqueConstraint("run_id", "sequence", name="trainer_step_run_sequence"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(index=True, max_length=64)
    sequence: int
    name: str = Field(max_length=32)
    status: str = Field(max_length=16)
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    seconds: float | None = None
    error: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


TRAINER_TABLES = (TrainerLabelRow, TrainerAlertRow, TrainerRunRow, TrainerStepRow)
