"""Box overlap and non-maximum suppression shared by the face and object detectors.

Boxes are `N x 4` arrays of (x_min, y_min, x_max, y_max) in any one coordinate frame.
"""

from __future__ import annotations

import numpy as np


def intersection_over_union(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one box against each of `others`."""
    left = np.maximum(box[0], others[:, 0])
    top = np.maximum(box[1], others[:, 1])
    right = np.minimum(box[2], others[:, 2])
    bottom = np.minimum(box[3], others[:, 3])
    intersection = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    other_areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + other_areas - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1e-12), 0.0)


def non_maximum_suppression(boxes: np.ndarray, scores: np.ndarray, overlap_threshold: float) -> list[int]:
    """Indices kept, best score first: a box is dropped when it overlaps a kept one by more than the threshold."""
    order = list(np.argsort(-scores, kind="stable"))
    kept: list[int] = []
    while order:
        best = int(order.pop(0))
        kept.append(best)
        if not order:
            break
        overlaps = intersection_over_union(boxes[best], boxes[np.array(order)])
        order = [index for index, overlap in zip(order, overlaps, strict=True) if overlap <= overlap_threshold]
    return kept


def weighted_suppression(
    boxes: np.ndarray, scores: np.ndarray, overlap_threshold: float
) -> list[tuple[np.ndarray, list[int]]]:
    """MediaPipe's weighted NMS: each cluster of overlapping boxes around the best-scoring one becomes one
    detection whose coordinates are the score-weighted mean of the cluster. Returns (weights over the cluster,
    cluster indices) per detection, best first, so callers can average boxes and keypoints alike."""
    order = list(np.argsort(-scores, kind="stable"))
    clusters: list[tuple[np.ndarray, list[int]]] = []
    while order:
        best = int(order[0])
        overlaps = intersection_over_union(boxes[best], boxes[np.array(order)])
        members = [int(index) for index, overlap in zip(order, overlaps, strict=True) if overlap > overlap_threshold]
        if best not in members:
            members.insert(0, best)
        weights = scores[np.array(members)]
        clusters.append((weights / weights.sum(), members))
        order = [index for index in order if int(index) not in members]
    return clusters
