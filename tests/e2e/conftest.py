"""The whole platform as a user runs it: `michi up` against the session's Kafka and redis-server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from michi.infra.processes import free_port, wait_until


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@dataclass
class RunningPlatform:
    home: Path
    prefix: str
    bootstrap: str
    environment: dict[str, str]
    ingest_url: str
    process: subprocess.Popen[bytes]

    def log(self, service: str) -> str:
        path = self.home / "logs" / f"{service}.log"
        return path.read_text()[-4000:] if path.exists() else ""


@pytest.fixture(scope="module")
def platform(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningPlatform]:
    home = tmp_path_factory.mktemp("platform") / ".michi"
    prefix = f"e2e-{uuid.uuid4().hex[:8]}."
    ports = {
        name: free_port()
        for name in (
            "MICHI_INGEST_HTTP_PORT",
            "MICHI_INFERENCE_PORT",
            "MICHI_SCORING_PORT",
            "MICHI_INGEST_GRPC_PORT",
            "MICHI_WAREHOUSE_PORT",
            "MICHI_ANNOTATION_PORT",
            "MICHI_TRAINER_PORT",
        )
    }
    environment = {
        **os.environ,
        "MICHI_HOME": str(home),
        "MICHI_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "MICHI_REDIS_URL": redis_url.rsplit("/", 1)[0] + "/3",
        "MICHI_DATABASE_URL": f"sqlite:///{home / 'michi.db'}",
        "MICHI_TOPIC_PREFIX": prefix,
        "MICHI_BLOB_URL": f"file://{home / 'blobs'}",
        "MICHI_WAREHOUSE_FLUSH_S": "1",
        **{name: str(port) for name, port in ports.items()},
    }
    log = (home.parent / "up.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "michi.cli", "up", "--no-table"], env=environment, stdout=log, stderr=subprocess.STDOUT
    )
    running = RunningPlatform(
        home, prefix, kafka_bootstrap, environment, f"http://127.0.0.1:{ports['MICHI_INGEST_HTTP_PORT']}", process
    )
    try:
        ready = wait_until(
            lambda: (
                process.poll() is not None
                or (_every_service_listed(home / "endpoints.json") and _ready(running.ingest_url))
            ),
            360,
            0.5,
        )
        assert ready and process.poll() is None, (home.parent / "up.log").read_text()[-4000:]
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _every_service_listed(path: Path) -> bool:
    """`michi up` lists the services in endpoints.json only once every one answered /readyz."""
    try:
        services = json.loads(path.read_text()).get("services", {})
    except (OSError, ValueError):
        return False
    return {"ingest", "inference", "scoring", "warehouse", "annotation", "trainer"} <= set(services)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
