"""The camera service's SQL tables (SQLModel; SQLite by default, PostgreSQL in production).

- `camera_upload`: one row per upload seen on `michi.uploads.v1` (the join's upload side): who, which trip, when
  it started and its GPS track (offset, speed, position per fix), kept `MICHI_CAMERA_UPLOAD_RETENTION_S` for
  media that come after it, and at most `MICHI_CAMERA_MAX_UPLOADS` rows (the oldest go first).
- `camera_media`: one row per media item (`MediaReceived.event_id`): its message as it came (the join's media side,
  and the dead letter's bytes should it never be analysed), where it was read (topic, partition, offset), and its
  status: `waiting` for its upload, `done` (analysed, its detections acknowledged), `dead-lettered` (why in
  `reason`). Done and dead-lettered rows stay `MICHI_CAMERA_DONE_RETENTION_S`, so a redelivery gives nothing new.
- `camera_stream`: the analysis state of each stream (`inward:<driver>`, `outward:<device>`) as the analysis writes
  it (JSON), with the capture time of the last frame fed: written in the transaction that marks a media item done.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, LargeBinary
from sqlmodel import Field, SQLModel


class CameraUploadRow(SQLModel, table=True):
    __tablename__ = "camera_upload"

    id: int | None = Field(default=None, primary_key=True)
    upload_id: str = Field(max_length=128, unique=True)
    device_id: str = Field(max_length=128)
    driver_id: str = Field(max_length=128)
    trip_id: str = Field(max_length=128)
    sequence: int
    # Upload.started_at in epoch milliseconds.
    started_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    trace_id: str = Field(default="", max_length=64)
    # [[offset_ms, speed_mps, latitude, longitude], ...] in offset order (at most MAX_GPS_FIXES).
    gps: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))


class CameraMediaRow(SQLModel, table=True):
    __tablename__ = "camera_media"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=128, unique=True)
    upload_id: str = Field(max_length=128, index=True)
    device_id: str = Field(max_length=128)
    name: str = Field(max_length=128)
    # `waiting`, `done` or `dead-lettered`.
    status: str = Field(max_length=16, index=True)
    reason: str = Field(default="", max_length=64)
    detections: int = 0
    # The MediaReceived as it was read, and where: what is analysed once the upload is there, or dead-lettered.
    message: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    topic: str = Field(max_length=255)
    partition: int
    record_offset: int = Field(sa_column=Column(BigInteger, nullable=False))
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    settled_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


class CameraStreamRow(SQLModel, table=True):
    __tablename__ = "camera_stream"

    id: int | None = Field(default=None, primary_key=True)
    stream: str = Field(max_length=160, unique=True)
    state: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Capture time (epoch ms) of the newest frame fed to the state: an older item is analysed on its own.
    last_frame_ms: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))


CAMERA_TABLES = (CameraUploadRow, CameraMediaRow, CameraStreamRow)
