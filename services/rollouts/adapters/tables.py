"""The rollout controller's SQL tables (SQLModel; SQLite by default, PostgreSQL in production).

- `rollouts_qa_window`: each window asked for at random (`RANDOM_QA`), per model version (the arm that served
  it): what the model said and when (from its label request) and what people said (from its label), whichever
  came first; the first label counts.
- `rollouts_progress`: per running rollout the controller drives, its state: the canary's place in its steps
  (`michi.rollouts.progression.Progress`), the last analysis and every verdict, or the A/B test's
  (`michi.rollouts.sequential.SequentialTest`). Deleted once the rollout no longer runs.
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


ROLLOUTS_TABLES = (RolloutsQaWindowRow, RolloutsProgressRow)
