"""The trainer's tables as `create_all` made them before migrations existed: frozen.

Revision 0001 creates these (only those missing, so a database made before migrations keeps every
row), and start-up recognises such a database by them. Never edit: a schema change is a new revision.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

sa.Table(
    "trainer_label",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("event_id", sa.String(length=128), nullable=False),
    sa.Column("window_id", sa.String(length=128), nullable=False),
    sa.Column("upload_id", sa.String(length=128), nullable=False),
    sa.Column("device_id", sa.String(length=128), nullable=False),
    sa.Column("trip_id", sa.String(length=128), nullable=False),
    sa.Column("driver_id", sa.String(length=128), nullable=False),
    sa.Column("event_type", sa.Integer(), nullable=False),
    sa.Column("source", sa.Integer(), nullable=False),
    sa.Column("occurred_at_s", sa.Float(), nullable=False),
    sa.Column("window_started_at_s", sa.Float(), nullable=False),
    sa.Column("window_ended_at_s", sa.Float(), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("event_id"),
    sa.Index("ix_trainer_label_window_id", "window_id"),
)

sa.Table(
    "trainer_alert",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("event_id", sa.String(length=128), nullable=False),
    sa.Column("kind", sa.String(length=128), nullable=False),
    sa.Column("message", sa.String(length=2000), nullable=False),
    sa.Column("run_id", sa.String(length=64), nullable=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("event_id"),
)

sa.Table(
    "trainer_run",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("run_id", sa.String(length=64), nullable=False),
    sa.Column("model_name", sa.String(length=128), nullable=False),
    sa.Column("trigger", sa.String(length=32), nullable=False),
    sa.Column("trigger_reason", sa.String(length=2000), nullable=False),
    sa.Column("status", sa.String(length=16), nullable=False),
    sa.Column("status_reason", sa.Text(), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("code_version", sa.String(length=64), nullable=False),
    sa.Column("data_version", sa.String(length=128), nullable=False),
    sa.Column("parameters", sa.JSON(), nullable=False),
    sa.Column("metrics", sa.JSON(), nullable=False),
    sa.Column("champion_metrics", sa.JSON(), nullable=False),
    sa.Column("gate", sa.JSON(), nullable=False),
    sa.Column("registered_version", sa.String(length=32), nullable=True),
    sa.Column("stage", sa.String(length=16), nullable=True),
    sa.Column("artifact_uri", sa.String(length=1000), nullable=False),
    sa.Column("experiment_uri", sa.String(length=1000), nullable=False),
    sa.Column("label_watermark", sa.Integer(), nullable=False),
    sa.Column("facts", sa.JSON(), nullable=False),
    sa.Column("experiment", sa.JSON(), nullable=False),
    sa.Column("experiment_markdown", sa.Text(), nullable=False),
    sa.UniqueConstraint("run_id"),
    sa.Index("ix_trainer_run_model_name", "model_name"),
)

sa.Table(
    "trainer_step",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("run_id", sa.String(length=64), nullable=False),
    sa.Column("sequence", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(length=32), nullable=False),
    sa.Column("status", sa.String(length=16), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("seconds", sa.Float(), nullable=True),
    sa.Column("error", sa.Text(), nullable=False),
    sa.Column("details", sa.JSON(), nullable=False),
    sa.UniqueConstraint("run_id", "sequence", name="trainer_step_run_sequence"),
    sa.Index("ix_trainer_step_run_id", "run_id"),
)
