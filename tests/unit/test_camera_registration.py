"""The vision model sets in the model registry (`services.camera.adapters.registration`): registered once at the
version camera detections carry, their files and manifest in the blob store, the first one champion.

A real SQLite registry, a file:// blob store and the built models (`make models`; skipped when they are absent,
a failure under CI)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from michi.blobs import BlobStore
from michi.registry import ModelRegistry, Stage
from michi.registry.layout import model_folder
from michi.vision.model_store import VisionModelsMissing, VisionModelStore
from services.camera.adapters.analysis import model_lineage
from services.camera.adapters.registration import MANIFEST_FILE, analysis_code_version, register_vision_models

from ..fakes import RecordingPlanPublisher


@pytest.fixture(scope="module")
def models() -> VisionModelStore:
    try:
        return VisionModelStore()
    except VisionModelsMissing as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{error} (.ci/run builds them)")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ModelRegistry]:
    built = ModelRegistry.from_url(f"sqlite:///{tmp_path / 'michi.db'}", RecordingPlanPublisher())
    try:
        yield built
    finally:
        built.close()


def test_each_set_is_registered_once_at_the_detections_version_and_serves(
    registry: ModelRegistry, models: VisionModelStore, tmp_path: Path
) -> None:
    blobs = BlobStore(f"file://{tmp_path / 'blobs'}")
    first = register_vision_models(registry, blobs, models)
    assert [(item.camera, item.added) for item in first] == [("inward", True), ("outward", True)]
    for item in first:
        lineage = model_lineage(models.lock, item.camera)
        version = item.version
        assert (version.name, version.version) == (lineage.model_name, lineage.model_version)
        assert version.version.startswith("lock-") and not version.version.isdigit()
        assert (version.data_version, version.code_version) == (lineage.data_version, analysis_code_version())
        assert registry.get(version.name, version.version).stage == Stage.CHAMPION
        # The manifest and every file of the set in the model's folder, byte for byte.
        folder = model_folder(version.name, version.version)
        body = asyncio.run(blobs.read_bytes(f"{folder}/{MANIFEST_FILE}"))
        assert hashlib.sha256(body).hexdigest() == version.artifact_sha256
        assert version.artifact_uri == blobs.uri(f"{folder}/{MANIFEST_FILE}")
        manifest = json.loads(body)
        assert manifest["files"] and all(source["package"] for source in manifest["sources"])
        for name, digest in manifest["files"].items():
            copied = asyncio.run(blobs.read_bytes(f"{folder}/{name}"))
            assert hashlib.sha256(copied).hexdigest() == digest == models.lock.outputs[name].sha256
    assert {item.version.name for item in first} == {"vision-attention", "vision-headway"}
    face_models = next(item for item in first if item.camera == "inward").version.parameters["files"]
    assert "iris_landmark.onnx" in face_models

    # The next start (or another replica): nothing new, nothing moved.
    again = register_vision_models(registry, blobs, models)
    assert [item.added for item in again] == [False, False]
    assert [len(registry.list(item.version.name)) for item in again] == [1, 1]


def test_a_set_whose_name_has_a_champion_is_registered_as_a_candidate(
    registry: ModelRegistry, models: VisionModelStore, tmp_path: Path
) -> None:
    registry.register(
        "vision-headway", "file:///older.json", "ab" * 32, "src-old", "data-old", {}, {}, created_by="person"
    )
    registry.promote("vision-headway", "1", actor="person", reason="chosen by hand")
    registered = {
        item.camera: item for item in register_vision_models(registry, BlobStore(f"file://{tmp_path}"), models)
    }
    assert registered["outward"].version.stage == Stage.CANDIDATE
    assert registry.champion("vision-headway").version == "1"  # type: ignore[union-attr]
    assert registered["inward"].version.stage == Stage.CHAMPION
