"""A camera's pinhole intrinsics, from its declared calibration or its field of view (docs/vision.md).

Devices may declare `CameraOptics` with a media item (proto/michi/v1/upload.proto): focal lengths and principal
point in pixels of the frames they upload, or only a horizontal field of view, and an outward camera's height above
the road. What they leave out falls back to the documented defaults below; lens distortion is not modelled (a
wide-angle dashcam's barrel distortion bends straight lines towards the edges, but the lead vehicle and the
driver's face sit near the image centre, where it is smallest).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from michi.contracts.v1 import upload_pb2

# A cabin camera sees the driver and the passenger seat: wide, about 110 degrees across.
DEFAULT_INWARD_FOV_DEG = 110.0
# A road-facing dashcam's horizontal field of view is usually 100 to 130 degrees; 110 is the middle.
DEFAULT_OUTWARD_FOV_DEG = 110.0
# A camera behind a car's windscreen, beside the mirror, is about 1.3 m above the road (a truck's is higher:
# devices should declare it).
DEFAULT_MOUNT_HEIGHT_M = 1.3


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics in pixels of the analysed frames: focal lengths and principal point."""

    focal_x_px: float
    focal_y_px: float
    principal_x_px: float
    principal_y_px: float

    @classmethod
    def of(
        cls, optics: upload_pb2.CameraOptics | None, width: int, height: int, *, default_fov_deg: float
    ) -> CameraIntrinsics:
        """The declared intrinsics when all four are positive; otherwise square pixels, the principal point at
        the frame's centre and the focal length that gives the declared horizontal field of view (else
        `default_fov_deg`) across `width` pixels."""
        if (
            optics is not None
            and min(
                optics.focal_length_x_px,
                optics.focal_length_y_px,
                optics.principal_point_x_px,
                optics.principal_point_y_px,
            )
            > 0
        ):
            return cls(
                focal_x_px=float(optics.focal_length_x_px),
                focal_y_px=float(optics.focal_length_y_px),
                principal_x_px=float(optics.principal_point_x_px),
                principal_y_px=float(optics.principal_point_y_px),
            )
        fov_deg = default_fov_deg
        if optics is not None and 0 < optics.horizontal_fov_deg < 180:
            fov_deg = float(optics.horizontal_fov_deg)
        focal = (width / 2) / math.tan(math.radians(fov_deg) / 2)
        return cls(focal_x_px=focal, focal_y_px=focal, principal_x_px=width / 2, principal_y_px=height / 2)

    @property
    def matrix(self) -> list[list[float]]:
        """The 3 x 3 camera matrix K."""
        return [
            [self.focal_x_px, 0.0, self.principal_x_px],
            [0.0, self.focal_y_px, self.principal_y_px],
            [0.0, 0.0, 1.0],
        ]


def mount_height_m(optics: upload_pb2.CameraOptics | None) -> float:
    """The outward camera's declared height above the road, else `DEFAULT_MOUNT_HEIGHT_M`."""
    if optics is not None and optics.mount_height_m > 0:
        return float(optics.mount_height_m)
    return DEFAULT_MOUNT_HEIGHT_M
