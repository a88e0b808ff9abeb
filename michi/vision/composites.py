"""Composites made from the shipped real images, for tests and measurements of the camera analysis: eyes closed by
a landmark-driven warp of a real face, a head turned by re-rendering its own mesh, and a real car pasted on a road
at a known distance. NumPy only; the models then run on the composites as on any frame.

- `close_eyes` moves each upper eyelid (its mesh points) down to the lower lid and remaps each pixel column of the
  eye piecewise linearly along the lids: the lid's skin slides down over the eye and only the lash line is left
  where the eyeball was.
- `turn_head` rotates the face mesh's 3-D points (image pixels and the mesh's relative depth, on the same scale)
  about a vertical axis through the face and resamples the image through a thin-plate spline from the turned
  points back to the original ones.
- `rotate_image` turns the whole picture in its plane (a head's roll).
- `road_scene` draws a road (asphalt, lane lines converging on the horizon, sky) as a level pinhole camera at a
  given height sees it, and `paste_vehicle` stands a picture of a car seen from behind on it at a given distance,
  scaled to focal length x width / distance.
"""

from __future__ import annotations

import math

import numpy as np

from michi.vision.images import warp_affine
from michi.vision.optics import CameraIntrinsics

# Mesh indices of each eye's lids, paired upper with lower from one corner to the other (MediaPipe's eye contour).
EYELID_PAIRS = (
    ((246, 7), (161, 163), (160, 144), (159, 145), (158, 153), (157, 154), (173, 155)),
    ((466, 249), (388, 390), (387, 373), (386, 374), (385, 380), (384, 381), (398, 382)),
)
EYE_CORNER_POINTS = ((33, 133), (263, 362))


def _thin_plate_kernel(squared_distance: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(squared_distance > 0, squared_distance * np.log(squared_distance), 0.0)


def thin_plate_map(targets: np.ndarray, sources: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The thin-plate spline through `targets` -> `sources` (N x 2 each) evaluated at `points` (M x 2)."""
    count = len(targets)
    kernel = _thin_plate_kernel(((targets[:, None, :] - targets[None, :, :]) ** 2).sum(axis=2))
    affine = np.hstack([np.ones((count, 1)), targets])
    system = np.zeros((count + 3, count + 3))
    system[:count, :count] = kernel + 1e-9 * np.eye(count)
    system[:count, count:] = affine
    system[count:, :count] = affine.T
    right = np.zeros((count + 3, 2))
    right[:count] = sources
    weights = np.linalg.solve(system, right)
    point_kernel = _thin_plate_kernel(((points[:, None, :] - targets[None, :, :]) ** 2).sum(axis=2))
    return point_kernel @ weights[:count] + np.hstack([np.ones((len(points), 1)), points]) @ weights[count:]


def sample_bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pixels of `image` at (x, y) in pixel-centre coordinates (0 is the first pixel's centre), edges clamped."""
    height, width = image.shape[:2]
    x = np.clip(x, 0, width - 1.001)
    y = np.clip(y, 0, height - 1.001)
    left, top = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    weight_x, weight_y = (x - left)[..., None], (y - top)[..., None]
    pixels = image.astype(np.float32)
    upper = pixels[top, left] * (1 - weight_x) + pixels[top, left + 1] * weight_x
    lower = pixels[top + 1, left] * (1 - weight_x) + pixels[top + 1, left + 1] * weight_x
    return upper * (1 - weight_y) + lower * weight_y


def _in_eye_frame(
    points: np.ndarray, origin: np.ndarray, along: np.ndarray, across: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Image points as (distance along the eye line from `origin`, distance across it)."""
    offset = points - origin
    return offset @ along, offset @ across


def close_eyes(image: np.ndarray, mesh_points: np.ndarray, closure: float) -> np.ndarray:
    """The face with both eyes closed by `closure` (0 open as found, 1 shut).

    Per eye, in the frame of its corner-to-corner line (s along it, n across, down positive), the upper lid
    n = U(s) and the lower lid n = L(s) are the mesh's lid points, linearly interpolated. The upper lid moves to
    U' = U + closure x (L - U); each pixel column is remapped piecewise linearly: the skin between a line half an
    eye width above the lid and the lid stretches down to U', what is left of the opening, [U', L], shows the
    lid's margin (a pixel of lashes, stretched), and everything else stays. At the corners U = L, so the warp fades out there."""
    closure = min(1.0, max(0.0, closure))
    warped = image.copy()
    if closure <= 0:
        return warped
    points = mesh_points[:, :2].astype(np.float64)
    height, width = image.shape[:2]
    for pairs, (outer, inner) in zip(EYELID_PAIRS, EYE_CORNER_POINTS, strict=True):
        origin = points[outer]
        along = points[inner] - origin
        eye_width = float(np.linalg.norm(along))
        along /= eye_width
        across = np.array([-along[1], along[0]])
        if across[1] < 0:
            across = -across

        lid_s, upper_n = _in_eye_frame(np.array([points[upper] for upper, _ in pairs]), origin, along, across)
        lower_s, lower_n = _in_eye_frame(np.array([points[lower] for _, lower in pairs]), origin, along, across)
        # The corners close both lid curves.
        corner_s = np.array([0.0, eye_width])
        upper_s_all, upper_n_all = np.concatenate([corner_s, lid_s]), np.concatenate([[0.0, 0.0], upper_n])
        lower_s_all, lower_n_all = np.concatenate([corner_s, lower_s]), np.concatenate([[0.0, 0.0], lower_n])
        upper_order, lower_order = np.argsort(upper_s_all), np.argsort(lower_s_all)
        brow_gap = 0.5 * eye_width
        corners = np.array(
            [origin + along * s + across * n for s in (0, eye_width) for n in (-brow_gap * 1.2, brow_gap)]
        )
        left, top = np.floor(corners.min(axis=0)).astype(int)
        right, bottom = np.ceil(corners.max(axis=0)).astype(int) + 1
        left, top, right, bottom = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
        rows, columns = np.mgrid[top:bottom, left:right]
        pixel = np.stack([columns.ravel(), rows.ravel()], axis=1).astype(np.float64)
        s, n = _in_eye_frame(pixel, origin, along, across)
        inside = (s > 0) & (s < eye_width)
        upper = np.interp(s, upper_s_all[upper_order], upper_n_all[upper_order])
        lower = np.interp(s, lower_s_all[lower_order], lower_n_all[lower_order])
        lower = np.maximum(lower, upper)
        moved = upper + closure * (lower - upper)
        brow = upper - brow_gap
        source_n = n.copy()
        skin = inside & (n >= brow) & (n < moved)
        source_n[skin] = brow[skin] + (n[skin] - brow[skin]) * (upper[skin] - brow[skin]) / (moved[skin] - brow[skin])
        opening = inside & (n >= moved) & (n < lower) & (lower - moved > 1e-6)
        # What is left of the opening shows the lid's margin (the lashes), not the squeezed eyeball.
        margin = np.minimum(lower - upper, 1.0)
        source_n[opening] = upper[opening] + (n[opening] - moved[opening]) * margin[opening] / (
            lower[opening] - moved[opening]
        )
        changed = skin | opening
        source = origin + np.outer(s[changed], along) + np.outer(source_n[changed], across)
        values = sample_bilinear(image, source[:, 0], source[:, 1])
        flat_rows, flat_columns = rows.ravel()[changed], columns.ravel()[changed]
        warped[flat_rows, flat_columns] = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return warped


def turn_head(image: np.ndarray, mesh_points: np.ndarray, yaw_deg: float) -> np.ndarray:
    """The face turned by `yaw_deg` about a vertical axis (positive: towards the image's right), orthographically.

    The mesh's 3-D points (pixels; the depth on the same scale) rotate about a vertical axis through their
    centroid; a thin-plate spline from the turned points back to the original ones, pinned by a fixed ellipse
    around the face, resamples the image. Self-occlusion is not modelled, so keep the turn within about 30
    degrees (the far cheek is squeezed rather than hidden)."""
    points = mesh_points[::2].astype(np.float64)
    centre = points.mean(axis=0)
    angle = math.radians(yaw_deg)
    turned = points.copy()
    turned[:, 0] = (
        centre[0] + (points[:, 0] - centre[0]) * math.cos(angle) - (points[:, 2] - centre[2]) * math.sin(angle)
    )
    half_width = (points[:, 0].max() - points[:, 0].min()) * 0.9
    half_height = (points[:, 1].max() - points[:, 1].min()) * 0.8
    ring = np.array(
        [
            centre[:2] + np.array([half_width * math.cos(step), half_height * math.sin(step)])
            for step in np.linspace(0, 2 * math.pi, 32, endpoint=False)
        ]
    )
    targets = np.vstack([turned[:, :2], ring])
    sources = np.vstack([points[:, :2], ring])
    height, width = image.shape[:2]
    left, right = max(int(centre[0] - half_width), 0), min(math.ceil(centre[0] + half_width) + 1, width)
    top, bottom = max(int(centre[1] - half_height), 0), min(math.ceil(centre[1] + half_height) + 1, height)
    rows, columns = np.mgrid[top:bottom, left:right]
    inside = ((columns - centre[0]) / half_width) ** 2 + ((rows - centre[1]) / half_height) ** 2 < 1.0
    pixels = np.stack([columns[inside], rows[inside]], axis=1).astype(np.float64)
    mapped = thin_plate_map(targets, sources, pixels)
    warped = image.copy()
    warped[rows[inside], columns[inside]] = np.clip(
        np.rint(sample_bilinear(image, mapped[:, 0], mapped[:, 1])), 0, 255
    ).astype(np.uint8)
    return warped


def rotate_image(image: np.ndarray, degrees: float, centre: tuple[float, float]) -> np.ndarray:
    """`image` turned clockwise (as seen, y down) by `degrees` about `centre`, same size, black outside."""
    angle = math.radians(degrees)
    # Output pixel -> source pixel: the inverse rotation.
    linear = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    offset = np.array(centre) - linear @ np.array(centre)
    height, width = image.shape[:2]
    return np.clip(np.rint(warp_affine(image, np.hstack([linear, offset[:, None]]), width, height)), 0, 255).astype(
        np.uint8
    )


def add_sensor_noise(image: np.ndarray, rng: np.random.Generator, sigma: float = 2.0) -> np.ndarray:
    """The image with Gaussian pixel noise, so that repeated frames are not identical."""
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def road_scene(
    intrinsics: CameraIntrinsics,
    width: int,
    height: int,
    mount_height_m: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """A road as a level pinhole camera `mount_height_m` above it sees it: a pale sky above the horizon (the
    principal point's row), asphalt with grain below, white lane lines 3.6 m apart and grass beyond 5.4 m."""
    horizon = intrinsics.principal_y_px
    rows = np.arange(height, dtype=np.float64)[:, None] + 0.5
    columns = np.arange(width, dtype=np.float64)[None, :] + 0.5
    below = np.maximum(rows - horizon, 1e-3)
    distance = intrinsics.focal_y_px * mount_height_m / below
    lateral = (columns - intrinsics.principal_x_px) * distance / intrinsics.focal_x_px
    image = np.empty((height, width, 3), np.float32)
    image[:] = np.array([110.0, 110.0, 112.0])
    image += rng.normal(0.0, 6.0, (height, width, 1)).astype(np.float32)
    grass = np.abs(lateral) > 5.4
    image[np.broadcast_to(grass, (height, width))] = np.array([70.0, 105.0, 55.0])
    lines = (np.abs(np.abs(lateral) - 1.8) < 0.075) & (np.floor(distance / 3.0) % 2 == 0)
    image[np.broadcast_to(lines, (height, width))] = np.array([235.0, 235.0, 230.0])
    sky = np.broadcast_to(rows < horizon, (height, width))
    fade = np.broadcast_to(np.clip(rows / max(horizon, 1.0), 0, 1), (height, width))[sky][:, None]
    image[sky] = np.array([150.0, 185.0, 225.0]) * (1 - fade) + np.array([215.0, 220.0, 225.0]) * fade
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def paste_vehicle(
    scene: np.ndarray,
    vehicle: np.ndarray,
    vehicle_width_px: float,
    intrinsics: CameraIntrinsics,
    mount_height_m: float,
    distance_m: float,
    *,
    vehicle_width_m: float = 1.8,
    lateral_m: float = 0.0,
) -> np.ndarray:
    """`scene` with the picture `vehicle` (a vehicle seen from behind, `vehicle_width_px` wide in it, its bottom
    edge on the road) scaled to `vehicle_width_m` at `distance_m` and standing on the road there, `lateral_m` to
    the right of the camera's axis."""
    scale = intrinsics.focal_x_px * vehicle_width_m / distance_m / vehicle_width_px
    picture_height, picture_width = vehicle.shape[:2]
    pasted_width = max(round(picture_width * scale), 1)
    pasted_height = max(round(picture_height * scale), 1)
    bottom = intrinsics.principal_y_px + intrinsics.focal_y_px * mount_height_m / distance_m
    centre_x = intrinsics.principal_x_px + intrinsics.focal_x_px * lateral_m / distance_m
    left = round(centre_x - pasted_width / 2)
    top = round(bottom - pasted_height)
    matrix = np.array([[picture_width / pasted_width, 0.0, 0.0], [0.0, picture_height / pasted_height, 0.0]])
    resized = np.clip(np.rint(warp_affine(vehicle, matrix, pasted_width, pasted_height)), 0, 255).astype(np.uint8)
    composed = scene.copy()
    height, width = scene.shape[:2]
    row_start, column_start = max(top, 0), max(left, 0)
    row_end, column_end = min(top + pasted_height, height), min(left + pasted_width, width)
    if row_start < row_end and column_start < column_end:
        composed[row_start:row_end, column_start:column_end] = resized[
            row_start - top : row_end - top, column_start - left : column_end - left
        ]
    return composed
