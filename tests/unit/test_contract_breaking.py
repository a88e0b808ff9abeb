"""The breaking-change check of proto/ (tools/check_contract_breaking.sh, run by `make lint`).

A copy of proto/ with one change is checked against the committed baseline image: removing,
renumbering, renaming or retyping a field, or moving a message to another file, fails; adding a
field, an enum value or a message passes. buf is installed by the script (npm, pinned) into .tools/;
without npm the tests are skipped, except under CI.

    .venv/bin/pytest -q tests/unit/test_contract_breaking.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "check_contract_breaking.sh"
PROTO = ROOT / "proto"
BASELINE = PROTO / "baseline" / "michi-v1.binpb"

EVENT_COUNT = "message EventCount {\n  EventType event_type = 1;\n  uint32 count = 2;\n}\n"
SCORING_IMPORTS = 'import "michi/v1/common.proto";\n'

# Each change breaks some reader of the topics: its edits (file, text in it, replacement; no text: a new
# file) and what buf says about it.
BREAKING: dict[str, tuple[list[tuple[str, str, str]], str]] = {
    "removed-field": ([("scoring.proto", "  float distance_km = 5;\n", "")], 'field "5" with name "distance_km"'),
    "renumbered-field": (
        [("scoring.proto", "  uint32 revision = 11;\n", "  uint32 revision = 17;\n")],
        'field "11" with name "revision"',
    ),
    # JSON readers (and the generated classes) see the field under its name.
    "renamed-field": (
        [("common.proto", "  string trip_id = 3;\n", "  string trip = 3;\n")],
        'changed name from "trip_id" to "trip"',
    ),
    # float -> double: other bytes on the wire.
    "retyped-field": (
        [
            (
                "inference.proto",
                "  float confidence = 5;\n  TimeSpan window = 6;\n",
                "  double confidence = 5;\n  TimeSpan window = 6;\n",
            )
        ],
        'changed type from "float" to "double"',
    ),
    "removed-enum-value": (
        [("common.proto", "  EVENT_TYPE_SPEEDING = 5;\n", "")],
        'enum value "5" on enum "EventType" was deleted',
    ),
    # Same wire, but scoring_pb2.EventCount is gone for readers of the generated Python modules.
    "message-moved-to-another-file": (
        [
            ("scoring.proto", EVENT_COUNT, ""),
            ("scoring.proto", SCORING_IMPORTS, SCORING_IMPORTS + 'import "michi/v1/counts.proto";\n'),
            ("counts.proto", "", 'syntax = "proto3";\n\npackage michi.v1;\n\n' + SCORING_IMPORTS + "\n" + EVENT_COUNT),
        ],
        'message "EventCount" was deleted from file',
    ),
}


def _run_check(proto: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), str(proto), str(BASELINE)], capture_output=True, text=True, timeout=240, check=False
    )


@pytest.fixture(scope="module")
def buf_available() -> None:
    """The script installs buf itself; it needs npm for that (or BUF pointing at a buf, or buf installed)."""
    version = re.search(r"^BUF_VERSION=(\S+)$", SCRIPT.read_text(), re.MULTILINE)
    assert version is not None, "the script pins no buf version"
    installed = ROOT / ".tools" / f"buf-{version.group(1)}" / "node_modules" / ".bin" / "buf"
    if os.environ.get("BUF") or shutil.which("npm") or (installed.exists() and shutil.which("node")):
        return
    if os.environ.get("CI"):
        pytest.fail("npm is needed for the breaking-change check (apt-get install npm; .ci/run installs it)")
    pytest.skip("npm is not installed: the breaking-change check cannot install buf here")


def _copy_proto(tmp_path: Path) -> Path:
    copy = tmp_path / "proto"
    shutil.copytree(PROTO, copy, ignore=shutil.ignore_patterns("baseline"))
    return copy


def _edit(proto: Path, name: str, old: str, new: str) -> None:
    path = proto / "michi" / "v1" / name
    if not old:
        path.write_text(new)
        return
    text = path.read_text()
    assert text.count(old) == 1, f"{name} no longer holds {old!r}: update the test's edit"
    path.write_text(text.replace(old, new))


def test_the_committed_protos_match_the_baseline(buf_available: None) -> None:
    outcome = _run_check(PROTO)
    assert outcome.returncode == 0, outcome.stdout + outcome.stderr
    assert "compatible" in outcome.stdout


@pytest.mark.parametrize("change", sorted(BREAKING))
def test_a_breaking_change_fails_the_check(buf_available: None, tmp_path: Path, change: str) -> None:
    proto = _copy_proto(tmp_path)
    edits, reported = BREAKING[change]
    for name, old, new in edits:
        _edit(proto, name, old, new)
    outcome = _run_check(proto)
    assert outcome.returncode == 1, outcome.stdout + outcome.stderr
    assert reported in outcome.stdout, outcome.stdout
    assert "breaks the contract" in outcome.stderr


def test_additions_pass_the_check(buf_available: None, tmp_path: Path) -> None:
    proto = _copy_proto(tmp_path)
    _edit(
        proto,
        "scoring.proto",
        "  uint64 missing_sequence_count = 16;\n",
        "  uint64 missing_sequence_count = 16;\n  // An addition.\n  string coach_note = 17;\n",
    )
    _edit(
        proto,
        "common.proto",
        "  EVENT_TYPE_TAILGATING = 9;\n",
        "  EVENT_TYPE_TAILGATING = 9;\n  EVENT_TYPE_PHONE_USE = 10;\n",
    )
    _edit(
        proto,
        "scoring.proto",
        "message EventCount {",
        "// A new message.\nmessage CoachingNote {\n  string event_id = 1;\n  string text = 2;\n}\n\nmessage EventCount {",
    )
    outcome = _run_check(proto)
    assert outcome.returncode == 0, outcome.stdout + outcome.stderr
