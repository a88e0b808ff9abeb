"""A media item's frames, read from the blob store and decoded with PyAV (FFmpeg's JPEG, PNG, MPEG-4 and H.264).

`michi.vision.images` decodes files by path (`read_image`, `read_video_frames` without timestamps); the camera
service decodes the bytes it read from the blob store in memory, with the same conversion (`rgb24`), and needs
each clip frame's container timestamp, so it opens PyAV itself here.

- a still (image/jpeg, image/png): one frame, at its first declared offset (0 when none was declared);
- a clip (video/mp4, video/h264): every frame decoded up to `Sampling.max_decoded_frames`, frames kept at most
  `max_fps` per second and `max_frames` in all (`domain.join.FrameSampler`), each at its declared offset when
  every frame's was declared, else at its container timestamp counted from the first declared offset (raw H.264
  has no timestamps: the stream's rate, else 30 fps).

What cannot be read is `MediaUnreadable` with the reason its dead letter carries.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from michi.blobs import BlobStore
from michi.contracts.v1 import upload_pb2
from michi.vision.images import clip_frame_offset
from services.camera.domain.join import STILL_TYPES, FrameSampler, Sampling

# The largest frame decoded (pixels): 4096 x 4096; ingest bounds the bytes, not the picture.
MAX_FRAME_PIXELS = 4096 * 4096
DEFAULT_FRAME_INTERVAL_MS = 1000.0 / 30.0


class MediaUnreadable(Exception):
    """The media item cannot be analysed: `reason` (`media-not-found`, `media-too-large`, `undecodable-media`,
    `frame-too-large`, `no-frames`) and what was found."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodedFrame:
    """One frame: its offset in ms from the upload's start, and the RGB uint8 picture."""

    offset_ms: int
    image: np.ndarray


class BlobFrames:
    """Reads a media item's bytes from the blob store (synchronously: the consumer loop is not asynchronous)."""

    def __init__(self, blobs: BlobStore, *, max_media_bytes: int, sampling: Sampling) -> None:
        self.blobs = blobs
        self.max_media_bytes = max_media_bytes
        self.sampling = sampling

    def read(self, media: upload_pb2.MediaReceived) -> list[DecodedFrame]:
        if media.size_bytes > self.max_media_bytes:
            raise MediaUnreadable("media-too-large", f"{media.size_bytes} bytes, at most {self.max_media_bytes}")
        filesystem, _ = self.blobs.fsspec_location()
        try:
            data = bytes(filesystem.cat_file(self.blobs.path(media.blob_key)))
        except FileNotFoundError as error:
            raise MediaUnreadable("media-not-found", f"{media.blob_key} is not in the blob store") from error
        if len(data) > self.max_media_bytes:
            raise MediaUnreadable("media-too-large", f"{len(data)} bytes, at most {self.max_media_bytes}")
        return decode_frames(data, media.content_type, list(media.frame_offsets_ms), self.sampling)


def decode_frames(data: bytes, content_type: str, declared_ms: list[int], sampling: Sampling) -> list[DecodedFrame]:
    """The frames of one media item's bytes (module docstring)."""
    import av

    still = content_type in STILL_TYPES
    try:
        with av.open(io.BytesIO(data), mode="r", format="h264" if content_type == "video/h264" else None) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate) if stream.average_rate else 0.0
            interval = 1000.0 / rate if rate > 0 else DEFAULT_FRAME_INTERVAL_MS
            if still:
                for frame in container.decode(stream):
                    return [DecodedFrame(int(declared_ms[0]) if declared_ms else 0, _picture(frame))]
                raise MediaUnreadable("no-frames", "the image holds no picture")
            return _clip_frames(container, stream, declared_ms, interval, sampling)
    except MediaUnreadable:
        raise
    except (av.error.FFmpegError, IndexError, ValueError) as error:
        raise MediaUnreadable("undecodable-media", f"{content_type}: {error}") from error


def _clip_frames(
    container: object, stream: object, declared_ms: list[int], interval_ms: float, sampling: Sampling
) -> list[DecodedFrame]:
    sampler = FrameSampler(sampling)
    first_time_ms: float | None = None
    frames: list[DecodedFrame] = []
    for index, frame in enumerate(container.decode(stream)):  # type: ignore[attr-defined]
        if sampler.full:
            break
        time_ms = frame.time * 1000.0 if frame.time is not None else None
        if first_time_ms is None and time_ms is not None:
            first_time_ms = time_ms
        offset = clip_frame_offset(declared_ms, index, time_ms, first_time_ms, interval_ms)
        if sampler.keep(offset):
            frames.append(DecodedFrame(offset, _picture(frame)))
    if not frames:
        raise MediaUnreadable("no-frames", "the clip holds no picture")
    return frames


def _picture(frame: object) -> np.ndarray:
    width, height = int(frame.width), int(frame.height)  # type: ignore[attr-defined]
    if width * height > MAX_FRAME_PIXELS:
        raise MediaUnreadable("frame-too-large", f"{width} x {height} pixels, at most {MAX_FRAME_PIXELS}")
    return np.asarray(frame.to_ndarray(format="rgb24"))  # type: ignore[attr-defined]
