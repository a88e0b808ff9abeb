"""Whether a `michi up` runs on a home: its endpoints file names the process that wrote it.

`michi up` writes `.michi/endpoints.json` with an `owner` entry (its pid and that process's start time) and
removes the file when it stops, on Ctrl-C and SIGTERM too (`run_platform`'s `finally`). A `michi up` killed
with SIGKILL (or a crash of the machine) cannot remove it, so every `michi` command checks the owner first
(`forget_stale_endpoints`, from the CLI's callback): a file whose owner is no longer alive (or whose pid now
belongs to another process) is removed, and the command resolves its servers as if nothing ran.
A file without an owner (written by `michi infra up`, whose servers `.michi/infra.json` tracks) is left alone.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import psutil

logger = logging.getLogger(__name__)

OWNER_KEY = "owner"
# Two readings of one process's start time differ by less than this (psutil reads it from /proc in clock ticks).
START_TIME_TOLERANCE_S = 1.0


def _process_started_at(pid: int) -> float | None:
    """When process `pid` started (epoch seconds); None when there is no such process (or only its zombie)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(process.create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        # Another user's process holds the pid: alive, but not ours to compare.
        return -1.0


def current_owner() -> dict[str, Any]:
    """This process as the owner of an endpoints file."""
    return {"pid": os.getpid(), "started_at": _process_started_at(os.getpid()), "command": "michi up"}


def owner_alive(owner: dict[str, Any]) -> bool:
    """Whether the process an endpoints file names still runs (the same process, not a reused pid)."""
    try:
        pid = int(owner["pid"])
        recorded = float(owner["started_at"])
    except (KeyError, TypeError, ValueError):
        return False
    started_at = _process_started_at(pid)
    if started_at is None:
        return False
    return started_at < 0 or abs(started_at - recorded) < START_TIME_TOLERANCE_S


def read_endpoints(path: Path) -> dict[str, Any] | None:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def write_owned_endpoints(path: Path, endpoints: dict[str, Any]) -> None:
    """Write `endpoints` (an `Endpoints.to_json()`) with this process as owner, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scratch.write_text(json.dumps({**endpoints, OWNER_KEY: current_owner()}, indent=2) + "\n")
    scratch.replace(path)


def remove_owned_endpoints(path: Path) -> bool:
    """Remove the endpoints file if this process wrote it (a file another `michi up` wrote stays)."""
    content = read_endpoints(path)
    owner = content.get(OWNER_KEY) if content is not None else None
    if not isinstance(owner, dict) or owner.get("pid") != os.getpid():
        return False
    path.unlink(missing_ok=True)
    return True


def forget_stale_endpoints(path: Path) -> int | None:
    """Remove an endpoints file whose owner no longer runs; the dead owner's pid, or None if nothing was stale."""
    content = read_endpoints(path)
    owner = content.get(OWNER_KEY) if content is not None else None
    if not isinstance(owner, dict) or owner_alive(owner):
        return None
    path.unlink(missing_ok=True)
    logger.info("stale endpoints file removed", extra={"path": str(path), "pid": owner.get("pid")})
    try:
        return int(owner.get("pid", 0))
    except (TypeError, ValueError):
        return 0


__all__ = [
    "current_owner",
    "forget_stale_endpoints",
    "owner_alive",
    "read_endpoints",
    "remove_owned_endpoints",
    "write_owned_endpoints",
]
