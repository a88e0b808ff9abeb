"""The endpoints file of `michi up` (`michi/cli/running.py`): it names its owner, goes when `michi up` stops,
and a file whose owner died (SIGKILL, a crash) is removed by the next `michi` command, never believed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from michi.cli import app
from michi.cli.running import (
    OWNER_KEY,
    current_owner,
    forget_stale_endpoints,
    owner_alive,
    remove_owned_endpoints,
    write_owned_endpoints,
)
from michi.settings import MichiSettings

ENDPOINTS = {
    "kafka": {"bootstrap": "127.0.0.1:49092"},
    "redis": "redis://127.0.0.1:49379/0",
    "database": "sqlite:///x.db",
    "blobs": "file:///x",
    "services": {"ingest": {"http": "http://127.0.0.1:48080"}},
}


def another_process_wrote(path: Path) -> subprocess.Popen[bytes]:
    """A live process (not this one) that wrote `path` as its owner, like a `michi up` in another terminal."""
    script = (
        "import sys, time; from pathlib import Path; from michi.cli.running import write_owned_endpoints;"
        f"write_owned_endpoints(Path(sys.argv[1]), {ENDPOINTS!r}); print('written', flush=True); time.sleep(60)"
    )
    process = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"written\n"
    return process


def end(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL, as when a `michi up` is killed without its cleanup."""
    process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


def test_the_file_names_its_owner_and_goes_when_the_owner_removes_it(tmp_path: Path) -> None:
    path = tmp_path / ".michi" / "endpoints.json"
    write_owned_endpoints(path, ENDPOINTS)
    content = json.loads(path.read_text())
    assert content[OWNER_KEY]["pid"] == os.getpid() and owner_alive(content[OWNER_KEY])
    assert {key: value for key, value in content.items() if key != OWNER_KEY} == ENDPOINTS
    # A reader still finds the servers in it (MichiSettings ignores the extra key).
    assert MichiSettings(home=path.parent).resolved_kafka_bootstrap() == "127.0.0.1:49092"
    assert forget_stale_endpoints(path) is None and path.exists()  # alive: not stale
    assert remove_owned_endpoints(path) and not path.exists()
    assert not remove_owned_endpoints(path)  # nothing left to remove


def test_a_file_of_a_killed_owner_is_stale_and_a_live_owners_file_is_not_removed(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    process = another_process_wrote(path)
    try:
        assert not remove_owned_endpoints(path)  # not this process's file
        assert forget_stale_endpoints(path) is None and path.exists()
    finally:
        end(process)
    assert forget_stale_endpoints(path) == process.pid
    assert not path.exists()
    assert MichiSettings(home=tmp_path).resolved_kafka_bootstrap() == "127.0.0.1:9092"


def test_a_reused_pid_does_not_make_a_dead_owner_alive(tmp_path: Path) -> None:
    # The recorded pid runs (it is this test), but it is another process than the one that wrote the file.
    owner = {**current_owner(), "started_at": current_owner()["started_at"] - 3600}
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({**ENDPOINTS, OWNER_KEY: owner}))
    assert not owner_alive(owner)
    assert forget_stale_endpoints(path) == os.getpid()
    assert not path.exists()


@pytest.mark.parametrize("owner", [{}, {"pid": "x"}, {"pid": 1, "started_at": None}])
def test_a_malformed_owner_is_not_alive(owner: dict[str, object]) -> None:
    assert not owner_alive(owner)


def test_a_file_without_an_owner_is_left_alone(tmp_path: Path) -> None:
    # `michi infra up` writes one; its servers are tracked in infra.json.
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps(ENDPOINTS))
    assert forget_stale_endpoints(path) is None and path.exists()
    path.write_text("not json")
    assert forget_stale_endpoints(path) is None and path.exists()


def test_any_michi_command_removes_a_dead_platforms_file_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / ".michi"
    path = home / "endpoints.json"
    process = another_process_wrote(path)
    end(process)
    monkeypatch.setenv("MICHI_HOME", str(home))
    result = CliRunner().invoke(app, ["topics"])
    assert result.exit_code == 0, result.output
    assert f"the michi up (pid {process.pid}) that wrote it is gone" in result.output
    assert not path.exists()
    # A live platform's file is kept.
    process = another_process_wrote(path)
    try:
        result = CliRunner().invoke(app, ["topics"])
        assert result.exit_code == 0 and "gone" not in result.output
        assert path.exists()
    finally:
        end(process)
