"""Time headway to the lead vehicle from the outward camera: the object detector's vehicle boxes, a pinhole
distance and the upload's GPS speed.

**Distance.** Two pinhole estimates are available for a box seen from behind:

- the *width prior*: distance = focal_x x vehicle width (1.8 m, a car's width with its mirrors folded in the
  box) x `box_to_body_ratio` / box width in pixels;
- the *ground plane*: distance = focal_y x camera height / (box bottom row - horizon row), the horizon taken at
  the principal point's row (a level camera).

The width prior is the distance used. The ground plane needs the camera's pitch, which devices do not declare: a
dashcam tilted down by one degree moves the horizon by focal_y x tan(1 degree), about 6 pixels at 1280 pixels
and 110 degrees, which is a 20 % error at 20 m (the box bottom is then only ~30 pixels below the horizon) and
grows with distance, while cars' widths (1.6 to 2.0 m) keep the width prior within about 12 %. The ground-plane
figure is reported beside it (`distance_from_ground_m`, 0 when the box bottom is at or above the horizon or cut by
the frame's edge), so a calibrated fleet can compare them.

**The detector's box is wider than the vehicle.** The SSD's boxes around a vehicle that fills a small part of its
input overrun the body sideways, so the box width alone puts the vehicle nearer than it is. `box_to_body_ratio`
(1.15) is the measured median of box width / visible body width on the shipped vehicle pictures the detector can
be checked on (docs/vision.md, *Figures*): the car of licenseplate_motion.jpg pasted on a drawn road at 4 to 25 m
in 640 x 480, 1280 x 720 and 1920 x 1080 frames (median 1.18, 1.02 at 5 m to 1.31 at 18 m: looser as the car gets
smaller), and the white van parked in vtest.avi, its edges read from its pixels in 144 frames (median 1.13). The
picture on its own is not a measurement: the car fills it, and the box is cut at its edges. With the box width
divided by the ratio, the composite car closing from 20 to 8 m reads its headway a median 4.7 % short (before: about
15 %); single frames read 0.91 to 1.09 of the true distance, long near (4-6 m, the box is tightest), short around
15-18 m (loosest).

**Where the detector looks.** The detector takes 300 x 300 pixels; on a whole 110-degree frame a car 15 m ahead
would be 13 of them wide, too small for it. It is run on a square of `lane_crop_fraction` (0.4) of the frame's
width around the principal point instead, a little below the horizon, where the vehicle ahead in the ego lane is
from about 3 m on, at 2.5 times the resolution.

**Lead vehicle.** The vehicle boxes (Open Images `Car`, `Vehicle`) whose centre, placed at the width-prior
distance, is within `lane_half_width_m` of the camera's axis sideways (the ego lane, the camera mounted near the
car's centre line) and whose bottom is below the horizon; of those, the nearest.

Pure functions and the policy; `michi.vision.camera_events.OutwardAnalysis` runs them over a road camera's frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from michi.vision.objects import DetectedObject
from michi.vision.optics import CameraIntrinsics

# A box bottom this close to the frame's lower edge is cut off, not where the vehicle meets the road.
_EDGE_MARGIN_PX = 2.0


@dataclass(frozen=True)
class HeadwayPolicy:
    """The thresholds of tailgating, with their defaults (docs/vision.md, "Camera analysis").

    An episode: the time headway to the lead vehicle under `headway_threshold_s` at a GPS speed of at least
    `minimum_speed_mps`, for `minimum_duration_s`, lapses (a missed detection) of at most `gap_s` allowed;
    confidence grows from half to full over `headway_full_margin_s` under the threshold."""

    headway_threshold_s: float = 1.0
    minimum_speed_mps: float = 8.0
    minimum_duration_s: float = 3.0
    gap_s: float = 1.0
    vehicle_width_m: float = 1.8
    # The detector's box width over the vehicle's visible width (measured, see the module's docstring).
    box_to_body_ratio: float = 1.15
    lane_half_width_m: float = 1.5
    maximum_distance_m: float = 100.0
    minimum_vehicle_score: float = 0.4
    headway_full_margin_s: float = 0.5
    vehicle_labels: frozenset[str] = frozenset({"Car", "Vehicle"})
    lane_crop_fraction: float = 0.4


@dataclass(frozen=True)
class LeadVehicle:
    """The vehicle ahead in the ego lane: its box (image pixels), label and score, the distance used (the width
    prior), both pinhole estimates and its sideways offset from the camera's axis, in metres."""

    box: np.ndarray
    label: str
    score: float
    distance_m: float
    distance_from_width_m: float
    distance_from_ground_m: float
    lateral_offset_m: float


def lane_crop(intrinsics: CameraIntrinsics, width: int, height: int, fraction: float) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the square the detector sees: `fraction` of the frame's width, centred on the
    principal point across and 15 % of its side below the horizon, moved inside the frame."""
    side = max(1, min(round(width * fraction), width, height))
    left = round(intrinsics.principal_x_px - side / 2)
    top = round(intrinsics.principal_y_px + 0.15 * side - side / 2)
    left = min(max(left, 0), width - side)
    top = min(max(top, 0), height - side)
    return left, top, left + side, top + side


def distance_from_width(
    box_width_px: float, intrinsics: CameraIntrinsics, vehicle_width_m: float, box_to_body_ratio: float = 1.0
) -> float:
    """The pinhole distance of a vehicle `vehicle_width_m` wide whose box is `box_to_body_ratio` times its width."""
    body_width_px = max(box_width_px, 1e-6) / box_to_body_ratio
    return intrinsics.focal_x_px * vehicle_width_m / body_width_px


def distance_from_ground(
    box_bottom_px: float, intrinsics: CameraIntrinsics, mount_height_m: float, frame_height: int
) -> float:
    """The ground-plane distance, 0 when the bottom is at or above the horizon or at the frame's lower edge."""
    below_horizon = box_bottom_px - intrinsics.principal_y_px
    if below_horizon <= 1.0 or box_bottom_px >= frame_height - _EDGE_MARGIN_PX:
        return 0.0
    return intrinsics.focal_y_px * mount_height_m / below_horizon


def find_lead_vehicle(
    vehicles: Sequence[DetectedObject],
    intrinsics: CameraIntrinsics,
    mount_height_m: float,
    frame_height: int,
    policy: HeadwayPolicy,
) -> LeadVehicle | None:
    """The nearest vehicle in the ego lane, or None."""
    lead: LeadVehicle | None = None
    for vehicle in vehicles:
        if vehicle.label not in policy.vehicle_labels or vehicle.score < policy.minimum_vehicle_score:
            continue
        x_min, _, x_max, y_max = (float(value) for value in vehicle.box)
        if y_max <= intrinsics.principal_y_px:
            continue
        distance = distance_from_width(x_max - x_min, intrinsics, policy.vehicle_width_m, policy.box_to_body_ratio)
        if distance > policy.maximum_distance_m:
            continue
        lateral = ((x_min + x_max) / 2 - intrinsics.principal_x_px) * distance / intrinsics.focal_x_px
        if abs(lateral) > policy.lane_half_width_m:
            continue
        if lead is None or distance < lead.distance_m:
            lead = LeadVehicle(
                box=vehicle.box,
                label=vehicle.label,
                score=vehicle.score,
                distance_m=distance,
                distance_from_width_m=distance,
                distance_from_ground_m=distance_from_ground(y_max, intrinsics, mount_height_m, frame_height),
                lateral_offset_m=lateral,
            )
    return lead
