"""Decoding images and video frames, and the affine crops the models take, in NumPy.

Images are `height x width x 3` uint8 RGB arrays. Decoding goes through PyAV (FFmpeg's PNG, JPEG and MPEG-4
decoders; imported only when a file is decoded). A crop is described by the affine map from crop pixels to image
pixels, so a model's output in crop coordinates maps back to the image with the same matrix.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def read_image(path: Path) -> np.ndarray:
    """The first picture of an image file (PNG, JPEG, …) as RGB uint8."""
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            return np.asarray(frame.to_ndarray(format="rgb24"))
    raise ValueError(f"{path} holds no picture")


def read_video_frames(path: Path, *, every: int = 1, limit: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, RGB frame) for every `every`-th frame of a video, at most `limit` of them."""
    import av

    yielded = 0
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % every:
                continue
            yield index, np.asarray(frame.to_ndarray(format="rgb24"))
            yielded += 1
            if limit is not None and yielded >= limit:
                return


@dataclass(frozen=True)
class Crop:
    """A square or rectangular crop: `pixels` (output_height x output_width x 3, float32 in 0..255) and the
    2 x 3 matrix that maps crop pixel coordinates (x, y) to image pixel coordinates."""

    pixels: np.ndarray
    crop_to_image: np.ndarray

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Crop coordinates (… x 2, or … x 3 whose third column is kept as is) to image coordinates."""
        mapped = points.astype(np.float64, copy=True)
        xy = points[..., :2] @ self.crop_to_image[:, :2].T + self.crop_to_image[:, 2]
        mapped[..., :2] = xy
        return mapped


def warp_affine(image: np.ndarray, crop_to_image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear sampling of `image` at `crop_to_image` applied to each output pixel centre; outside is black.

    When the crop shrinks the image by 2 or more, the image is first averaged over blocks of that many pixels so
    that fine detail does not alias (what a GPU's mipmaps do for MediaPipe)."""
    factor = int(math.sqrt(abs(np.linalg.det(crop_to_image[:, :2]))))
    if factor >= 2:
        image = _block_mean(image, factor)
        crop_to_image = crop_to_image / factor
    image_height, image_width = image.shape[:2]
    # A one-pixel black border: samples outside the image read it, so no per-sample test is needed.
    padded = np.zeros((image_height + 2, image_width + 2, image.shape[2]), np.float32)
    padded[1:-1, 1:-1] = image
    flat = padded.reshape(-1, image.shape[2])
    columns, rows = np.meshgrid(np.arange(width, dtype=np.float64) + 0.5, np.arange(height, dtype=np.float64) + 0.5)
    source_x = crop_to_image[0, 0] * columns + crop_to_image[0, 1] * rows + crop_to_image[0, 2] + 0.5
    source_y = crop_to_image[1, 0] * columns + crop_to_image[1, 1] * rows + crop_to_image[1, 2] + 0.5
    left = np.floor(source_x)
    top = np.floor(source_y)
    weight_x = (source_x - left).astype(np.float32)[..., None]
    weight_y = (source_y - top).astype(np.float32)[..., None]
    left_index = np.clip(left, 0, image_width + 1).astype(np.int64)
    right_index = np.clip(left + 1, 0, image_width + 1).astype(np.int64)
    top_row = np.clip(top, 0, image_height + 1).astype(np.int64) * (image_width + 2)
    bottom_row = np.clip(top + 1, 0, image_height + 1).astype(np.int64) * (image_width + 2)
    upper = flat[top_row + left_index] * (1 - weight_x) + flat[top_row + right_index] * weight_x
    lower = flat[bottom_row + left_index] * (1 - weight_x) + flat[bottom_row + right_index] * weight_x
    return upper * (1 - weight_y) + lower * weight_y


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    height, width = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    total = np.zeros((height // factor, width // factor, image.shape[2]), np.float32)
    for row in range(factor):
        for column in range(factor):
            total += image[row:height:factor, column:width:factor]
    return total / (factor * factor)


def rotated_crop(
    image: np.ndarray,
    centre: tuple[float, float],
    side: float,
    rotation: float,
    size: int,
    *,
    mirrored: bool = False,
) -> Crop:
    """A `size x size` crop of a `side`-pixel square centred on `centre` whose x axis points along `rotation`
    (radians, image coordinates with y down); `mirrored` flips it left-right."""
    scale = side / size
    cosine, sine = math.cos(rotation) * scale, math.sin(rotation) * scale
    flip = -1.0 if mirrored else 1.0
    linear = np.array([[cosine * flip, -sine], [sine * flip, cosine]])
    offset = np.array(centre) - linear @ np.array([size / 2, size / 2])
    matrix = np.hstack([linear, offset[:, None]])
    return Crop(warp_affine(image, matrix, size, size), matrix)


def letterbox(image: np.ndarray, size: int) -> Crop:
    """The whole image scaled to fit a `size x size` square, centred, padded with black."""
    height, width = image.shape[:2]
    return rotated_crop(image, (width / 2, height / 2), float(max(height, width)), 0.0, size)


def stretch(image: np.ndarray, width: int, height: int) -> Crop:
    """The whole image resized to `width x height`, aspect ratio not kept."""
    image_height, image_width = image.shape[:2]
    matrix = np.array([[image_width / width, 0.0, 0.0], [0.0, image_height / height, 0.0]])
    return Crop(warp_affine(image, matrix, width, height), matrix)


def clip_frame_offset(
    declared_ms: Sequence[int], index: int, time_ms: float | None, first_time_ms: float | None, interval_ms: float
) -> int:
    """Offset (ms from the upload's start) of a clip's `index`-th decoded frame: how the camera service numbers
    the frames it analyses and the annotation page the frames it shows, so both name the same frame.

    Every frame's offset declared (`X-Michi-Frame-Offsets-Ms`): its own (past the declared ones, the last plus the
    frame interval). Else the container's timestamp (`time_ms`; without one, `index` frame intervals) counted from
    the first declared offset (0 when none was declared).
    """
    if len(declared_ms) > 1:
        if index < len(declared_ms):
            return int(declared_ms[index])
        return int(declared_ms[-1]) + round((index - len(declared_ms) + 1) * interval_ms)
    base = int(declared_ms[0]) if declared_ms else 0
    if time_ms is not None and first_time_ms is not None:
        return base + max(0, round(time_ms - first_time_ms))
    return base + round(index * interval_ms)
