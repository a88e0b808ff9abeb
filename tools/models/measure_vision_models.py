"""Measure the built vision models on the shipped real images: accuracy figures and CPU latency per frame.

    .venv/bin/python tools/models/measure_vision_models.py

Prints the figures the model cards (models/vision/cards/) and docs/vision.md quote. Needs `make models` first.
Latency is the median of repeated runs on one thread (ONNX Runtime CPU, intra-op threads 1), model call only and
with pre/post-processing, after warm-up.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from michi.vision.faces import FaceDetector, FaceKeypoint
from michi.vision.images import read_image, read_video_frames
from michi.vision.landmarks import FaceLandmarker, MeshPoint
from michi.vision.model_store import VisionModelStore
from michi.vision.objects import ObjectDetector

# The two cars parked at the top right of vtest.avi (image pixels, x_min, y_min, x_max, y_max), in every frame.
PARKED_CARS = (np.array([650.0, 45.0, 725.0, 100.0]), np.array([727.0, 49.0, 771.0, 96.0]))


def median_milliseconds(action: Callable[[], object], repeats: int = 30) -> float:
    for _ in range(3):
        action()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def overlap(first: np.ndarray, second: np.ndarray) -> float:
    left, top = np.maximum(first[:2], second[:2])
    right, bottom = np.minimum(first[2:], second[2:])
    intersection = max(0.0, right - left) * max(0.0, bottom - top)
    union = np.prod(first[2:] - first[:2]) + np.prod(second[2:] - second[:2]) - intersection
    return float(intersection / union)


def lfw_crops(store: VisionModelStore) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """scikit-image's LFW subset: 100 face crops then 100 non-face crops, 25 x 25 grey in [0, 1]."""
    crops = np.load(store.path("images/lfw_subset.npy"))
    as_rgb = [np.repeat((crop * 255).astype(np.uint8)[..., None], 3, axis=2) for crop in crops]
    return as_rgb[:100], as_rgb[100:]


def main() -> None:
    store = VisionModelStore()
    astronaut = read_image(store.path("images/astronaut.png"))
    face_detector = FaceDetector(store)
    landmarker = FaceLandmarker(store)
    object_detector = ObjectDetector(store)

    faces = face_detector.detect(astronaut)
    face = faces[0]
    print(
        f"face_detection_short_range: astronaut.png faces={len(faces)} score={face.score:.3f} box={face.box.round(1)}"
    )
    face_crops, other_crops = lfw_crops(store)
    found = sum(bool(face_detector.detect(crop)) for crop in face_crops)
    false = sum(bool(face_detector.detect(crop)) for crop in other_crops)
    print(f"face_detection_short_range: LFW subset recall {found}/100 faces, false detections {false}/100 non-faces")
    tensor, _ = face_detector.input_tensor(astronaut)
    print(
        "face_detection_short_range latency ms: model "
        f"{median_milliseconds(lambda: face_detector.raw_outputs(tensor)):.2f}, "
        f"end to end (512 x 512) {median_milliseconds(lambda: face_detector.detect(astronaut)):.2f}"
    )

    landmarks = landmarker.locate(astronaut, face)
    points = landmarks.points
    interocular = float(np.linalg.norm(face.keypoints[FaceKeypoint.LEFT_EYE] - face.keypoints[FaceKeypoint.RIGHT_EYE]))
    right_eye = points[[MeshPoint.RIGHT_EYE_OUTER, MeshPoint.RIGHT_EYE_INNER], :2].mean(axis=0)
    left_eye = points[[MeshPoint.LEFT_EYE_OUTER, MeshPoint.LEFT_EYE_INNER], :2].mean(axis=0)
    eye_error = (
        np.linalg.norm(right_eye - face.keypoints[FaceKeypoint.RIGHT_EYE])
        + np.linalg.norm(left_eye - face.keypoints[FaceKeypoint.LEFT_EYE])
    ) / 2
    nose_error = np.linalg.norm(points[MeshPoint.NOSE_TIP, :2] - face.keypoints[FaceKeypoint.NOSE_TIP])
    print(
        f"face_landmark: astronaut.png presence={landmarks.presence:.3f}; mesh eye centres vs detector eyes "
        f"{eye_error / interocular:.3f} x interocular, nose tip {nose_error / interocular:.3f} x interocular "
        f"(interocular {interocular:.1f} px)"
    )
    irises = landmarker.irises(astronaut, landmarks)
    for name, iris, keypoint in zip(
        ("right", "left"), irises, (FaceKeypoint.RIGHT_EYE, FaceKeypoint.LEFT_EYE), strict=True
    ):
        distance = np.linalg.norm(iris.centre - face.keypoints[keypoint]) / interocular
        print(
            f"iris_landmark: {name} iris centre {iris.centre.round(1)}, diameter {iris.diameter:.1f} px "
            f"({iris.diameter / interocular:.3f} x interocular), {distance:.3f} x interocular from the detector's eye"
        )
    face_tensor, _ = landmarker.face_input(astronaut, face)
    print(
        "face_landmark latency ms: model "
        f"{median_milliseconds(lambda: landmarker.face_session.run(None, {landmarker.face_input_name: face_tensor})):.2f}, "
        f"end to end {median_milliseconds(lambda: landmarker.locate(astronaut, face)):.2f}"
    )
    eye_tensor = landmarker.eye_inputs(astronaut, points)[0][0]
    assert landmarker.iris_session is not None
    iris_session = landmarker.iris_session
    iris_input = iris_session.get_inputs()[0].name
    print(
        "iris_landmark latency ms: model (one eye) "
        f"{median_milliseconds(lambda: iris_session.run(None, {iris_input: eye_tensor})):.2f}, "
        f"end to end (both eyes) {median_milliseconds(lambda: landmarker.irises(astronaut, landmarks)):.2f}"
    )

    frames = 0
    people_counts = []
    parked_found = [0, 0]
    labels_seen: dict[str, int] = {}
    last_frame = astronaut
    for _, frame in read_video_frames(store.path("images/vtest.avi"), every=5):
        frames += 1
        last_frame = frame
        detected = object_detector.detect(frame)
        for item in detected:
            labels_seen[item.label] = labels_seen.get(item.label, 0) + 1
        people_counts.append(sum(item.label == "Person" for item in detected))
        cars = [item.box for item in detected if item.label in {"Car", "Vehicle"}]
        for index, parked in enumerate(PARKED_CARS):
            parked_found[index] += any(overlap(parked, box) >= 0.5 for box in cars)
    print(
        f"object_detection_oidv4: vtest.avi {frames} frames (every 5th); people per frame median "
        f"{statistics.median(people_counts)}, min {min(people_counts)}, max {max(people_counts)}; "
        f"frames with ≥ 1 person {sum(count > 0 for count in people_counts)}/{frames}; parked cars found (IoU ≥ 0.5) "
        f"{parked_found[0]}/{frames} and {parked_found[1]}/{frames}; labels {dict(sorted(labels_seen.items()))}"
    )
    car_image = read_image(store.path("images/licenseplate_motion.jpg"))
    car = object_detector.detect(car_image)
    print(f"object_detection_oidv4: licenseplate_motion.jpg {[(item.label, round(item.score, 3)) for item in car]}")
    street_tensor, _ = object_detector.input_tensor(last_frame)
    print(
        "object_detection_oidv4 latency ms: model "
        f"{median_milliseconds(lambda: object_detector.raw_outputs(street_tensor)):.2f}, "
        f"end to end (768 x 576) {median_milliseconds(lambda: object_detector.detect(last_frame)):.2f}"
    )


if __name__ == "__main__":
    main()
