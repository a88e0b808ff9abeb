"""The slim contracts package `michi-contracts` (contracts/python), as a product team gets it.

Builds its wheel from local files, installs it into a fresh virtual environment with protobuf alone
(the version pinned in constraints.txt; pip may fetch it from its cache or the index), and decodes there
one sample of every topic of the catalog, encoded here by the michi package with every field set.
`torch` and `michi` must not import in that environment.

    .venv/bin/pytest -q tests/integration/test_contracts_package.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from michi.bus.catalog import CATALOG

ROOT = Path(__file__).resolve().parents[2]
SLIM_PROJECT = ROOT / "contracts" / "python"
PROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
PROTOBUF_PIN = re.search(r"^protobuf==(\S+)$", (ROOT / "constraints.txt").read_text(), re.MULTILINE)

# Run in the fresh environment: decode every sample through the slim catalog and report what it saw.
DECODER = """
import importlib, importlib.metadata, json, sys
from pathlib import Path
from google.protobuf import json_format
import michi_contracts
from michi_contracts import catalog, topic_for_name, topic_for_schema

samples = Path(sys.argv[1])
report = {"version": michi_contracts.__version__, "catalog": [spec.name() for spec in catalog.CATALOG]}
report["topics"] = {}
for name, facts in json.loads((samples / "expected.json").read_text()).items():
    topic = topic_for_name(name)
    message = topic.decode((samples / facts["file"]).read_bytes())
    report["topics"][name] = {
        "key": topic.key,
        "schema": topic.schema,
        "by_schema": topic_for_schema(topic.schema).name(),
        "partitions": topic.partitions,
        "retention_ms": topic.retention_ms,
        "compacted": topic.compacted,
        "module": "michi_contracts.v1." + Path(message.DESCRIPTOR.file.name).stem + "_pb2",
        "slim_class": type(message) is getattr(
            importlib.import_module("michi_contracts.v1." + Path(message.DESCRIPTOR.file.name).stem + "_pb2"),
            type(message).__name__,
        ),
        "fields": json_format.MessageToDict(message, preserving_proto_field_name=True),
        "bytes": message.SerializeToString(deterministic=True).hex(),
    }
report["imports"] = {}
for module in ("torch", "michi", "grpc"):
    try:
        importlib.import_module(module)
        report["imports"][module] = "imported"
    except ImportError as error:
        report["imports"][module] = type(error).__name__
report["distributions"] = sorted(
    (dist.metadata["Name"], dist.version) for dist in importlib.metadata.distributions()
)
print(json.dumps(report))
"""


def _scalar(field: Any, index: int) -> object:
    """A value of the field's type other than its default, different per index."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return f"{field.name}-{index}"
    if kind == FieldDescriptor.TYPE_BYTES:
        return bytes([index, 255, 0, 7])
    if kind == FieldDescriptor.TYPE_BOOL:
        return True
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return 2.25 + index  # exact in a float
    if kind == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values[-1].number - index
    if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        return -7 - index
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return 4_000_000_000 + index
    if kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return -(2**40) - index
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return 2**63 + index
    raise AssertionError(f"no sample value for {field.full_name} (type {kind})")


def _is_map(field: Any) -> bool:
    return field.message_type is not None and bool(field.message_type.GetOptions().map_entry)


def _fill(message: Message, depth: int = 0) -> Message:
    """Set every field of `message` (two entries of each repeated field and map), recursively."""
    if message.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
        message.seconds = 1_767_225_600 + depth  # type: ignore[attr-defined]
        message.nanos = 250_000_000  # type: ignore[attr-defined]
        return message
    assert depth < 5, f"{message.DESCRIPTOR.full_name} nests too deep for a sample"
    fields: list[Any] = list(message.DESCRIPTOR.fields)  # descriptors of the upb runtime
    for field in fields:
        target = getattr(message, field.name)
        if _is_map(field):
            key_field, value_field = (
                field.message_type.fields_by_name["key"],
                field.message_type.fields_by_name["value"],
            )
            for index in range(2):
                key = _scalar(key_field, index)
                if value_field.message_type is not None:
                    _fill(target[key], depth + 1)
                else:
                    target[key] = _scalar(value_field, index)
        elif field.is_repeated:
            for index in range(2):
                if field.message_type is not None:
                    _fill(target.add(), depth + 1)
                else:
                    target.append(_scalar(field, index))
        elif field.message_type is not None:
            _fill(target, depth + 1)
        else:
            setattr(message, field.name, _scalar(field, 0))
    return message


def _run(arguments: list[str], **options: object) -> subprocess.CompletedProcess[str]:
    outcome = subprocess.run(arguments, capture_output=True, text=True, timeout=240, check=False, **options)  # type: ignore[call-overload]
    assert outcome.returncode == 0, f"{' '.join(arguments)} failed:\n{outcome.stdout}\n{outcome.stderr}"
    return outcome


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of contracts/python (the build writes build/ and *.egg-info beside it)."""
    work = tmp_path_factory.mktemp("contracts-wheel")
    source = work / "michi-contracts"
    shutil.copytree(SLIM_PROJECT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    # --no-build-isolation: setuptools from this environment, nothing fetched to build.
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(work / "dist"),
            str(source),
        ]
    )
    (built,) = (work / "dist").glob("michi_contracts-*.whl")
    return built


@pytest.fixture(scope="module")
def consumer_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding the wheel and protobuf, nothing else (not even pip)."""
    python311 = shutil.which("python3.11")
    if python311 is None:
        pytest.fail("python3.11 is needed for the consumer's environment (.ci/run installs it)")
    environment = tmp_path_factory.mktemp("consumer") / "venv"
    _run([python311, "-m", "venv", "--without-pip", str(environment)])
    python = environment / "bin" / "python"
    # This environment's pip installs into the new one; the constraints pin protobuf as Michi does.
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    _run([*pip, "install", "-q", "--no-input", "--constraint", str(ROOT / "constraints.txt"), str(wheel)])
    return python


def test_the_wheel_holds_the_contracts_and_needs_only_protobuf(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(f"michi_contracts-{PROJECT_VERSION}.dist-info/METADATA").decode()
    assert wheel.name == f"michi_contracts-{PROJECT_VERSION}-py3-none-any.whl"
    packages = {name.split("/")[0] for name in names}
    assert packages == {"michi_contracts", f"michi_contracts-{PROJECT_VERSION}.dist-info"}
    protos = sorted(path.stem for path in (ROOT / "proto" / "michi" / "v1").glob("*.proto"))
    for stem in protos:
        assert f"michi_contracts/v1/{stem}_pb2.py" in names
        assert f"michi_contracts/v1/{stem}_pb2.pyi" in names
    assert not [name for name in names if "grpc" in name]
    assert "michi_contracts/py.typed" in names
    requirements = re.findall(r"^Requires-Dist: (.+)$", metadata, re.MULTILINE)
    assert len(requirements) == 1 and requirements[0].startswith("protobuf>="), requirements


def test_a_fresh_environment_decodes_every_topic(consumer_python: Path, tmp_path: Path) -> None:
    assert PROTOBUF_PIN is not None, "constraints.txt pins no protobuf"
    samples = tmp_path / "samples"
    samples.mkdir()
    expected = {}
    for spec in CATALOG:
        sample = _fill(spec.value_type())
        assert len(sample.ListFields()) == len(spec.value_type.DESCRIPTOR.fields), spec.schema
        encoded = sample.SerializeToString(deterministic=True)
        (samples / f"{spec.base_name}.bin").write_bytes(encoded)
        expected[spec.name()] = {
            "file": f"{spec.base_name}.bin",
            "bytes": encoded.hex(),
            "fields": json_format.MessageToDict(sample, preserving_proto_field_name=True),
        }
    (samples / "expected.json").write_text(json.dumps(expected))
    (tmp_path / "decode.py").write_text(DECODER)

    # -I: no PYTHONPATH, no user site, not the current folder: only what the environment holds.
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    outcome = _run(
        [str(consumer_python), "-I", str(tmp_path / "decode.py"), str(samples)], cwd=tmp_path, env=environment
    )
    report = json.loads(outcome.stdout)

    assert report["distributions"] == [["michi-contracts", PROJECT_VERSION], ["protobuf", PROTOBUF_PIN.group(1)]]
    assert report["imports"] == {
        "torch": "ModuleNotFoundError",
        "michi": "ModuleNotFoundError",
        "grpc": "ModuleNotFoundError",
    }
    assert report["version"] == PROJECT_VERSION
    assert report["catalog"] == [spec.name() for spec in CATALOG]
    for spec in CATALOG:
        seen = report["topics"][spec.name()]
        module = spec.value_type.DESCRIPTOR.file.name.removeprefix("michi/v1/").removesuffix(".proto")
        assert (seen["module"], seen["slim_class"]) == (f"michi_contracts.v1.{module}_pb2", True), spec.name()
        assert (seen["key"], seen["schema"], seen["by_schema"]) == (spec.key, spec.schema, spec.name())
        assert (seen["partitions"], seen["retention_ms"], seen["compacted"]) == (
            spec.partitions,
            spec.retention_ms,
            spec.compacted,
        )
        # Every field known to the slim classes (an unknown one would be missing here) with its value.
        assert seen["fields"] == expected[spec.name()]["fields"], spec.name()
        assert seen["bytes"] == expected[spec.name()]["bytes"], spec.name()
