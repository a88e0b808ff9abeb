"""`michi infra` and the supervisor as a user meets them: real processes, real ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from michi.infra.kafka import broker_answers
from michi.infra.processes import free_port, pid_is_alive, wait_until
from michi.infra.redis import redis_answers
from michi.infra.supervisor import Supervisor


def _michi(*arguments: str, environment: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "michi.cli", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_infra_up_status_down(tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "MICHI_HOME": str(tmp_path / ".michi"),
        "MICHI_KAFKA_PORT": str(free_port()),
        "MICHI_KAFKA_CONTROLLER_PORT": str(free_port()),
        "MICHI_REDIS_PORT": str(free_port()),
    }
    for name in ("MICHI_KAFKA_BOOTSTRAP", "MICHI_REDIS_URL"):
        environment.pop(name, None)
    started = _michi("infra", "up", environment=environment)
    assert started.returncode == 0, started.stderr
    endpoints = json.loads((tmp_path / ".michi" / "endpoints.json").read_text())
    state = json.loads((tmp_path / ".michi" / "infra.json").read_text())
    try:
        assert endpoints["kafka"]["bootstrap"] == f"127.0.0.1:{environment['MICHI_KAFKA_PORT']}"
        assert broker_answers(endpoints["kafka"]["bootstrap"])
        assert redis_answers(endpoints["redis"])
        status = _michi("infra", "status", environment=environment)
        assert "up" in status.stdout.splitlines()[0] and "up" in status.stdout.splitlines()[1], status.stdout
        topics = _michi("topics", environment=environment)
        assert "michi.uploads.v1" in topics.stdout
    finally:
        stopped = _michi("infra", "down", environment=environment)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(pid_is_alive(entry["pid"]) for entry in state.values())
    assert not broker_answers(endpoints["kafka"]["bootstrap"], timeout=1)


def test_a_taken_port_gives_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        environment = {
            **os.environ,
            "MICHI_HOME": str(tmp_path / ".michi"),
            "MICHI_REDIS_PORT": str(taken),
        }
        environment["MICHI_KAFKA_BOOTSTRAP"] = "127.0.0.1:1"  # external: not started
        environment.pop("MICHI_REDIS_URL", None)
        result = _michi("infra", "up", environment=environment, timeout=60)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"port {taken}" in lines[0], result.stderr


def test_supervisor_restarts_a_dead_service_with_backoff(tmp_path: Path) -> None:
    counter = tmp_path / "starts"
    module_dir = tmp_path / "modules"
    module_dir.mkdir()
    (module_dir / "flaky_service.py").write_text(
        "import os, pathlib, time\n"
        f"path = pathlib.Path({str(counter)!r})\n"
        "path.write_text(path.read_text() + 'x' if path.exists() else 'x')\n"
        "if len(path.read_text()) < 3:\n"
        "    raise SystemExit(3)\n"
        "time.sleep(600)\n"
    )
    supervisor = Supervisor(max_backoff=1.0)
    supervisor.add("flaky", "flaky_service", {"PYTHONPATH": str(module_dir)}, tmp_path / "flaky.log")
    supervisor.start()
    try:
        assert wait_until(lambda: counter.exists() and len(counter.read_text()) == 3, 30, 0.2)
        service = supervisor.services["flaky"]
        assert wait_until(lambda: service.alive, 10, 0.2)
        assert service.restarts == 2
        assert service.last_exit == 3
        pid = service.process.pid if service.process else 0
    finally:
        began = time.monotonic()
        supervisor.stop(timeout=5)
    assert time.monotonic() - began < 10
    assert not pid_is_alive(pid)
