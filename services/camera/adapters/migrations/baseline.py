"""The camera service's tables as revision 0001 made them: frozen.

Revision 0001 creates these (only those missing). Never edit: a schema change is a new revision.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

sa.Table(
    "camera_upload",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("upload_id", sa.String(length=128), nullable=False),
    sa.Column("device_id", sa.String(length=128), nullable=False),
    sa.Column("driver_id", sa.String(length=128), nullable=False),
    sa.Column("trip_id", sa.String(length=128), nullable=False),
    sa.Column("sequence", sa.Integer(), nullable=False),
    sa.Column("started_at_ms", sa.BigInteger(), nullable=False),
    sa.Column("trace_id", sa.String(length=64), nullable=False),
    sa.Column("gps", sa.JSON(), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("upload_id"),
    sa.Index("ix_camera_upload_received_at", "received_at"),
)

sa.Table(
    "camera_media",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("event_id", sa.String(length=128), nullable=False),
    sa.Column("upload_id", sa.String(length=128), nullable=False),
    sa.Column("device_id", sa.String(length=128), nullable=False),
    sa.Column("name", sa.String(length=128), nullable=False),
    sa.Column("status", sa.String(length=16), nullable=False),
    sa.Column("reason", sa.String(length=64), nullable=False),
    sa.Column("detections", sa.Integer(), nullable=False),
    sa.Column("message", sa.LargeBinary(), nullable=False),
    sa.Column("topic", sa.String(length=255), nullable=False),
    sa.Column("partition", sa.Integer(), nullable=False),
    sa.Column("record_offset", sa.BigInteger(), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("event_id"),
    sa.Index("ix_camera_media_upload_id", "upload_id"),
    sa.Index("ix_camera_media_status", "status"),
    sa.Index("ix_camera_media_received_at", "received_at"),
)

sa.Table(
    "camera_stream",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("stream", sa.String(length=160), nullable=False),
    sa.Column("state", sa.JSON(), nullable=False),
    sa.Column("last_frame_ms", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("stream"),
    sa.Index("ix_camera_stream_updated_at", "updated_at"),
)
