"""Where the trainer's files go: the model folder in the blob store, experiment records, dataset manifests,
and the local cache of deterministic training results.

Blob store layout (the serving contract):

    models/<model name>/<version>/model.onnx            the graph (its sha256 is registered)
    models/<model name>/<version>/model.json            manifest: name, version, sha256, data_version,
                                                        preprocessing_version, inputs/outputs, classes, code_version
    models/<model name>/<version>/reference_profile.json fixed-bin histograms of every input (for drift)
    models/<model name>/<version>/experiment.md         the run's experiment record
    experiments/<run id>/experiment.md                  every run's record, registered or not
    datasets/<data version>/members.jsonl               window id, label, source, split of every member

The cache (`ModelCache`, default `~/.cache/michi/models`) keeps what a training produced under a key
of code version + data + parameters: training is deterministic, so a later run with the same key
reuses the files instead of training again. Entries are written to a temporary folder and renamed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import fsspec

from michi.blobs import BlobNotFound, BlobStore, InvalidKey

Result = TypeVar("Result")


class ArtifactIntegrityError(RuntimeError):
    """A model file whose sha256 is not the registered one."""


def _run(coroutine: Coroutine[Any, Any, Result]) -> Result:
    return asyncio.run(coroutine)


class ArtifactStore:
    """The trainer's view of the blob store (synchronous: the workflow runs in a worker thread)."""

    def __init__(self, blob_url: str) -> None:
        self.blobs = BlobStore(blob_url)

    def put(self, key: str, data: bytes) -> str:
        """Write `key` (replacing it) and return its URI."""
        return _run(self.blobs.put_bytes(key, data)).uri

    def exists(self, key: str) -> bool:
        return _run(self.blobs.exists(key))

    def read(self, key: str) -> bytes:
        return _run(self.blobs.read_bytes(key))

    def uri(self, key: str) -> str:
        return self.blobs.uri(key)

    def read_model(self, artifact_uri: str, sha256: str) -> bytes:
        """The bytes behind a registered artifact URI, checked against its registered sha256."""
        try:
            data = self.read(self.blobs.key_for_uri(artifact_uri))
        except InvalidKey:
            # Registered outside this store (another bucket, a local file): read it where it is.
            try:
                with fsspec.open(artifact_uri, "rb") as handle:
                    data = handle.read()
            except FileNotFoundError as error:
                raise BlobNotFound(f"no model file at {artifact_uri}") from error
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise ArtifactIntegrityError(f"{artifact_uri}: sha256 is {actual}, the registry says {sha256}")
        return data


class ModelCache:
    """Deterministic training results on local disk, by key (a folder of named files per key)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def load(self, key: str) -> dict[str, bytes] | None:
        entry = self.folder / key
        if not (entry / "complete").exists():
            return None
        try:
            return {
                path.name: path.read_bytes() for path in entry.iterdir() if path.is_file() and path.name != "complete"
            }
        except OSError:
            return None

    def store(self, key: str, files: dict[str, bytes]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        entry = self.folder / key
        temporary = self.folder / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        temporary.mkdir()
        for name, data in files.items():
            (temporary / name).write_bytes(data)
        (temporary / "complete").write_text(json.dumps({"files": sorted(files)}))
        if entry.exists() and not (entry / "complete").exists():
            shutil.rmtree(entry, ignore_errors=True)  # left half-written by a process that died
        try:
            temporary.rename(entry)
        except OSError:  # another process stored the same key first: same content, keep theirs
            shutil.rmtree(temporary, ignore_errors=True)
        return entry
