"""Starting, watching and stopping the local server processes Michi embeds."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def die_with_this_process() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child receive SIGTERM when the process that started it dies (Linux).

    A `michi up` killed with SIGKILL cannot stop what it started; without this its services would run on,
    holding their ports, and the next `michi up` on the home could not start them. Loaded once here, so the
    child only calls a function pointer between fork and exec. None where prctl does not exist.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    set_death_signal = 1  # PR_SET_PDEATHSIG
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(set_death_signal, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return die_with_parent


class InfrastructureError(RuntimeError):
    """A one-line, user-facing reason an embedded server cannot start."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def require_free_port(port: int, what: str) -> None:
    if not port_is_free(port):
        raise InfrastructureError(
            f"port {port} for {what} is already in use on 127.0.0.1; stop what holds it or choose another port"
        )


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def start_process(
    arguments: list[str], log_path: Path, *, detached: bool, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
            arguments,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            # Own session always: a detached server outlives `michi infra up`, and an attached one must not
            # get the terminal's Ctrl-C before the services using it were stopped.
            start_new_session=True,
        )
    finally:
        log.close()


def pid_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_pid(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if the process has not ended within the timeout."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not wait_until(lambda: not pid_is_alive(pid) or _reap(pid), timeout, 0.1):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_is_alive(pid) or _reap(pid), 5.0, 0.1)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Stop a child we started: SIGTERM, then SIGKILL, and collect its exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _reap(pid: int) -> bool:
    """Collect a child that already exited (a zombie still answers kill(pid, 0))."""
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return finished == pid
