"""The monitor's tables as revision 0001 made them: frozen.

Revision 0001 creates these (only those missing), and start-up recognises a database holding them without a
version table by them. Never edit: a schema change is a new revision.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

sa.Table(
    "monitor_drift_episode",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("episode_id", sa.String(length=64), nullable=False),
    sa.Column("model_name", sa.String(length=128), nullable=False),
    sa.Column("model_version", sa.String(length=128), nullable=False),
    sa.Column("cohort", sa.String(length=160), nullable=False),
    sa.Column("status", sa.String(length=16), nullable=False),
    sa.Column("windows", sa.JSON(), nullable=False),
    sa.Column("features", sa.JSON(), nullable=False),
    sa.Column("firing_event_id", sa.String(length=128), nullable=False),
    sa.Column("resolved_event_id", sa.String(length=128), nullable=True),
    sa.Column("retrain_event_id", sa.String(length=128), nullable=True),
    sa.Column("samples", sa.Integer(), nullable=False),
    sa.Column("resolved_window_id", sa.String(length=64), nullable=True),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("episode_id"),
    sa.Index("ix_monitor_drift_episode_model_name", "model_name"),
    sa.Index("ix_monitor_drift_episode_status", "status"),
)

sa.Table(
    "monitor_window",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("window_id", sa.String(length=64), nullable=False),
    sa.Column("model_name", sa.String(length=128), nullable=False),
    sa.Column("model_version", sa.String(length=128), nullable=False),
    sa.Column("cohort", sa.String(length=160), nullable=False),
    sa.Column("rows", sa.Integer(), nullable=False),
    sa.Column("reason", sa.String(length=32), nullable=False),
    sa.Column("verdict", sa.String(length=32), nullable=False),
    sa.Column("drifted", sa.JSON(), nullable=False),
    sa.Column("figures", sa.JSON(), nullable=False),
    sa.Column("profile_version", sa.String(length=64), nullable=False),
    sa.Column("latest_s", sa.Float(), nullable=False),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("window_id"),
    sa.Index("ix_monitor_window_closed_at", "closed_at"),
)
