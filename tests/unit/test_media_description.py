"""What a media PUT's headers say about it (`services.ingest.domain.media_description`): the camera (declared, or
from the name), the frames' capture offsets and the optics; every wrong value refused with the header named."""

from __future__ import annotations

import pytest

from michi.contracts.v1 import upload_pb2
from services.ingest.domain.media_description import (
    FRAME_OFFSETS_HEADER,
    MAX_FRAME_OFFSETS,
    MediaHeaderInvalid,
    describe_media,
)

INWARD, OUTWARD, UNSPECIFIED = (
    upload_pb2.CAMERA_KIND_INWARD,
    upload_pb2.CAMERA_KIND_OUTWARD,
    upload_pb2.CAMERA_KIND_UNSPECIFIED,
)


@pytest.mark.parametrize(
    ("name", "declared", "camera"),
    [
        ("inward-0001.jpg", None, INWARD),
        ("Cabin.mp4", None, INWARD),
        ("driver_cam.jpg", None, INWARD),
        ("front.jpg", None, OUTWARD),
        ("road-7.png", None, OUTWARD),
        ("outward.h264", None, OUTWARD),
        ("clip.mp4", None, UNSPECIFIED),
        ("front.jpg", "inward", INWARD),
        ("clip.mp4", " OUTWARD ", OUTWARD),
    ],
)
def test_the_camera_is_the_declared_one_else_the_names(name: str, declared: str | None, camera: int) -> None:
    headers = {} if declared is None else {"x-michi-camera": declared}
    assert describe_media(name, headers).camera == camera


def test_nothing_declared_leaves_offsets_empty_and_optics_zero() -> None:
    description = describe_media("clip.mp4", {})
    assert description.frame_offsets_ms == ()
    assert description.optics == upload_pb2.CameraOptics()


def test_frames_and_optics_as_declared() -> None:
    description = describe_media(
        "inward.mp4",
        {
            FRAME_OFFSETS_HEADER: "0, 33,67,67 ,100",
            "x-michi-camera-fov-deg": "120.5",
            "x-michi-camera-intrinsics": "910.5, 905, 640, 360",
            "x-michi-camera-height-m": "1.35",
        },
    )
    assert description.frame_offsets_ms == (0, 33, 67, 67, 100)
    optics = description.optics
    assert optics.horizontal_fov_deg == pytest.approx(120.5)
    assert (optics.focal_length_x_px, optics.focal_length_y_px) == (pytest.approx(910.5), 905.0)
    assert (optics.principal_point_x_px, optics.principal_point_y_px) == (640.0, 360.0)
    assert optics.mount_height_m == pytest.approx(1.35)
    assert len(
        describe_media("a.jpg", {FRAME_OFFSETS_HEADER: ",".join(["5"] * MAX_FRAME_OFFSETS)}).frame_offsets_ms
    ) == (MAX_FRAME_OFFSETS)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-michi-camera", "rear"),
        (FRAME_OFFSETS_HEADER, ""),
        (FRAME_OFFSETS_HEADER, "0,,5"),
        (FRAME_OFFSETS_HEADER, "10,5"),
        (FRAME_OFFSETS_HEADER, "1e3"),
        (FRAME_OFFSETS_HEADER, "٣"),  # a digit, but not an ASCII one
        (FRAME_OFFSETS_HEADER, str(24 * 3600 * 1000)),
        (FRAME_OFFSETS_HEADER, ",".join(["1"] * (MAX_FRAME_OFFSETS + 1))),
        (FRAME_OFFSETS_HEADER, "1" * 40_001),
        ("x-michi-camera-fov-deg", "inf"),
        ("x-michi-camera-fov-deg", "9"),
        ("x-michi-camera-fov-deg", "wide"),
        ("x-michi-camera-intrinsics", "900,900,640,360,1"),
        ("x-michi-camera-intrinsics", "900,0,640,360"),
        ("x-michi-camera-height-m", "-1"),
    ],
)
def test_a_wrong_value_is_refused_naming_its_header(header: str, value: str) -> None:
    with pytest.raises(MediaHeaderInvalid) as refused:
        describe_media("inward.jpg", {header: value})
    assert refused.value.header == header
    assert str(refused.value).startswith(f"{header}: ")
