"""What every benchmark shares: embedded servers, service processes, simulated uploads, figures.

A `Workspace` owns one temporary folder, a Kafka broker (and a redis-server when asked) on free
loopback ports, the catalog's topics under `bench.`, and every service process started through it;
leaving the `with` block (normally, on an error or on Ctrl-C) stops them all and removes the folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx
import psutil
from confluent_kafka import Consumer, TopicPartition
from google.protobuf.json_format import MessageToJson

from michi.bus.admin import ensure_topics
from michi.bus.connection import KafkaConnection
from michi.bus.reader import end_offsets
from michi.contracts import stable_event_id
from michi.contracts.v1 import common_pb2, upload_pb2
from michi.infra.kafka import KafkaBroker
from michi.infra.processes import free_port, stop_process
from michi.infra.redis import RedisServer
from michi.roads import RoadMap
from michi.simulator import FleetSimulator, SimulationConfig

REPOSITORY = Path(__file__).resolve().parents[1]
PREFIX = "bench."
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# Every upload id and trip id the simulator writes is a UUID string; clones swap in another of equal length.
UUID_LENGTH = 36
CLONE_NAMESPACE = uuid.UUID("6d1c1e52-8f0c-4b5e-9a57-1f0f1f3c0b7e")


class BenchmarkFailed(RuntimeError):
    """A service did not start or a run did not finish within its bound."""


# --------------------------------------------------------------------------- figures


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` in 0..1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def milliseconds(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds * 1000:.1f}"


def ratio(numerator: float, denominator: float) -> str:
    if denominator <= 0 or numerator != numerator or denominator != denominator:
        return "-"
    value = numerator / denominator
    return f"{value:.1%}" if value < 1 else f"{value:.2f}x"


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(value) for value in row] for row in rows]
    widths = [max([len(column), *(len(row[index]) for row in cells)]) for index, column in enumerate(columns)]
    line = "  ".join("-" * width for width in widths)
    print(f"\n{title}", flush=True)
    print("  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)))
    print(line)
    for row in cells:
        print(
            "  ".join(
                value.rjust(width) if index else value.ljust(width)
                for index, (value, width) in enumerate(zip(row, widths, strict=True))
            )
        )
    print(flush=True)


def note(text: str) -> None:
    print(f"  . {text}", file=sys.stderr, flush=True)


class CpuMeter:
    """CPU each named process used over a phase, in cores (1.0 = one core busy all the time)."""

    def __init__(self, pids: dict[str, int], *, with_children: Sequence[str] = ()) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        # Names whose child processes count too (ingest with several workers).
        self.with_children = set(with_children)
        self.started_at = 0.0
        self.started: dict[str, float] = {}
        self.machine_started = 0.0

    @staticmethod
    def _own_seconds(process: psutil.Process) -> float:
        try:
            times = process.cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    def _seconds(self, name: str) -> float:
        process = self.processes[name]
        total = self._own_seconds(process)
        if name in self.with_children:
            with contextlib.suppress(psutil.Error):
                total += sum(self._own_seconds(child) for child in process.children(recursive=True))
        return total

    def start(self) -> CpuMeter:
        self.started_at = time.monotonic()
        self.started = {name: self._seconds(name) for name in self.processes}
        self.machine_started = self._machine_busy()
        return self

    @staticmethod
    def _machine_busy() -> float:
        # Everything but idle and iowait, summed over cores: loopback networking shows up here, not per process.
        times = psutil.cpu_times()
        return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))

    def stop(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self.started_at, 1e-9)
        cores = {name: (self._seconds(name) - self.started[name]) / elapsed for name in self.processes}
        cores["machine"] = (self._machine_busy() - self.machine_started) / elapsed
        return cores


def describe_cpu(cores: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.2f}" for name, value in cores.items())


# --------------------------------------------------------------------------- processes


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, characters: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-characters:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise BenchmarkFailed(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
                try:
                    if client.get(f"{self.base_url}/readyz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        raise BenchmarkFailed(f"{self.name} not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        stop_process(self.process, timeout=30.0)


class Workspace:
    """Embedded servers and service processes for one benchmark; `with` stops them all."""

    def __init__(self, name: str, *, redis: bool = False) -> None:
        self.name = name
        self.wants_redis = redis
        self.folder = Path(tempfile.mkdtemp(prefix=f"michi-bench-{name}-"))
        self.home = self.folder / ".michi"
        self.kafka = KafkaBroker(self.folder / "kafka", port=free_port(), controller_port=free_port())
        self.redis: RedisServer | None = None
        self.services: list[ServiceProcess] = []
        self._stack = contextlib.ExitStack()

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.home / 'michi.db'}"

    def __enter__(self) -> Workspace:
        try:
            self._stack.callback(shutil.rmtree, self.folder, True)
            note(f"{self.name}: starting Kafka and {'redis-server' if self.wants_redis else 'no Redis'}")
            self._stack.callback(self.kafka.stop)
            self.kafka.start()
            if self.wants_redis:
                self.redis = RedisServer(self.folder / "redis", port=free_port())
                self._stack.callback(self.redis.stop)
                self.redis.start()
            ensure_topics(self.bootstrap, PREFIX)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        # Ctrl-C a second time while stopping must not leave processes behind.
        with contextlib.suppress(KeyboardInterrupt):
            self._stack.close()

    def environment(self) -> dict[str, str]:
        environment = {
            **os.environ,
            "MICHI_HOME": str(self.home),
            "MICHI_KAFKA_BOOTSTRAP": self.bootstrap,
            "MICHI_DATABASE_URL": self.database_url,
            "MICHI_TOPIC_PREFIX": PREFIX,
            "MICHI_LOG_LEVEL": "WARNING",
        }
        if self.redis is not None:
            environment["MICHI_REDIS_URL"] = self.redis.url
        return environment

    def start_service(
        self,
        name: str,
        port_variable: str,
        *,
        ready_timeout: float = 120.0,
        environment: dict[str, str] | None = None,
    ) -> ServiceProcess:
        port = free_port()
        log_path = self.home / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                cwd=REPOSITORY,
                env={**self.environment(), **(environment or {}), port_variable: str(port)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        service = ServiceProcess(name, process, f"http://127.0.0.1:{port}", log_path)
        self.services.append(service)
        self._stack.callback(service.stop)
        note(f"{self.name}: waiting for {name} /readyz")
        service.wait_ready(ready_timeout)
        return service

    def pids(self) -> dict[str, int]:
        found = {service.name: service.pid for service in self.services}
        if self.kafka.pid is not None:
            found["kafka"] = self.kafka.pid
        if self.redis is not None and self.redis.pid is not None:
            found["redis"] = self.redis.pid
        found["benchmark"] = os.getpid()
        return found


# --------------------------------------------------------------------------- uploads


def simulated_uploads(count: int, *, devices: int, event_rate_per_10min: float = 3.0) -> list[upload_pb2.Upload]:
    """`count` simulator uploads (10 s at 50 Hz) that started recently (ingest refuses week-old ones)."""
    duration = max(60.0, count / devices * 10.0 * 1.4)
    while True:
        config = SimulationConfig(
            devices=devices,
            duration_s=duration,
            start_time=time.time() - duration - 60.0,
            event_rate_per_10min=event_rate_per_10min,
        )
        uploads: list[upload_pb2.Upload] = []
        for upload in FleetSimulator(config, road_map=RoadMap.default()).uploads():
            uploads.append(upload)
            if len(uploads) == count:
                return uploads
        duration *= 1.5


def upload_received(upload: upload_pb2.Upload) -> upload_pb2.UploadReceived:
    """The event ingest would publish for `upload` (the inference benchmark skips ingest)."""
    received = upload_pb2.UploadReceived(
        event_id=stable_event_id("upload", upload.upload_id),
        upload=upload,
        lineage=common_pb2.Lineage(
            upload_id=upload.upload_id,
            trip_id=upload.trip_id,
            device_id=upload.device_id,
            driver_id=upload.driver_id,
        ),
    )
    received.occurred_at.CopyFrom(upload.started_at)
    received.received_at.GetCurrentTime()
    return received


@dataclass(frozen=True)
class Request:
    upload_id: str
    device_id: str
    body: bytes
    content_type: str


class UploadBodies:
    """An endless supply of distinct uploads: the simulator's, then clones with fresh upload and trip ids.

    Ingest deduplicates by upload_id, so a benchmark never sends the same id twice; a clone swaps
    the ids inside the serialized bytes (same length, so protobuf and JSON stay valid) in microseconds.
    """

    def __init__(self, uploads: Sequence[upload_pb2.Upload], *, salt: str = "") -> None:
        if not uploads:
            raise ValueError("no uploads")
        for upload in uploads:
            if len(upload.upload_id) != UUID_LENGTH or len(upload.trip_id) != UUID_LENGTH:
                raise ValueError("simulator ids are expected to be UUID strings")
        self.uploads = list(uploads)
        self.bodies = {
            PROTOBUF: [upload.SerializeToString() for upload in uploads],
            JSON: [MessageToJson(upload).encode() for upload in uploads],
        }
        self.sent = 0
        # A salt (one per client process) gives clones of its own, including the first round.
        self.salt = salt

    def next(self, content_type: str) -> Request:
        index = self.sent % len(self.uploads)
        generation = self.sent // len(self.uploads)
        self.sent += 1
        upload = self.uploads[index]
        body = self.bodies[content_type][index]
        if generation == 0 and not self.salt:
            return Request(upload.upload_id, upload.device_id, body, content_type)
        salt = f"{self.salt}/" if self.salt else ""
        upload_id = str(uuid.uuid5(CLONE_NAMESPACE, f"{upload.upload_id}/{salt}{generation}"))
        trip_id = str(uuid.uuid5(CLONE_NAMESPACE, f"{upload.trip_id}/{salt}{generation}"))
        body = body.replace(upload.upload_id.encode(), upload_id.encode()).replace(
            upload.trip_id.encode(), trip_id.encode()
        )
        return Request(upload_id, upload.device_id, body, content_type)


def register_devices(workspace: Workspace, device_ids: set[str]) -> dict[str, str]:
    """A token per device, in the workspace's device registry (what `michi devices add` does)."""
    from services.ingest.settings import IngestSettings
    from services.ingest.wiring import device_registry

    registry = device_registry(IngestSettings(database_url=workspace.database_url, home=workspace.home))
    try:
        return {device_id: registry.add_device(device_id) for device_id in sorted(device_ids)}
    finally:
        registry.close()


# --------------------------------------------------------------------------- HTTP load


@dataclass
class LoadResult:
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    # upload_id -> wall-clock time the POST was sent (time.time()), accepted uploads only.
    sent_at: dict[str, float] = field(default_factory=dict)
    # Refusal reasons, when the generator sees them (gRPC acknowledgements).
    reasons: Counter[str] = field(default_factory=Counter)
    # CPU seconds the load generator used (0 when it ran in the benchmark's own process).
    client_cpu_s: float = 0.0
    # Percentiles reported by a generator that does not return every latency (wrk).
    percentiles_s: dict[float, float] = field(default_factory=dict)

    @property
    def accepted(self) -> int:
        return self.statuses[202]

    @property
    def rate(self) -> float:
        return self.accepted / self.elapsed_s if self.elapsed_s else 0.0

    def percentile(self, fraction: float) -> float:
        if fraction in self.percentiles_s:
            return self.percentiles_s[fraction]
        return percentile(self.latencies_s, fraction)


def _client(concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0))


async def _post(
    client: httpx.AsyncClient, url: str, request: Request, tokens: dict[str, str], result: LoadResult
) -> None:
    headers = {"Authorization": f"Bearer {tokens[request.device_id]}", "Content-Type": request.content_type}
    sent_wall = time.time()
    began = time.perf_counter()
    try:
        response = await client.post(url, content=request.body, headers=headers)
        status = response.status_code
    except httpx.HTTPError:
        status = 0
    result.latencies_s.append(time.perf_counter() - began)
    result.statuses[status] += 1
    if status == 202:
        result.sent_at[request.upload_id] = sent_wall


async def closed_loop(
    base_url: str,
    supply: Callable[[], Request],
    tokens: dict[str, str],
    *,
    concurrency: int,
    duration_s: float,
) -> LoadResult:
    """`concurrency` clients, each sending its next upload as soon as the previous one was answered."""
    result = LoadResult()
    url = f"{base_url}/v1/uploads"
    async with _client(concurrency) as client:
        began = time.perf_counter()
        deadline = began + duration_s

        async def worker() -> None:
            while time.perf_counter() < deadline:
                await _post(client, url, supply(), tokens, result)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.elapsed_s = time.perf_counter() - began
    return result


async def open_loop(
    base_url: str,
    supply: Callable[[], Request],
    tokens: dict[str, str],
    *,
    rate: float,
    duration_s: float,
    max_in_flight: int = 256,
) -> LoadResult:
    """Uploads sent at a fixed `rate` per second whatever the answers' latency (bounded in flight)."""
    result = LoadResult()
    url = f"{base_url}/v1/uploads"
    total = max(1, round(rate * duration_s))
    async with _client(max_in_flight) as client:
        began = time.perf_counter()
        tasks = []
        for index in range(total):
            delay = began + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_post(client, url, supply(), tokens, result)))
        await asyncio.gather(*tasks)
        result.elapsed_s = time.perf_counter() - began
    return result


# --------------------------------------------------------------------------- reading topics


def topic_size(bootstrap: str, topic: str) -> int:
    return sum(end_offsets(bootstrap, topic, timeout=10).values())


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def read_records(
    bootstrap: str, topic: str, start_offsets: dict[int, int] | None = None
) -> Iterator[tuple[int, bytes, bytes]]:
    """(Kafka timestamp in ms, key, value) of every record from `start_offsets` (default: the beginning) to the end."""
    ends = end_offsets(bootstrap, topic, timeout=10)
    starts = start_offsets or {}
    remaining = {partition: end for partition, end in ends.items() if end > starts.get(partition, 0)}
    if not remaining:
        return
    consumer = Consumer(
        KafkaConnection.plain(bootstrap).confluent_config(
            {
                "group.id": f"michi-bench-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
            }
        )
    )
    try:
        consumer.assign([TopicPartition(topic, partition, starts.get(partition, 0)) for partition in remaining])
        deadline = time.monotonic() + 120
        while remaining and time.monotonic() < deadline:
            for record in consumer.consume(1000, 1.0):
                if record.error():
                    continue
                partition, offset = record.partition() or 0, record.offset() or 0
                yield record.timestamp()[1], record.key() or b"", record.value() or b""
                if partition in remaining and offset + 1 >= remaining[partition]:
                    del remaining[partition]
    finally:
        consumer.close()
