"""The rollout controller's SQL tables (SQLModel; SQLite by default, PostgreSQL in production).

- `rollouts_qa_window`: each window asked for at random (`RANDOM_QA`), per model version (the arm that served
  it): what the model said and when (from its label request) and what people said (from its label), whichever
  came first; the first label counts.
- `rollouts_progress`: per running rollout the controller drives, its state: the canary's place in its steps
  (`michi.rollouts.progression.Progress`), the last analysis and every verdict, or the A/B test's
  (`michi.rollouts.sequential.SequentialTest`). Deleted once the rollout no longer runs.
- `rollouts_segment`: each processed upload's trip segment (by event id): its device, end, distance and latency
  bucket (`services/rollouts/domain/figures.py`).
- `rollouts_detection`: each detection made by a rollout's arm (by event id): its window, model version, rollout.
- `rollouts_window_label`: the first label of each window (what people said), whatever the request's reason:
  a detection whose window people labelled NORMAL or CONFOUNDER is a false alert.
- `rollouts_error`: each upload inference could not process (its dead letter, by event id): device and time.
- `rollouts_drift_episode`: the monitor's drift episodes per model version (by episode id): fired, resolved.

Rows of the last five older than `MICHI_ROLLOUTS_SIGNAL_RETENTION_S` (event time) are deleted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel


class RolloutsQaWindowRow(SQLModel, table=True):
    __tablename__ = "rollouts_qa_window"
    __table_args__ = (UniqueConstraint("window_id", "model_version"),)

    id: int | None = Field(default=None, primary_key=True)
    window_id: str = Field(max_length=128)
    model_name: str = Field(max_length=128)
    model_version: str = Field(max_length=128, index=True)
    # What the model said (the random-QA request's `suggested`) and when it predicted (epoch seconds).
    predicted: int | None = None
    predicted_at_s: float | None = None
    # What people said (the label's event type) and the label.
    labelled: int | None = None
    label_event_id: str | None = Field(default=None, max_length=128)
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class RolloutsProgressRow(SQLModel, table=True):
    __tablename__ = "rollouts_progress"

    id: int | None = Field(default=None, primary_key=True)
    rollout_id: str = Field(max_length=300, unique=True)
    model_name: str = Field(max_length=128)
    state: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class RolloutsSegmentRow(SQLModel, table=True):
    __tablename__ = "rollouts_segment"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=128, unique=True)
    device_id: str = Field(max_length=128)
    # The upload's end (epoch seconds, device time), its distance, and its latency bucket (None: unknown).
    occurred_at_s: float = Field(index=True)
    distance_m: float
    latency_bucket: int | None = None
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class RolloutsDetectionRow(SQLModel, table=True):
    __tablename__ = "rollouts_detection"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=128, unique=True)
    window_id: str = Field(max_length=128, index=True)
    model_name: str = Field(max_length=128)
    model_version: str = Field(max_length=128)
    rollout_id: str = Field(max_length=300, index=True)
    event_type: int
    occurred_at_s: float
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class RolloutsWindowLabelRow(SQLModel, table=True):
    __tablename__ = "rollouts_window_label"

    id: int | None = Field(default=None, primary_key=True)
    window_id: str = Field(max_length=128, unique=True)
    event_type: int
    label_event_id: str = Field(max_length=128)
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class RolloutsErrorRow(SQLModel, table=True):
    __tablename__ = "rollouts_error"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=128, unique=True)
    device_id: str = Field(max_length=128)
    occurred_at_s: float = Field(index=True)
    reason: str = Field(max_length=128)
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class RolloutsDriftEpisodeRow(SQLModel, table=True):
    __tablename__ = "rollouts_drift_episode"

    id: int | None = Field(default=None, primary_key=True)
    episode_id: str = Field(max_length=128, unique=True)
    model_name: str = Field(max_length=128)
    model_version: str = Field(max_length=128, index=True)
    # When the monitor's firing and resolve alerts say it opened and ended (event time; None: not seen yet).
    fired_at_s: float | None = None
    resolved_at_s: float | None = None
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


ROLLOUTS_TABLES = (
    RolloutsQaWindowRow,
    RolloutsProgressRow,
    RolloutsSegmentRow,
    RolloutsDetectionRow,
    RolloutsWindowLabelRow,
    RolloutsErrorRow,
    RolloutsDriftEpisodeRow,
)
