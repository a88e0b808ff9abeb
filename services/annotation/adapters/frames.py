"""The evidence frames of a camera review request: read from the blob store, decoded with PyAV, sent as JPEG.

The media item is read at `michi.blobs.media_key(device, upload, media name)` of the request's lineage (never a
key a caller names), at most `max_media_bytes`, and checked against the sha256 the detection recorded. A still is
its own single frame; a clip is decoded in memory (FFmpeg's MPEG-4 and H.264 decoders), its frames numbered as the
camera service numbered them (`domain/frames.py`), and for each evidence frame the nearest decoded one is kept;
decoding stops past the last evidence frame or after `max_decoded_frames`. Each kept frame is scaled to at most
`max_side` pixels on its longer side and encoded as JPEG (FFmpeg's MJPEG encoder). A request's frames are decoded
once: the encoded strip is cached, keyed by the media item and its evidence, within `cache_bytes`.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from starlette.concurrency import run_in_threadpool

from michi.blobs import BlobError, BlobNotFound, BlobStore, InvalidKeySegment, media_key
from michi.contracts.v1 import labels_pb2
from michi.vision.images import clip_frame_offset
from services.annotation.adapters.windows import media_type_of
from services.annotation.domain.frames import evidence_offsets, scaled_size

logger = logging.getLogger(__name__)

STILL_TYPES = frozenset({"image/jpeg", "image/png"})
CLIP_TYPES = frozenset({"video/mp4", "video/h264"})
# The largest picture decoded (the camera service's bound): 4096 x 4096 pixels.
MAX_FRAME_PIXELS = 4096 * 4096
DEFAULT_FRAME_INTERVAL_MS = 1000.0 / 30.0


class FramesUnavailable(Exception):
    """The request's frames cannot be shown: `reason` (`unknown-media`, `media-too-large`, `media-changed`,
    `undecodable-media`) and what was found."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class EvidenceStrip:
    """The encoded evidence frames of one request, in the order of `evidence_offsets`."""

    offsets_ms: tuple[int, ...]
    jpegs: tuple[bytes, ...]
    sha256: str

    @property
    def size(self) -> int:
        return sum(len(jpeg) for jpeg in self.jpegs)


class EvidenceFrames:
    def __init__(
        self,
        blobs: BlobStore,
        *,
        max_media_bytes: int,
        max_decoded_frames: int = 1800,
        max_side: int = 960,
        cache_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.blobs = blobs
        self.max_media_bytes = max_media_bytes
        self.max_decoded_frames = max_decoded_frames
        self.max_side = max_side
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[tuple[str, ...], EvidenceStrip] = OrderedDict()
        self._cached_bytes = 0
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}

    async def strip(self, request: labels_pb2.LabelRequest) -> EvidenceStrip:
        """The request's evidence frames (decoded once, then from the cache)."""
        offsets = evidence_offsets(request)
        camera = request.camera
        if not offsets:
            raise FramesUnavailable(404, "no-frames", "the request names no camera frames")
        try:
            key = media_key(request.lineage.device_id, request.lineage.upload_id, camera.media_name)
        except InvalidKeySegment as error:
            raise FramesUnavailable(404, "unknown-media", str(error)) from error
        cache_key = (
            key,
            camera.sha256,
            ",".join(map(str, offsets)),
            ",".join(map(str, request.media_frame_offsets_ms)),
        )
        cached = self._cached(cache_key)
        if cached is not None:
            return cached
        lock = self._locks.setdefault(cache_key, asyncio.Lock())
        try:
            async with lock:  # the page asks for a strip's frames at once: one decode serves them all
                cached = self._cached(cache_key)
                if cached is not None:
                    return cached
                data = await self._read(key)
                digest = hashlib.sha256(data).hexdigest()
                if camera.sha256 and digest != camera.sha256:
                    raise FramesUnavailable(409, "media-changed", f"{camera.media_name} is not the item analysed")
                content_type = camera.content_type or media_type_of(camera.media_name)
                jpegs = await run_in_threadpool(
                    evidence_jpegs,
                    data,
                    content_type,
                    list(request.media_frame_offsets_ms),
                    offsets,
                    max_decoded_frames=self.max_decoded_frames,
                    max_side=self.max_side,
                )
                strip = EvidenceStrip(tuple(offsets), tuple(jpegs), digest)
                self._keep(cache_key, strip)
                return strip
        finally:
            if not lock.locked():
                self._locks.pop(cache_key, None)

    async def _read(self, key: str) -> bytes:
        try:
            async with await self.blobs.open_read(key) as reader:
                data = await reader.read(self.max_media_bytes + 1)
        except BlobNotFound as error:
            raise FramesUnavailable(404, "unknown-media", "the media item is not in the blob store") from error
        except BlobError as error:
            logger.warning("media read failed", extra={"key": key}, exc_info=True)
            raise FramesUnavailable(503, "blob-store-unavailable", "the media item could not be read") from error
        if len(data) > self.max_media_bytes:
            raise FramesUnavailable(
                413, "media-too-large", f"the media item is larger than {self.max_media_bytes} bytes"
            )
        return data

    def _cached(self, cache_key: tuple[str, ...]) -> EvidenceStrip | None:
        strip = self._cache.get(cache_key)
        if strip is not None:
            self._cache.move_to_end(cache_key)
        return strip

    def _keep(self, cache_key: tuple[str, ...], strip: EvidenceStrip) -> None:
        if strip.size > self.cache_bytes:
            return
        self._cache[cache_key] = strip
        self._cached_bytes += strip.size
        while self._cached_bytes > self.cache_bytes:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= dropped.size


def evidence_jpegs(
    data: bytes,
    content_type: str,
    declared_ms: Sequence[int],
    targets_ms: Sequence[int],
    *,
    max_decoded_frames: int,
    max_side: int,
) -> list[bytes]:
    """For each target offset, the nearest frame of the media item as JPEG (module docstring)."""
    import av

    if content_type not in STILL_TYPES | CLIP_TYPES:
        raise FramesUnavailable(415, "unsupported-media", f"{content_type} is not a camera frame or clip")
    try:
        with av.open(io.BytesIO(data), mode="r", format="h264" if content_type == "video/h264" else None) as container:
            stream = container.streams.video[0]
            if content_type in STILL_TYPES:
                for frame in container.decode(stream):
                    return [_jpeg(frame, max_side)] * len(targets_ms)
                raise FramesUnavailable(422, "undecodable-media", "the image holds no picture")
            rate = float(stream.average_rate) if stream.average_rate else 0.0
            interval = 1000.0 / rate if rate > 0 else DEFAULT_FRAME_INTERVAL_MS
            best: list[tuple[float, object] | None] = [None] * len(targets_ms)
            last_target = max(targets_ms)
            first_time_ms: float | None = None
            for index, frame in enumerate(container.decode(stream)):
                if index >= max_decoded_frames:
                    break
                time_ms = frame.time * 1000.0 if frame.time is not None else None
                if first_time_ms is None and time_ms is not None:
                    first_time_ms = time_ms
                offset = clip_frame_offset(declared_ms, index, time_ms, first_time_ms, interval)
                for position, target in enumerate(targets_ms):
                    distance = abs(offset - target)
                    held = best[position]
                    if held is None or distance < held[0]:
                        best[position] = (distance, frame)
                if offset > last_target + interval:
                    break
            if any(held is None for held in best):
                raise FramesUnavailable(422, "undecodable-media", "the clip holds no picture")
            return [_jpeg(held[1], max_side) for held in best if held is not None]
    except FramesUnavailable:
        raise
    except (av.error.FFmpegError, IndexError, ValueError) as error:
        raise FramesUnavailable(422, "undecodable-media", f"{content_type}: {error}") from error


def _jpeg(frame: object, max_side: int) -> bytes:
    import av

    width, height = int(frame.width), int(frame.height)  # type: ignore[attr-defined]
    if width * height > MAX_FRAME_PIXELS:
        raise FramesUnavailable(422, "frame-too-large", f"{width} x {height} pixels, at most {MAX_FRAME_PIXELS}")
    out_width, out_height = scaled_size(width, height, max_side)
    picture = frame.reformat(width=out_width, height=out_height, format="yuvj420p")  # type: ignore[attr-defined]
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height = out_width, out_height
    codec.pix_fmt = "yuvj420p"
    codec.time_base = Fraction(1, 25)
    packets = list(codec.encode(picture)) + list(codec.encode(None))
    return b"".join(bytes(packet) for packet in packets)
