"""The supervisor with adopted processes (how `michi up` watches its Kafka and redis-server): restarted with
the function that started them, a failed start retried with backoff, everything stopped on `stop()`."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from michi.infra.processes import pid_is_alive, wait_until
from michi.infra.supervisor import Supervisor


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL, start_new_session=True)


def test_an_adopted_process_is_started_again_with_its_launcher(tmp_path: Path) -> None:
    launched: list[subprocess.Popen[bytes]] = []

    def launch() -> subprocess.Popen[bytes]:
        launched.append(_sleeper())
        return launched[-1]

    first = _sleeper()
    supervisor = Supervisor(max_backoff=1.0)
    supervisor.adopt("server", first, launch, tmp_path / "server.log")
    supervisor.start()  # adopted and running: not started a second time
    try:
        assert launched == []
        watched = supervisor.services["server"]
        assert watched.process is first and watched.alive and watched.arguments == ["sleep", "600"]
        os.kill(first.pid, signal.SIGKILL)
        assert wait_until(lambda: len(launched) == 1 and watched.alive, 5.0, 0.05)
        assert watched.process is launched[0] and watched.restarts == 1 and watched.last_exit == -signal.SIGKILL
    finally:
        supervisor.stop(timeout=5)
    assert first.poll() is not None and launched[0].poll() is not None
    assert not pid_is_alive(launched[0].pid)


def test_a_failed_restart_is_retried_and_the_watcher_keeps_going(tmp_path: Path) -> None:
    attempts: list[float] = []
    started: list[subprocess.Popen[bytes]] = []

    def launch() -> subprocess.Popen[bytes]:
        attempts.append(0.0)
        if len(attempts) < 3:
            raise OSError("port still taken")
        started.append(_sleeper())
        return started[-1]

    first = _sleeper()
    supervisor = Supervisor(max_backoff=1.0)
    supervisor.adopt("server", first, launch, tmp_path / "server.log")
    supervisor.start()
    try:
        first.kill()
        watched = supervisor.services["server"]
        assert wait_until(lambda: watched.alive and len(started) == 1, 10.0, 0.05)
        assert len(attempts) == 3 and watched.restarts == 3
    finally:
        supervisor.stop(timeout=5)
    assert not pid_is_alive(started[0].pid)
