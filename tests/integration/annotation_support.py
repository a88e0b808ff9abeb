"""Helpers the annotation tests share: settings on the session's servers, a clock, requests, uploads.

Tests build the service through `services.annotation.wiring.build_wiring` with a recording
publisher (or the real Kafka one) and a clock they move by hand, so lease expiry needs no sleeping.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from michi.bus.catalog import LABELS
from michi.bus.producer import Delivery, PublishError
from michi.contracts import stable_event_id, timestamp_from_seconds
from michi.contracts.v1 import common_pb2, labels_pb2, upload_pb2
from services.annotation.domain.roles import Role
from services.annotation.handlers import Principal
from services.annotation.settings import AnnotationSettings
from services.annotation.wiring import Wiring, build_wiring

# Password hashing cost in tests (production uses 2**14).
TEST_PASSWORD_WORK = 2**10


class ManualClock:
    """Epoch seconds that move only when told (thread-safe)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = start if start is not None else time.time()
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class RecordingPublisher:
    """Keeps every published label; refuses while `failing` is set."""

    def __init__(self) -> None:
        self.labels: list[labels_pb2.Label] = []
        self.failing = False
        self._lock = threading.Lock()

    def publish(self, label: labels_pb2.Label) -> concurrent.futures.Future[Delivery]:
        future: concurrent.futures.Future[Delivery] = concurrent.futures.Future()
        if self.failing:
            future.set_exception(PublishError("broker unreachable"))
            return future
        with self._lock:
            self.labels.append(label)
            future.set_result(Delivery(LABELS.name(), 0, len(self.labels) - 1))
        return future

    def by_window(self) -> dict[str, list[labels_pb2.Label]]:
        result: dict[str, list[labels_pb2.Label]] = {}
        for label in self.labels:
            result.setdefault(label.lineage.window_id, []).append(label)
        return result


def settings_for(
    tmp_path: Path, redis_url: str, *, database_url: str | None = None, **overrides: Any
) -> AnnotationSettings:
    values: dict[str, Any] = {
        "home": tmp_path / ".michi",
        "redis_url": redis_url,
        "database_url": database_url or f"sqlite:///{tmp_path / 'annotation.db'}",
        "blob_url": f"file://{tmp_path / 'blobs'}",
        "topic_prefix": f"test-{uuid.uuid4().hex[:10]}.",
        "annotation_consume": False,
        "annotation_upkeep_interval_s": 0.2,
    }
    values.update(overrides)
    return AnnotationSettings(**values)


def wire(
    settings: AnnotationSettings,
    *,
    publisher: Any = None,
    clock: ManualClock | None = None,
    chance: Any = None,
) -> Wiring:
    """The service over the test's SQL and Redis; gold is never preferred unless `chance` says so."""
    wiring = build_wiring(
        settings,
        publisher=publisher if publisher is not None else RecordingPublisher(),
        clock=clock or time.time,
        chance=chance if chance is not None else (lambda: 1.0),
        password_work=TEST_PASSWORD_WORK,
    )
    wiring.service.rebuild("startup")  # as the app's start does: the queues are marked built
    return wiring


def make_request(
    window_id: str | None = None,
    *,
    reason: int = labels_pb2.LABEL_REASON_UNCERTAIN,
    priority: int = 50,
    suggested: int = common_pb2.EVENT_TYPE_HARSH_BRAKING,
    confidence: float = 0.52,
    known_answer: int = 0,
    upload: upload_pb2.Upload | None = None,
    window_offset_s: float = 2.0,
    window_s: float = 2.0,
    event_id: str | None = None,
) -> labels_pb2.LabelRequest:
    """A label request for one window (of `upload`, when given: its lineage and a span inside it)."""
    window_id = uuid.uuid4().hex if window_id is None else window_id
    if upload is not None:
        start = upload.started_at.seconds + upload.started_at.nanos / 1e9 + window_offset_s
        lineage = common_pb2.Lineage(
            upload_id=upload.upload_id,
            window_id=window_id,
            trip_id=upload.trip_id,
            device_id=upload.device_id,
            driver_id=upload.driver_id,
            model_name="harsh-events",
            model_version="3",
            data_version="data-7",
        )
    else:
        start = time.time() - 60
        lineage = common_pb2.Lineage(
            upload_id=f"upload-{window_id[:6]}",
            window_id=window_id,
            trip_id="trip-1",
            device_id="device-1",
            driver_id="driver-1",
            model_name="harsh-events",
            model_version="3",
            data_version="data-7",
        )
    return labels_pb2.LabelRequest(
        event_id=event_id or stable_event_id("label-request", window_id, reason, priority),
        occurred_at=timestamp_from_seconds(start + window_s),
        lineage=lineage,
        reason=reason,  # type: ignore[arg-type]
        priority=priority,
        suggested=suggested,  # type: ignore[arg-type]
        confidence=confidence,
        window=common_pb2.TimeSpan(
            started_at=timestamp_from_seconds(start), ended_at=timestamp_from_seconds(start + window_s)
        ),
        detection_event_id=f"detection-{window_id[:8]}",
        known_answer=known_answer,  # type: ignore[arg-type]
    )


def make_upload(
    upload_id: str | None = None,
    *,
    device_id: str = "device-1",
    started_at: float | None = None,
    media: tuple[str, ...] = (),
) -> upload_pb2.Upload:
    """A 10 s, 50 Hz upload with a braking dip in the middle and 10 GPS fixes along a road."""
    rate_hz, samples = 50, 500
    upload = upload_pb2.Upload(
        upload_id=upload_id or f"upload-{uuid.uuid4().hex[:12]}",
        device_id=device_id,
        driver_id="driver-1",
        trip_id="trip-1",
        sequence=1,
        firmware_version="1.0.0",
        sample_rate_hz=rate_hz,
        started_at=timestamp_from_seconds(started_at if started_at is not None else time.time() - 30),
        vehicle_type="van",
        media_names=list(media),
    )
    imu = upload.imu
    for index in range(samples):
        t = index / rate_hz
        braking = -4.0 * math.exp(-((t - 5.0) ** 2) / 0.3)
        imu.offset_ms.append(index * 1000 // rate_hz)
        imu.accel_x.append(braking + 0.1 * math.sin(7 * t))
        imu.accel_y.append(0.2 * math.sin(3 * t))
        imu.accel_z.append(9.81 + 0.05 * math.cos(11 * t))
        imu.gyro_x.append(0.01 * math.sin(2 * t))
        imu.gyro_y.append(0.02 * math.cos(2 * t))
        imu.gyro_z.append(0.05 * math.sin(t))
    for second in range(10):
        speed = 14.0 - (6.0 if second >= 5 else 0.0)
        upload.gps.append(
            upload_pb2.GpsFix(
                offset_ms=second * 1000,
                latitude=35.6812 + second * 0.0001,
                longitude=139.7671 + second * 0.00012,
                speed_mps=speed,
                heading_deg=45.0,
                hdop=0.8,
            )
        )
    return upload


def principal(name: str, role: Role = Role.ANNOTATOR) -> Principal:
    return Principal(name, role)


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yields its base URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="annotation-test-server")
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the annotation app did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
        listener.close()
