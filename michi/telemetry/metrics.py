"""Prometheus metrics, set up once for every service: its registry with the standard process metrics, and `/metrics`.

    registry = service_registry()
    uploads = Counter("michi_ingest_uploads", "Uploads by outcome", ["outcome"], registry=registry)
    page = render_metrics(registry)          # the body of /metrics, served as METRICS_CONTENT_TYPE

Beside a service's own metrics, every registry from `service_registry()` carries prometheus_client's standard
collectors: `process_*` (CPU seconds, resident and virtual memory, open and maximum file descriptors, start time;
read from /proc, so on Linux), `python_gc_*` (collections, collected and uncollectable objects per generation) and
`python_info` (the interpreter), and `michi_memory_limit_bytes{source}`: the memory the service may use, its cgroup's
limit (`source="cgroup"`: cgroup v2 `memory.max`, else cgroup v1 `memory.limit_in_bytes`, the lowest along the
process's cgroup path) or, with no limit or one above the machine's memory, the machine's `MemTotal`
(`source="machine"`). Set against `process_resident_memory_bytes` it is the headroom the monitor watches
(`MemoryLimitCollector`, read at most every `MEMORY_LIMIT_CACHE_S`).

A service served by several worker processes (ingest with `MICHI_INGEST_WORKERS` > 1) runs prometheus_client's
multiprocess mode, so that its `/metrics` answers for the whole service whichever worker serves the scrape:

    # the supervisor, before it starts any worker:
    directory = prepare_workers_directory(settings.home, "ingest")
    environment[MULTIPROCESS_VARIABLE] = str(directory)      # the workers' environment
    # each worker:
    registry = service_registry(workers_directory=Path(os.environ[MULTIPROCESS_VARIABLE]))

prometheus_client keeps a process's metric values in memory-mapped files in that directory when
`PROMETHEUS_MULTIPROC_DIR` is set before it is imported. Collecting a workers' registry reads every worker's
files: counters and histograms summed over the workers, gauges as their `multiprocess_mode` says (declare one:
"all", the default, keeps a series per worker labelled `pid`; "sum", "max", "min", "mostrecent" merge them;
the "live" modes drop a worker that exited), `process_*` of every running worker labelled with its `pid`,
`python_gc_*` summed over the workers (another worker's share is at most `GC_SHARE_INTERVAL_S` old) and
`python_info` and `michi_memory_limit_bytes` once (the workers share their container's limit). Multiprocess mode has
no `_created` samples, and no Info or Enum metrics.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest, values
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
# prometheus_client's switch to multiprocess mode: read as it is imported, so set in a worker's environment.
MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# How often a worker adds its garbage collections to the shared counters (and at every scrape it serves).
GC_SHARE_INTERVAL_S = 5.0
# prometheus_client's files: counter_<pid>.db, histogram_<pid>.db, gauge_<mode>_<pid>.db.
_WORKER_FILE = re.compile(r"_(\d+)\.db$")
# The memory limit is read from /sys and /proc at most this often (a scrape in between gets the last figure).
MEMORY_LIMIT_CACHE_S = 5.0
MEMORY_LIMIT_METRIC = "michi_memory_limit_bytes"
# Where the limit came from (the `source` label of michi_memory_limit_bytes).
CGROUP = "cgroup"
MACHINE = "machine"


def service_registry(*, workers_directory: Path | None = None) -> CollectorRegistry:
    """A service's registry, with `process_*`, `python_gc_*` and `python_info` beside the metrics it registers.

    `workers_directory`: the service runs as several worker processes sharing this directory (this one among
    them); collecting the registry then answers for all of them (`WorkersRegistry`).
    """
    if workers_directory is not None:
        return WorkersRegistry(workers_directory)
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
    registry.register(MemoryLimitCollector())
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    """The `/metrics` page of `registry` (Prometheus text format, `METRICS_CONTENT_TYPE`)."""
    return generate_latest(registry)


class WorkersRegistry(CollectorRegistry):
    """The registry of one worker of a multiprocess service.

    Its metrics register here as on any registry (names are checked, values go to this worker's files), but
    collecting it reads every worker's files in `directory`: the service's metrics, whichever worker is asked.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__(auto_describe=True)
        shared = os.environ.get(MULTIPROCESS_VARIABLE)
        if not getattr(values.ValueClass, "_multiprocess", False) or shared is None:
            raise RuntimeError(f"{MULTIPROCESS_VARIABLE} must be set before prometheus_client is imported")
        if not Path(shared).is_dir() or not Path(shared).samefile(directory):
            raise RuntimeError(f"{MULTIPROCESS_VARIABLE}={shared} is not the workers' directory {directory}")
        self.directory = directory
        self._all_workers = CollectorRegistry()
        MultiProcessCollector(self._all_workers, str(directory))
        self._all_workers.register(WorkerProcessCollector(directory))
        PlatformCollector(registry=self._all_workers)
        # Once for the service, whichever worker serves the scrape: the workers share their container's limit.
        self._all_workers.register(MemoryLimitCollector())
        self._garbage_collections = share_garbage_collections()

    def collect(self) -> Iterator[Metric]:
        # This worker's collections up to now; the others' were shared at most GC_SHARE_INTERVAL_S ago.
        self._garbage_collections.share()
        yield from self._all_workers.collect()


class WorkerProcessCollector(Collector):
    """`process_*` of every running process that keeps metric files in `directory`, labelled with its `pid`.

    Read from /proc/<pid> at each collection, so a worker's figures are as fresh as the scrape; a worker that
    exited has no /proc entry and no samples.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._by_pid: dict[int, ProcessCollector] = {}

    def collect(self) -> Iterator[Metric]:
        pids = self._worker_pids()
        self._by_pid = {
            pid: self._by_pid.get(pid) or ProcessCollector(pid=_constant(pid), registry=None) for pid in pids
        }
        families: dict[str, Metric] = {}
        for pid, collector in self._by_pid.items():
            for family in collector.collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type)
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        yield from families.values()

    def _worker_pids(self) -> list[int]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted({int(found.group(1)) for name in names if (found := _WORKER_FILE.search(name))})


def _constant(pid: int) -> Callable[[], int]:
    return lambda: pid


@dataclass(frozen=True)
class MemoryLimit:
    """The memory a process may use, in bytes, and where that figure came from (`CGROUP` or `MACHINE`)."""

    limit_bytes: int
    source: str


def read_memory_limit(root: Path = Path("/")) -> MemoryLimit | None:
    """This process's memory limit: its cgroup's, or the machine's memory when the cgroup sets none or more.

    cgroup v2 (`<root>/sys/fs/cgroup/cgroup.controllers` exists): `memory.max` of the process's cgroup (from
    `/proc/self/cgroup`) and of each cgroup above it up to the mount, the lowest; "max" is no limit. Else
    cgroup v1: `memory.limit_in_bytes` under `<root>/sys/fs/cgroup/memory` the same way (a container that
    mounts its own cgroup as the root finds its limit there; no limit reads as a huge number). A limit at or
    above `MemTotal` of `/proc/meminfo` limits nothing: the machine's memory is the limit then. None when
    neither can be read (not Linux).
    """
    machine = _machine_memory(root)
    limit = _cgroup_v2_limit(root)
    if limit is None:
        limit = _cgroup_v1_limit(root)
    if limit is not None and (machine is None or limit < machine):
        return MemoryLimit(limit, CGROUP)
    return MemoryLimit(machine, MACHINE) if machine is not None else None


def _machine_memory(root: Path) -> int | None:
    try:
        for line in (root / "proc" / "meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == "MemTotal":
                amount, _, unit = rest.strip().partition(" ")
                return int(amount) * (1024 if unit.strip().lower() == "kb" else 1)
    except (OSError, ValueError):
        return None
    return None


def _cgroup_paths(root: Path, wanted: Callable[[str, str], bool]) -> list[str]:
    """The cgroup paths of `/proc/self/cgroup` lines whose (hierarchy id, controllers) `wanted` accepts."""
    try:
        lines = (root / "proc" / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return []
    paths = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if wanted(hierarchy, controllers):
            paths.append(path.strip())
    return paths


def _along_path(mount: Path, path: str, file_name: str) -> list[Path]:
    """`file_name` in the cgroup at `path` under `mount` and in each cgroup above it, up to the mount itself.

    A path that climbs out of the mount (`..`, a process outside its cgroup namespace) is read at the mount only.
    """
    parts = [part for part in path.split("/") if part]
    if ".." in parts:
        parts = []
    return [mount.joinpath(*parts[:depth], file_name) for depth in range(len(parts), -1, -1)]


def _lowest_limit(files: list[Path]) -> int | None:
    limits = []
    for file in files:
        try:
            text = file.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits) if limits else None


def _cgroup_v2_limit(root: Path) -> int | None:
    mount = root / "sys" / "fs" / "cgroup"
    if not (mount / "cgroup.controllers").exists():
        return None
    paths = _cgroup_paths(root, lambda hierarchy, controllers: hierarchy == "0" and controllers == "")
    files = [file for path in paths or ["/"] for file in _along_path(mount, path, "memory.max")]
    return _lowest_limit(files)


def _cgroup_v1_limit(root: Path) -> int | None:
    mount = root / "sys" / "fs" / "cgroup" / "memory"
    paths = _cgroup_paths(root, lambda hierarchy, controllers: "memory" in controllers.split(","))
    files = [file for path in paths or ["/"] for file in _along_path(mount, path, "memory.limit_in_bytes")]
    return _lowest_limit(files)


class MemoryLimitCollector(Collector):
    """`michi_memory_limit_bytes{source}`: `read_memory_limit()`, read again at most every `cache_s` seconds."""

    def __init__(
        self, root: Path = Path("/"), cache_s: float = MEMORY_LIMIT_CACHE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.root = root
        self.cache_s = cache_s
        self.clock = clock
        self._read_at: float | None = None
        self._limit: MemoryLimit | None = None
        self._lock = threading.Lock()

    def limit(self) -> MemoryLimit | None:
        with self._lock:
            now = self.clock()
            if self._read_at is None or now - self._read_at >= self.cache_s:
                self._limit = read_memory_limit(self.root)
                self._read_at = now
            return self._limit

    def describe(self) -> Iterator[Metric]:
        # Registration asks for the names only: no file is read until the first scrape.
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        limit = self.limit()
        family = self._family()
        if limit is not None:
            family.add_metric([limit.source], float(limit.limit_bytes))
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            MEMORY_LIMIT_METRIC,
            "Memory this process may use: its cgroup's limit (source=cgroup) or the machine's memory (source=machine)",
            labels=["source"],
        )


class GarbageCollectionShare:
    """This process's `gc.get_stats()` added to `python_gc_*` counters in the workers' files.

    Counted by polling, never from a `gc.callbacks` hook: a collection may start while this thread holds
    prometheus_client's (non-reentrant) lock, and a hook writing a metric then would wait for it forever.
    """

    def __init__(self) -> None:
        # Not registered anywhere: the workers' files carry them, and MultiProcessCollector reads those.
        self._counters = (
            Counter(
                "python_gc_collections", "Number of times this generation was collected", ["generation"], registry=None
            ),
            Counter("python_gc_objects_collected", "Objects collected during gc", ["generation"], registry=None),
            Counter(
                "python_gc_objects_uncollectable",
                "Uncollectable objects found during GC",
                ["generation"],
                registry=None,
            ),
        )
        self._shared: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()
        self.share()

    def share(self) -> None:
        """Add what the collector did since the last call to the counters."""
        with self._lock:
            for generation, stats in enumerate(gc.get_stats()):
                figures = (stats["collections"], stats["collected"], stats["uncollectable"])
                for index, (counter, figure) in enumerate(zip(self._counters, figures, strict=True)):
                    before = self._shared.get((generation, index))
                    if before is None or figure > before:
                        counter.labels(str(generation)).inc(figure - (before or 0))
                        self._shared[generation, index] = figure

    def share_every(self, interval_s: float) -> None:
        while True:
            time.sleep(interval_s)
            try:
                self.share()
            except Exception:  # a full disk, say: the next round tries again
                logger.exception("garbage collection counts not shared")


_garbage_collection_share: GarbageCollectionShare | None = None
_share_lock = threading.Lock()


def share_garbage_collections() -> GarbageCollectionShare:
    """This process's `GarbageCollectionShare`, shared every `GC_SHARE_INTERVAL_S` by a thread (one per process)."""
    global _garbage_collection_share
    with _share_lock:
        if _garbage_collection_share is None:
            _garbage_collection_share = GarbageCollectionShare()
            threading.Thread(
                target=_garbage_collection_share.share_every,
                args=(GC_SHARE_INTERVAL_S,),
                name="michi-metrics-gc",
                daemon=True,
            ).start()
        return _garbage_collection_share


def prepare_workers_directory(home: Path, service: str) -> Path:
    """A new, empty directory for this run's worker metrics: `<home>/metrics/<service>-<host>-<pid>`.

    Call it in the process that starts the workers, before it starts them, and remove the directory once they
    have exited. Directories that earlier runs on this host left behind (their process no longer runs: killed
    before it could remove its own) are removed first; the host in the name keeps a home shared by several
    machines or containers from judging another's processes.
    """
    base = home / "metrics"
    base.mkdir(parents=True, exist_ok=True)
    prefix = f"{service}-{socket.gethostname()}-"
    for earlier in base.glob(f"{prefix}*"):
        pid = earlier.name.removeprefix(prefix)
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(earlier, ignore_errors=True)
    directory = base / f"{prefix}{os.getpid()}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    return directory


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
