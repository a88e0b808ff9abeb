"""The camera service's join of media and uploads: both orders, idempotence under redelivery and crashes, the
bounds, the detections' lineage and evidence; frame sampling and decoding of real encoded stills and clips.

The analysis is a fake here (it reports one episode per stream once it has seen three frames), so the join is
tested on its own; tests/integration/test_camera_pipeline.py runs the real models end to end.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from michi.contracts import stable_event_id, timestamp_from_seconds
from michi.contracts.v1 import common_pb2, upload_pb2
from michi.vision.camera_events import CameraEvent, CameraEventKind, Frame
from michi.vision.images import clip_frame_offset
from services.camera.adapters.analysis import ModelLineage
from services.camera.adapters.frames import DecodedFrame, MediaUnreadable, decode_frames
from services.camera.adapters.metrics import CameraMetrics
from services.camera.adapters.store import DEAD_LETTERED, DONE, WAITING, CameraStore, StoredMedia
from services.camera.domain.join import FrameSampler, Sampling, upload_facts
from services.camera.handlers import JoinBounds, MediaJoin, Rejection, Source

STARTED_S = 1_700_000_000
STARTED_MS = STARTED_S * 1000


class FakeFrames:
    def __init__(self) -> None:
        self.unreadable: dict[str, MediaUnreadable] = {}
        self.reads = 0

    def read(self, media: upload_pb2.MediaReceived) -> list[DecodedFrame]:
        self.reads += 1
        if media.blob_key in self.unreadable:
            raise self.unreadable[media.blob_key]
        return [DecodedFrame(int(offset), np.zeros((4, 4, 3), np.uint8)) for offset in media.frame_offsets_ms]


class FakeAnalyses:
    """One episode per stream, reported in the call whose frames bring the stream to three frames seen."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any] | None, list[int]]] = []

    def run(
        self,
        camera: str,
        state: dict[str, Any] | None,
        frames: Sequence[Frame],
        optics: upload_pb2.CameraOptics | None,
        speed_mps_at: Callable[[int], float | None],
    ) -> tuple[list[CameraEvent], dict[str, Any]]:
        offsets = [frame.offset_ms for frame in frames]
        self.calls.append((camera, state, offsets))
        seen = list((state or {}).get("seen", [])) + offsets
        events = []
        if len(seen) >= 3 and not (state or {}).get("reported"):
            events.append(
                CameraEvent(
                    kind=CameraEventKind.DROWSINESS if camera == "inward" else CameraEventKind.TAILGATING,
                    started_ms=seen[0],
                    ended_ms=seen[2],
                    confidence=0.9,
                    peak_value=0.4,
                    frame_offsets_ms=tuple(seen[:3]),
                    figures={"perclos": 0.4, "speed_mps": speed_mps_at(seen[0]) or -1.0},
                )
            )
        return events, {"seen": seen, "reported": bool(events) or bool((state or {}).get("reported"))}

    def lineage(self, camera: str) -> ModelLineage:
        return ModelLineage(f"vision-{camera}", "version-1", "data-1")


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[Any] = []
        self.fail = False

    def publish(self, detections: Sequence[Any]) -> None:
        if self.fail:
            raise RuntimeError("broker away")
        self.published.extend(detections)


class FakeDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, media: StoredMedia, reason: str, detail: str) -> None:
        self.sent.append((media.event_id, reason))


class Now:
    def __init__(self) -> None:
        self.moment = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.moment


class Rig:
    def __init__(self, tmp_path: Path, bounds: JoinBounds | None = None) -> None:
        self.store = CameraStore.from_url(f"sqlite:///{tmp_path / 'camera.db'}")
        self.frames = FakeFrames()
        self.analyses = FakeAnalyses()
        self.publisher = FakePublisher()
        self.dead_letters = FakeDeadLetters()
        self.metrics = CameraMetrics()
        self.now = Now()
        self.ticks = 0.0
        self.join = MediaJoin(
            store=self.store,
            frames=self.frames,
            analyses=self.analyses,
            publisher=self.publisher,
            dead_letters=self.dead_letters,
            metrics=self.metrics,
            bounds=bounds or JoinBounds(interval_s=0.0),
            now=self.now,
            clock=self.tick,
        )

    def tick(self) -> float:
        self.ticks += 1.0
        return self.ticks

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.metrics.registry.get_sample_value(name, labels or {}) or 0.0


@pytest.fixture
def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    built = Rig(tmp_path)
    yield built
    built.store.close()


def upload(upload_id: str = "upload-1", device_id: str = "device-1", driver_id: str = "driver-1", sequence: int = 0):
    message = upload_pb2.UploadReceived(
        event_id=stable_event_id("upload", upload_id),
        lineage=common_pb2.Lineage(upload_id=upload_id, device_id=device_id, trace_id="a" * 32),
        upload=upload_pb2.Upload(
            upload_id=upload_id,
            device_id=device_id,
            driver_id=driver_id,
            trip_id="trip-1",
            sequence=sequence,
            started_at=timestamp_from_seconds(STARTED_S + 10 * sequence),
            gps=[
                upload_pb2.GpsFix(
                    offset_ms=1000 * second, latitude=48.0, longitude=11.0 + second, speed_mps=20.0 + second
                )
                for second in range(10)
            ],
            media_names=["inward_0.jpg"],
        ),
    )
    return message


def media(
    name: str,
    offsets: list[int],
    *,
    upload_id: str = "upload-1",
    device_id: str = "device-1",
    camera: int = upload_pb2.CAMERA_KIND_INWARD,
    sha256: str = "b" * 64,
) -> upload_pb2.MediaReceived:
    return upload_pb2.MediaReceived(
        event_id=stable_event_id("media", device_id, upload_id, name, sha256),
        lineage=common_pb2.Lineage(device_id=device_id, upload_id=upload_id),
        upload_id=upload_id,
        name=name,
        camera=camera,  # type: ignore[arg-type]
        blob_key=f"media/{device_id}/{upload_id}/{name}",
        uri=f"file:///blobs/media/{device_id}/{upload_id}/{name}",
        sha256=sha256,
        size_bytes=1000,
        content_type="image/jpeg",
        frame_offsets_ms=offsets,
    )


SOURCE = Source("michi.media.v1", 0, 7)


def three_stills(rig: Rig, upload_id: str = "upload-1", first: int = 0) -> list[upload_pb2.MediaReceived]:
    items = [media(f"inward_{index}.jpg", [first + 200 * index], upload_id=upload_id) for index in range(3)]
    for item in items:
        rig.join.media(item, SOURCE)
    return items


def test_media_before_their_upload_wait_and_are_analysed_in_frame_order_when_it_comes(rig: Rig) -> None:
    items = three_stills(rig)
    assert rig.analyses.calls == [] and rig.store.waiting_count() == 3
    rig.join.upload(upload())
    assert [call[2] for call in rig.analyses.calls] == [[STARTED_MS], [STARTED_MS + 200], [STARTED_MS + 400]]
    assert len(rig.publisher.published) == 1
    detection = rig.publisher.published[0]
    assert detection.event_type == common_pb2.EVENT_TYPE_DROWSINESS
    lineage = detection.lineage
    assert (lineage.upload_id, lineage.trip_id, lineage.device_id, lineage.driver_id) == (
        "upload-1",
        "trip-1",
        "device-1",
        "driver-1",
    )
    assert (lineage.model_name, lineage.model_version, lineage.data_version) == ("vision-inward", "version-1", "data-1")
    assert lineage.trace_id == "a" * 32
    assert detection.occurred_at.seconds == STARTED_S
    assert (detection.window.ended_at.ToMilliseconds() - detection.window.started_at.ToMilliseconds()) == 400
    # The evidence: only the frames of the item that reported the episode, as offsets from the upload's start.
    camera = detection.camera
    assert (camera.media_name, camera.camera, list(camera.frame_offsets_ms)) == (
        "inward_2.jpg",
        upload_pb2.CAMERA_KIND_INWARD,
        [400],
    )
    assert (camera.blob_key, camera.media_event_id) == (items[2].blob_key, items[2].event_id)
    assert detection.speed_mps == pytest.approx(20.0) and detection.gps_available
    assert (detection.location.latitude, detection.location.longitude) == (48.0, 11.0)
    assert detection.peak_value == pytest.approx(0.4)
    assert rig.store.waiting_count() == 0
    stream = rig.store.stream("inward:driver:driver-1")
    assert stream is not None and stream.last_frame_ms == STARTED_MS + 400 and stream.state["reported"]


def test_an_upload_before_its_media_gives_the_same_detection(rig: Rig, tmp_path: Path) -> None:
    rig.join.upload(upload())
    three_stills(rig)
    (tmp_path / "other").mkdir()
    other = Rig(tmp_path / "other")
    three_stills(other)
    other.join.upload(upload())
    assert [item.event_id for item in rig.publisher.published] == [item.event_id for item in other.publisher.published]
    assert len(rig.publisher.published) == 1
    other.store.close()


def test_redelivered_media_and_uploads_give_nothing_new(rig: Rig) -> None:
    items = three_stills(rig)
    rig.join.upload(upload())
    calls = len(rig.analyses.calls)
    for item in items:
        rig.join.media(item, SOURCE)
    rig.join.upload(upload())
    assert len(rig.analyses.calls) == calls and len(rig.publisher.published) == 1
    assert rig.metric("michi_camera_duplicates_total", {"kind": "media"}) == 3
    assert rig.metric("michi_camera_duplicates_total", {"kind": "upload"}) == 1


def test_a_crash_before_the_done_mark_reanalyses_from_the_same_state_with_the_same_ids(rig: Rig) -> None:
    rig.join.upload(upload())
    items = three_stills(rig)
    published = list(rig.publisher.published)
    assert len(published) == 1
    # Again, as after a crash between the acknowledgement and the done mark of the third item.
    with rig.store.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE camera_media SET status = 'waiting' WHERE name = 'inward_2.jpg'")
        connection.exec_driver_sql(
            "UPDATE camera_stream SET state = ?, last_frame_ms = ?",
            (json.dumps({"seen": [STARTED_MS, STARTED_MS + 200], "reported": False}), STARTED_MS + 200),
        )
    rig.join.media(items[2], SOURCE)
    assert [item.event_id for item in rig.publisher.published] == [published[0].event_id] * 2
    assert rig.store.media(items[2].event_id).status == DONE  # type: ignore[union-attr]


def test_a_failed_publish_settles_nothing_and_the_redelivery_analyses_it(rig: Rig) -> None:
    rig.join.upload(upload())
    for index in range(2):
        rig.join.media(media(f"inward_{index}.jpg", [200 * index]), SOURCE)
    rig.publisher.fail = True
    third = media("inward_2.jpg", [400])
    with pytest.raises(RuntimeError):
        rig.join.media(third, SOURCE)
    assert rig.store.media(third.event_id).status == WAITING  # type: ignore[union-attr]
    stream = rig.store.stream("inward:driver:driver-1")
    assert stream is not None and len(stream.state["seen"]) == 2
    rig.publisher.fail = False
    rig.join.media(third, SOURCE)
    assert len(rig.publisher.published) == 1


def test_an_item_older_than_its_stream_is_analysed_on_its_own(rig: Rig) -> None:
    rig.join.upload(upload())
    rig.join.media(media("inward_late.jpg", [5000]), SOURCE)
    before = rig.store.stream("inward:driver:driver-1")
    rig.join.media(media("inward_early.jpg", [1000]), SOURCE)
    assert rig.analyses.calls[-1][1] is None
    assert rig.store.stream("inward:driver:driver-1") == before
    assert rig.metric("michi_camera_out_of_order_total", {"camera": "inward"}) == 1


def test_streams_are_per_driver_inward_and_per_device_outward(rig: Rig) -> None:
    rig.join.upload(upload())
    rig.join.media(media("inward_0.jpg", [0]), SOURCE)
    rig.join.media(media("road_0.jpg", [0], camera=upload_pb2.CAMERA_KIND_OUTWARD), SOURCE)
    assert rig.store.stream("inward:driver:driver-1") is not None
    assert rig.store.stream("outward:device:device-1") is not None


def test_media_that_cannot_be_analysed_go_to_dead_letters_with_their_reason(rig: Rig) -> None:
    rig.join.upload(upload())
    rig.frames.unreadable["media/device-1/upload-1/broken.jpg"] = MediaUnreadable("undecodable-media", "no JPEG")
    broken = media("broken.jpg", [0])
    rig.join.media(broken, SOURCE)
    unknown = media("cabin.jpg", [0], camera=upload_pb2.CAMERA_KIND_UNSPECIFIED)
    rig.join.media(unknown, SOURCE)
    stranger = media("inward_9.jpg", [0], device_id="device-2")
    rig.join.media(stranger, SOURCE)
    assert rig.dead_letters.sent == [
        (broken.event_id, "undecodable-media"),
        (unknown.event_id, "camera-unspecified"),
        (stranger.event_id, "device-mismatch"),
    ]
    assert rig.store.media(broken.event_id).status == DEAD_LETTERED  # type: ignore[union-attr]
    rig.join.media(broken, SOURCE)
    assert len(rig.dead_letters.sent) == 3
    with pytest.raises(Rejection):
        rig.join.media(upload_pb2.MediaReceived(event_id="x"), SOURCE)
    with pytest.raises(Rejection):
        rig.join.upload(upload_pb2.UploadReceived())


def test_media_whose_upload_never_comes_are_dead_lettered_after_the_wait(tmp_path: Path) -> None:
    rig = Rig(tmp_path, JoinBounds(media_wait_s=600.0, interval_s=0.0))
    try:
        items = three_stills(rig, upload_id="upload-never")
        rig.now.moment += timedelta(seconds=599)
        rig.join.enforce_bounds()
        assert rig.dead_letters.sent == []
        rig.now.moment += timedelta(seconds=2)
        rig.join.enforce_bounds()
        assert sorted(rig.dead_letters.sent) == sorted((item.event_id, "upload-not-arrived") for item in items)
        assert rig.metric("michi_camera_media_dead_lettered_total", {"reason": "upload-not-arrived"}) == 3
        # Its upload after all: nothing is analysed twice, nothing at all.
        rig.join.upload(upload("upload-never"))
        assert rig.analyses.calls == []
    finally:
        rig.store.close()


def test_at_most_so_many_media_wait_the_oldest_go_first(tmp_path: Path) -> None:
    rig = Rig(tmp_path, JoinBounds(max_waiting_media=2, interval_s=0.0))
    try:
        items = []
        for index in range(4):
            items.append(media(f"inward_{index}.jpg", [index], upload_id=f"upload-{index}"))
            rig.join.media(items[-1], SOURCE)
            rig.now.moment += timedelta(seconds=1)
        rig.join.enforce_bounds()
        assert rig.dead_letters.sent == [(items[0].event_id, "waiting-limit"), (items[1].event_id, "waiting-limit")]
        assert rig.store.waiting_count() == 2
    finally:
        rig.store.close()


def test_uploads_settled_media_and_streams_are_forgotten_at_their_age_and_count(tmp_path: Path) -> None:
    bounds = JoinBounds(
        upload_retention_s=100.0, max_uploads=2, settled_retention_s=1000.0, stream_retention_s=1000.0, interval_s=0.0
    )
    rig = Rig(tmp_path, bounds)
    try:
        for index in range(3):
            rig.join.upload(upload(f"upload-{index}"))
        rig.join.media(media("inward_0.jpg", [0], upload_id="upload-2"), SOURCE)
        rig.join.enforce_bounds()
        assert rig.store.upload("upload-0") is None and rig.store.upload("upload-2") is not None
        rig.now.moment += timedelta(seconds=101)
        rig.join.enforce_bounds()
        assert rig.store.counts() == {"uploads": 0, "waiting": 0, "settled": 1, "streams": 1}
        rig.now.moment += timedelta(seconds=1000)
        rig.join.enforce_bounds()
        assert rig.store.counts() == {"uploads": 0, "waiting": 0, "settled": 0, "streams": 0}
        assert rig.metric("michi_camera_rows", {"kind": "uploads"}) == 0
        assert rig.metric("michi_camera_rows_forgotten_total", {"kind": "uploads"}) == 3
    finally:
        rig.store.close()


def test_bounds_are_enforced_at_most_every_interval(tmp_path: Path) -> None:
    rig = Rig(tmp_path, JoinBounds(media_wait_s=1.0, interval_s=10.0))
    try:
        rig.join.enforce_bounds()
        three_stills(rig, upload_id="upload-never")
        rig.now.moment += timedelta(seconds=5)
        rig.join.enforce_bounds()  # one tick of the fake clock later: too soon
        assert rig.dead_letters.sent == []
        rig.ticks += 10.0
        rig.join.enforce_bounds()
        assert len(rig.dead_letters.sent) == 3
    finally:
        rig.store.close()


# --- the pure parts


def test_gps_speed_is_interpolated_between_fixes_and_unknown_far_from_them() -> None:
    facts = upload_facts(upload())
    assert facts.speed_at(STARTED_MS + 1500) == pytest.approx(21.5)
    assert facts.speed_at(STARTED_MS + 9000 + 3000) == pytest.approx(29.0)
    assert facts.speed_at(STARTED_MS + 9000 + 3001) is None
    assert facts.position_at(STARTED_MS + 1400) == (48.0, 12.0)


def test_clip_frames_take_declared_offsets_or_container_times_from_the_first_declared() -> None:
    assert [clip_frame_offset([100, 150, 210], index, None, None, 40.0) for index in range(4)] == [100, 150, 210, 250]
    assert clip_frame_offset([1000], 3, 3120.0, 3000.0, 40.0) == 1120
    assert clip_frame_offset([], 3, None, None, 40.0) == 120


def test_the_sampler_keeps_at_most_the_rate_and_the_count() -> None:
    sampler = FrameSampler(Sampling(max_fps=5.0, max_frames=3, max_decoded_frames=100))
    kept = [offset for offset in range(0, 2000, 33) if sampler.keep(offset)]
    assert kept == [0, 231, 462]
    assert sampler.full


def _encoded_clip(frames: int, fps: int, codec: str = "mpeg4") -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(frames):
            picture = np.full((48, 64, 3), index * 8 % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def _encoded_still(format_name: str, codec: str) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=format_name) as container:
        stream = container.add_stream(codec, rate=1)
        stream.width, stream.height = 32, 24
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "rgb24"
        picture = np.full((24, 32, 3), 200, np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def test_a_jpeg_and_a_png_still_are_one_frame_at_their_declared_offset() -> None:
    jpeg = decode_frames(_encoded_still("image2pipe", "mjpeg"), "image/jpeg", [1234], Sampling())
    png = decode_frames(_encoded_still("image2pipe", "png"), "image/png", [], Sampling())
    assert [(frame.offset_ms, frame.image.shape) for frame in jpeg] == [(1234, (24, 32, 3))]
    assert [(frame.offset_ms, frame.image.dtype) for frame in png] == [(0, np.dtype(np.uint8))]
    assert abs(int(png[0].image[0, 0, 0]) - 200) <= 2


def test_an_mp4_clip_is_sampled_at_its_container_times_counted_from_the_first_declared_offset() -> None:
    clip = _encoded_clip(frames=50, fps=25)
    frames = decode_frames(clip, "video/mp4", [2000], Sampling(max_fps=5.0, max_frames=6, max_decoded_frames=1000))
    assert [frame.offset_ms for frame in frames] == [2000, 2200, 2400, 2600, 2800, 3000]
    assert frames[0].image.shape == (48, 64, 3)
    bounded = decode_frames(clip, "video/mp4", [], Sampling(max_fps=25.0, max_frames=100, max_decoded_frames=10))
    assert len(bounded) == 10


def test_undecodable_bytes_are_unreadable_media() -> None:
    with pytest.raises(MediaUnreadable) as raised:
        decode_frames(b"not a picture at all", "image/jpeg", [0], Sampling())
    assert raised.value.reason == "undecodable-media"


# --- without the vision models


def test_without_models_the_service_refuses_to_start_outside_dev_and_idles_in_dev(tmp_path: Path) -> None:
    from pydantic import SecretStr

    from services.camera.settings import CameraSettings
    from services.camera.wiring import WithoutModels, build_service

    def settings(env: str) -> CameraSettings:
        return CameraSettings(
            env=env,
            home=tmp_path,
            database_url=f"sqlite:///{tmp_path / 'camera.db'}",
            blob_url=f"file://{tmp_path / 'blobs'}",
            kafka_bootstrap="127.0.0.1:1",
            vision_models_dir=tmp_path / "no-models",
            token_secret=SecretStr("a-real-secret-of-some-length-0123456789"),
        )

    with pytest.raises(SystemExit) as stopped:
        build_service(settings("production"), producer=None)  # type: ignore[arg-type]
    assert "make models" in str(stopped.value.code)
    idle = build_service(settings("dev"), producer=None)  # type: ignore[arg-type]
    assert isinstance(idle, WithoutModels) and idle.readiness() is None
    assert idle.metrics.registry.get_sample_value("michi_camera_models_missing") == 1.0
