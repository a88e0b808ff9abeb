"""Every service's metrics registry (`michi.telemetry.metrics.service_registry`): the service's own metrics plus
`process_*`, `python_gc_*` and `python_info`; and the multiprocess registry of a service run as several workers,
whose page answers for all of them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from michi.kit import service_names
from michi.telemetry.metrics import WorkersRegistry, prepare_workers_directory, render_metrics
from services.annotation.metrics import AnnotationMetrics
from services.camera.adapters.metrics import CameraMetrics
from services.inference.adapters.metrics import InferenceMetrics
from services.ingest.entrypoints.metrics import IngestMetrics
from services.monitor.adapters.metrics import MonitorMetrics
from services.rollouts.adapters.metrics import RolloutsMetrics
from services.scoring.metrics import ScoringMetrics
from services.trainer.adapters.metrics import TrainerMetrics
from services.warehouse.metrics import WarehouseMetrics

METRICS_CLASSES: dict[str, Callable[[], Any]] = {
    "ingest": IngestMetrics,
    "inference": InferenceMetrics,
    "scoring": ScoringMetrics,
    "warehouse": WarehouseMetrics,
    "monitor": MonitorMetrics,
    "annotation": AnnotationMetrics,
    "trainer": TrainerMetrics,
    "rollouts": RolloutsMetrics,
    "camera": CameraMetrics,
}
PROCESS_SAMPLES = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
)
GC_SAMPLES = (
    "python_gc_collections_total",
    "python_gc_objects_collected_total",
    "python_gc_objects_uncollectable_total",
)


def samples(page: bytes) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] of a rendered page."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(page.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def test_every_service_has_its_metrics_class_here() -> None:
    assert set(METRICS_CLASSES) == set(service_names())


@pytest.mark.parametrize("service", list(METRICS_CLASSES))
def test_every_services_page_has_its_metrics_and_the_process_metrics(service: str) -> None:
    metrics = METRICS_CLASSES[service]()
    page = render_metrics(metrics.registry)
    # What each service serves at /metrics is its registry's page (the stream workers' render() alike).
    if hasattr(metrics, "render"):
        assert set(samples(metrics.render())) == set(samples(page))
    found = samples(page)

    assert any(name.startswith(f"michi_{service}_") for name in found), sorted(found)
    for name in PROCESS_SAMPLES:
        [(labels, value)] = found[name]
        assert labels == {} and value > 0, name
    for name in GC_SAMPLES:
        assert sorted(labels["generation"] for labels, _ in found[name]) == ["0", "1", "2"], name
    assert sum(value for _, value in found["python_gc_collections_total"]) > 0
    [(info, value)] = found["python_info"]
    assert (info["major"], info["minor"], value) == (str(sys.version_info.major), str(sys.version_info.minor), 1.0)


def test_a_workers_registry_needs_prometheus_client_in_multiprocess_mode(tmp_path: Path) -> None:
    # This process imported prometheus_client without PROMETHEUS_MULTIPROC_DIR: its values live in memory,
    # where no other worker would see them.
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR must be set"):
        WorkersRegistry(tmp_path)


# A worker of a multiprocess service: counts, says it is ready, renders the page when asked.
WORKER = """
import sys
from pathlib import Path
from prometheus_client import Counter, Gauge
from michi.telemetry.metrics import render_metrics, service_registry

registry = service_registry(workers_directory=Path(sys.argv[1]))
things = Counter("michi_test_things", "Things", ["kind"], registry=registry)
level = Gauge("michi_test_level", "Level", registry=registry, multiprocess_mode="sum")
things.labels("a").inc(int(sys.argv[2]))
level.set(int(sys.argv[2]))
print("ready", flush=True)
if sys.stdin.readline().strip() == "render":
    sys.stdout.write(render_metrics(registry).decode())
"""


def test_a_workers_page_answers_for_every_worker(tmp_path: Path) -> None:
    directory = prepare_workers_directory(tmp_path, "test")
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(directory), str(count)],
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for count in (2, 3)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline() == "ready\n"
        # The first worker renders while the second still runs.
        page, _ = workers[0].communicate("render\n", timeout=30)
        workers[1].communicate("", timeout=30)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    found = samples(page.encode())

    assert found["michi_test_things_total"] == [({"kind": "a"}, 5.0)]
    assert found["michi_test_level"] == [({}, 5.0)]
    pids = {str(worker.pid) for worker in workers}
    for name in PROCESS_SAMPLES:
        assert {labels["pid"] for labels, _ in found[name]} == pids, name
    for name in GC_SAMPLES:
        assert sorted(labels["generation"] for labels, _ in found[name]) == ["0", "1", "2"], name
    # Both workers' collections, summed: each started by collecting while importing.
    assert sum(value for _, value in found["python_gc_collections_total"]) >= 2
    assert len(found["python_info"]) == 1


def test_the_workers_directory_is_new_and_earlier_runs_that_ended_leave_nothing(tmp_path: Path) -> None:
    host = socket.gethostname()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        base = tmp_path / "metrics"
        leftovers = {
            "ended": base / f"ingest-{host}-{ended.pid}",
            "running": base / f"ingest-{host}-{running.pid}",
            "other host": base / f"ingest-elsewhere-{ended.pid}",
            "other service": base / f"scoring-{host}-{ended.pid}",
            "this process before": base / f"ingest-{host}-{os.getpid()}",
        }
        for directory in leftovers.values():
            directory.mkdir(parents=True)
            (directory / f"counter_{ended.pid}.db").write_bytes(b"old")

        directory = prepare_workers_directory(tmp_path, "ingest")
    finally:
        running.kill()
        running.wait()

    assert directory == leftovers["this process before"] and list(directory.iterdir()) == []
    assert not leftovers["ended"].exists()
    assert all(leftovers[name].exists() for name in ("running", "other host", "other service"))
