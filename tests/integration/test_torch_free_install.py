"""Only the trainer needs torch: Michi installed without its `training` extra runs every other service.

Builds Michi's wheel from a copy of the repository's sources, installs it into a fresh Python 3.11
environment with its dependencies pinned by constraints.txt but not the `training` extra (pip fetches them
from its cache or the index; torch must not come along), then, as processes of that environment against the
session's Kafka and redis-server:

- `michi run ingest|inference|scoring|warehouse|annotation` each answer `/readyz` 200, and one upload posted
  to ingest comes out of inference (predictions, trip segments) served by the built-in baseline model;
- `michi up` starts the same services and leaves the trainer out, saying why;
- `michi run trainer`, `python -m services.trainer`, `michi train` and `michi experiments` stop with one
  line naming the extra (`pip install 'michi[training]'`), not a traceback.

    .venv/bin/pytest -q tests/integration/test_torch_free_install.py

No Docker engine is needed: the image's torch-free stage (Dockerfile, `--target services`) installs the same way.
Skipped outside CI when no Python 3.11 environment can be created; under CI=1 that fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from michi.bus.catalog import PREDICTIONS, TRIP_SEGMENTS
from michi.bus.reader import TopicReader, end_offsets
from michi.infra.processes import free_port, wait_until
from michi.kit import service_specs
from michi.windows.model_spec import BASELINE_MODEL_VERSION

from .ingest_support import make_upload

# The fixture builds and installs once (about a minute with pip's downloads); each test then starts services.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
# Every service but the ones that need an extra: what a torch-free install must run.
SERVICES = tuple(spec for spec in service_specs() if spec.extra is None)
TRAINING_MESSAGE = "michi: the trainer needs the 'training' extra (torch not installed): pip install 'michi[training]'"
# Distributions that come only with torch: none may be in the torch-free environment.
TORCH_DISTRIBUTIONS = ("torch", "triton", "nvidia-", "cuda-")
READY_WITHIN_S = 120.0


def _run(arguments: list[str], **options: object) -> subprocess.CompletedProcess[str]:
    outcome = subprocess.run(arguments, capture_output=True, text=True, timeout=300, check=False, **options)  # type: ignore[call-overload]
    assert outcome.returncode == 0, f"{' '.join(arguments)} failed:\n{outcome.stdout}\n{outcome.stderr}"
    return outcome


@dataclass(frozen=True)
class Environment:
    """The torch-free virtual environment: its bin folder, and the variables its processes run with."""

    bin: Path

    @property
    def python(self) -> Path:
        return self.bin / "python"

    @property
    def michi(self) -> Path:
        return self.bin / "michi"

    def variables(self, **michi: str) -> dict[str, str]:
        """The caller's environment without any Python, Michi or OTel setting of its own, plus `michi`."""
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("PYTHON", "MICHI_", "OTEL_", "VIRTUAL_ENV"))
        }
        return {**inherited, "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}", **michi}


def _new_environment(path: Path) -> None:
    """`python3.11 -m venv`, or a skip (a failure under CI) when this machine cannot make one."""
    python311 = shutil.which("python3.11")
    problem = "python3.11 is not installed" if python311 is None else None
    if python311 is not None:
        made = subprocess.run(
            [python311, "-m", "venv", "--without-pip", str(path)], capture_output=True, text=True, check=False
        )
        problem = None if made.returncode == 0 else f"python3.11 -m venv failed: {made.stderr.strip()}"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{problem} (.ci/run installs python3.11 and python3.11-venv)")
        pytest.skip(problem)


@pytest.fixture(scope="module")
def torch_free(tmp_path_factory: pytest.TempPathFactory) -> Environment:
    """Michi's wheel installed with its dependencies and without the `training` extra."""
    work = tmp_path_factory.mktemp("torch-free")
    # A copy of the sources: the build writes build/ and *.egg-info beside what it builds.
    source = work / "michi"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, source / name)
    for package in ("michi", "services"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # --no-build-isolation: setuptools from this environment, nothing fetched to build.
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(work / "dist"),
            str(source),
        ]
    )
    (wheel,) = (work / "dist").glob("michi-*.whl")

    _new_environment(work / "venv")
    python = work / "venv" / "bin" / "python"
    # This environment's pip installs into the new one; the constraints pin every version as `make install` does.
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    _run([*pip, "install", "-q", "--no-input", "--constraint", str(ROOT / "constraints.txt"), str(wheel)])
    return Environment(work / "venv" / "bin")


def test_the_install_holds_michi_and_no_torch(torch_free: Environment, tmp_path: Path) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [name for name in project["dependencies"] if name.startswith("torch")]
    assert project["optional-dependencies"]["training"] == ["torch"]
    assert "michi[training]" in project["optional-dependencies"]["dev"]
    assert {spec.extra for spec in service_specs()} - {None} <= set(project["optional-dependencies"])

    # -I: no PYTHONPATH, no user site, not the current folder: only what the environment holds.
    probe = (
        "import importlib.metadata, importlib.util, json, michi, services\n"
        "print(json.dumps({'michi': michi.__file__, 'services': services.__file__,"
        " 'torch': importlib.util.find_spec('torch') is not None,"
        " 'distributions': sorted(d.metadata['Name'].lower() for d in importlib.metadata.distributions())}))"
    )
    report = json.loads(_run([str(torch_free.python), "-I", "-c", probe], cwd=tmp_path).stdout)
    environment = torch_free.bin.parent
    assert Path(report["michi"]).is_relative_to(environment) and Path(report["services"]).is_relative_to(environment)
    assert report["torch"] is False
    assert "michi" in report["distributions"]
    assert not [name for name in report["distributions"] if name.startswith(TORCH_DISTRIBUTIONS)]
    imported = subprocess.run([str(torch_free.python), "-I", "-c", "import torch"], capture_output=True, text=True)
    assert imported.returncode != 0 and "No module named 'torch'" in imported.stderr


def test_the_trainer_says_which_extra_to_install(torch_free: Environment, tmp_path: Path) -> None:
    home = tmp_path / ".michi"
    variables = torch_free.variables(MICHI_HOME=str(home), MICHI_DATABASE_URL=f"sqlite:///{home / 'michi.db'}")
    for arguments in (
        [str(torch_free.michi), "run", "trainer"],
        [str(torch_free.python), "-m", "services.trainer"],
        [str(torch_free.michi), "train", "--dry-run"],
        [str(torch_free.michi), "experiments", "list", "--limit", "3"],
    ):
        outcome = subprocess.run(arguments, capture_output=True, text=True, timeout=60, env=variables, cwd=tmp_path)
        assert (outcome.returncode, outcome.stderr.strip(), outcome.stdout) == (1, TRAINING_MESSAGE, ""), arguments
    listing = _run([str(torch_free.michi), "--help"], env=variables, cwd=tmp_path).stdout
    assert "pip install 'michi[training]'" in listing


@dataclass
class Service:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _service_variables(
    torch_free: Environment, kafka_bootstrap: str, redis_url: str, topic_prefix: str, home: Path
) -> dict[str, str]:
    """The session's servers, a home of the test's own, every service on free ports."""
    variables = torch_free.variables(
        MICHI_KAFKA_BOOTSTRAP=kafka_bootstrap,
        MICHI_REDIS_URL=redis_url,
        MICHI_TOPIC_PREFIX=topic_prefix,
        MICHI_HOME=str(home),
        MICHI_DATABASE_URL=f"sqlite:///{home / 'michi.db'}",
        MICHI_BLOB_URL=f"file://{home / 'blobs'}",
    )
    for spec in service_specs():
        variables.update({port.variable: str(free_port()) for port in spec.ports})
    return variables


def _answers_ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def _stopped_at_exit(processes: list[subprocess.Popen[bytes]], stop: signal.Signals = signal.SIGTERM) -> Iterator[None]:
    try:
        yield
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(stop)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def test_every_other_service_runs_and_serves_without_torch(
    torch_free: Environment, kafka_bootstrap: str, redis_url: str, topic_prefix: str, michi_home: Path
) -> None:
    variables = _service_variables(torch_free, kafka_bootstrap, redis_url, topic_prefix, michi_home)
    token = _run([str(torch_free.michi), "devices", "add", "device-a"], env=variables, cwd=michi_home).stdout.strip()
    services: list[Service] = []
    processes: list[subprocess.Popen[bytes]] = []  # filled as they start: every one is stopped at the end
    with _stopped_at_exit(processes):
        for spec in SERVICES:
            log_path = michi_home / f"{spec.name}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [str(torch_free.michi), "run", spec.name],
                    env=variables,
                    cwd=michi_home,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            processes.append(process)
            services.append(Service(spec.name, spec.url(variables), process, log_path))
        started = time.monotonic()
        for service in services:

            def ready(service: Service = service) -> bool:
                assert service.process.poll() is None, f"{service.name} exited: {service.log()[-3000:]}"
                return _answers_ready(f"{service.url}/readyz")

            assert wait_until(ready, READY_WITHIN_S - (time.monotonic() - started), 0.5), (
                f"{service.name} not ready within {READY_WITHIN_S:.0f} s: {service.log()[-3000:]}"
            )

        by_name = {service.name: service for service in services}
        # One upload through ingest and inference (the built-in baseline model: no trainer has run).
        answer = httpx.post(
            f"{by_name['ingest'].url}/v1/uploads",
            content=make_upload("upload-torch-free").SerializeToString(),
            headers={"content-type": "application/x-protobuf", "authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert answer.status_code in (200, 201, 202), answer.text

        with TopicReader(kafka_bootstrap, PREDICTIONS, topic_prefix) as reader:
            predictions = reader.read_until(bool, timeout=60)
        inference_log = by_name["inference"].log()
        assert predictions, inference_log[-3000:]
        # The hand-set baseline graph shipped with inference, built without torch: no trainer has run.
        assert {record.message.lineage.model_version for record in predictions} == {BASELINE_MODEL_VERSION}  # type: ignore[attr-defined]
        assert wait_until(lambda: sum(end_offsets(kafka_bootstrap, TRIP_SEGMENTS.name(topic_prefix)).values()) >= 1, 30)
        assert [service.name for service in services if service.process.poll() is not None] == []
    # Every service without an extra of its own (a service added later joins by its spec).
    assert {"ingest", "inference", "scoring", "warehouse", "annotation"} <= {service.name for service in services}
    for service in services:
        assert "Traceback" not in service.log(), f"{service.name}: {service.log()[-3000:]}"


def test_michi_up_starts_every_other_service_and_leaves_the_trainer_out(
    torch_free: Environment, kafka_bootstrap: str, redis_url: str, topic_prefix: str, michi_home: Path
) -> None:
    # MICHI_KAFKA_BOOTSTRAP and MICHI_REDIS_URL point at the session's servers: `michi up` starts no embedded ones.
    variables = _service_variables(torch_free, kafka_bootstrap, redis_url, topic_prefix, michi_home)
    log_path = michi_home / "up.log"
    endpoints = michi_home / "endpoints.json"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(torch_free.michi), "up", "--no-table"],
            env=variables,
            cwd=michi_home,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    # SIGINT: `michi up` stops its services and removes its endpoints file.
    with _stopped_at_exit([process], stop=signal.SIGINT):

        def platform_ready() -> bool:
            assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
            return endpoints.exists() and bool(json.loads(endpoints.read_text()).get("services"))

        assert wait_until(platform_ready, READY_WITHIN_S + 30, 0.5), log_path.read_text(errors="replace")[-3000:]
        assert sorted(json.loads(endpoints.read_text())["services"]) == sorted(spec.name for spec in SERVICES)
        assert all(_answers_ready(spec.readiness_url(variables)) for spec in SERVICES)
    output = log_path.read_text(errors="replace")
    assert f"not starting the trainer: {TRAINING_MESSAGE.removeprefix('michi: ')}" in " ".join(output.split())
    assert process.returncode == 0, output[-3000:]
