"""The camera service on a real Kafka and SQLite, with the real vision models, and scoring as it runs
(`python -m services.scoring`).

An upload with GPS, and inward JPEG frames of the real astronaut face (`images/astronaut.png` from the model store)
announced as ingest announces them (`media_event`, stored at `media_key` in the blob store), eyes open and then
closed by the landmark-driven warp (`michi.vision.composites.close_eyes`): the models run on every frame, and one
drowsiness Detection comes out, which scoring turns into one ScoredEvent. Some media come before their upload,
some after. Everything delivered again gives nothing new.

Needs `make models` (skipped without them outside CI, like tests/unit/test_vision_models.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from michi.blobs import BlobStore, media_key
from michi.bus.catalog import DETECTIONS, MEDIA, SCORED_EVENTS, UPLOADS
from michi.bus.producer import EventProducer
from michi.bus.reader import Record, TopicReader
from michi.contracts import stable_event_id, timestamp_from_seconds, timestamp_now
from michi.contracts.v1 import common_pb2, inference_pb2, upload_pb2
from michi.infra.processes import free_port
from michi.vision.composites import add_sensor_noise, close_eyes
from michi.vision.faces import FaceDetector
from michi.vision.images import read_image
from michi.vision.landmarks import FaceLandmarker
from michi.vision.model_store import VisionModelsMissing, VisionModelStore
from services.camera.entrypoints.consumer import CameraConsumer
from services.camera.settings import CameraSettings
from services.camera.wiring import build_consumer
from services.ingest.domain.media_description import describe_media
from services.ingest.entrypoints.media import media_event
from tests.integration.kafka_support import wait_until_committed
from tests.integration.test_scoring_service import ScoringProcess, scoring_environment

pytestmark = pytest.mark.integration

DEVICE = "dashcam-cam-1"
DRIVER = "driver-cam-1"
TRIP = "trip-cam-1"
UPLOAD = "upload-cam-1"
STARTED_S = 1_765_000_000
# 5 frames per second: 6 s with the eyes open (the driver's baseline), then 3 s closed (a microsleep).
FRAME_INTERVAL_MS = 200
OPEN_FRAMES = 30
CLOSED_FRAMES = 15
BEFORE_UPLOAD = 20


@pytest.fixture(scope="module")
def vision_store() -> VisionModelStore:
    try:
        return VisionModelStore()
    except VisionModelsMissing as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{error} (.ci/run builds them)")


def encode_jpeg(image: np.ndarray) -> bytes:
    import io

    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="image2pipe") as container:
        stream = container.add_stream("mjpeg", rate=1)
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuvj420p"
        stream.options = {"qmin": "2", "qmax": "2"}
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def drowsy_frames(store: VisionModelStore) -> list[bytes]:
    """JPEG frames of the real face: eyes open, then closed by the landmark-driven warp (sensor noise on each)."""
    face_image = read_image(store.path("images/astronaut.png"))
    face = FaceDetector(store).detect(face_image)[0]
    mesh = FaceLandmarker(store, with_iris=False).locate(face_image, face)
    closed = close_eyes(face_image, mesh.points, 1.0)
    rng = np.random.default_rng(19)
    return [
        encode_jpeg(add_sensor_noise(face_image if index < OPEN_FRAMES else closed, rng))
        for index in range(OPEN_FRAMES + CLOSED_FRAMES)
    ]


def upload_received() -> upload_pb2.UploadReceived:
    """What ingest publishes for an accepted upload (the fields the camera service reads, and the rest's shape)."""
    upload = upload_pb2.Upload(
        upload_id=UPLOAD,
        device_id=DEVICE,
        driver_id=DRIVER,
        trip_id=TRIP,
        sequence=0,
        trip_end=False,
        firmware_version="1.0.0",
        sample_rate_hz=50,
        started_at=timestamp_from_seconds(STARTED_S),
        gps=[
            upload_pb2.GpsFix(
                offset_ms=1000 * second, latitude=48.137, longitude=11.575 + 0.0002 * second, speed_mps=22.0, hdop=0.8
            )
            for second in range(10)
        ],
        media_names=[f"inward_{index:04d}.jpg" for index in range(OPEN_FRAMES + CLOSED_FRAMES)],
        vehicle_type="car",
    )
    return upload_pb2.UploadReceived(
        event_id=stable_event_id("upload", DEVICE, UPLOAD),
        occurred_at=timestamp_now(),
        lineage=common_pb2.Lineage(
            upload_id=UPLOAD, trip_id=TRIP, device_id=DEVICE, driver_id=DRIVER, trace_id="c" * 32
        ),
        upload=upload,
        received_at=timestamp_now(),
        content_sha256="d" * 64,
    )


def store_media(blobs: BlobStore, frames: list[bytes]) -> list[upload_pb2.MediaReceived]:
    """Each frame stored where ingest stores media, and its MediaReceived as ingest builds it from the PUT."""
    events = []
    for index, data in enumerate(frames):
        name = f"inward_{index:04d}.jpg"
        key = media_key(DEVICE, UPLOAD, name)
        info = asyncio.run(blobs.put_bytes(key, data))
        description = describe_media(name, {"x-michi-frame-offsets-ms": str(index * FRAME_INTERVAL_MS)})
        events.append(media_event(DEVICE, UPLOAD, name, key, info, "image/jpeg", description, "e" * 32))
    return events


def publish(producer: EventProducer, uploads: list[upload_pb2.UploadReceived], media: list[upload_pb2.MediaReceived]):
    futures = [producer.publish(MEDIA, DEVICE, item) for item in media]
    futures += [producer.publish(UPLOADS, DEVICE, item) for item in uploads]
    for future in futures:
        future.result(30)


def consume_until_committed(
    camera: CameraConsumer, kafka_bootstrap: str, topic_prefix: str, timeout: float = 120.0
) -> None:
    """Poll the camera consumer until its group committed the end of both input topics."""
    deadline = time.monotonic() + timeout
    topics = [MEDIA.name(topic_prefix), UPLOADS.name(topic_prefix)]
    while time.monotonic() < deadline:
        camera.poll_once(0.5)
        try:
            wait_until_committed(kafka_bootstrap, f"{topic_prefix}camera", topics, timeout=0.5)
            return
        except AssertionError:
            continue
    raise AssertionError("the camera service did not consume its inputs")


def read_all(reader: TopicReader, seconds: float) -> list[Record]:
    records: list[Record] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        records.extend(reader.poll(0.5))
    return records


@pytest.fixture
def camera(
    kafka_bootstrap: str, topic_prefix: str, michi_home: Path, producer: EventProducer, vision_store: VisionModelStore
) -> Iterator[CameraConsumer]:
    settings = CameraSettings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        home=michi_home,
        database_url=f"sqlite:///{michi_home / 'camera.db'}",
        blob_url=f"file://{michi_home / 'blobs'}",
    )
    consumer = build_consumer(settings, producer=producer)
    try:
        yield consumer
    finally:
        consumer.consumer.close()
        consumer.close()


def test_drowsy_inward_frames_give_one_drowsiness_detection_scored_once_and_a_redelivery_nothing_new(
    camera: CameraConsumer,
    producer: EventProducer,
    kafka_bootstrap: str,
    topic_prefix: str,
    michi_home: Path,
    vision_store: VisionModelStore,
    tmp_path: Path,
) -> None:
    blobs = BlobStore(f"file://{michi_home / 'blobs'}")
    media = store_media(blobs, drowsy_frames(vision_store))
    upload = upload_received()
    # Some media before their upload, the rest after it.
    publish(producer, [], media[:BEFORE_UPLOAD])
    publish(producer, [upload], [])
    publish(producer, [], media[BEFORE_UPLOAD:])
    consume_until_committed(camera, kafka_bootstrap, topic_prefix)

    detections_reader = TopicReader(kafka_bootstrap, DETECTIONS, topic_prefix)
    try:
        detections = [record.message for record in detections_reader.read_to_end(60)]  # committed: all published
        assert len(detections) == 1, detections
        detection = detections[0]
        assert isinstance(detection, inference_pb2.Detection)
        assert detection.event_type == common_pb2.EVENT_TYPE_DROWSINESS
        lineage = detection.lineage
        assert (lineage.upload_id, lineage.trip_id, lineage.device_id, lineage.driver_id) == (
            UPLOAD,
            TRIP,
            DEVICE,
            DRIVER,
        )
        lock = vision_store.lock
        assert (
            lineage.model_name == "vision-attention"
            and lineage.model_version.startswith("lock-")
            and len(lineage.model_version) == 17
        )
        assert lineage.data_version and lock.outputs["face_landmark.onnx"].sha256
        assert detection.camera.camera == upload_pb2.CAMERA_KIND_INWARD
        evidence = list(detection.camera.frame_offsets_ms)
        # The eyes closed at frame OPEN_FRAMES: the evidence is a frame with closed eyes, in the item named.
        assert evidence and all(offset >= OPEN_FRAMES * FRAME_INTERVAL_MS for offset in evidence)
        named = next(item for item in media if item.name == detection.camera.media_name)
        assert list(named.frame_offsets_ms) == evidence[:1]
        assert (detection.camera.blob_key, detection.camera.sha256) == (named.blob_key, named.sha256)
        assert detection.speed_mps == pytest.approx(22.0) and detection.gps_available
        assert 0.0 < detection.confidence <= 1.0

        # Scoring turns it into one ScoredEvent (its trip has no segment: a camera detection never holds one open).
        port = free_port()
        scoring = ScoringProcess(
            scoring_environment(kafka_bootstrap, topic_prefix, michi_home, port, trip_end_grace_s=3.0),
            tmp_path / "scoring",
            port,
        )
        scored_reader = TopicReader(kafka_bootstrap, SCORED_EVENTS, topic_prefix)
        try:
            scoring.start()
            scored: list[Record] = []
            deadline = time.monotonic() + 90
            while not scored and time.monotonic() < deadline:
                scored.extend(scored_reader.poll(0.5))
            assert len(scored) == 1
            event = scored[0].message
            assert event.detection_event_id == detection.event_id  # type: ignore[attr-defined]
            assert event.event_type == common_pb2.EVENT_TYPE_DROWSINESS  # type: ignore[attr-defined]
            assert event.weight == 4.0 and event.points > 0  # type: ignore[attr-defined]

            # Everything again: the camera service publishes nothing new, so scoring has nothing new either.
            publish(producer, [upload], media)
            consume_until_committed(camera, kafka_bootstrap, topic_prefix)
            assert read_all(detections_reader, 3.0) == []
            assert read_all(scored_reader, 3.0) == []
        finally:
            scored_reader.close()
            scoring.stop()
        metrics = camera.metrics.registry
        assert metrics.get_sample_value("michi_camera_media_analysed_total", {"camera": "inward"}) == len(media)
        assert metrics.get_sample_value("michi_camera_duplicates_total", {"kind": "media"}) == len(media)
        assert metrics.get_sample_value("michi_camera_duplicates_total", {"kind": "upload"}) == 1
        assert metrics.get_sample_value("michi_camera_detections_total", {"event_type": "EVENT_TYPE_DROWSINESS"}) == 1
    finally:
        detections_reader.close()


def test_killed_mid_stream_and_restarted_the_service_loses_nothing_and_doubles_nothing(
    producer: EventProducer,
    kafka_bootstrap: str,
    topic_prefix: str,
    michi_home: Path,
    vision_store: VisionModelStore,
    tmp_path: Path,
) -> None:
    import signal
    import subprocess
    import sys

    import httpx

    port = free_port()
    environment = {
        **os.environ,
        "MICHI_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "MICHI_TOPIC_PREFIX": topic_prefix,
        "MICHI_HOME": str(michi_home),
        "MICHI_DATABASE_URL": f"sqlite:///{michi_home / 'camera.db'}",
        "MICHI_BLOB_URL": f"file://{michi_home / 'blobs'}",
        "MICHI_CAMERA_PORT": str(port),
    }
    repository = Path(__file__).resolve().parents[2]

    def start(number: int) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"camera.{number}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "services.camera"], cwd=repository, env=environment, stdout=log, stderr=log
        )
        log.close()
        return process

    def analysed() -> float:
        try:
            page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2.0).text
        except httpx.HTTPError:
            return 0.0
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in page.splitlines()
            if line.startswith("michi_camera_media_analysed_total{")
        )

    blobs = BlobStore(f"file://{michi_home / 'blobs'}")
    media = store_media(blobs, drowsy_frames(vision_store))
    publish(producer, [upload_received()], media)
    first = start(1)
    try:
        deadline = time.monotonic() + 90
        while analysed() < 10 and time.monotonic() < deadline:
            assert first.poll() is None, (tmp_path / "camera.1.log").read_text()[-3000:]
            time.sleep(0.05)
        assert analysed() >= 10
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
    second = start(2)
    try:
        wait_until_committed(
            kafka_bootstrap, f"{topic_prefix}camera", [MEDIA.name(topic_prefix), UPLOADS.name(topic_prefix)], 120
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    with TopicReader(kafka_bootstrap, DETECTIONS, topic_prefix) as reader:
        detections = [record.message for record in reader.read_to_end(60)]  # committed: all published
    # The item in flight at the kill may be published twice, always under the same id: consumers deduplicate.
    assert len({detection.event_id for detection in detections}) == 1, detections  # type: ignore[attr-defined]
    assert all(detection.event_type == common_pb2.EVENT_TYPE_DROWSINESS for detection in detections)  # type: ignore[attr-defined]
