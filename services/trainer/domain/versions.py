"""Code versions as content hashes of the source that decides what a run produces.

`code_version()` hashes the Python files that decide what a run produces: the window definition
(`michi/windows`), how real recordings are read, judged and given added manoeuvres (`michi/recordings`), and
the trainer's labels, datasets, model, training, evaluation, gate, profile,
simulated fleets, archive replay and ONNX export. Two checkouts with the same training code agree
on it whether or not they are git clones (CI clones, Docker images, a dirty working tree), and a
change to the record template, triggers, storage, CLI or HTTP code does not invalidate trained
artifacts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import michi

SOURCE_ROOT = Path(michi.__file__).resolve().parent.parent
TRAINING_SOURCES = ("michi/windows", "michi/recordings", "services/trainer/domain", "services/trainer/adapters")
# Files under those folders that cannot change a model, its metrics or its gate decision.
NOT_TRAINING = frozenset(
    {
        "services/trainer/domain/experiment.py",
        "services/trainer/domain/triggers.py",
        "services/trainer/domain/versions.py",
        "services/trainer/adapters/artifacts.py",
        "services/trainer/adapters/metrics.py",
        "services/trainer/adapters/store.py",
        "services/trainer/adapters/tables.py",
    }
)


@cache
def source_digest(folders: Sequence[str]) -> str:
    """sha256 over every `.py` file under `folders` (or the file itself; relative paths and bytes), 16 hex digits."""
    digest = hashlib.sha256()
    for folder in sorted(folders):
        root = SOURCE_ROOT / folder
        for path in [root] if root.is_file() else sorted(root.rglob("*.py")):
            if path.relative_to(SOURCE_ROOT).as_posix() in NOT_TRAINING:
                continue
            digest.update(path.relative_to(SOURCE_ROOT).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def code_version() -> str:
    return f"src-{source_digest(TRAINING_SOURCES)}"
