"""What a device says about a media item in its PUT headers: which camera, when each frame was taken, the optics.

Every header is optional; a value that is there must be right, or the PUT is refused (400 `invalid-media-header`,
`field` naming the header) before its body is read:

| header | value | default |
|---|---|---|
| `X-Michi-Camera` | `inward` or `outward` | from the name: `inward*`, `cabin*`, `driver*` → inward; `outward*`, `road*`, `front*` → outward; else unspecified |
| `X-Michi-Frame-Offsets-Ms` | comma-separated whole milliseconds from the upload's `started_at`, non-decreasing, at most 4,096, each below 24 h | none |
| `X-Michi-Camera-Fov-Deg` | horizontal field of view, 10-180 | none (the camera service's default) |
| `X-Michi-Camera-Intrinsics` | `fx,fy,cx,cy` in pixels of the frames sent, each 1-100,000 | none |
| `X-Michi-Camera-Height-M` | an outward camera's lens height above the road, 0.3-5 m | none |

    description = describe_media("inward-0001.jpg", request.headers)
    description.camera, description.frame_offsets_ms, description.optics
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from michi.contracts.v1 import upload_pb2

CAMERA_HEADER = "x-michi-camera"
FRAME_OFFSETS_HEADER = "x-michi-frame-offsets-ms"
FOV_HEADER = "x-michi-camera-fov-deg"
INTRINSICS_HEADER = "x-michi-camera-intrinsics"
HEIGHT_HEADER = "x-michi-camera-height-m"

MAX_FRAME_OFFSETS = 4096
MAX_FRAME_OFFSET_MS = 24 * 3600 * 1000
FOV_RANGE_DEG = (10.0, 180.0)
INTRINSICS_RANGE_PX = (1.0, 100_000.0)
HEIGHT_RANGE_M = (0.3, 5.0)
# A header holding 4,096 offsets of 8 digits is ~37 kB; anything longer is refused unread.
MAX_HEADER_CHARACTERS = 40_000

CAMERAS = {"inward": upload_pb2.CAMERA_KIND_INWARD, "outward": upload_pb2.CAMERA_KIND_OUTWARD}
NAME_PREFIXES = (
    (("inward", "cabin", "driver"), upload_pb2.CAMERA_KIND_INWARD),
    (("outward", "road", "front"), upload_pb2.CAMERA_KIND_OUTWARD),
)


class MediaHeaderInvalid(ValueError):
    """A media header holds a value it may not (ingest answers 400 `invalid-media-header`, `field` the header)."""

    def __init__(self, header: str, detail: str) -> None:
        super().__init__(f"{header}: {detail}")
        self.header = header


@dataclass(frozen=True)
class MediaDescription:
    camera: upload_pb2.CameraKind = upload_pb2.CAMERA_KIND_UNSPECIFIED
    frame_offsets_ms: tuple[int, ...] = ()
    optics: upload_pb2.CameraOptics = field(default_factory=upload_pb2.CameraOptics)


def _number(header: str, text: str, bounds: tuple[float, float]) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise MediaHeaderInvalid(header, f"{text.strip()[:32]!r} is not a number") from None
    if not math.isfinite(value) or not bounds[0] <= value <= bounds[1]:
        raise MediaHeaderInvalid(header, f"must be between {bounds[0]:g} and {bounds[1]:g}")
    return value


def camera_of(name: str, declared: str | None) -> upload_pb2.CameraKind:
    """The camera a media item comes from: the header when given, else its name's prefix, else unspecified."""
    if declared is not None:
        camera = CAMERAS.get(declared.strip().lower())
        if camera is None:
            raise MediaHeaderInvalid(CAMERA_HEADER, "must be inward or outward")
        return camera
    lowered = name.lower()
    for prefixes, camera in NAME_PREFIXES:
        if lowered.startswith(prefixes):
            return camera
    return upload_pb2.CAMERA_KIND_UNSPECIFIED


def frame_offsets(text: str) -> tuple[int, ...]:
    """The frame offsets of `X-Michi-Frame-Offsets-Ms`."""
    parts = text.split(",")
    if len(parts) > MAX_FRAME_OFFSETS:
        raise MediaHeaderInvalid(FRAME_OFFSETS_HEADER, f"at most {MAX_FRAME_OFFSETS} offsets")
    offsets: list[int] = []
    for part in parts:
        item = part.strip()
        if not item.isdigit() or not item.isascii():
            raise MediaHeaderInvalid(FRAME_OFFSETS_HEADER, "comma-separated whole milliseconds (0, 33, 67, ...)")
        value = int(item)
        if value >= MAX_FRAME_OFFSET_MS:
            raise MediaHeaderInvalid(FRAME_OFFSETS_HEADER, "an offset must be below 24 h")
        if offsets and value < offsets[-1]:
            raise MediaHeaderInvalid(FRAME_OFFSETS_HEADER, "offsets must not decrease")
        offsets.append(value)
    return tuple(offsets)


def describe_media(name: str, headers: Mapping[str, str]) -> MediaDescription:
    """What the PUT of media `name` says about it (`headers` with lower-case names, as Starlette's)."""
    for header in (CAMERA_HEADER, FRAME_OFFSETS_HEADER, FOV_HEADER, INTRINSICS_HEADER, HEIGHT_HEADER):
        value = headers.get(header)
        if value is not None and len(value) > MAX_HEADER_CHARACTERS:
            raise MediaHeaderInvalid(header, f"longer than {MAX_HEADER_CHARACTERS} characters")
    optics = upload_pb2.CameraOptics()
    if (fov := headers.get(FOV_HEADER)) is not None:
        optics.horizontal_fov_deg = _number(FOV_HEADER, fov, FOV_RANGE_DEG)
    if (intrinsics := headers.get(INTRINSICS_HEADER)) is not None:
        values = intrinsics.split(",")
        if len(values) != 4:
            raise MediaHeaderInvalid(INTRINSICS_HEADER, "fx,fy,cx,cy in pixels")
        (
            optics.focal_length_x_px,
            optics.focal_length_y_px,
            optics.principal_point_x_px,
            optics.principal_point_y_px,
        ) = (_number(INTRINSICS_HEADER, value, INTRINSICS_RANGE_PX) for value in values)
    if (height := headers.get(HEIGHT_HEADER)) is not None:
        optics.mount_height_m = _number(HEIGHT_HEADER, height, HEIGHT_RANGE_M)
    offsets = headers.get(FRAME_OFFSETS_HEADER)
    return MediaDescription(
        camera=camera_of(name, headers.get(CAMERA_HEADER)),
        frame_offsets_ms=frame_offsets(offsets) if offsets is not None else (),
        optics=optics,
    )
