"""Measure the camera analysis (michi.vision.camera_events) on composites of the shipped real images: accuracy of
head pose, eye closure and headway, and CPU latency per frame.

    taskset -c 0 .venv/bin/python tools/models/measure_camera_analysis.py

Prints the figures docs/vision.md ("Camera analysis") quotes. Needs `make models` first. Latency is the median
per-frame time of `InwardAnalysis.feed` / `OutwardAnalysis.feed` over a stream of frames, one ONNX Runtime
thread, after warm-up; run it pinned to one core (taskset) for the one-core figure.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from michi.contracts.v1 import upload_pb2
from michi.vision.attention import estimate_head_pose, eye_aspect_ratio
from michi.vision.camera_events import Frame, InwardAnalysis, OutwardAnalysis
from michi.vision.composites import add_sensor_noise, close_eyes, paste_vehicle, road_scene, rotate_image, turn_head
from michi.vision.faces import FaceDetector
from michi.vision.images import read_image
from michi.vision.landmarks import FaceLandmarker
from michi.vision.model_store import VisionModelStore
from michi.vision.optics import DEFAULT_MOUNT_HEIGHT_M, CameraIntrinsics

PORTRAIT_FOV_DEG = 25.0


def main() -> None:
    store = VisionModelStore()
    astronaut = read_image(store.path("images/astronaut.png"))
    car = read_image(store.path("images/licenseplate_motion.jpg"))
    detector, landmarker = FaceDetector(store), FaceLandmarker(store)
    face = detector.detect(astronaut)[0]
    mesh = landmarker.locate(astronaut, face)
    portrait = CameraIntrinsics.of(None, 512, 512, default_fov_deg=PORTRAIT_FOV_DEG)

    def pose(image: np.ndarray, intrinsics: CameraIntrinsics = portrait) -> tuple[float, float, float, float, float]:
        found = detector.detect(image)[0]
        estimated = estimate_head_pose(landmarker.locate(image, found).points, intrinsics)
        toward_yaw, toward_pitch = estimated.towards_camera
        return estimated.yaw_deg, estimated.pitch_deg, estimated.roll_deg, toward_yaw, toward_pitch

    print("head pose of astronaut.png (yaw, pitch, roll; yaw and pitch from the line of sight)")
    for fov in (25.0, 60.0, 110.0):
        yaw, pitch, roll, toward_yaw, toward_pitch = pose(
            astronaut, CameraIntrinsics.of(None, 512, 512, default_fov_deg=fov)
        )
        print(
            f"  {fov:5.0f} deg: {yaw:6.1f} {pitch:6.1f} {roll:6.1f}   towards camera {toward_yaw:5.1f} {toward_pitch:5.1f}"
        )
    upright = pose(astronaut)
    centre = face.box.reshape(2, 2).mean(axis=0)
    print("roll given -> measured change")
    for roll in (-30.0, -15.0, 15.0, 30.0):
        rolled = pose(rotate_image(astronaut, roll, (float(centre[0]), float(centre[1]))))
        print(f"  {roll:6.1f} -> {rolled[2] - upright[2]:6.1f}")
    print("yaw given (turn_head) -> measured change")
    for yaw in (-30.0, -20.0, -10.0, 10.0, 20.0, 30.0, 45.0):
        turned = pose(turn_head(astronaut, mesh.points, yaw))
        print(f"  {yaw:6.1f} -> {turned[0] - upright[0]:6.1f} (pitch change {turned[1] - upright[1]:5.1f})")
    print("eye aspect ratio (iris model contours) by closure")
    for closure in (0.0, 0.25, 0.5, 0.75, 0.9, 1.0):
        image = close_eyes(astronaut, mesh.points, closure)
        found = detector.detect(image)[0]
        ratio = eye_aspect_ratio(landmarker.irises(image, landmarker.locate(image, found)))
        print(f"  {closure:4.2f}: {ratio:.3f}")

    rng = np.random.default_rng(0)
    open_frames = [Frame(index * 100, add_sensor_noise(astronaut, rng)) for index in range(130)]
    inward = InwardAnalysis(store)
    inward.feed(open_frames[:30], None)
    inward_times = []
    for frame in open_frames[30:]:
        started = time.perf_counter()
        inward.feed([frame], None)
        inward_times.append(time.perf_counter() - started)

    width, height = 1280, 720
    intrinsics = CameraIntrinsics.of(None, width, height, default_fov_deg=110.0)
    road = road_scene(intrinsics, width, height, DEFAULT_MOUNT_HEIGHT_M, rng)
    print("headway distance: true -> width prior (ratio), ground plane (ratio), label, score")
    outward = OutwardAnalysis(store)
    for distance in (4.0, 6.0, 8.0, 10.0, 12.0, 15.0, 18.0, 20.0, 22.0):
        scene = paste_vehicle(road, car, 590.0, intrinsics, DEFAULT_MOUNT_HEIGHT_M, distance)
        lead = outward.lead_vehicle(add_sensor_noise(scene, rng), intrinsics, DEFAULT_MOUNT_HEIGHT_M)
        if lead is None:
            print(f"  {distance:5.1f} m -> not found")
            continue
        print(
            f"  {distance:5.1f} m -> {lead.distance_m:5.2f} ({lead.distance_m / distance:.2f}), "
            f"{lead.distance_from_ground_m:5.2f} ({lead.distance_from_ground_m / distance:.2f}), "
            f"{lead.label}, {lead.score:.2f}"
        )
    road_frames = [
        Frame(index * 100, add_sensor_noise(paste_vehicle(road, car, 590.0, intrinsics, 1.3, 12.0), rng))
        for index in range(130)
    ]
    optics = upload_pb2.CameraOptics(horizontal_fov_deg=110.0)
    outward = OutwardAnalysis(store)
    outward.feed(road_frames[:30], lambda offset: 15.0, optics)
    outward_times = []
    for frame in road_frames[30:]:
        started = time.perf_counter()
        outward.feed([frame], lambda offset: 15.0, optics)
        outward_times.append(time.perf_counter() - started)
    print(f"InwardAnalysis per frame (512 x 512, one face): median {statistics.median(inward_times) * 1000:.1f} ms")
    print(f"OutwardAnalysis per frame (1280 x 720, a car): median {statistics.median(outward_times) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
