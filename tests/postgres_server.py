"""A throwaway PostgreSQL server on loopback, for testing the SQL layer on the database production uses.

A test fixture (`postgres_url` in `tests/conftest.py`), not part of the platform: `michi infra` never starts one.

Uses the Debian server binaries (`/usr/lib/postgresql/<version>/bin`, or `initdb` on PATH). PostgreSQL
refuses to run as root, so as root the cluster is created and run as the `postgres` system user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from michi.infra.processes import InfrastructureError, require_free_port, wait_until


def postgres_binaries() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    found = shutil.which("initdb")
    if candidates:
        return Path(candidates[0]).parent
    if found:
        return Path(found).resolve().parent
    raise InfrastructureError(
        "no PostgreSQL server binaries found: apt-get install postgresql, or set MICHI_TEST_POSTGRES_URL"
    )


@dataclass
class PostgresServer:
    data_dir: Path
    port: int
    user: str = "michi"
    database: str = "michi"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _as_owner(self, arguments: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *arguments]
        return arguments

    def start(self, timeout: float = 60.0) -> None:
        binaries = postgres_binaries()
        require_free_port(self.port, "PostgreSQL")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            for path in (self.data_dir, *self.data_dir.parents):
                if path == Path("/") or path == Path("/tmp"):
                    break
                os.chmod(path, os.stat(path).st_mode | 0o711)
            os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)
        cluster = self.data_dir / "cluster"
        initdb = [
            str(binaries / "initdb"),
            "-D",
            str(cluster),
            "-U",
            self.user,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        ]
        result = subprocess.run(self._as_owner(initdb), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise InfrastructureError(f"initdb failed: {result.stderr.strip().splitlines()[-1:]}")
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.data_dir} -c fsync=off"
        )
        start = [
            str(binaries / "pg_ctl"),
            "-D",
            str(cluster),
            "-o",
            options,
            "-l",
            str(self.data_dir / "postgres.log"),
            "-w",
            "start",
        ]
        result = subprocess.run(self._as_owner(start), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise InfrastructureError(f"PostgreSQL did not start: {result.stderr.strip() or result.stdout.strip()}")
        createdb = [str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database]
        if not wait_until(
            lambda: subprocess.run(self._as_owner(createdb), capture_output=True, check=False).returncode == 0,
            timeout,
            0.5,
        ):
            raise InfrastructureError("could not create the test database")
        self._binaries = binaries
        self._cluster = cluster

    def stop(self) -> None:
        stop = [str(self._binaries / "pg_ctl"), "-D", str(self._cluster), "-m", "fast", "-w", "stop"]
        subprocess.run(self._as_owner(stop), capture_output=True, check=False)
