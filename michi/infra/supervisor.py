"""Supervised processes: started, restarted with backoff when they die, stopped together.

Services are added by module (`add`) and started by the supervisor; servers someone else started,
like the embedded Kafka and redis-server of `michi up`, are handed over with the function that starts
them again (`adopt`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from michi.infra.processes import die_with_this_process, stop_pid

logger = logging.getLogger(__name__)


@dataclass
class ServiceProcess:
    name: str
    arguments: list[str]
    environment: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    last_exit: int | None = None
    history: list[float] = field(default_factory=list)
    # Starts the process again, when it was not started from `arguments` (an adopted server).
    launch: Callable[[], subprocess.Popen[bytes]] | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    """Keeps a set of service processes running until `stop()`."""

    def __init__(self, *, max_backoff: float = 30.0) -> None:
        self.services: dict[str, ServiceProcess] = {}
        self.max_backoff = max_backoff
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()

    def add(self, name: str, module: str, environment: dict[str, str], log_path: Path) -> None:
        arguments = [sys.executable, "-m", module]
        self.services[name] = ServiceProcess(name, arguments, {**os.environ, **environment}, log_path)

    def adopt(
        self, name: str, process: subprocess.Popen[bytes], launch: Callable[[], subprocess.Popen[bytes]], log_path: Path
    ) -> None:
        """Watch a running process someone else started; when it dies, `launch()` starts it again."""
        arguments = [str(argument) for argument in process.args] if isinstance(process.args, list) else []
        self.services[name] = ServiceProcess(
            name, arguments, {}, log_path, process=process, started_at=time.monotonic(), launch=launch
        )

    def _spawn(self, service: ServiceProcess) -> None:
        if service.launch is not None:
            service.process = service.launch()
            service.started_at = time.monotonic()
            return
        service.log_path.parent.mkdir(parents=True, exist_ok=True)
        with service.log_path.open("ab") as log:
            service.process = subprocess.Popen(
                service.arguments,
                env=service.environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a terminal's Ctrl-C reaches `michi up` only, which then stops services in order.
                start_new_session=True,
                # ... and a `michi up` killed with SIGKILL takes its services with it (SIGTERM to each).
                preexec_fn=die_with_this_process(),
            )
        service.started_at = time.monotonic()

    def start(self) -> None:
        for service in self.services.values():
            if service.process is None:
                self._spawn(service)
        self._watcher = threading.Thread(target=self._watch, name="michi-supervisor", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            with self._lock:
                for service in self.services.values():
                    self._check(service)

    def _check(self, service: ServiceProcess) -> None:
        if service.process is None or service.process.poll() is None:
            return
        now = time.monotonic()
        if service.next_start == 0.0:
            service.last_exit = service.process.returncode
            # Back off exponentially, but forget old crashes once a run lasted a minute.
            if now - service.started_at > 60:
                service.history.clear()
            service.history.append(now)
            delay = min(self.max_backoff, 0.5 * 2 ** (len(service.history) - 1))
            service.next_start = now + delay
            logger.warning(
                "service exited; restarting",
                extra={"service": service.name, "exit_code": service.last_exit, "restart_in_s": delay},
            )
        elif now >= service.next_start:
            service.next_start = 0.0
            service.restarts += 1
            try:
                self._spawn(service)
            except Exception:
                # The old process stays the one watched: the next check sees it dead and backs off again.
                logger.exception("restart failed", extra={"service": service.name})

    def stop(self, timeout: float = 20.0) -> None:
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout=2)
        with self._lock:
            threads = [
                threading.Thread(target=stop_pid, args=(service.process.pid, timeout))
                for service in self.services.values()
                if service.process is not None and service.process.poll() is None
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for service in self.services.values():
                if service.process is not None:
                    service.process.wait(timeout=5)
