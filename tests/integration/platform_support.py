"""`michi up --simulate N` as a user runs it, for the platform tests: a temp home with its own ports, the
subprocess until ready and stopped cleanly, and what it started found again (the embedded Kafka, each service)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from michi.bus.catalog import UPLOADS
from michi.bus.reader import Record, TopicReader
from michi.contracts import timestamp_to_seconds
from michi.infra.processes import free_port, wait_until
from michi.kit import service_names

# `michi up --simulate 2` with the default seed (7) drives these dashcams.
SIMULATED_DEVICES = ("sim-7-0000", "sim-7-0001")
SERVICES = service_names()
SERVICE_PORT_VARIABLES = {
    "ingest": "MICHI_INGEST_HTTP_PORT",
    "inference": "MICHI_INFERENCE_PORT",
    "scoring": "MICHI_SCORING_PORT",
    "warehouse": "MICHI_WAREHOUSE_PORT",
    "monitor": "MICHI_MONITOR_PORT",
    "annotation": "MICHI_ANNOTATION_PORT",
    "trainer": "MICHI_TRAINER_PORT",
    "rollouts": "MICHI_ROLLOUTS_PORT",
    "camera": "MICHI_CAMERA_PORT",
}


def platform_environment(home: Path) -> dict[str, str]:
    """The environment of a `michi up` on `home`: embedded servers (no external ones), free ports for everything."""
    environment = {**os.environ, "MICHI_HOME": str(home)}
    for name in ("MICHI_KAFKA_BOOTSTRAP", "MICHI_REDIS_URL", "MICHI_DATABASE_URL", "MICHI_BLOB_URL"):
        environment.pop(name, None)
    ports = (
        "MICHI_KAFKA_PORT",
        "MICHI_KAFKA_CONTROLLER_PORT",
        "MICHI_REDIS_PORT",
        "MICHI_INGEST_GRPC_PORT",
        *SERVICE_PORT_VARIABLES.values(),
    )
    environment.update({name: str(free_port()) for name in ports})
    environment["MICHI_TOPIC_PREFIX"] = "michi."
    return environment


def every_service_listed(home: Path, since: float) -> bool:
    """`michi up` lists the services in endpoints.json once every one is ready (`michi up` removes it when it stops)."""
    path = home / "endpoints.json"
    try:
        if path.stat().st_mtime < since:
            return False
        services = json.loads(path.read_text()).get("services", {})
    except (OSError, ValueError):
        return False
    return set(SERVICES) <= set(services)


def _command_line(pid: str) -> str:
    return (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def pid_with(fragment: str) -> int | None:
    """The process whose command line holds `fragment` (the embedded Kafka of one home: its config path)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = _command_line(entry.name)
        except OSError:
            continue
        if fragment in command:
            return int(entry.name)
    return None


def service_pids(home: Path) -> dict[str, list[int]]:
    """The processes of each service `michi up` runs on `home` (found by module and MICHI_HOME)."""
    wanted = f"MICHI_HOME={home}".encode()
    found: dict[str, list[int]] = {name: [] for name in SERVICES}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = _command_line(entry.name)
            if "-m services." not in command:
                continue
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted not in environment:
            continue
        for name in SERVICES:
            if command.rstrip().endswith(f"-m services.{name}"):
                found[name].append(int(entry.name))
    return found


def accepted_since(records: list[Record], since: float) -> list[Record]:
    """UploadReceived records of simulated uploads recorded after `since` (this run's fleet)."""
    return [
        record
        for record in records
        if record.message.upload.device_id in SIMULATED_DEVICES  # type: ignore[attr-defined]
        and timestamp_to_seconds(record.message.upload.started_at) >= since  # type: ignore[attr-defined]
    ]


def from_every_device(since: float) -> Callable[[list[Record]], bool]:
    def done(records: list[Record]) -> bool:
        devices = {record.message.upload.device_id for record in accepted_since(records, since)}  # type: ignore[attr-defined]
        return devices == set(SIMULATED_DEVICES)

    return done


@dataclass
class RunningUp:
    process: subprocess.Popen[bytes]
    launched: float
    ready_at: float
    log_path: Path


@contextmanager
def michi_up(environment: dict[str, str], home: Path, log_path: Path, *options: str) -> Iterator[RunningUp]:
    """`michi up --simulate 2 [options]` until ready; on leaving, SIGTERM and a clean exit with no simulator failure."""
    launched = time.time()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "michi.cli", "up", "--simulate", "2", "--no-table", *options],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        ready = wait_until(lambda: process.poll() is not None or every_service_listed(home, launched), 420, 0.5)
        assert ready and process.poll() is None, log_path.read_text()[-4000:]
        yield RunningUp(process, launched, time.time(), log_path)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            exit_code = process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    output = log_path.read_text()
    assert exit_code == 0, output[-4000:]
    assert "simulator stopped" not in output and "Traceback" not in output, output[-4000:]


def every_device_streams(bootstrap: str, since: float, timeout: float) -> list[Record]:
    """This run's accepted uploads, once both simulated devices have some (asserted)."""
    with TopicReader(bootstrap, UPLOADS) as reader:
        uploads = accepted_since(reader.read_until(from_every_device(since), timeout=timeout), since)
    assert {record.message.upload.device_id for record in uploads} == set(SIMULATED_DEVICES)  # type: ignore[attr-defined]
    return uploads
