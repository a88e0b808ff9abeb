"""The embedded infrastructure as one unit: Kafka, redis-server, SQLite and the blob folder.

Anything whose `MICHI_*` variable is set is external and left alone. `up()` starts
what is missing and writes `.michi/endpoints.json`; a detached start (`michi infra up`)
records the pids in `.michi/infra.json` so `michi infra down` can stop them later.
`supervise()` hands the servers an attached start began to a `Supervisor` (`michi up` does),
which starts a dead one again on the same port with the same data directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from michi.infra.kafka import KafkaBroker, broker_answers
from michi.infra.processes import pid_is_alive, stop_pid
from michi.infra.redis import RedisServer, redis_answers
from michi.infra.supervisor import Supervisor
from michi.settings import MichiSettings

logger = logging.getLogger(__name__)


@dataclass
class Endpoints:
    kafka_bootstrap: str
    redis_url: str
    database_url: str
    blob_url: str
    services: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kafka": {"bootstrap": self.kafka_bootstrap},
            "redis": self.redis_url,
            "database": self.database_url,
            "blobs": self.blob_url,
            "services": self.services,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_suffix(".tmp")
        scratch.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        scratch.replace(path)


class EmbeddedInfrastructure:
    def __init__(self, settings: MichiSettings) -> None:
        self.settings = settings
        self.home = settings.home
        self.kafka = KafkaBroker(
            self.home / "kafka", port=settings.kafka_port, controller_port=settings.kafka_controller_port
        )
        self.redis = RedisServer(self.home / "redis", port=settings.redis_port)
        self.started: list[str] = []

    @property
    def state_path(self) -> Path:
        return self.home / "infra.json"

    def running_detached(self) -> dict[str, Any]:
        """The detached servers of an earlier `michi infra up` that are still alive."""
        try:
            state: dict[str, Any] = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return {name: entry for name, entry in state.items() if pid_is_alive(int(entry.get("pid", 0)))}

    def up(self, *, detached: bool = False) -> Endpoints:
        self.home.mkdir(parents=True, exist_ok=True)
        running = self.running_detached()
        kafka_bootstrap = self.settings.kafka_bootstrap
        if not kafka_bootstrap:
            if "kafka" in running and broker_answers(running["kafka"]["address"]):
                kafka_bootstrap = running["kafka"]["address"]
            else:
                self.kafka.detached = detached
                self.kafka.start()
                self.started.append("kafka")
                kafka_bootstrap = self.kafka.bootstrap
        redis_url = self.settings.redis_url
        if not redis_url:
            if "redis" in running and redis_answers(running["redis"]["address"]):
                redis_url = running["redis"]["address"]
            else:
                self.redis.detached = detached
                self.redis.start()
                self.started.append("redis")
                redis_url = self.redis.url
        database_url = self.settings.database_url or f"sqlite:///{self.home / 'michi.db'}"
        blob_url = self.settings.blob_url or f"file://{self.home / 'blobs'}"
        if blob_url.startswith("file://"):
            Path(blob_url.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        if detached:
            state = dict(running)
            if "kafka" in self.started:
                state["kafka"] = {"pid": self.kafka.pid, "address": kafka_bootstrap}
            if "redis" in self.started:
                state["redis"] = {"pid": self.redis.pid, "address": redis_url}
            self.state_path.write_text(json.dumps(state, indent=2) + "\n")
        endpoints = Endpoints(kafka_bootstrap, redis_url, database_url, blob_url)
        endpoints.write(self.settings.endpoints_path)
        return endpoints

    def supervise(self, supervisor: Supervisor) -> list[str]:
        """Let `supervisor` restart the servers this object started attached; their names."""
        supervised = []
        for name, server in (("kafka", self.kafka), ("redis", self.redis)):
            process = server.process
            if name in self.started and not server.detached and process is not None:
                supervisor.adopt(name, process, server.launch, server.log_path)
                supervised.append(name)
        return supervised

    def down(self) -> list[str]:
        """Stop what this object started, and any detached servers recorded in the state file."""
        stopped = []
        if "kafka" in self.started:
            self.kafka.stop()
            stopped.append("kafka")
        if "redis" in self.started:
            self.redis.stop()
            stopped.append("redis")
        for name, entry in self.running_detached().items():
            stop_pid(int(entry["pid"]), timeout=30.0)
            stopped.append(name)
        self.state_path.unlink(missing_ok=True)
        self.started.clear()
        return stopped

    def status(self) -> dict[str, str]:
        endpoints: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            endpoints = json.loads(self.settings.endpoints_path.read_text())
        kafka = self.settings.kafka_bootstrap or endpoints.get("kafka", {}).get("bootstrap")
        redis = self.settings.redis_url or endpoints.get("redis")
        return {
            "kafka": f"{kafka} {'up' if kafka and broker_answers(self.settings.kafka_connection(kafka)) else 'down'}"
            if kafka
            else "not started",
            "redis": f"{redis} {'up' if redis and redis_answers(redis) else 'down'}" if redis else "not started",
            "database": self.settings.resolved_database_url(),
            "blobs": self.settings.resolved_blob_url(),
        }
