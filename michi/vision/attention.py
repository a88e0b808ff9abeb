"""Driver attention from the face mesh: head pose (distraction) and eye closure (drowsiness).

**Head pose** is a perspective-n-point fit of a rigid 3-D face model to ten mesh points in the image: the
points of MediaPipe's canonical face model (`canonical_face_model.obj`, Apache-2.0, centimetres) for the eye
corners, the nose from bridge to tip and the forehead, turned into camera axes (x right, y down,
z away from the camera) so that a face looking into the lens has no rotation. The fit starts from a scaled
orthographic alignment (Kabsch) of the model with the mesh's own 3-D points, then Levenberg-Marquardt refines the
rotation and translation on the reprojection error through the camera's pinhole intrinsics. NumPy only.

Angles in degrees: **yaw** > 0 when the face turns towards the image's right (the driver's left, for a camera
facing the driver), **pitch** > 0 looking up and < 0 looking down, **roll** > 0 when the head tilts clockwise in
the image. They are `R = Ry(-yaw) Rx(-pitch) Rz(roll)` of the model-to-camera rotation, so a face looking into
the lens from above the camera's axis has a negative pitch; `HeadPose.towards_camera` gives the angles from the
line of sight instead (0, 0 for a face looking into the lens anywhere in the frame).

A driver camera is seldom straight in front of the driver, and the driver looks at the road, not the lens, so
distraction is judged on the pose relative to the driver's usual pose (`HeadPoseBaseline`: the median yaw and
pitch of the driver's recent frames), and relative to the line of sight until enough frames are in.

**Eye closure** is the eye aspect ratio (EAR, Soukupová and Čech 2016) of six eyelid points per eye: the sum of
the two lid-to-lid distances over twice the corner-to-corner distance, averaged over both eyes. The points are the
iris model's eye contour (its first 16 points are the mesh's eye contour, refined on a 64 x 64 crop of the eye):
on the astronaut with eyelids warped shut, the iris model's EAR fell from 0.355 to 0.196 while the face mesh's
own lid points moved only from 0.243 to 0.230. Open eyes give different ratios on different faces, so closure is
judged against the driver's own open-eye baseline (`EyeClosureTracker`).

`michi.vision.camera_events.InwardAnalysis` runs these over a driver's frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from michi.vision.landmarks import Iris
from michi.vision.optics import CameraIntrinsics


@dataclass(frozen=True)
class AttentionPolicy:
    """The thresholds of distraction and drowsiness, with their defaults (docs/vision.md, "Camera analysis")."""

    # Distraction: the head, relative to the driver's usual pose (HeadPoseBaseline: the median of the last
    # pose_baseline_frames, once pose_baseline_minimum_frames are in), outside yaw_limit / pitch limits for
    # distraction_minimum_s, lapses of at most distraction_gap_s allowed. A frame without a face counts as looking away when a face was seen within
    # face_lost_as_away_s; confidence grows from half to full over angle_full_margin_deg beyond the band.
    yaw_limit_deg: float = 30.0
    pitch_down_limit_deg: float = -20.0
    pitch_up_limit_deg: float = 30.0
    distraction_minimum_s: float = 2.0
    distraction_gap_s: float = 0.5
    face_lost_as_away_s: float = 10.0
    angle_full_margin_deg: float = 15.0
    pose_baseline_frames: int = 600
    pose_baseline_minimum_frames: int = 20
    # Drowsiness: an eye is closed when its EAR is under closed_ratio x the driver's open-eye baseline, the
    # baseline_percentile of the last baseline_frames EARs of a frontal head (judged only once
    # baseline_minimum_frames are in). PERCLOS is the closed fraction of the frontal frames of the last
    # perclos_window_s, judged once they span perclos_minimum_window_s. An episode: PERCLOS above
    # perclos_threshold for drowsiness_minimum_s, or eyes closed for microsleep_s at once; lapses of
    # drowsiness_gap_s allowed. Closed readings further apart than eye_reading_gap_s are separate closures.
    closed_ratio: float = 0.7
    baseline_percentile: float = 80.0
    baseline_frames: int = 600
    baseline_minimum_frames: int = 20
    perclos_window_s: float = 60.0
    perclos_minimum_window_s: float = 10.0
    perclos_threshold: float = 0.15
    drowsiness_minimum_s: float = 3.0
    microsleep_s: float = 1.0
    drowsiness_gap_s: float = 2.0
    eye_reading_gap_s: float = 0.5
    perclos_full_margin: float = 0.25


# Mesh index -> MediaPipe canonical face model point (x right, y up, z towards the viewer, centimetres). Only
# points that expressions do not move: on the astronaut's smiling face, adding the mouth corners, upper lip and
# chin tilted the fitted pitch by 15 degrees.
CANONICAL_FACE_POINTS: dict[int, tuple[float, float, float]] = {
    33: (-4.445859, 2.663991, 3.173422),  # right eye, outer corner
    133: (-1.856432, 2.585245, 3.757904),  # right eye, inner corner
    362: (1.856432, 2.585245, 3.757904),  # left eye, inner corner
    263: (4.445859, 2.663991, 3.173422),  # left eye, outer corner
    151: (0.0, 6.545390, 5.027311),  # forehead
    168: (0.0, 3.271027, 5.236015),  # between the eyes
    6: (0.0, 2.473255, 5.788627),  # nose bridge
    4: (0.0, -0.463170, 7.586580),  # above the nose tip
    1: (0.0, -1.126865, 7.475604),  # nose tip
    2: (0.0, -2.089024, 6.058267),  # below the nose
}
POSE_MESH_INDICES = tuple(CANONICAL_FACE_POINTS)
# The model in camera axes: y down and z away from the camera.
FACE_MODEL_CM = np.array([CANONICAL_FACE_POINTS[index] for index in POSE_MESH_INDICES]) * np.array([1.0, -1.0, -1.0])

# Eye aspect ratio points per eye: corner, upper lid x 2, other corner, lower lid x 2 (p1 … p6), as mesh indices
# and as indices of the iris model's eye contour (0-8 the lower lid from corner 33 to corner 133, 9-15 the upper
# lid between them; the second eye is mirrored into the same order).
EYE_POINTS = ((33, 160, 158, 133, 153, 144), (362, 385, 387, 263, 373, 380))
EYE_CONTOUR_POINTS = (0, 11, 13, 8, 5, 3)


@dataclass(frozen=True)
class HeadPose:
    """Head orientation in degrees (signs in the module docstring), the face model's position in the camera's
    frame (centimetres) and the root-mean-square reprojection error of the fit in pixels."""

    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    translation_cm: tuple[float, float, float]
    reprojection_error_px: float

    @property
    def towards_camera(self) -> tuple[float, float]:
        """(yaw, pitch) from the line of sight: what the face's yaw and pitch would be had it looked into the lens
        subtracted (small-angle difference)."""
        x, y, z = self.translation_cm
        sight_yaw = math.degrees(math.atan2(-x, z))
        sight_pitch = math.degrees(math.atan2(y, math.hypot(x, z)))
        return self.yaw_deg - sight_yaw, self.pitch_deg - sight_pitch


def rotation_from_vector(vector: np.ndarray) -> np.ndarray:
    """Rodrigues' formula: the rotation by |vector| radians about its direction."""
    angle = float(np.linalg.norm(vector))
    if angle < 1e-12:
        return np.eye(3)
    axis = vector / angle
    cross = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def vector_from_rotation(rotation: np.ndarray) -> np.ndarray:
    """The inverse of `rotation_from_vector` (angles below pi)."""
    cosine = min(1.0, max(-1.0, (np.trace(rotation) - 1) / 2))
    angle = math.acos(cosine)
    if angle < 1e-9:
        return np.zeros(3)
    axis = np.array(
        [rotation[2, 1] - rotation[1, 2], rotation[0, 2] - rotation[2, 0], rotation[1, 0] - rotation[0, 1]]
    ) / (2 * math.sin(angle))
    return axis * angle


def rotation_from_angles(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """The model-to-camera rotation of a head pose: Ry(-yaw) Rx(-pitch) Rz(roll)."""
    a, b, c = math.radians(-yaw_deg), math.radians(-pitch_deg), math.radians(roll_deg)
    about_y = np.array([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
    about_x = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(b), -math.sin(b)], [0.0, math.sin(b), math.cos(b)]])
    about_z = np.array([[math.cos(c), -math.sin(c), 0.0], [math.sin(c), math.cos(c), 0.0], [0.0, 0.0, 1.0]])
    return about_y @ about_x @ about_z


def angles_from_rotation(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a model-to-camera rotation (the inverse of `rotation_from_angles`)."""
    b = math.asin(min(1.0, max(-1.0, -rotation[1, 2])))
    a = math.atan2(rotation[0, 2], rotation[2, 2])
    c = math.atan2(rotation[1, 0], rotation[1, 1])
    return -math.degrees(a), -math.degrees(b), math.degrees(c)


def project(
    points: np.ndarray, rotation: np.ndarray, translation: np.ndarray, intrinsics: CameraIntrinsics
) -> np.ndarray:
    """Pinhole projection of model points (N x 3) placed by `rotation` and `translation`, in pixels (N x 2)."""
    camera = points @ rotation.T + translation
    depth = np.maximum(camera[:, 2], 1e-6)
    return np.stack(
        [
            intrinsics.focal_x_px * camera[:, 0] / depth + intrinsics.principal_x_px,
            intrinsics.focal_y_px * camera[:, 1] / depth + intrinsics.principal_y_px,
        ],
        axis=1,
    )


def orthographic_alignment(model: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """The rotation that best turns the centred `model` (N x 3) onto the centred `observed` 3-D points up to scale
    (Kabsch), the starting point of the perspective fit."""
    model_centred = model - model.mean(axis=0)
    observed_centred = observed - observed.mean(axis=0)
    left, _, right = np.linalg.svd(observed_centred.T @ model_centred)
    sign = np.sign(np.linalg.det(left @ right)) or 1.0
    return left @ np.diag([1.0, 1.0, sign]) @ right


def solve_pose(
    model: np.ndarray,
    image_points: np.ndarray,
    intrinsics: CameraIntrinsics,
    rotation: np.ndarray,
    *,
    iterations: int = 30,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Perspective-n-point by Levenberg-Marquardt from an initial `rotation`: (rotation, translation, RMS
    reprojection error in pixels). The initial translation puts the model's centroid on the ray through the image
    points' centroid at the depth where its projected spread matches theirs."""
    focal = (intrinsics.focal_x_px + intrinsics.focal_y_px) / 2
    centroid = model.mean(axis=0)
    model_spread = float(np.sqrt((((model - centroid) @ rotation.T)[:, :2] ** 2).sum(axis=1).mean()))
    image_centroid = image_points.mean(axis=0)
    image_spread = float(np.sqrt(((image_points - image_centroid) ** 2).sum(axis=1).mean()))
    depth = focal * model_spread / max(image_spread, 1e-6)
    centre = np.array(
        [
            (image_centroid[0] - intrinsics.principal_x_px) * depth / intrinsics.focal_x_px,
            (image_centroid[1] - intrinsics.principal_y_px) * depth / intrinsics.focal_y_px,
            depth,
        ]
    )
    parameters = np.concatenate([vector_from_rotation(rotation), centre - rotation @ centroid])

    def residuals(values: np.ndarray) -> np.ndarray:
        return (project(model, rotation_from_vector(values[:3]), values[3:], intrinsics) - image_points).ravel()

    current = residuals(parameters)
    damping = 1e-3
    steps = np.array([1e-6] * 3 + [1e-4 * max(depth, 1.0)] * 3)
    for _ in range(iterations):
        jacobian = np.empty((current.size, 6))
        for column in range(6):
            shifted = parameters.copy()
            shifted[column] += steps[column]
            jacobian[:, column] = (residuals(shifted) - current) / steps[column]
        normal = jacobian.T @ jacobian
        gradient = jacobian.T @ current
        improved = False
        while damping < 1e8:
            step = np.linalg.solve(normal + damping * np.diag(np.diag(normal) + 1e-12), -gradient)
            candidate = parameters + step
            candidate_residuals = residuals(candidate)
            if candidate_residuals @ candidate_residuals < current @ current:
                parameters, current = candidate, candidate_residuals
                damping = max(damping / 10, 1e-9)
                improved = True
                break
            damping *= 10
        if not improved or np.abs(step).max() < 1e-9:
            break
    error = float(np.sqrt((current.reshape(-1, 2) ** 2).sum(axis=1).mean()))
    return rotation_from_vector(parameters[:3]), parameters[3:], error


def estimate_head_pose(mesh_points: np.ndarray, intrinsics: CameraIntrinsics) -> HeadPose:
    """The head pose of a 468-point face mesh (image pixels, the mesh's relative depth in the third column)."""
    selected = mesh_points[list(POSE_MESH_INDICES)]
    initial = orthographic_alignment(FACE_MODEL_CM, selected[:, :3])
    rotation, translation, error = solve_pose(FACE_MODEL_CM, selected[:, :2], intrinsics, initial)
    yaw, pitch, roll = angles_from_rotation(rotation)
    return HeadPose(
        yaw_deg=yaw,
        pitch_deg=pitch,
        roll_deg=roll,
        translation_cm=(float(translation[0]), float(translation[1]), float(translation[2])),
        reprojection_error_px=error,
    )


def outside_band_deg(yaw_deg: float, pitch_deg: float, policy: AttentionPolicy) -> float:
    """How far a (relative) yaw and pitch are outside the attention band, in degrees (0 inside)."""
    return max(
        abs(yaw_deg) - policy.yaw_limit_deg,
        policy.pitch_down_limit_deg - pitch_deg,
        pitch_deg - policy.pitch_up_limit_deg,
        0.0,
    )


class HeadPoseBaseline:
    """The driver's usual head pose: the median yaw and pitch of the last `pose_baseline_frames` faces, once
    `pose_baseline_minimum_frames` are in (a driver looking away less than half the time leaves it on the road
    ahead). State JSON-safe."""

    def __init__(self, policy: AttentionPolicy, state: dict[str, Any] | None = None) -> None:
        self.policy = policy
        state = state or {}
        self.yaws: list[float] = list(state.get("yaws", []))
        self.pitches: list[float] = list(state.get("pitches", []))

    def to_dict(self) -> dict[str, Any]:
        return {"yaws": self.yaws, "pitches": self.pitches}

    @property
    def usual(self) -> tuple[float, float] | None:
        if len(self.yaws) < self.policy.pose_baseline_minimum_frames:
            return None
        return float(np.median(self.yaws)), float(np.median(self.pitches))

    def relative(self, pose: HeadPose) -> tuple[float, float]:
        """(yaw, pitch) of `pose` from the usual pose (from the line of sight while there is none yet); then the
        pose joins the history."""
        usual = self.usual
        relative = pose.towards_camera if usual is None else (pose.yaw_deg - usual[0], pose.pitch_deg - usual[1])
        self.yaws.append(round(pose.yaw_deg, 2))
        self.pitches.append(round(pose.pitch_deg, 2))
        del self.yaws[: -self.policy.pose_baseline_frames]
        del self.pitches[: -self.policy.pose_baseline_frames]
        return relative


def _aspect_ratio(points: np.ndarray, indices: tuple[int, ...]) -> float:
    corner, upper_first, upper_second, other_corner, lower_first, lower_second = indices
    lids = np.linalg.norm(points[upper_first] - points[lower_second]) + np.linalg.norm(
        points[upper_second] - points[lower_first]
    )
    width = np.linalg.norm(points[corner] - points[other_corner])
    return float(lids / (2 * width)) if width > 0 else 0.0


def eye_aspect_ratio(irises: Sequence[Iris]) -> float:
    """The mean eye aspect ratio of both eyes from the iris model's eye contours."""
    return float(np.mean([_aspect_ratio(iris.eye_contour, EYE_CONTOUR_POINTS) for iris in irises]))


def mesh_eye_aspect_ratio(mesh_points: np.ndarray) -> float:
    """The same from the face mesh's own lid points (coarser: see the module docstring)."""
    return float(np.mean([_aspect_ratio(mesh_points[:, :2], indices) for indices in EYE_POINTS]))


@dataclass(frozen=True)
class EyeReading:
    """The eyes after one frame: closed or not (None: not judged), PERCLOS (None until the window is long
    enough), how long the eyes have been closed without a break, the baseline and the window's span."""

    closed: bool | None
    perclos: float | None
    closed_for_s: float
    baseline: float | None
    window_s: float


class EyeClosureTracker:
    """The driver's open-eye baseline, the PERCLOS window and the current closure; state JSON-safe."""

    def __init__(self, policy: AttentionPolicy, state: dict[str, Any] | None = None) -> None:
        self.policy = policy
        state = state or {}
        self.ears: list[float] = list(state.get("ears", []))
        # [offset_ms, 1 closed / 0 open] of the judged frames in the PERCLOS window.
        self.window: list[list[int]] = [list(entry) for entry in state.get("window", [])]
        self.closed_since_ms: int | None = state.get("closed_since_ms")
        self.last_closed_ms: int | None = state.get("last_closed_ms")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ears": self.ears,
            "window": self.window,
            "closed_since_ms": self.closed_since_ms,
            "last_closed_ms": self.last_closed_ms,
        }

    def forget_timeline(self) -> None:
        """Drop the window and the current closure (offsets of a new upload restart), keeping the baseline."""
        self.window = []
        self.closed_since_ms = None
        self.last_closed_ms = None

    @property
    def baseline(self) -> float | None:
        if len(self.ears) < self.policy.baseline_minimum_frames:
            return None
        return float(np.percentile(self.ears, self.policy.baseline_percentile))

    def observe(self, offset_ms: int, ear: float | None) -> EyeReading:
        """One frame's eye aspect ratio, None when the frame shows no frontal face (not counted)."""
        policy = self.policy
        closed: bool | None = None
        if ear is not None:
            self.ears.append(round(ear, 4))
            del self.ears[: -policy.baseline_frames]
            baseline = self.baseline
            if baseline is not None:
                closed = ear < policy.closed_ratio * baseline
                self.window.append([offset_ms, int(closed)])
                if closed:
                    gap_ms = policy.eye_reading_gap_s * 1000
                    if self.last_closed_ms is None or offset_ms - self.last_closed_ms > gap_ms:
                        self.closed_since_ms = offset_ms
                    self.last_closed_ms = offset_ms
                else:
                    self.closed_since_ms = self.last_closed_ms = None
        oldest = offset_ms - policy.perclos_window_s * 1000
        self.window = [entry for entry in self.window if entry[0] > oldest]
        window_s = (self.window[-1][0] - self.window[0][0]) / 1000 if self.window else 0.0
        perclos = None
        if self.window and window_s >= policy.perclos_minimum_window_s:
            perclos = sum(entry[1] for entry in self.window) / len(self.window)
        closed_for_s = 0.0
        if closed and self.closed_since_ms is not None and self.last_closed_ms is not None:
            closed_for_s = (self.last_closed_ms - self.closed_since_ms) / 1000
        return EyeReading(
            closed=closed, perclos=perclos, closed_for_s=closed_for_s, baseline=self.baseline, window_s=window_s
        )
