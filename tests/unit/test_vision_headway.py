"""Camera intrinsics, the pinhole distance and the outward camera analysis: a real car (the car seen from behind in
Debian opencv-doc's licenseplate_motion.jpg, from the model store) pasted on a drawn road at known distances
(`michi.vision.composites`), found by the real object detector, its distance and time headway checked.

The intrinsics and the lead-vehicle geometry are also tested on their own (no models needed). The rest needs
`make models`: skipped when the models are absent, a failure under CI (CI set), where .ci/run builds them.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Iterator

import numpy as np
import pytest

from michi.contracts.v1 import upload_pb2
from michi.vision.camera_events import CameraEvent, CameraEventKind, Frame, OutwardAnalysis
from michi.vision.composites import add_sensor_noise, paste_vehicle, road_scene
from michi.vision.headway import HeadwayPolicy, distance_from_ground, find_lead_vehicle, lane_crop
from michi.vision.images import read_image, read_video_frames
from michi.vision.model_store import VisionModelsMissing, VisionModelStore
from michi.vision.objects import DetectedObject, ObjectDetector
from michi.vision.optics import DEFAULT_MOUNT_HEIGHT_M, DEFAULT_OUTWARD_FOV_DEG, CameraIntrinsics, mount_height_m

WIDTH, HEIGHT = 1280, 720
INTRINSICS = CameraIntrinsics.of(None, WIDTH, HEIGHT, default_fov_deg=DEFAULT_OUTWARD_FOV_DEG)
# The car in licenseplate_motion.jpg (600 x 482) spans the picture's width but a few pixels.
CAR_WIDTH_IN_PICTURE_PX = 590.0
FRAME_INTERVAL_MS = 100


# --- geometry on its own ------------------------------------------------------------------------------------------


def test_declared_intrinsics_win_and_a_field_of_view_gives_the_focal_length() -> None:
    declared = upload_pb2.CameraOptics(
        focal_length_x_px=900, focal_length_y_px=905, principal_point_x_px=641, principal_point_y_px=362
    )
    assert CameraIntrinsics.of(declared, WIDTH, HEIGHT, default_fov_deg=110) == CameraIntrinsics(900, 905, 641, 362)
    # A partial calibration falls back to the field of view.
    partial = upload_pb2.CameraOptics(focal_length_x_px=900, horizontal_fov_deg=90)
    from_fov = CameraIntrinsics.of(partial, WIDTH, HEIGHT, default_fov_deg=110)
    assert from_fov.focal_x_px == pytest.approx(640.0) and from_fov.focal_y_px == pytest.approx(640.0)
    assert (from_fov.principal_x_px, from_fov.principal_y_px) == (640.0, 360.0)
    default = CameraIntrinsics.of(None, WIDTH, HEIGHT, default_fov_deg=110)
    assert default.focal_x_px == pytest.approx(640 / math.tan(math.radians(55)))
    assert mount_height_m(None) == DEFAULT_MOUNT_HEIGHT_M
    assert mount_height_m(upload_pb2.CameraOptics(mount_height_m=2.4)) == pytest.approx(2.4)


def box_at(distance_m: float, lateral_m: float = 0.0, *, label: str = "Car", score: float = 0.8) -> DetectedObject:
    """The box the detector draws around a 1.8 m wide, 1.5 m tall car at that distance (wider than the car by the
    policy's box-to-body ratio)."""
    width = INTRINSICS.focal_x_px * 1.8 / distance_m * HeadwayPolicy().box_to_body_ratio
    centre = INTRINSICS.principal_x_px + INTRINSICS.focal_x_px * lateral_m / distance_m
    bottom = INTRINSICS.principal_y_px + INTRINSICS.focal_y_px * DEFAULT_MOUNT_HEIGHT_M / distance_m
    top = bottom - INTRINSICS.focal_y_px * 1.5 / distance_m
    return DetectedObject(box=np.array([centre - width / 2, top, centre + width / 2, bottom]), label=label, score=score)


def test_the_lead_vehicle_is_the_nearest_one_in_the_ego_lane() -> None:
    policy = HeadwayPolicy()
    vehicles = [box_at(20.0), box_at(12.0, 3.6), box_at(30.0, -0.5), box_at(8.0, label="Person")]
    lead = find_lead_vehicle(vehicles, INTRINSICS, DEFAULT_MOUNT_HEIGHT_M, HEIGHT, policy)
    assert lead is not None
    assert lead.distance_m == pytest.approx(20.0)
    assert lead.distance_from_ground_m == pytest.approx(20.0)
    assert abs(lead.lateral_offset_m) < 0.01
    assert find_lead_vehicle([box_at(12.0, 3.6)], INTRINSICS, DEFAULT_MOUNT_HEIGHT_M, HEIGHT, policy) is None
    weak = [box_at(10.0, score=0.2)]
    assert find_lead_vehicle(weak, INTRINSICS, DEFAULT_MOUNT_HEIGHT_M, HEIGHT, policy) is None
    # A box cut by the frame's bottom edge has no ground-plane distance.
    assert distance_from_ground(HEIGHT - 1.0, INTRINSICS, DEFAULT_MOUNT_HEIGHT_M, HEIGHT) == 0.0


def test_the_detector_looks_at_a_square_around_the_ego_lane_inside_the_frame() -> None:
    left, top, right, bottom = lane_crop(INTRINSICS, WIDTH, HEIGHT, 0.4)
    assert right - left == bottom - top == 512
    assert left <= INTRINSICS.principal_x_px <= right and top <= INTRINSICS.principal_y_px <= bottom
    assert lane_crop(INTRINSICS, WIDTH, HEIGHT, 1.0) == (280, 0, 1000, 720)


# --- the real car through the real detector -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def store() -> Iterator[VisionModelStore]:
    try:
        built = VisionModelStore()
    except VisionModelsMissing as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{error} (.ci/run builds them)")
    yield built


@pytest.fixture(scope="module")
def car(store: VisionModelStore) -> np.ndarray:
    return read_image(store.path("images/licenseplate_motion.jpg"))


@pytest.fixture(scope="module")
def road() -> np.ndarray:
    return road_scene(INTRINSICS, WIDTH, HEIGHT, DEFAULT_MOUNT_HEIGHT_M, np.random.default_rng(0))


def car_ahead(road: np.ndarray, car: np.ndarray, distance_m: float, lateral_m: float = 0.0) -> np.ndarray:
    return paste_vehicle(
        road, car, CAR_WIDTH_IN_PICTURE_PX, INTRINSICS, DEFAULT_MOUNT_HEIGHT_M, distance_m, lateral_m=lateral_m
    )


def test_the_distance_follows_the_cars_known_distance(
    store: VisionModelStore, road: np.ndarray, car: np.ndarray
) -> None:
    analysis = OutwardAnalysis(store)
    measured = []
    for distance in (4.0, 6.0, 8.0, 10.0, 12.0, 15.0):
        lead = analysis.lead_vehicle(car_ahead(road, car, distance), INTRINSICS, DEFAULT_MOUNT_HEIGHT_M)
        assert lead is not None, f"no lead vehicle at {distance} m"
        measured.append(lead.distance_m)
        # The box overruns the car by 4 % (near) to 22 % (far) around the 15 % the width prior takes out: measured
        # 0.95-1.07 of the true distance (before the ratio, 0.79-0.95).
        assert 0.9 * distance <= lead.distance_m <= 1.1 * distance
        # The composite stands the car on a level road at the camera's height, so the ground plane is near exact.
        assert lead.distance_from_ground_m == pytest.approx(distance, rel=0.1)
    assert measured == sorted(measured)
    ratios = [found / distance for found, distance in zip(measured, (4.0, 6.0, 8.0, 10.0, 12.0, 15.0), strict=True)]
    assert abs(statistics.median(ratios) - 1.0) <= 0.05


def test_a_car_in_the_next_lane_is_not_the_lead(store: VisionModelStore, road: np.ndarray, car: np.ndarray) -> None:
    analysis = OutwardAnalysis(store)
    assert analysis.lead_vehicle(car_ahead(road, car, 10.0, lateral_m=3.6), INTRINSICS, DEFAULT_MOUNT_HEIGHT_M) is None
    assert analysis.lead_vehicle(road, INTRINSICS, DEFAULT_MOUNT_HEIGHT_M) is None


def closing_distance_m(offset_ms: int) -> float:
    """The car ahead closes in from 20 m to 8 m over 10 s (1.2 m/s)."""
    return 20.0 - 1.2 * offset_ms / 1000


@pytest.fixture(scope="module")
def closing_frames(road: np.ndarray, car: np.ndarray) -> list[Frame]:
    rng = np.random.default_rng(4)
    return [
        Frame(offset_ms=offset, image=add_sensor_noise(car_ahead(road, car, closing_distance_m(offset)), rng))
        for offset in range(0, 10_000, FRAME_INTERVAL_MS)
    ]


SPEED_MPS = 15.0


def test_closing_in_at_speed_is_one_tailgating_event(store: VisionModelStore, closing_frames: list[Frame]) -> None:
    events = OutwardAnalysis(store).feed(closing_frames, lambda offset: SPEED_MPS, None)
    assert [event.kind for event in events] == [CameraEventKind.TAILGATING]
    (event,) = events
    # True headway: 1.33 s at the start, 1.0 s at 5.4 s (15 m), 0.53 s at the end. With the box-to-body ratio
    # taken out the headway reads within 5 % (measured: the episode starts at a true 1.04 s, 3.7 s in; before the
    # ratio, at 1.25 s), and no later than where the true headway crosses 1.0 s.
    threshold = HeadwayPolicy().headway_threshold_s
    assert closing_distance_m(event.started_ms) / SPEED_MPS <= 1.05 * threshold
    assert event.started_ms <= 5_400
    assert event.ended_ms >= 9_800
    true_minimum = closing_distance_m(9_900) / SPEED_MPS
    assert event.peak_value == pytest.approx(true_minimum, rel=0.05)
    assert event.figures["speed_mps"] == SPEED_MPS
    assert event.figures["headway_s"] == pytest.approx(event.peak_value, abs=1e-3)
    assert 0.5 < event.confidence <= 1.0
    assert 1 <= len(event.frame_offsets_ms) <= 16


def test_closing_in_slowly_or_without_speed_is_nothing(store: VisionModelStore, closing_frames: list[Frame]) -> None:
    assert OutwardAnalysis(store).feed(closing_frames, lambda offset: 5.0, None) == []
    assert OutwardAnalysis(store).feed(closing_frames, lambda offset: None, None) == []


def test_the_state_saved_between_calls_gives_the_event_once(
    store: VisionModelStore, closing_frames: list[Frame]
) -> None:
    state: dict | None = None
    events: list[CameraEvent] = []
    for start in range(0, len(closing_frames), 23):
        analysis = OutwardAnalysis(store, state=state)
        events += analysis.feed(closing_frames[start : start + 23], lambda offset: SPEED_MPS, None)
        state = json.loads(json.dumps(analysis.to_dict()))
    assert [event.kind for event in events] == [CameraEventKind.TAILGATING]
    redelivered = OutwardAnalysis(store, state=state).feed(closing_frames, lambda offset: SPEED_MPS, None)
    assert redelivered == []


# --- the box-to-body ratio, measured on every shipped vehicle the detector can be checked on ----------------------

# The white van parked at the top right of vtest.avi: its body is the run of white columns through x = 690 in rows
# 48-80 (its windows and lights leave gaps of at most two columns), its detector box the one over this region.
VAN_BOX = np.array([650.0, 45.0, 725.0, 100.0])


def _van_body(frame: np.ndarray) -> tuple[int, int] | None:
    white = (frame[48:80, 630:735].astype(int).min(axis=2) > 160).mean(axis=0) > 0.3
    middle = 690 - 630
    if not white[middle]:
        return None
    left = right = middle
    while left - 1 >= 0 and white[max(left - 3, 0) : left].any():
        left -= 1
    while right + 1 < len(white) and white[right + 1 : right + 3].any():
        right += 1
    return 630 + left, 630 + right + 1


def _overlap(box: np.ndarray, other: np.ndarray) -> float:
    width = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
    height = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
    area = (box[2] - box[0]) * (box[3] - box[1]) + (other[2] - other[0]) * (other[3] - other[1])
    return float(width * height / (area - width * height))


def test_the_box_to_body_ratio_is_the_median_over_the_shipped_vehicles(
    store: VisionModelStore, road: np.ndarray, car: np.ndarray
) -> None:
    """The ratio the width prior divides by (docs/vision.md, *Figures*): the car of licenseplate_motion.jpg on the
    road at 4 to 25 m in three frame sizes (its body is the known 590 pixels of the picture), and the van parked in
    vtest.avi (its body read from its pixels); the median of the two vehicles' medians."""
    detector = ObjectDetector(store)
    composite = []
    for width, height in ((640, 480), (1280, 720), (1920, 1080)):
        intrinsics = CameraIntrinsics.of(None, width, height, default_fov_deg=DEFAULT_OUTWARD_FOV_DEG)
        scene = road_scene(intrinsics, width, height, DEFAULT_MOUNT_HEIGHT_M, np.random.default_rng(0))
        analysis = OutwardAnalysis(store)
        for distance in (4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 14.0, 15.0, 16.0, 18.0, 20.0, 25.0):
            picture = paste_vehicle(scene, car, CAR_WIDTH_IN_PICTURE_PX, intrinsics, DEFAULT_MOUNT_HEIGHT_M, distance)
            lead = analysis.lead_vehicle(picture, intrinsics, DEFAULT_MOUNT_HEIGHT_M)
            if lead is not None:
                composite.append(float(lead.box[2] - lead.box[0]) / (intrinsics.focal_x_px * 1.8 / distance))
    van = []
    for _, frame in read_video_frames(store.path("images/vtest.avi"), every=5):
        body = _van_body(frame)
        boxes = [found.box for found in detector.detect(frame, labels=frozenset({"Car", "Vehicle"}))]
        box = max(boxes, key=lambda each: _overlap(each, VAN_BOX), default=None)
        if body is not None and box is not None and _overlap(box, VAN_BOX) >= 0.5:
            van.append(float(box[2] - box[0]) / (body[1] - body[0]))
    # Measured: the car 1.18 over 34 composites (1.02 to 1.31), the van 1.13 over 144 frames (1.09 to 1.17).
    assert len(composite) >= 30 and len(van) >= 120
    assert 1.12 <= statistics.median(composite) <= 1.24
    assert 1.08 <= statistics.median(van) <= 1.18
    measured = statistics.median([statistics.median(composite), statistics.median(van)])
    assert measured == pytest.approx(HeadwayPolicy().box_to_body_ratio, abs=0.02)
