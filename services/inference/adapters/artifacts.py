"""Model artifacts: fetched from the blob store into a local cache, verified, then loaded.

    cache = ArtifactCache(BlobStore(settings.resolved_blob_url()), settings.home / "models")
    artifact = cache.fetch(model_ref)      # blocking: call it from a background thread
    detector = load_detector(cache, model_ref, threads=1)

The cache keeps `<home>/models/<name>/<version>/model.onnx`. A cached file is used only when its
sha256 equals the one in the plan's `ModelRef`; otherwise the blob is streamed again into a
temporary file (hashed on the way, bounded in size) and moved into place only when its sha256
matches. `OnnxDetector` checks the sha256 once more on the bytes it builds the session from.
Every failure is a `ModelRefused` with a machine-readable reason (the metrics' label) — the caller
keeps serving what it serves.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import uuid
from pathlib import Path

from michi.blobs.store import BlobError, BlobNotFound, BlobStore, InvalidKey
from michi.contracts.v1 import operations_pb2
from michi.windows.features import DATA_VERSION
from services.inference.adapters.onnx_model import (
    ModelArtifact,
    ModelContractError,
    ModelIntegrityError,
    OnnxDetector,
    sha256_of,
)

logger = logging.getLogger(__name__)

SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
READ_CHUNK_BYTES = 1024 * 1024

# Reasons a model is refused (label values of michi_inference_models_refused_total).
SHA256_MISMATCH = "sha256-mismatch"
UNAVAILABLE = "unavailable"
INVALID_REFERENCE = "invalid-reference"
INVALID_MODEL = "invalid-model"
TOO_LARGE = "too-large"


class ModelRefused(Exception):
    """A model that will not be served; `reason` is one of the constants above."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    @property
    def transient(self) -> bool:
        """Worth trying again later (the blob store was unreachable or the blob not there yet)."""
        return self.reason == UNAVAILABLE


class ArtifactCache:
    def __init__(self, store: BlobStore, folder: Path, *, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.store = store
        self.folder = folder
        self.max_bytes = max_bytes

    def path_for(self, reference: operations_pb2.ModelRef) -> Path:
        return self.folder / reference.name / reference.version / "model.onnx"

    def fetch(self, reference: operations_pb2.ModelRef) -> ModelArtifact:
        """The verified local copy of `reference`'s artifact (blocking)."""
        expected = reference.sha256.lower()
        label = f"{reference.name} {reference.version}"
        if not SAFE_SEGMENT.match(reference.name) or not SAFE_SEGMENT.match(reference.version):
            raise ModelRefused(INVALID_REFERENCE, f"unusable model name or version {label!r}")
        if not SHA256_PATTERN.match(expected):
            raise ModelRefused(INVALID_REFERENCE, f"{label}: sha256 {reference.sha256!r} is not a sha256")
        artifact = ModelArtifact(
            reference.name,
            reference.version,
            reference.data_version or DATA_VERSION,
            self.path_for(reference),
            expected,
        )
        if artifact.path.exists() and sha256_of(artifact.path) == expected:
            return artifact
        try:
            key = self.store.key_for_uri(reference.artifact_uri)
        except (InvalidKey, ValueError) as error:
            raise ModelRefused(INVALID_REFERENCE, f"{label}: {error}") from error
        artifact.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = artifact.path.with_name(f".{uuid.uuid4().hex}.tmp")
        try:
            actual = asyncio.run(self._download(key, temporary))
            if actual != expected:
                raise ModelRefused(
                    SHA256_MISMATCH, f"{label}: {reference.artifact_uri} has sha256 {actual}, the plan says {expected}"
                )
            os.replace(temporary, artifact.path)
        except BlobNotFound as error:
            raise ModelRefused(UNAVAILABLE, f"{label}: {reference.artifact_uri} not found") from error
        except (BlobError, OSError) as error:
            raise ModelRefused(UNAVAILABLE, f"{label}: {type(error).__name__}: {error}") from error
        finally:
            temporary.unlink(missing_ok=True)
        logger.info("model artifact fetched", extra={"model": reference.name, "version": reference.version})
        return artifact

    async def _download(self, key: str, target: Path) -> str:
        digest = hashlib.sha256()
        size = 0
        async with await self.store.open_read(key) as reader:
            with target.open("wb") as handle:
                while chunk := await reader.read(READ_CHUNK_BYTES):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise ModelRefused(TOO_LARGE, f"{key} is larger than {self.max_bytes} bytes")
                    digest.update(chunk)
                    await asyncio.to_thread(handle.write, chunk)
        return digest.hexdigest()


def load_detector(cache: ArtifactCache, reference: operations_pb2.ModelRef, *, threads: int) -> OnnxDetector:
    """Fetch, verify and load `reference` (blocking), or raise `ModelRefused`."""
    artifact = cache.fetch(reference)
    try:
        return OnnxDetector(artifact, threads=threads)
    except ModelIntegrityError as error:
        raise ModelRefused(SHA256_MISMATCH, str(error)) from error
    except ModelContractError as error:
        raise ModelRefused(INVALID_MODEL, str(error)) from error
