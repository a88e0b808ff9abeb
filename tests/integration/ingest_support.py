"""Helpers the ingest integration tests share: settings pointing at the session's servers, topic counts,
and `python -m services.ingest` started as a process and waited for."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from michi.bus.catalog import UPLOADS
from michi.bus.reader import end_offsets
from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import upload_pb2
from michi.infra.processes import free_port
from services.ingest.settings import IngestSettings


def make_upload(upload_id: str = "upload-1", device_id: str = "device-a", sequence: int = 0) -> upload_pb2.Upload:
    """A valid 10 s, 50 Hz upload of a device driving straight at 14 m/s."""
    samples, rate_hz = 500, 50
    upload = upload_pb2.Upload(
        upload_id=upload_id,
        device_id=device_id,
        driver_id="driver-1",
        trip_id=f"trip-of-{device_id}",
        sequence=sequence,
        firmware_version="1.0.0",
        sample_rate_hz=rate_hz,
        started_at=timestamp_from_seconds(time.time() - 15),
    )
    upload.imu.offset_ms.extend(index * 20 for index in range(samples))
    for name, value in (("accel_x", 0.3), ("accel_y", -0.2), ("accel_z", 9.8), ("gyro_x", 0.0), ("gyro_y", 0.0)):
        getattr(upload.imu, name).extend([value] * samples)
    upload.imu.gyro_z.extend([0.01] * samples)
    for second in range(10):
        upload.gps.add(
            offset_ms=second * 1000, latitude=52.52, longitude=13.40, speed_mps=14.0, heading_deg=80, hdop=0.9
        )
    return upload


def make_upload_without_gyroscope(
    upload_id: str = "upload-1", device_id: str = "device-a", rate_hz: float = 16.7
) -> upload_pb2.Upload:
    """A valid 10 s upload of a phone-like device: a fractional rate, microsecond times ±5 % off the grid,
    linear acceleration and no gyroscope (empty gyro arrays)."""
    samples = round(10 * rate_hz)
    upload = upload_pb2.Upload(
        upload_id=upload_id,
        device_id=device_id,
        driver_id="driver-1",
        trip_id=f"trip-of-{device_id}",
        firmware_version="2.0.0",
        sample_rate_hz=round(rate_hz),
        sample_rate_exact_hz=rate_hz,
        acceleration_kind=upload_pb2.ACCELERATION_KIND_LINEAR,
        gyroscope=upload_pb2.GYROSCOPE_ABSENT,
        started_at=timestamp_from_seconds(time.time() - 15),
    )
    period_us = 1e6 / rate_hz
    # A fixed pattern of jitter within ±5 % of a period, so the upload (and its hash) is the same every run.
    upload.imu.offset_us.extend(
        round((index + 0.05 * ((index * 7) % 11 - 5) / 5) * period_us) + 50_000 for index in range(samples)
    )
    for name, value in (("accel_x", 0.3), ("accel_y", -0.2), ("accel_z", 0.05)):
        getattr(upload.imu, name).extend([value] * samples)
    for second in range(10):
        upload.gps.add(
            offset_ms=second * 1000, latitude=52.52, longitude=13.40, speed_mps=14.0, heading_deg=80, hdop=0.9
        )
    return upload


def settings_for(kafka_bootstrap: str, redis_url: str, topic_prefix: str, home: Path, **extra: Any) -> IngestSettings:
    """Ingest settings on the test's Kafka prefix, Redis, a SQLite file and a blob folder under `home`."""
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka_bootstrap,
        "redis_url": redis_url,
        "topic_prefix": topic_prefix,
        "home": home,
        "database_url": f"sqlite:///{home / 'michi.db'}",
        "blob_url": f"file://{home / 'blobs'}",
    }
    values.update(extra)
    return IngestSettings(**values)


def uploads_count(kafka_bootstrap: str, topic_prefix: str) -> int:
    """Records on the uploads topic (high watermarks; `end_offsets` waits out a fresh topic's leader election)."""
    return sum(end_offsets(kafka_bootstrap, UPLOADS.name(topic_prefix), timeout=15).values())


def ingest_environment(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, michi_home: Path, **extra: str
) -> dict[str, str]:
    """The MICHI_* variables an ingest process (and a CLI talking to its home) needs, on free ports."""
    settings = settings_for(kafka_bootstrap, redis_url, topic_prefix, michi_home)
    return {
        "MICHI_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "MICHI_REDIS_URL": redis_url,
        "MICHI_TOPIC_PREFIX": topic_prefix,
        "MICHI_HOME": str(michi_home),
        "MICHI_DATABASE_URL": settings.resolved_database_url(),
        "MICHI_INGEST_HTTP_PORT": str(free_port()),
        "MICHI_INGEST_GRPC_PORT": str(free_port()),
        **extra,
    }


def start_ingest(environment: dict[str, str], michi_home: Path) -> subprocess.Popen[bytes]:
    """`python -m services.ingest` with `environment`, its output in `<home>/ingest.log`."""
    with (michi_home / "ingest.log").open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "services.ingest"], env={**os.environ, **environment}, stdout=log, stderr=log
        )


def wait_for_ingest(url: str, michi_home: Path, timeout_s: float = 30.0) -> None:
    """Poll `/readyz` until it answers 200 (bounded); fail with the process's log otherwise."""
    deadline = time.monotonic() + timeout_s
    ready = None
    with httpx.Client(base_url=url, timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                ready = client.get("/readyz")
                if ready.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise AssertionError(f"ingest not ready: {ready}\n{(michi_home / 'ingest.log').read_text()}")
