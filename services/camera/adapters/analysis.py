"""The camera analysis (`michi.vision.camera_events`) as the service runs it: an analysis per stream made from
its saved state, and the lineage of the vision models it runs (name, version and data version from the lock).

Model version and data version come from the vision model lock the models folder holds (a copy of the committed
`models/vision/models.lock.json`; the store refuses files whose sha256 differs from it): the version is a digest
of the sha256 of every model file the analysis runs (`lock-<12 hex>`), the data version a digest of the pinned source packages
(registry, name, version, sha256) they were built from. Any rebuilt or re-pinned model changes them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from michi.contracts.v1 import upload_pb2
from michi.vision.camera_events import CameraEvent, Frame, InwardAnalysis, OutwardAnalysis
from michi.vision.model_lock import VisionLock
from michi.vision.model_store import VisionModelStore
from services.camera.domain.join import INWARD

# The model files each camera's analysis runs (their sha256 make the model version).
INWARD_MODELS = ("face_detection_short_range.onnx", "face_landmark.onnx", "iris_landmark.onnx")
OUTWARD_MODELS = ("object_detection_oidv4.onnx", "object_detection_oidv4.labels.txt")
MODEL_NAMES = {INWARD: "vision-attention", "outward": "vision-headway"}


@dataclass(frozen=True)
class ModelLineage:
    model_name: str
    model_version: str
    data_version: str


def model_lineage(lock: VisionLock, camera: str) -> ModelLineage:
    files = INWARD_MODELS if camera == INWARD else OUTWARD_MODELS
    outputs = {path: lock.outputs[path].sha256 for path in files if path in lock.outputs}
    sources = sorted({lock.outputs[path].source for path in outputs})
    inputs = {
        name: f"{lock.inputs[name].registry}:{lock.inputs[name].package}@{lock.inputs[name].version}:"
        f"{lock.inputs[name].sha256}"
        for name in sources
    }
    return ModelLineage(
        model_name=MODEL_NAMES[camera],
        # Never only digits (the registry's named versions are not), the same for the same files.
        model_version=f"lock-{_digest(outputs)}",
        data_version=_digest(inputs),
    )


def _digest(values: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


class CameraAnalyses:
    """Runs one media item's frames through its stream's analysis, from and to the saved state."""

    def __init__(self, store: VisionModelStore) -> None:
        self.store = store
        self.lineages = {camera: model_lineage(store.lock, camera) for camera in (INWARD, "outward")}

    def run(
        self,
        camera: str,
        state: dict[str, Any] | None,
        frames: Sequence[Frame],
        optics: upload_pb2.CameraOptics | None,
        speed_mps_at: Callable[[int], float | None],
    ) -> tuple[list[CameraEvent], dict[str, Any]]:
        """The events these frames give and the stream's new state."""
        if camera == INWARD:
            inward = InwardAnalysis(self.store, state=state)
            return inward.feed(frames, optics), inward.to_dict()
        outward = OutwardAnalysis(self.store, state=state)
        return outward.feed(frames, speed_mps_at, optics), outward.to_dict()

    def lineage(self, camera: str) -> ModelLineage:
        return self.lineages[camera]
