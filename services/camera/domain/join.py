"""The join of a media item with its upload, pure: what the camera service keeps of an upload, whether a media item
can be analysed, how frames are sampled, and the ids and shape of what it publishes (docs/camera.md).

Times: the analysis runs on each stream (a driver's inward camera, a device's outward camera) across uploads, so
frames are fed in *stream time*, epoch milliseconds (`Upload.started_at` plus the frame's offset). A detection's
`CameraReference.frame_offsets_ms` counts from its upload's `started_at` again, as the device declared them.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from michi.contracts import stable_event_id, timestamp_to_seconds
from michi.contracts.v1 import upload_pb2

# The Content-Types ingest accepts for media (MICHI_INGEST_MEDIA_TYPES), and which of them hold one picture.
STILL_TYPES = frozenset({"image/jpeg", "image/png"})
CLIP_TYPES = frozenset({"video/mp4", "video/h264"})
MEDIA_TYPES = STILL_TYPES | CLIP_TYPES
# An upload keeps at most this many GPS fixes (1 Hz: an hour; ingest's limits keep uploads far smaller).
MAX_GPS_FIXES = 3600
# A speed is read from the fixes around a time only when one of them is at most this far from it.
MAX_SPEED_GAP_MS = 3000
# The longest id the service keeps (ingest's ids are at most 64 characters; scoring keeps 128).
MAX_ID_LENGTH = 128

INWARD = "inward"
OUTWARD = "outward"


@dataclass(frozen=True)
class GpsPoint:
    offset_ms: int
    speed_mps: float
    latitude: float
    longitude: float


@dataclass(frozen=True)
class UploadFacts:
    """What the camera service keeps of an upload: who, which trip, when, and its GPS track."""

    upload_id: str
    device_id: str
    driver_id: str
    trip_id: str
    sequence: int
    started_at_ms: int
    trace_id: str
    gps: tuple[GpsPoint, ...] = ()

    def speed_at(self, stream_ms: int) -> float | None:
        """GPS speed (m/s) at a stream time, linear between fixes; None without a fix within 3 s."""
        point = self._around(stream_ms)
        return None if point is None else point[0]

    def position_at(self, stream_ms: int) -> tuple[float, float] | None:
        """(latitude, longitude) of the fix nearest a stream time, None without a fix within 3 s."""
        point = self._around(stream_ms)
        return None if point is None else (point[1], point[2])

    def _around(self, stream_ms: int) -> tuple[float, float, float] | None:
        if not self.gps:
            return None
        offset = stream_ms - self.started_at_ms
        offsets = [point.offset_ms for point in self.gps]
        index = bisect.bisect_left(offsets, offset)
        before = self.gps[index - 1] if index > 0 else None
        after = self.gps[index] if index < len(self.gps) else None
        nearest = min(
            (point for point in (before, after) if point is not None), key=lambda point: abs(point.offset_ms - offset)
        )
        if abs(nearest.offset_ms - offset) > MAX_SPEED_GAP_MS:
            return None
        if before is None or after is None or after.offset_ms == before.offset_ms:
            return nearest.speed_mps, nearest.latitude, nearest.longitude
        share = (offset - before.offset_ms) / (after.offset_ms - before.offset_ms)
        speed = before.speed_mps + share * (after.speed_mps - before.speed_mps)
        return speed, nearest.latitude, nearest.longitude

    def gps_json(self) -> list[list[float]]:
        return [[point.offset_ms, point.speed_mps, point.latitude, point.longitude] for point in self.gps]


def upload_facts(received: upload_pb2.UploadReceived) -> UploadFacts:
    """The upload side of the join (its fixes in offset order, at most `MAX_GPS_FIXES`, non-finite ones left out)."""
    upload = received.upload
    fixes = sorted(
        (
            GpsPoint(int(fix.offset_ms), float(fix.speed_mps), float(fix.latitude), float(fix.longitude))
            for fix in upload.gps
            if math.isfinite(fix.speed_mps) and math.isfinite(fix.latitude) and math.isfinite(fix.longitude)
        ),
        key=lambda point: point.offset_ms,
    )[:MAX_GPS_FIXES]
    return UploadFacts(
        upload_id=upload.upload_id,
        device_id=upload.device_id,
        driver_id=upload.driver_id,
        trip_id=upload.trip_id,
        sequence=int(upload.sequence),
        started_at_ms=round(timestamp_to_seconds(upload.started_at) * 1000),
        trace_id=received.lineage.trace_id,
        gps=tuple(fixes),
    )


def upload_from_row(
    *,
    upload_id: str,
    device_id: str,
    driver_id: str,
    trip_id: str,
    sequence: int,
    started_at_ms: int,
    trace_id: str,
    gps: Sequence[Sequence[float]],
) -> UploadFacts:
    return UploadFacts(
        upload_id=upload_id,
        device_id=device_id,
        driver_id=driver_id,
        trip_id=trip_id,
        sequence=sequence,
        started_at_ms=started_at_ms,
        trace_id=trace_id,
        gps=tuple(GpsPoint(int(item[0]), float(item[1]), float(item[2]), float(item[3])) for item in gps),
    )


def upload_problem(received: upload_pb2.UploadReceived) -> str | None:
    """Why an UploadReceived cannot be joined (dead letters), or None."""
    upload = received.upload
    for name in ("upload_id", "device_id", "trip_id"):
        value = getattr(upload, name)
        if not value:
            return f"upload without {name}"
        if len(value) > MAX_ID_LENGTH:
            return f"upload {name} has {len(value)} characters; the camera service keeps at most {MAX_ID_LENGTH}"
    if len(upload.driver_id) > MAX_ID_LENGTH:
        return f"upload driver_id has {len(upload.driver_id)} characters"
    if not upload.HasField("started_at"):
        return "upload without started_at"
    return None


def media_problem(media: upload_pb2.MediaReceived) -> str | None:
    """Why a MediaReceived cannot be kept for the join (dead letters), or None."""
    for name, value in (
        ("event_id", media.event_id),
        ("upload_id", media.upload_id),
        ("lineage.device_id", media.lineage.device_id),
        ("name", media.name),
        ("blob_key", media.blob_key),
    ):
        if not value:
            return f"media without {name}"
        if len(value) > MAX_ID_LENGTH and name != "blob_key":
            return f"media {name} has {len(value)} characters; the camera service keeps at most {MAX_ID_LENGTH}"
    return None


def camera_of(media: upload_pb2.MediaReceived) -> str | None:
    """`inward`, `outward`, or None when the device did not say (and the name did not tell ingest)."""
    if media.camera == upload_pb2.CAMERA_KIND_INWARD:
        return INWARD
    if media.camera == upload_pb2.CAMERA_KIND_OUTWARD:
        return OUTWARD
    return None


def stream_of(camera: str, upload: UploadFacts) -> str:
    """The analysis stream: a driver's inward camera (the baseline is the driver's face), a device's outward one."""
    if camera == INWARD:
        return f"inward:driver:{upload.driver_id}" if upload.driver_id else f"inward:device:{upload.device_id}"
    return f"outward:device:{upload.device_id}"


def media_order(media: upload_pb2.MediaReceived) -> tuple[int, str]:
    """The order waiting media of one upload are analysed in: by first frame time, then name."""
    first = int(media.frame_offsets_ms[0]) if media.frame_offsets_ms else 0
    return first, media.name


@dataclass(frozen=True)
class Sampling:
    """How many frames of a media item are analysed (bounds of decoding and analysis cost per item)."""

    max_fps: float = 5.0
    max_frames: int = 150
    # Decoding stops after this many decoded frames, sampled or not (a 60 s clip at 30 fps).
    max_decoded_frames: int = 1800


class FrameSampler:
    """Keeps a frame when it is at least 1/max_fps after the last one kept, up to `max_frames` (in decode order)."""

    def __init__(self, sampling: Sampling) -> None:
        self.sampling = sampling
        self.interval_ms = 1000.0 / sampling.max_fps if sampling.max_fps > 0 else 0.0
        self.kept = 0
        self.decoded = 0
        self.last_kept_ms: float | None = None

    def keep(self, offset_ms: int) -> bool:
        if self.full:
            return False
        self.decoded += 1
        if self.last_kept_ms is not None and offset_ms - self.last_kept_ms < self.interval_ms:
            return False
        self.last_kept_ms = offset_ms
        self.kept += 1
        return True

    @property
    def full(self) -> bool:
        return self.kept >= self.sampling.max_frames or self.decoded >= self.sampling.max_decoded_frames


def detection_event_id(upload_id: str, media_name: str, sha256: str, kind: str, started_ms: int) -> str:
    """Stable per (upload, media item, episode): the same item analysed again gives the same ids."""
    return stable_event_id("camera-detection", upload_id, media_name, sha256, kind, started_ms)


def window_id(upload_id: str, media_name: str, kind: str, started_ms: int) -> str:
    """The detection's window id (labels name it), stable like its event id."""
    return stable_event_id("camera-window", upload_id, media_name, kind, started_ms)
