"""The vision model sets in the model registry, like learned models: what a camera `Detection`'s lineage names.

Each camera's analysis runs a set of pretrained models (`analysis.INWARD_MODELS`, `OUTWARD_MODELS`); the set is
one registry model (`vision-attention`, `vision-headway`) whose version is the lineage every detection carries
(`analysis.model_lineage`: a digest of the files' sha256, so a rebuilt or re-pinned model is a new version). At
start the service registers the version it runs, once per registry:

    models/<name>/<version>/<file>        every model file of the set, copied from the models folder
    models/<name>/<version>/model.json    the manifest: files with sha256, the pinned source packages (registry,
                                          package, version, sha256, licence), the model cards' names, code version

The registry row: `artifact_uri` the manifest, `sha256` the manifest's, `data_version` the digest of the source
packages, `code_version` a digest of the analysis code (`michi/vision`), `parameters` the sources and files.
A set with no champion yet becomes its champion (`actor` the service): `michi models list` shows what the fleet's
camera detections come from. A version already registered is left as it is; losing a race to another replica
registering it is the same.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import michi.vision
from michi.blobs import BlobStore
from michi.registry import ModelRegistry, ModelVersion, Stage, UnknownModelVersion, VersionAlreadyRegistered
from michi.registry.layout import model_folder
from michi.vision.model_store import VisionModelStore
from services.camera.adapters.analysis import INWARD_MODELS, OUTWARD_MODELS, model_lineage
from services.camera.domain.join import INWARD, OUTWARD

logger = logging.getLogger(__name__)

MANIFEST_FILE = "model.json"
REGISTERED_BY = "camera"


@cache
def analysis_code_version() -> str:
    """sha256 over the analysis code (every `.py` under `michi/vision`, paths and bytes), 16 hex digits."""
    root = Path(michi.vision.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return f"src-{digest.hexdigest()[:16]}"


@dataclass(frozen=True)
class RegisteredSet:
    camera: str
    version: ModelVersion
    # False: the registry already held this version.
    added: bool


def manifest(store: VisionModelStore, camera: str) -> dict[str, Any]:
    """The set's manifest: its lineage, files, sources and code version (JSON-safe, deterministic)."""
    lock = store.lock
    lineage = model_lineage(lock, camera)
    files = [name for name in (INWARD_MODELS if camera == INWARD else OUTWARD_MODELS) if name in lock.outputs]
    sources = sorted({lock.outputs[name].source for name in files})
    return {
        "model_name": lineage.model_name,
        "model_version": lineage.model_version,
        "data_version": lineage.data_version,
        "code_version": analysis_code_version(),
        "camera": camera,
        "files": {name: lock.outputs[name].sha256 for name in files},
        "sources": [
            {
                "name": name,
                "registry": lock.inputs[name].registry,
                "package": lock.inputs[name].package,
                "version": lock.inputs[name].version,
                "sha256": lock.inputs[name].sha256,
            }
            for name in sources
        ],
    }


async def _copy_files(blobs: BlobStore, store: VisionModelStore, folder: str, files: list[str], body: bytes) -> str:
    """Every file of the set, then the manifest (`body`), into the model's folder; the manifest's URI."""
    for name in files:
        await blobs.put_bytes(f"{folder}/{name}", store.path(name).read_bytes())
    await blobs.put_bytes(f"{folder}/{MANIFEST_FILE}", body)
    return blobs.uri(f"{folder}/{MANIFEST_FILE}")


def register_vision_models(
    registry: ModelRegistry, blobs: BlobStore, store: VisionModelStore, *, actor: str = REGISTERED_BY
) -> list[RegisteredSet]:
    """Register each camera's model set at the version the service runs (once per registry), and make a set
    without a champion the champion of its name."""
    registered = []
    for camera in (INWARD, OUTWARD):
        document = manifest(store, camera)
        name, version = document["model_name"], document["model_version"]
        added = False
        try:
            existing = registry.get(name, version)
        except UnknownModelVersion:
            body = json.dumps(document, sort_keys=True, indent=2).encode()
            uri = asyncio.run(_copy_files(blobs, store, model_folder(name, version), list(document["files"]), body))
            try:
                existing = registry.register(
                    name,
                    artifact_uri=uri,
                    sha256=hashlib.sha256(body).hexdigest(),
                    code_version=document["code_version"],
                    data_version=document["data_version"],
                    parameters={"camera": camera, "files": document["files"], "sources": document["sources"]},
                    metrics={},
                    created_by=actor,
                    version=version,
                )
                added = True
            except VersionAlreadyRegistered:
                existing = registry.get(name, version)
        if registry.champion(name) is None:
            registry.transition(
                name, version, Stage.CHAMPION, reason="the vision models the camera service runs", actor=actor
            )
            existing = registry.get(name, version)
        logger.info(
            "vision model set in the registry",
            extra={"model": name, "version": version, "stage": existing.stage, "added": added},
        )
        registered.append(RegisteredSet(camera, existing, added))
    return registered
