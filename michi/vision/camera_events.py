"""Camera events from a stream of frames: distraction and drowsiness from the driver camera, tailgating from the
road camera (docs/vision.md, "Camera analysis").

A camera service feeds each media item's decoded frames, in offset order, to one `InwardAnalysis` or
`OutwardAnalysis` per device and camera, and keeps `to_dict()` between items (JSON-safe, small: bounded windows)
so an analysis resumes where it stopped after a restart. Offsets must increase across the calls of one analysis
(the camera service passes stream time, the upload's start plus the frame's offset; `InwardAnalysis.
start_new_timeline` is for callers whose offsets restart). `feed` returns each episode once: in the call whose
frames end it or bring it to its minimum duration, spanning the frames seen so far; later frames of an episode
already returned extend nothing, and frames at or before the last offset already analysed are skipped, so
redelivered media gives nothing new. The state holds at most a PERCLOS window (60 s of frames) and 600 recent eye
ratios and head angles: about 40 KB of JSON at 30 frames per second.

Per frame, the inward analysis finds the largest face (the driver sits nearest the camera) with BlazeFace, its
468-point mesh, the head pose (`michi.vision.attention.estimate_head_pose`) and, with the iris model's eye
contours, the eyes' aspect ratio; the outward analysis finds the lead vehicle with the SSD detector, its distance
and the time headway at the GPS speed (`michi.vision.headway`).
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from michi.contracts.v1 import upload_pb2
from michi.vision.attention import (
    AttentionPolicy,
    EyeClosureTracker,
    HeadPose,
    HeadPoseBaseline,
    estimate_head_pose,
    eye_aspect_ratio,
    outside_band_deg,
)
from michi.vision.faces import FaceDetector
from michi.vision.headway import HeadwayPolicy, LeadVehicle, find_lead_vehicle, lane_crop
from michi.vision.landmarks import FaceLandmarker
from michi.vision.model_store import VisionModelStore
from michi.vision.objects import DetectedObject, ObjectDetector
from michi.vision.optics import (
    DEFAULT_INWARD_FOV_DEG,
    DEFAULT_OUTWARD_FOV_DEG,
    CameraIntrinsics,
    mount_height_m,
)

logger = logging.getLogger(__name__)

STATE_VERSION = 1
MAXIMUM_EVIDENCE_FRAMES = 16
# A face mesh whose presence is below this is no face (the detector fired on something else).
MINIMUM_FACE_PRESENCE = 0.5


class CameraEventKind(StrEnum):
    DISTRACTION = "distraction"
    DROWSINESS = "drowsiness"
    TAILGATING = "tailgating"


@dataclass(frozen=True)
class CameraEvent:
    """One episode. Offsets are milliseconds from the upload's `started_at`; `peak_value` is, per kind, the
    largest angle outside the band (degrees; 0 when only a missing face showed it), the largest PERCLOS (0..1), or
    the smallest time headway (seconds); `frame_offsets_ms` are up to 16 frames that show it, evenly spread."""

    kind: CameraEventKind
    started_ms: int
    ended_ms: int
    confidence: float
    peak_value: float
    frame_offsets_ms: tuple[int, ...]
    figures: dict[str, float]


@dataclass(frozen=True)
class Frame:
    """A decoded frame: its offset from the upload's `started_at` and its pixels (RGB uint8, H x W x 3)."""

    offset_ms: int
    image: np.ndarray


@dataclass
class FrameFinding:
    """What one frame says about a condition: whether it holds, how bad (for the peak), how sure the models are,
    and the figures to report when this frame is the episode's peak."""

    holds: bool
    peak_value: float = 0.0
    severity: float = 0.0
    model_score: float = 0.0
    immediate: bool = False
    figures: dict[str, float] = field(default_factory=dict)


class EpisodeTracker:
    """Turns per-frame findings into episodes: a condition holding, with lapses no longer than `gap_ms`, for at
    least `minimum_ms` (or at once when a frame says `immediate`, as a microsleep does). The peak is the largest
    value (angles, PERCLOS) or, with `smaller_is_worse`, the smallest (headway). State JSON-safe."""

    def __init__(
        self,
        kind: CameraEventKind,
        *,
        minimum_ms: int,
        gap_ms: int,
        smaller_is_worse: bool = False,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.kind = kind
        self.minimum_ms = minimum_ms
        self.gap_ms = gap_ms
        self.smaller_is_worse = smaller_is_worse
        self.active: dict[str, Any] | None = dict(state["active"]) if state and state.get("active") else None

    def to_dict(self) -> dict[str, Any]:
        return {"active": self.active}

    def observe(self, offset_ms: int, finding: FrameFinding) -> list[CameraEvent]:
        """Episodes this frame ends (returned at most once each)."""
        ended: list[CameraEvent] = []
        active = self.active
        if active is not None and offset_ms - active["last_ms"] > self.gap_ms:
            ended.extend(self._close())
            active = None
        if not finding.holds:
            return ended
        if active is None:
            active = {
                "started_ms": offset_ms,
                "last_ms": offset_ms,
                "reported": False,
                "immediate": False,
                "evidence": [],
                "stride": 1,
                "count": 0,
                "peak_value": finding.peak_value,
                "peak_ms": offset_ms,
                "figures": dict(finding.figures),
                "severity": finding.severity,
                "score_sum": 0.0,
            }
            self.active = active
        active["last_ms"] = offset_ms
        active["immediate"] = active["immediate"] or finding.immediate
        if active["count"] % active["stride"] == 0:
            active["evidence"].append(offset_ms)
            if len(active["evidence"]) > MAXIMUM_EVIDENCE_FRAMES:
                active["evidence"] = active["evidence"][::2]
                active["stride"] *= 2
        active["count"] += 1
        active["score_sum"] += finding.model_score
        active["severity"] = max(active["severity"], finding.severity)
        worse = (
            finding.peak_value < active["peak_value"]
            if self.smaller_is_worse
            else finding.peak_value > active["peak_value"]
        )
        if worse:
            active["peak_value"] = finding.peak_value
            active["peak_ms"] = offset_ms
            active["figures"] = dict(finding.figures)
        return ended

    def flush(self) -> list[CameraEvent]:
        """The active episode if it has reached its minimum duration and was not returned yet."""
        if self.active is None or self.active["reported"] or not self._qualifies(self.active):
            return []
        self.active["reported"] = True
        return [self._event(self.active)]

    def _close(self) -> list[CameraEvent]:
        active, self.active = self.active, None
        if active is None or active["reported"] or not self._qualifies(active):
            return []
        return [self._event(active)]

    def _qualifies(self, active: dict[str, Any]) -> bool:
        return bool(active["immediate"]) or active["last_ms"] - active["started_ms"] >= self.minimum_ms

    def _event(self, active: dict[str, Any]) -> CameraEvent:
        # The sampled frames, evenly spread, with the peak and the last frame always among them.
        required = sorted({int(active["peak_ms"]), int(active["last_ms"])})
        sampled = [offset for offset in active["evidence"] if offset not in required]
        room = MAXIMUM_EVIDENCE_FRAMES - len(required)
        if len(sampled) > room:
            sampled = [sampled[round(index * (len(sampled) - 1) / (room - 1))] for index in range(room)]
        evidence = sorted(set(sampled) | set(required))
        model_score = active["score_sum"] / max(active["count"], 1)
        confidence = model_score * (0.5 + 0.5 * min(1.0, max(0.0, active["severity"])))
        figures = dict(active["figures"])
        figures["frames"] = float(active["count"])
        figures["duration_s"] = (active["last_ms"] - active["started_ms"]) / 1000
        figures["model_score"] = round(model_score, 4)
        return CameraEvent(
            kind=self.kind,
            started_ms=int(active["started_ms"]),
            ended_ms=int(active["last_ms"]),
            confidence=round(min(1.0, max(0.0, confidence)), 4),
            peak_value=round(float(active["peak_value"]), 4),
            frame_offsets_ms=tuple(int(offset) for offset in evidence),
            figures=figures,
        )


def _severity(excess: float, full_margin: float) -> float:
    return min(1.0, max(0.0, excess / full_margin)) if full_margin > 0 else 1.0


# Sessions are costly to open (tens of milliseconds) and a service makes an analysis per media item from its
# saved state, so the models are opened once per store and thread.
_MODELS: weakref.WeakKeyDictionary[VisionModelStore, dict[tuple[str, int], Any]] = weakref.WeakKeyDictionary()
_MODELS_GUARD = threading.Lock()


def _model(store: VisionModelStore, name: str, build: Callable[[VisionModelStore], Any]) -> Any:
    key = (name, threading.get_ident())
    with _MODELS_GUARD:
        opened = _MODELS.setdefault(store, {})
        if key not in opened:
            opened[key] = build(store)
        return opened[key]


def _current_state(state: dict[str, Any] | None, camera: str) -> dict[str, Any]:
    """The saved state, or an empty one when it was written by another version of this module (the analysis then
    starts again: the driver's baselines are learned anew within seconds)."""
    if not state:
        return {}
    if state.get("version") != STATE_VERSION:
        logger.warning(
            "%s camera analysis state of version %s ignored (this is version %s)",
            camera,
            state.get("version"),
            STATE_VERSION,
        )
        return {}
    return state


class InwardAnalysis:
    """Distraction and drowsiness for one driver camera stream. State JSON-safe (`to_dict`, `state=`)."""

    def __init__(
        self, store: VisionModelStore, policy: AttentionPolicy | None = None, state: dict[str, Any] | None = None
    ) -> None:
        self.policy = policy or AttentionPolicy()
        self.face_detector: FaceDetector = _model(store, "face_detector", FaceDetector)
        self.landmarker: FaceLandmarker = _model(store, "face_landmarker", FaceLandmarker)
        state = _current_state(state, "inward")
        self.last_offset_ms: int | None = state.get("last_offset_ms")
        self.last_face_ms: int | None = state.get("last_face_ms")
        self.eyes = EyeClosureTracker(self.policy, state.get("eyes"))
        self.usual_pose = HeadPoseBaseline(self.policy, state.get("pose"))
        policy = self.policy
        self.distraction = EpisodeTracker(
            CameraEventKind.DISTRACTION,
            minimum_ms=round(policy.distraction_minimum_s * 1000),
            gap_ms=round(policy.distraction_gap_s * 1000),
            state=state.get("distraction"),
        )
        self.drowsiness = EpisodeTracker(
            CameraEventKind.DROWSINESS,
            minimum_ms=round(policy.drowsiness_minimum_s * 1000),
            gap_ms=round(policy.drowsiness_gap_s * 1000),
            state=state.get("drowsiness"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "last_offset_ms": self.last_offset_ms,
            "last_face_ms": self.last_face_ms,
            "eyes": self.eyes.to_dict(),
            "pose": self.usual_pose.to_dict(),
            "distraction": self.distraction.to_dict(),
            "drowsiness": self.drowsiness.to_dict(),
        }

    def analyse_frame(
        self, image: np.ndarray, intrinsics: CameraIntrinsics
    ) -> tuple[HeadPose | None, float | None, float]:
        """(head pose, eye aspect ratio, model score) of the largest face, or (None, None, 0) without one."""
        faces = self.face_detector.detect(image)
        if not faces:
            return None, None, 0.0
        face = max(faces, key=lambda found: found.width * found.height)
        landmarks = self.landmarker.locate(image, face)
        if landmarks.presence < MINIMUM_FACE_PRESENCE:
            return None, None, 0.0
        pose = estimate_head_pose(landmarks.points, intrinsics)
        ear = eye_aspect_ratio(self.landmarker.irises(image, landmarks))
        return pose, ear, face.score * landmarks.presence

    def feed(self, frames: Sequence[Frame], optics: upload_pb2.CameraOptics | None) -> list[CameraEvent]:
        """Episodes that ended or reached their minimum duration within these frames (each returned once)."""
        policy = self.policy
        events: list[CameraEvent] = []
        for frame in sorted(frames, key=lambda each: each.offset_ms):
            offset_ms = int(frame.offset_ms)  # the state stays JSON-safe whatever integer type came in
            if self.last_offset_ms is not None and offset_ms <= self.last_offset_ms:
                continue
            self.last_offset_ms = offset_ms
            height, width = frame.image.shape[:2]
            intrinsics = CameraIntrinsics.of(optics, width, height, default_fov_deg=DEFAULT_INWARD_FOV_DEG)
            pose, ear, score = self.analyse_frame(frame.image, intrinsics)
            relative = self.usual_pose.relative(pose) if pose is not None else None
            finding = self._distraction_finding(offset_ms, pose, relative, score)
            events.extend(self.distraction.observe(offset_ms, finding))
            if pose is not None:
                self.last_face_ms = offset_ms
            # Eyes are judged on a frontal head only: looking down lowers the lids without closing them.
            in_band = relative is not None and outside_band_deg(*relative, policy) == 0.0
            eyes = self.eyes.observe(offset_ms, ear if in_band else None)
            drowsy = eyes.perclos is not None and eyes.perclos > policy.perclos_threshold
            microsleep = eyes.closed_for_s >= policy.microsleep_s
            finding = FrameFinding(holds=False)
            if drowsy or microsleep:
                perclos = eyes.perclos or 0.0
                finding = FrameFinding(
                    holds=True,
                    peak_value=perclos,
                    severity=max(
                        _severity(perclos - policy.perclos_threshold, policy.perclos_full_margin),
                        _severity(eyes.closed_for_s - policy.microsleep_s, policy.microsleep_s),
                    ),
                    model_score=score,
                    immediate=microsleep,
                    figures={
                        "perclos": round(perclos, 4),
                        "ear": round(ear, 4) if ear is not None else 0.0,
                        "ear_baseline": round(eyes.baseline or 0.0, 4),
                        "closed_for_s": round(eyes.closed_for_s, 3),
                        "window_s": round(eyes.window_s, 3),
                    },
                )
            events.extend(self.drowsiness.observe(offset_ms, finding))
        events.extend(self.distraction.flush())
        events.extend(self.drowsiness.flush())
        return sorted(events, key=lambda event: (event.started_ms, event.kind))

    def start_new_timeline(self) -> None:
        """Before the frames of another upload, whose offsets restart: forget the last offset, the PERCLOS window
        and episodes in progress (those that had qualified were returned already), keep the driver's baselines."""
        self.last_offset_ms = None
        self.last_face_ms = None
        self.eyes.forget_timeline()
        self.distraction.active = None
        self.drowsiness.active = None

    def _distraction_finding(
        self, offset_ms: int, pose: HeadPose | None, relative: tuple[float, float] | None, score: float
    ) -> FrameFinding:
        policy = self.policy
        if pose is None:
            recently_seen = (
                self.last_face_ms is not None and offset_ms - self.last_face_ms <= policy.face_lost_as_away_s * 1000
            )
            # A face that was there and is gone has most likely turned away (over the shoulder, down into the
            # footwell); long absences are an empty seat, a covered lens or darkness, and count as nothing.
            if not recently_seen:
                return FrameFinding(holds=False)
            return FrameFinding(
                holds=True, peak_value=0.0, severity=0.0, model_score=0.5, figures={"face_missing": 1.0}
            )
        assert relative is not None
        beyond = outside_band_deg(*relative, policy)
        if beyond <= 0:
            return FrameFinding(holds=False)
        angle = max(abs(relative[0]), abs(relative[1]))
        return FrameFinding(
            holds=True,
            peak_value=angle,
            severity=_severity(beyond, policy.angle_full_margin_deg),
            model_score=score,
            figures={
                "yaw_deg": round(relative[0], 2),
                "pitch_deg": round(relative[1], 2),
                "camera_yaw_deg": round(pose.yaw_deg, 2),
                "camera_pitch_deg": round(pose.pitch_deg, 2),
                "roll_deg": round(pose.roll_deg, 2),
                "beyond_band_deg": round(beyond, 2),
            },
        )


class OutwardAnalysis:
    """Tailgating for one road camera stream. State JSON-safe (`to_dict`, `state=`)."""

    def __init__(
        self, store: VisionModelStore, policy: HeadwayPolicy | None = None, state: dict[str, Any] | None = None
    ) -> None:
        self.policy = policy or HeadwayPolicy()
        self.object_detector: ObjectDetector = _model(store, "object_detector", ObjectDetector)
        state = _current_state(state, "outward")
        self.last_offset_ms: int | None = state.get("last_offset_ms")
        self.tailgating = EpisodeTracker(
            CameraEventKind.TAILGATING,
            minimum_ms=round(self.policy.minimum_duration_s * 1000),
            gap_ms=round(self.policy.gap_s * 1000),
            smaller_is_worse=True,
            state=state.get("tailgating"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "last_offset_ms": self.last_offset_ms,
            "tailgating": self.tailgating.to_dict(),
        }

    def lead_vehicle(self, image: np.ndarray, intrinsics: CameraIntrinsics, mount_height: float) -> LeadVehicle | None:
        """The nearest vehicle in the ego lane of one frame, with its distance, or None."""
        height, width = image.shape[:2]
        left, top, right, bottom = lane_crop(intrinsics, width, height, self.policy.lane_crop_fraction)
        found = self.object_detector.detect(image[top:bottom, left:right], labels=self.policy.vehicle_labels)
        offset = np.array([left, top, left, top], dtype=np.float64)
        vehicles = [
            DetectedObject(box=vehicle.box + offset, label=vehicle.label, score=vehicle.score) for vehicle in found
        ]
        return find_lead_vehicle(vehicles, intrinsics, mount_height, height, self.policy)

    def feed(
        self,
        frames: Sequence[Frame],
        speed_mps_at: Callable[[int], float | None],
        optics: upload_pb2.CameraOptics | None,
    ) -> list[CameraEvent]:
        """Episodes that ended or reached their minimum duration within these frames (each returned once).
        `speed_mps_at(offset_ms)` is the GPS speed at a frame, None when unknown (no episode without speed)."""
        policy = self.policy
        mount_height = mount_height_m(optics)
        events: list[CameraEvent] = []
        for frame in sorted(frames, key=lambda each: each.offset_ms):
            offset_ms = int(frame.offset_ms)  # the state stays JSON-safe whatever integer type came in
            if self.last_offset_ms is not None and offset_ms <= self.last_offset_ms:
                continue
            self.last_offset_ms = offset_ms
            speed = speed_mps_at(offset_ms)
            finding = FrameFinding(holds=False)
            if speed is not None and math.isfinite(speed) and speed >= policy.minimum_speed_mps:
                height, width = frame.image.shape[:2]
                intrinsics = CameraIntrinsics.of(optics, width, height, default_fov_deg=DEFAULT_OUTWARD_FOV_DEG)
                lead = self.lead_vehicle(frame.image, intrinsics, mount_height)
                if lead is not None:
                    headway = lead.distance_m / speed
                    if headway < policy.headway_threshold_s:
                        finding = FrameFinding(
                            holds=True,
                            peak_value=headway,
                            severity=_severity(policy.headway_threshold_s - headway, policy.headway_full_margin_s),
                            model_score=lead.score,
                            figures={
                                "headway_s": round(headway, 3),
                                "distance_m": round(lead.distance_m, 2),
                                "distance_from_width_m": round(lead.distance_from_width_m, 2),
                                "distance_from_ground_m": round(lead.distance_from_ground_m, 2),
                                "speed_mps": round(speed, 2),
                                "vehicle_score": round(lead.score, 4),
                            },
                        )
            events.extend(self.tailgating.observe(offset_ms, finding))
        events.extend(self.tailgating.flush())
        return events
