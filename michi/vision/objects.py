"""People and vehicle detection with SSD-MobileNetV2 trained on Open Images (MediaPipe Objectron's detector).

The TFLite model and its label map (24 lines, background first: Bicycle, Person, Vehicle, Car, …) come from the
npm package `@mediapipe/objectron` (Apache-2.0), converted to ONNX by `make models`
(models/vision/cards/object_detection_oidv4.md). The image is stretched to 300 x 300 with values in [-1, 1]; each
of 1917 SSD anchors predicts box offsets (y, x, h, w scaled by 10, 10, 5, 5, as TensorFlow's object detection API)
and a sigmoid score per class; the anchors are MediaPipe's `SsdAnchorsCalculator` options for this model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from michi.vision.boxes import non_maximum_suppression
from michi.vision.images import Crop, stretch
from michi.vision.model_store import VisionModelStore

MODEL_NAME = "object_detection_oidv4"
LABELS_FILE = "object_detection_oidv4.labels.txt"
INPUT_SIZE = 300
ANCHOR_COUNT = 1917
# The classes a road camera cares about.
VEHICLE_LABELS = frozenset({"Car", "Vehicle", "Bicycle"})
PERSON_LABELS = frozenset({"Person"})
_BOX_SCALES = np.array([10.0, 10.0, 5.0, 5.0])


@dataclass(frozen=True)
class DetectedObject:
    """One object in image pixels: `box` (x_min, y_min, x_max, y_max), its Open Images label and score."""

    box: np.ndarray
    label: str
    score: float

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


def ssd_anchors(
    *,
    input_size: int = INPUT_SIZE,
    strides: tuple[int, ...] = (16, 32, 64, 128, 256, 512),
    minimum_scale: float = 0.2,
    maximum_scale: float = 0.95,
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 0.3333),
) -> np.ndarray:
    """Anchors as (x_centre, y_centre, width, height), normalised: MediaPipe's SsdAnchorsCalculator with
    `reduce_boxes_in_lowest_layer` and the default interpolated scale (aspect ratio 1) of the oidv4 subgraph."""
    layers = len(strides)

    def scale_of(layer: int) -> float:
        return minimum_scale + (maximum_scale - minimum_scale) * layer / (layers - 1)

    anchors = []
    for layer, stride in enumerate(strides):
        if layer == 0:
            shapes = [(0.1, 1.0), (scale_of(0), 2.0), (scale_of(0), 0.5)]
        else:
            shapes = [(scale_of(layer), ratio) for ratio in aspect_ratios]
            following = 1.0 if layer == layers - 1 else scale_of(layer + 1)
            shapes.append((math.sqrt(scale_of(layer) * following), 1.0))
        cells = math.ceil(input_size / stride)
        sizes = [(scale * math.sqrt(ratio), scale / math.sqrt(ratio)) for scale, ratio in shapes]
        for row in range(cells):
            for column in range(cells):
                for width, height in sizes:
                    anchors.append(((column + 0.5) / cells, (row + 0.5) / cells, width, height))
    return np.array(anchors)


def decode_boxes(encodings: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """SSD box encodings (N x 4: y, x, h, w) to normalised (x_min, y_min, x_max, y_max)."""
    scaled = encodings / _BOX_SCALES
    y_centre = scaled[:, 0] * anchors[:, 3] + anchors[:, 1]
    x_centre = scaled[:, 1] * anchors[:, 2] + anchors[:, 0]
    half_height = np.exp(scaled[:, 2]) * anchors[:, 3] / 2
    half_width = np.exp(scaled[:, 3]) * anchors[:, 2] / 2
    return np.stack([x_centre - half_width, y_centre - half_height, x_centre + half_width, y_centre + half_height], 1)


class ObjectDetector:
    """Finds Open Images objects (people, cars, bicycles, …) in RGB images. One instance per thread."""

    def __init__(self, store: VisionModelStore, *, minimum_score: float = 0.4, overlap_threshold: float = 0.4) -> None:
        self.session = store.session(MODEL_NAME)
        self.input_name = self.session.get_inputs()[0].name
        self.labels = store.text_lines(LABELS_FILE)
        self.minimum_score = minimum_score
        self.overlap_threshold = overlap_threshold
        self.anchors = ssd_anchors()
        if len(self.anchors) != ANCHOR_COUNT:
            raise ValueError(f"{len(self.anchors)} SSD anchors, the model predicts {ANCHOR_COUNT}")

    def input_tensor(self, image: np.ndarray) -> tuple[np.ndarray, Crop]:
        """The model's 1 x 3 x 300 x 300 input (channels first after conversion) and the resized frame."""
        crop = stretch(image, INPUT_SIZE, INPUT_SIZE)
        tensor = (crop.pixels / 127.5 - 1.0).astype(np.float32).transpose(2, 0, 1)[None]
        return tensor, crop

    def raw_outputs(self, tensor: np.ndarray) -> list[np.ndarray]:
        return list(self.session.run(None, {self.input_name: tensor}))

    def detect(self, image: np.ndarray, labels: frozenset[str] | None = None) -> list[DetectedObject]:
        """Objects best first (of `labels` only when given), boxes in image pixels; suppression runs per label."""
        tensor, crop = self.input_tensor(image)
        encodings, class_scores = self.raw_outputs(tensor)
        scores = 1.0 / (1.0 + np.exp(-class_scores[0, :, 1:]))
        best_class = scores.argmax(axis=1)
        best_score = scores[np.arange(len(scores)), best_class]
        candidates = np.flatnonzero(best_score >= self.minimum_score)
        boxes = decode_boxes(encodings[0, candidates], self.anchors[candidates]) * INPUT_SIZE
        found: list[DetectedObject] = []
        for class_index in np.unique(best_class[candidates]):
            label = self.labels[class_index + 1]
            if labels is not None and label not in labels:
                continue
            members = np.flatnonzero(best_class[candidates] == class_index)
            member_scores = best_score[candidates][members]
            for kept in non_maximum_suppression(boxes[members], member_scores, self.overlap_threshold):
                corners = crop.to_image(boxes[members][kept].reshape(2, 2))
                found.append(DetectedObject(box=corners.reshape(4), label=label, score=float(member_scores[kept])))
        return sorted(found, key=lambda detected: -detected.score)
