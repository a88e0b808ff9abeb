"""The monitor's SQL tables (SQLModel; SQLite by default, PostgreSQL in production).

- `monitor_window`: every closed drift window, once per window id: model version, cohort, rows, why it
  closed, its verdict and every feature's figures (the evidence a drift alert's `window_id` points to).
- `monitor_drift_episode`: one row per drift episode of a (model, version, cohort): the windows that
  drifted in it, the features, the alerts and requests it published, and how it ended.
- `monitor_cohort_progress`: per (model, version, cohort) and partition, the offset up to which its rows were
  judged in closed windows: a window read again after a crash takes the same rows, never one counted before.
- `monitor_qa_window`: each window asked for at random (`RANDOM_QA`), per model version: what the model said
  (from its label request) and what people said (from its label), whichever came first; once both are there,
  its place in the order the version's concept-drift detector was fed (`sequence`), so a restart replays it
  identically.
- `monitor_concept_drift`: each change the detector found, once per alert id.
- `monitor_condition_episode`: the resource watch's episodes (memory, lag, budget) opened and whether resolved, so
  an episode open before a restart continues and resolves once.
- `monitor_cost_day`: the resource watch's sums per UTC day, and whether the day's report was published.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel


class MonitorWindowRow(SQLModel, table=True):
    __tablename__ = "monitor_window"

    id: int | None = Field(default=None, primary_key=True)
    window_id: str = Field(max_length=64, unique=True)
    model_name: str = Field(max_length=128)
    model_version: str = Field(max_length=128)
    cohort: str = Field(max_length=160)
    rows: int
    reason: str = Field(max_length=32)
    # drift, ok or insufficient-data
    verdict: str = Field(max_length=32)
    drifted: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # Per feature: psi, jensen_shannon, wasserstein, ks, ks_p_value, status, rows, and the window's histogram.
    figures: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    profile_version: str = Field(max_length=64)
    # Latest occurred_at of its predictions (epoch seconds).
    latest_s: float
    closed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    # Expected accuracy and false-alert rate from the model's confidence (`domain/performance.py`), if computed
    # (last: added by revision 0004).
    performance: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class MonitorDriftEpisodeRow(SQLModel, table=True):
    __tablename__ = "monitor_drift_episode"

    id: int | None = Field(default=None, primary_key=True)
    episode_id: str = Field(max_length=64, unique=True)
    model_name: str = Field(max_length=128, index=True)
    model_version: str = Field(max_length=128)
    cohort: str = Field(max_length=160)
    # open or resolved
    status: str = Field(max_length=16, index=True)
    windows: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    features: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    firing_event_id: str = Field(max_length=128)
    resolved_event_id: str | None = Field(default=None, max_length=128)
    retrain_event_id: str | None = Field(default=None, max_length=128)
    samples: int = 0
    resolved_window_id: str | None = Field(default=None, max_length=64)
    opened_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    resolved_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


class MonitorCohortProgressRow(SQLModel, table=True):
    __tablename__ = "monitor_cohort_progress"
    __table_args__ = (UniqueConstraint("model_name", "model_version", "cohort", "topic", "partition"),)

    id: int | None = Field(default=None, primary_key=True)
    model_name: str = Field(max_length=128)
    model_version: str = Field(max_length=128)
    cohort: str = Field(max_length=160)
    topic: str = Field(max_length=255)
    partition: int
    next_offset: int


class MonitorQaWindowRow(SQLModel, table=True):
    __tablename__ = "monitor_qa_window"
    __table_args__ = (UniqueConstraint("window_id", "model_version"), UniqueConstraint("model_version", "sequence"))

    id: int | None = Field(default=None, primary_key=True)
    window_id: str = Field(max_length=128)
    model_name: str = Field(max_length=128)
    model_version: str = Field(max_length=128, index=True)
    # What the model said (the random-QA request's `suggested`, its prediction's class) and when.
    predicted: int | None = None
    predicted_at_s: float | None = None
    # What people said (the label's event type) and the label.
    labelled: int | None = None
    label_event_id: str | None = Field(default=None, max_length=128)
    # Set once both are there: the detector's feed order (from 1, per version) and the outcome.
    sequence: int | None = None
    correct: bool | None = None
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    # How sure the model was of its call (the request's `confidence`, the probability of the predicted class;
    # last: added by revision 0004).
    confidence: float | None = None


class MonitorConceptDriftRow(SQLModel, table=True):
    __tablename__ = "monitor_concept_drift"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=128, unique=True)
    model_name: str = Field(max_length=128)
    model_version: str = Field(max_length=128, index=True)
    # The outcome at which the change was found, and the error rates before and after it.
    sequence: int
    error_rate_before: float
    error_rate_after: float
    retrain_event_id: str | None = Field(default=None, max_length=128)
    detected_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class MonitorConditionEpisodeRow(SQLModel, table=True):
    __tablename__ = "monitor_condition_episode"

    id: int | None = Field(default=None, primary_key=True)
    episode_id: str = Field(max_length=64, unique=True)
    # The condition: kind first (memory, lag, cost), then what it is about (a service, a group).
    key: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    started_at_s: float
    # open or resolved
    status: str = Field(max_length=16, index=True)
    opened_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    resolved_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


class MonitorCostDayRow(SQLModel, table=True):
    __tablename__ = "monitor_cost_day"

    id: int | None = Field(default=None, primary_key=True)
    # YYYY-MM-DD, UTC
    day: str = Field(max_length=10, unique=True)
    first_seen_s: float
    last_seen_s: float
    cpu_seconds: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    predictions: int = 0
    labels: int = 0
    training_runs: float = 0.0
    training_run_seconds: float = 0.0
    reported: bool = False


MONITOR_TABLES = (
    MonitorWindowRow,
    MonitorDriftEpisodeRow,
    MonitorCohortProgressRow,
    MonitorQaWindowRow,
    MonitorConceptDriftRow,
    MonitorConditionEpisodeRow,
    MonitorCostDayRow,
)
