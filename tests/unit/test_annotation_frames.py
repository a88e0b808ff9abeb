"""A camera review's evidence frames in the annotation service: which frames a request shows (at most 16), how a
clip's frames are found (numbered as the camera service numbers them), the JPEGs served, and the bounds: the
media item is read only at the request's own media key, at most so many bytes, and only if it is the item the
detection was made from. The route's auth is in tests/integration/test_annotation_frames.py (it needs Redis).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest

from michi.blobs import BlobStore, media_key
from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2
from michi.vision.images import clip_frame_offset
from services.annotation.adapters.frames import EvidenceFrames, FramesUnavailable, evidence_jpegs
from services.annotation.domain.frames import MAX_EVIDENCE_FRAMES, evidence_offsets, task_kind
from services.camera.adapters.frames import decode_frames
from services.camera.domain.join import Sampling


def _clip(frames: int, fps: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """An MP4 whose frame i is a flat grey of level 8 * i (so a decoded frame tells which it was)."""
    import av

    width, height = size
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            picture = np.full((height, width, 3), 8 * index % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def _png(width: int, height: int, level: int = 200) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="image2pipe") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, "rgb24"
        picture = np.full((height, width, 3), level, np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def _decoded(jpeg: bytes) -> np.ndarray:
    import av

    assert jpeg[:2] == b"\xff\xd8"
    with av.open(io.BytesIO(jpeg), mode="r") as container:
        for frame in container.decode(video=0):
            return np.asarray(frame.to_ndarray(format="rgb24"))
    raise AssertionError("no picture")


def _request(
    offsets: list[int],
    *,
    name: str = "inward_0.mp4",
    content_type: str = "video/mp4",
    sha256: str = "",
    declared: list[int] | None = None,
    device_id: str = "device-1",
) -> labels_pb2.LabelRequest:
    return labels_pb2.LabelRequest(
        event_id="review-1",
        reason=labels_pb2.LABEL_REASON_CAMERA_REVIEW,
        lineage=common_pb2.Lineage(upload_id="upload-1", device_id=device_id, window_id="window-1"),
        camera=inference_pb2.CameraReference(
            media_name=name,
            camera=1,  # type: ignore[arg-type]
            # Never read: the frames come from the request's own media key.
            blob_key="media/someone-else/upload-9/secret.mp4",
            frame_offsets_ms=offsets,
            sha256=sha256,
            content_type=content_type,
        ),
        media_frame_offsets_ms=declared or [],
    )


def test_a_request_shows_its_evidence_frames_at_most_sixteen_spread_over_the_episode() -> None:
    assert task_kind(labels_pb2.LabelRequest()) == "motion" and evidence_offsets(labels_pb2.LabelRequest()) == []
    assert task_kind(_request([5])) == "camera"
    assert evidence_offsets(_request([400, 0, 200, 200])) == [0, 200, 400]
    many = evidence_offsets(_request([100 * index for index in range(40)]))
    assert len(many) == MAX_EVIDENCE_FRAMES and many[0] == 0 and many[-1] == 3900 and many == sorted(set(many))


@pytest.mark.parametrize(
    ("declared", "index", "time_ms", "first_ms", "interval", "offset"),
    [
        ([0, 40, 90], 1, 33.0, 0.0, 33.3, 40),  # every frame declared: its own
        ([0, 40, 90], 5, None, None, 33.3, 190),  # past the declared ones: the last plus intervals
        ([1000], 3, 120.0, 0.0, 40.0, 1120),  # the container's time from the first declared offset
        ([], 3, 520.0, 400.0, 40.0, 120),
        ([250], 7, None, None, 1000.0 / 30.0, 483),  # no timestamp: index intervals
    ],
)
def test_clip_frames_are_numbered_as_the_camera_service_numbers_them(
    declared: list[int], index: int, time_ms: float | None, first_ms: float | None, interval: float, offset: int
) -> None:
    assert clip_frame_offset(declared, index, time_ms, first_ms, interval) == offset


def test_the_frames_served_are_the_frames_the_camera_service_analysed() -> None:
    clip = _clip(frames=40, fps=10)
    analysed = decode_frames(clip, "video/mp4", [1000], Sampling(max_fps=5.0, max_frames=150, max_decoded_frames=1800))
    evidence = [analysed[1].offset_ms, analysed[4].offset_ms, analysed[-1].offset_ms]
    jpegs = evidence_jpegs(clip, "video/mp4", [1000], evidence, max_decoded_frames=1800, max_side=960)
    assert len(jpegs) == 3
    for jpeg, offset in zip(jpegs, evidence, strict=True):
        [frame] = [item for item in analysed if item.offset_ms == offset]
        picture = _decoded(jpeg)
        assert picture.shape == frame.image.shape
        assert abs(float(picture.mean()) - float(frame.image.mean())) < 3.0, offset


def test_declared_offsets_per_frame_and_decoding_stops_past_the_last_evidence_frame() -> None:
    clip = _clip(frames=20, fps=10)
    declared = [5000 + 100 * index for index in range(20)]
    [jpeg] = evidence_jpegs(clip, "video/mp4", declared, [5700], max_decoded_frames=1800, max_side=960)
    assert abs(float(_decoded(jpeg).mean()) - 8 * 7) < 3.0
    # Bounded decoding: past max_decoded_frames the nearest frame decoded so far stands in.
    [bounded] = evidence_jpegs(clip, "video/mp4", declared, [6900], max_decoded_frames=3, max_side=960)
    assert abs(float(_decoded(bounded).mean()) - 8 * 2) < 3.0


def test_a_still_is_its_own_frame_scaled_to_the_longest_side() -> None:
    jpegs = evidence_jpegs(_png(640, 480), "image/png", [0], [0, 500], max_decoded_frames=10, max_side=320)
    assert len(jpegs) == 2 and _decoded(jpegs[0]).shape == (240, 320, 3)
    with pytest.raises(FramesUnavailable) as undecodable:
        evidence_jpegs(b"not a picture", "image/jpeg", [], [0], max_decoded_frames=10, max_side=320)
    assert undecodable.value.reason == "undecodable-media"
    with pytest.raises(FramesUnavailable) as unsupported:
        evidence_jpegs(b"<html>", "text/html", [], [0], max_decoded_frames=10, max_side=320)
    assert unsupported.value.status == 415


def _store(tmp_path: Path) -> BlobStore:
    return BlobStore(f"file://{tmp_path / 'blobs'}")


def test_frames_come_from_the_requests_own_media_key_checked_bounded_and_decoded_once(tmp_path: Path) -> None:
    blobs = _store(tmp_path)
    clip = _clip(frames=30, fps=10)
    sha = hashlib.sha256(clip).hexdigest()
    key = media_key("device-1", "upload-1", "inward_0.mp4")
    asyncio.run(blobs.put_bytes(key, clip))
    frames = EvidenceFrames(blobs, max_media_bytes=len(clip))
    request = _request([0, 500, 1000], sha256=sha)
    strip = asyncio.run(frames.strip(request))
    assert strip.offsets_ms == (0, 500, 1000) and len(strip.jpegs) == 3 and strip.sha256 == sha
    # Decoded once: the blob gone, the same request is still answered from the cache.
    Path(blobs.path(key)).unlink()
    assert asyncio.run(frames.strip(request)) == strip

    def refusal(frames: EvidenceFrames, request: labels_pb2.LabelRequest) -> tuple[int, str]:
        with pytest.raises(FramesUnavailable) as refused:
            asyncio.run(frames.strip(request))
        return refused.value.status, refused.value.reason

    assert refusal(frames, _request([0], sha256=sha, name="inward_1.mp4")) == (404, "unknown-media")
    assert refusal(frames, _request([0], device_id="../device-1")) == (404, "unknown-media")
    assert refusal(frames, labels_pb2.LabelRequest(event_id="x")) == (404, "no-frames")
    asyncio.run(blobs.put_bytes(key, clip))
    assert refusal(frames, _request([0], sha256="0" * 64)) == (409, "media-changed")
    assert refusal(EvidenceFrames(blobs, max_media_bytes=len(clip) - 1), _request([0])) == (413, "media-too-large")


def test_concurrent_requests_for_one_strip_share_one_decode(tmp_path: Path) -> None:
    blobs = _store(tmp_path)
    clip = _clip(frames=30, fps=10)
    asyncio.run(blobs.put_bytes(media_key("device-1", "upload-1", "inward_0.mp4"), clip))
    frames = EvidenceFrames(blobs, max_media_bytes=len(clip), cache_bytes=10**6)
    request = _request([0, 500, 1000, 1500])

    async def sixteen() -> list[object]:
        return await asyncio.gather(*(frames.strip(request) for _ in range(16)))

    strips = asyncio.run(sixteen())
    assert all(strip is strips[0] for strip in strips)
    # The cache stays within its bytes: a strip larger than all of it is not kept.
    tiny = EvidenceFrames(blobs, max_media_bytes=len(clip), cache_bytes=10)
    assert asyncio.run(tiny.strip(request)) is not asyncio.run(tiny.strip(request))
