"""The vision models' lock and sha256 checks (build and runtime), without network or built models."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from michi.vision.model_lock import (
    LOCK_FILE_NAME,
    LockedInput,
    LockedOutput,
    LockError,
    VisionLock,
    check_outputs,
    file_sha256,
    parse_lock,
    read_lock,
    require_file,
)
from michi.vision.model_store import VisionModelsMissing, VisionModelStore

REPOSITORY = Path(__file__).resolve().parents[2]
COMMITTED_LOCK = REPOSITORY / "models" / "vision" / LOCK_FILE_NAME


@pytest.fixture(scope="module")
def build() -> ModuleType:
    path = REPOSITORY / "tools" / "models" / "build_vision_models.py"
    specification = importlib.util.spec_from_file_location("build_vision_models", path)
    assert specification is not None and specification.loader is not None
    module = importlib.util.module_from_spec(specification)
    # Registered before running, as an import would: its dataclasses look their module up.
    sys.modules.setdefault(specification.name, module)
    specification.loader.exec_module(module)
    return sys.modules[specification.name]


def small_lock(folder: Path, files: dict[str, bytes]) -> VisionLock:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    source = LockedInput("source", "pypi", "package", "1.0", "package-1.0.whl", "0" * 64, "MIT", "LICENSE")
    outputs = {name: LockedOutput(name, file_sha256(folder / name), "source", f"data/{name}", "onnx") for name in files}
    return VisionLock(inputs={"source": source}, outputs=outputs)


def test_the_lock_round_trips_through_json(tmp_path: Path) -> None:
    lock = small_lock(tmp_path, {"a.onnx": b"first", "images/b.png": b"second"})
    assert parse_lock(lock.to_json()) == lock
    assert lock.to_json() == parse_lock(lock.to_json()).to_json()


def test_check_outputs_names_a_changed_and_a_missing_file(tmp_path: Path) -> None:
    lock = small_lock(tmp_path, {"a.onnx": b"first", "b.onnx": b"second", "c.onnx": b"third"})
    assert check_outputs(lock, tmp_path) == []
    (tmp_path / "a.onnx").write_bytes(b"firsT")
    (tmp_path / "c.onnx").unlink()
    mismatches = check_outputs(lock, tmp_path)
    assert [(item.path, item.actual is None) for item in mismatches] == [("a.onnx", False), ("c.onnx", True)]
    assert mismatches[0].actual == file_sha256(tmp_path / "a.onnx")
    assert "missing" in mismatches[1].describe()
    with pytest.raises(LockError, match="sha256"):
        require_file(tmp_path / "a.onnx", lock.outputs["a.onnx"].sha256)


def test_a_malformed_lock_or_an_unknown_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LockError, match="format"):
        parse_lock(json.dumps({"format": 99, "inputs": {}, "outputs": {}}))
    with pytest.raises(LockError, match="malformed"):
        parse_lock("{not json")
    document = json.loads(small_lock(tmp_path, {"a.onnx": b"x"}).to_json())
    document["outputs"]["a.onnx"]["source"] = "elsewhere"
    with pytest.raises(LockError, match="unknown source"):
        parse_lock(json.dumps(document))


def test_the_store_refuses_a_model_whose_digest_differs_from_the_lock(tmp_path: Path) -> None:
    lock = small_lock(tmp_path, {"face_detection_short_range.onnx": b"not really a model"})
    (tmp_path / LOCK_FILE_NAME).write_text(lock.to_json())
    store = VisionModelStore(tmp_path)
    assert store.path("face_detection_short_range.onnx") == tmp_path / "face_detection_short_range.onnx"
    tampered = VisionModelStore(tmp_path)
    (tmp_path / "face_detection_short_range.onnx").write_bytes(b"swapped")
    with pytest.raises(LockError, match="locked"):
        tampered.path("face_detection_short_range.onnx")
    with pytest.raises(LockError, match="not in the vision model lock"):
        tampered.path("other.onnx")
    with pytest.raises(VisionModelsMissing, match="make models"):
        VisionModelStore(tmp_path / "absent")


def test_the_committed_lock_pins_every_source_and_output_of_the_build(build: ModuleType) -> None:
    lock = read_lock(COMMITTED_LOCK)
    assert set(lock.inputs) == {source.name for source in build.SOURCES}
    for source in build.SOURCES:
        locked = lock.inputs[source.name]
        assert (locked.package, locked.version, locked.file_name) == (source.package, source.version, source.file_name)
        assert len(locked.sha256) == 64
        assert (REPOSITORY / "models" / "vision" / "licences" / f"{source.name}.txt").is_file()
    assert set(lock.outputs) == {product.path for product in build.PRODUCTS}
    for product in build.PRODUCTS:
        assert (lock.outputs[product.path].source, lock.outputs[product.path].member) == (
            product.source,
            product.member,
        )
    models = sorted(path for path in lock.outputs if path.endswith(".onnx"))
    assert models == [
        "face_detection_short_range.onnx",
        "face_landmark.onnx",
        "iris_landmark.onnx",
        "object_detection_oidv4.onnx",
    ]
    for model in models:
        assert (REPOSITORY / "models" / "vision" / "cards" / model.replace(".onnx", ".md")).is_file()


def test_the_build_refuses_an_archive_whose_digest_or_version_differs(build: ModuleType) -> None:
    lock = read_lock(COMMITTED_LOCK)
    source = build.SOURCES[0]
    build.check_input(source, lock.inputs[source.name].sha256, lock)
    with pytest.raises(build.BuildError, match="locked"):
        build.check_input(source, "f" * 64, lock)
    moved = build.Source(**{**source.__dict__, "version": "9.9.9"})
    with pytest.raises(build.BuildError, match="pins"):
        build.check_input(moved, lock.inputs[source.name].sha256, lock)


def test_a_cached_archive_is_used_without_any_registry(
    build: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICHI_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", "")  # no npm, no registry client: the cache must do
    source = build.SOURCES[0]
    cached = tmp_path / "vision" / "inputs" / source.file_name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"cached archive")
    assert build.fetch(source) == cached


def test_a_file_is_cut_out_of_an_emscripten_pack_by_its_listed_range(build: ModuleType) -> None:
    loader = (
        '{"files": [{"filename": "/labels.txt", "start": 0, "end": 4},'
        ' {"filename": "/model.tflite", "start": 4, "end": 10}]}'
    )
    assert build.unpack_emscripten(b"abc\nTFL3xy", loader, "/model.tflite") == b"TFL3xy"
    assert build.unpack_emscripten(b"abc\nTFL3xy", loader, "/labels.txt") == b"abc\n"
    with pytest.raises(build.BuildError):
        build.unpack_emscripten(b"", loader, "/absent")
