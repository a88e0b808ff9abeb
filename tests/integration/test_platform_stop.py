"""`michi up` leaves no endpoints file behind: removed when it stops on SIGTERM or Ctrl-C (SIGINT), and a file
left by a `michi up` killed with SIGKILL is removed by the next `michi` command instead of being believed, and
the services that `michi up` started do not outlive it.

`michi up --no-table` runs as a user starts it, against the session's Kafka and redis-server (so nothing
embedded has to start), and is stopped as soon as its endpoints file names it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from michi.infra.processes import free_port, wait_until
from michi.kit import service_names

pytestmark = pytest.mark.integration
# Services receive SIGTERM when a `michi up` killed with SIGKILL dies, and stop within this.
SERVICES_GONE_WITHIN_S = 20.0


def platform_environment(home: Path) -> dict[str, str]:
    """A `michi up` on `home` with ports of its own (nothing of another test's or a user's platform)."""
    environment = {**os.environ, "MICHI_HOME": str(home)}
    for name in ("MICHI_KAFKA_BOOTSTRAP", "MICHI_REDIS_URL", "MICHI_DATABASE_URL", "MICHI_BLOB_URL"):
        environment.pop(name, None)
    for name in (
        "MICHI_KAFKA_PORT",
        "MICHI_KAFKA_CONTROLLER_PORT",
        "MICHI_REDIS_PORT",
        "MICHI_INGEST_GRPC_PORT",
        "MICHI_INGEST_HTTP_PORT",
        "MICHI_INFERENCE_PORT",
        "MICHI_SCORING_PORT",
        "MICHI_WAREHOUSE_PORT",
        "MICHI_ANNOTATION_PORT",
        "MICHI_TRAINER_PORT",
        "MICHI_ROLLOUTS_PORT",
    ):
        environment[name] = str(free_port())
    return environment


def names_its_owner(path: Path, pid: int) -> bool:
    try:
        return int(json.loads(path.read_text())["owner"]["pid"]) == pid
    except (OSError, ValueError, KeyError, TypeError):
        return False


@contextmanager
def michi_up(home: Path, kafka_bootstrap: str, redis_url: str, topic_prefix: str) -> Iterator[subprocess.Popen[bytes]]:
    """`michi up --no-table` on `home`, until its endpoints file names it; everything it started is ended after."""
    environment = platform_environment(home)
    environment.update(
        {"MICHI_KAFKA_BOOTSTRAP": kafka_bootstrap, "MICHI_REDIS_URL": redis_url, "MICHI_TOPIC_PREFIX": topic_prefix}
    )
    log_path = home.parent / "up.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "michi.cli", "up", "--no-table"], env=environment, stdout=log, stderr=log
        )
    children: list[psutil.Process] = []
    try:
        path = home / "endpoints.json"
        assert wait_until(lambda: process.poll() is not None or names_its_owner(path, process.pid), 60, 0.1)
        assert process.poll() is None, log_path.read_text()[-3000:]
        up = psutil.Process(process.pid)
        # It names itself before it starts the services: wait for them, so the cleanup below knows them all.
        assert wait_until(lambda: len(up.children()) >= len(service_names()), 120, 0.2), up.children()
        children = up.children(recursive=True)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        # The services it started, by pid (a SIGKILLed `michi up` leaves them running).
        for child in children:
            if child.is_running():
                child.kill()
        psutil.wait_procs(children, timeout=10)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_michi_up_removes_its_endpoints_file_when_it_stops(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, topic_prefix: str, stop_signal: signal.Signals
) -> None:
    home = tmp_path / ".michi"
    with michi_up(home, kafka_bootstrap, redis_url, topic_prefix) as process:
        process.send_signal(stop_signal)
        assert process.wait(timeout=120) == 0
    assert not (home / "endpoints.json").exists()


@pytest.mark.timeout(300)
def test_a_file_left_by_a_killed_michi_up_is_removed_by_the_next_command(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, topic_prefix: str
) -> None:
    home = tmp_path / ".michi"
    with michi_up(home, kafka_bootstrap, redis_url, topic_prefix) as process:
        services = psutil.Process(process.pid).children()
        process.kill()
        process.wait()
        assert (home / "endpoints.json").exists()  # nothing could remove it
        # ... but the services it started go with it: none runs on, holding its port, into the next `michi up`.
        _, running_on = psutil.wait_procs(services, timeout=SERVICES_GONE_WITHIN_S)
        assert not running_on, [" ".join(service.cmdline()[-3:]) for service in running_on]
    status = subprocess.run(
        [sys.executable, "-m", "michi.cli", "infra", "status"],
        env={**platform_environment(home), "MICHI_REDIS_URL": redis_url},
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert f"the michi up (pid {process.pid}) that wrote it is gone" in status.stderr.decode()
    assert not (home / "endpoints.json").exists()
    # The dead platform's Kafka is no longer reported: nothing says where a Kafka would be.
    assert b"kafka     not started" in status.stdout
