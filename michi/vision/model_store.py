"""The folder of built vision models and loading a model by name, its sha256 checked against the lock.

`make models` writes the ONNX files, the label map, the test images and a copy of the committed lock into
`$MICHI_VISION_MODELS_DIR` (default `$MICHI_CACHE_DIR/vision/models`, so `~/.cache/michi/vision/models`), outside
the clone like the Kafka jars. Nothing here downloads: a missing folder raises `VisionModelsMissing` telling the
user to run `make models`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import onnxruntime

from michi.infra.kafka import cache_root
from michi.vision.model_lock import LOCK_FILE_NAME, LockError, VisionLock, file_sha256, read_lock


class VisionModelsMissing(LockError):
    """The models folder or one of its files is absent: run `make models`."""


def default_models_folder() -> Path:
    configured = os.environ.get("MICHI_VISION_MODELS_DIR")
    return Path(configured) if configured else cache_root() / "vision" / "models"


class VisionModelStore:
    """The built models in one folder; each file's digest is checked once, on first use."""

    def __init__(self, folder: Path | None = None, *, threads: int = 1) -> None:
        self.folder = folder or default_models_folder()
        self.threads = threads
        lock_path = self.folder / LOCK_FILE_NAME
        if not lock_path.is_file():
            raise VisionModelsMissing(f"no vision models in {self.folder}: run `make models` once")
        self.lock: VisionLock = read_lock(lock_path)
        self._checked: set[str] = set()
        self._guard = threading.Lock()

    def path(self, relative: str) -> Path:
        """The checked path of a locked output, e.g. `face_detection_short_range.onnx` or `images/astronaut.png`."""
        output = self.lock.outputs.get(relative)
        if output is None:
            raise LockError(f"{relative} is not in the vision model lock ({', '.join(sorted(self.lock.outputs))})")
        path = self.folder / relative
        with self._guard:
            if relative not in self._checked:
                if not path.is_file():
                    raise VisionModelsMissing(f"{path} is missing: run `make models`")
                actual = file_sha256(path)
                if actual != output.sha256:
                    raise LockError(f"{path}: sha256 {actual}, locked {output.sha256}; run `make models` again")
                self._checked.add(relative)
        return path

    def session(self, model_name: str) -> onnxruntime.InferenceSession:
        """An ONNX Runtime CPU session for `<model_name>.onnx` (intra-op threads as configured)."""
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return onnxruntime.InferenceSession(
            str(self.path(f"{model_name}.onnx")), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def text_lines(self, relative: str) -> list[str]:
        return self.path(relative).read_text().splitlines()
