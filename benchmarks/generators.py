"""Load generators of the ingest benchmark, kept out of the benchmark's own process.

On two cores a Python client costs as much CPU per request as ingest, so the load comes from:

- HTTP: `wrk` (C, epoll) with `benchmarks/wrk_uploads.lua` posting pre-built protobuf or JSON bodies
  with fresh upload ids, when `wrk` is installed (`apt-get install wrk`); otherwise `httpx` clients
  split over several processes.
- gRPC: `michi.v1.Ingest/StreamUploads`, each device stream keeping the server's in-flight window of
  uploads unacknowledged: from `benchmarks/grpc_load` (Go, built on first use into
  `$MICHI_CACHE_DIR/bin`) when a Go toolchain is installed, otherwise over `grpc.aio` with the
  streams split over several processes.

Every generator returns a `LoadResult` (its CPU in `client_cpu_s`) measured over the same phase.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.json_format import MessageToJson

from benchmarks.harness import JSON, PROTOBUF, UUID_LENGTH, LoadResult, UploadBodies, closed_loop
from michi.contracts.v1 import upload_pb2
from michi.infra.kafka import cache_root

Job = TypeVar("Job")

WRK_SCRIPT = Path(__file__).with_name("wrk_uploads.lua")
GO_LOAD_SOURCE = Path(__file__).with_name("grpc_load")
# Where `go` is when it is not on PATH (the official tarball's place).
GO_FALLBACK = Path("/usr/local/go/bin/go")
STREAM_METHOD = "/michi.v1.Ingest/StreamUploads"
# UploadAck outcomes (michi.v1.UploadOutcome) counted as the HTTP statuses they stand for.
ACK_STATUSES = {1: 202, 2: 200, 3: 400}


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def _spawn_pool(processes: int) -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))


def _merge(results: Sequence[LoadResult]) -> LoadResult:
    merged = LoadResult()
    for result in results:
        merged.elapsed_s = max(merged.elapsed_s, result.elapsed_s)
        merged.latencies_s.extend(result.latencies_s)
        merged.statuses.update(result.statuses)
        merged.reasons.update(result.reasons)
        merged.client_cpu_s += result.client_cpu_s
    return merged


def _wait_until(start_at: float) -> None:
    # Every client process starts its phase at the same wall-clock time, after its imports.
    time.sleep(max(0.0, start_at - time.time()))


def _run_jobs(
    job: Callable[[Job], LoadResult], jobs: Sequence[Job], start_at: float, on_start: Callable[[], object]
) -> LoadResult:
    with _spawn_pool(len(jobs)) as pool:
        futures = [pool.submit(job, each) for each in jobs]
        _wait_until(start_at)
        on_start()
        return _merge([future.result() for future in futures])


# --------------------------------------------------------------------------- HTTP: wrk


def id_offsets(body: bytes, upload: upload_pb2.Upload) -> dict[str, int]:
    """Where the upload id and the trip id sit in `body` (0-based), for generators that swap in fresh ones."""
    offsets = {}
    for kind, value in (("upload", upload.upload_id), ("trip", upload.trip_id)):
        encoded = value.encode()
        if len(encoded) != UUID_LENGTH or body.count(encoded) != 1:
            raise ValueError(f"{kind} id of {upload.upload_id} is not one {UUID_LENGTH}-byte string in the body")
        offsets[kind] = body.index(encoded)
    return offsets


def write_wrk_manifest(
    folder: Path, uploads: Sequence[upload_pb2.Upload], tokens: dict[str, str], content_type: str
) -> Path:
    """One body file per upload and the Lua manifest naming them and where their ids sit."""
    folder.mkdir(parents=True, exist_ok=True)
    trips: dict[str, int] = {}
    lines = ["return {"]
    for index, upload in enumerate(uploads):
        body = MessageToJson(upload).encode() if content_type == JSON else upload.SerializeToString()
        path = folder / f"upload-{index}.body"
        path.write_bytes(body)
        # Lua counts from 1.
        places = sorted((at + 1, kind) for kind, at in id_offsets(body, upload).items())
        trip = trips.setdefault(upload.trip_id, len(trips))
        ids = ", ".join(f'{{at = {at}, kind = "{kind}"}}' for at, kind in places)
        lines.append(
            f'  {{path = "{path}", content_type = "{content_type}", token = "{tokens[upload.device_id]}", trip = {trip}, ids = {{{ids}}}}},'
        )
    lines.append("}")
    manifest = folder / "manifest.lua"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def wrk_load(
    url: str,
    manifest: Path,
    *,
    connections: int,
    threads: int,
    duration_s: float,
    run_number: int,
    on_start: Callable[[], object] = lambda: None,
) -> LoadResult:
    """`connections` keep-alive connections posting the manifest's uploads for `duration_s` (closed loop)."""
    figures, result = _run_generator(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration_s))}s",
            "--timeout",
            "30s",
            "-s",
            str(WRK_SCRIPT),
            url,
            "--",
            str(manifest),
            str(run_number),
        ],
        timeout_s=duration_s + 60,
        on_start=on_start,
    )
    if figures["socket_errors"]:
        result.statuses[0] += figures["socket_errors"]
    return result


def _run_generator(
    command: list[str], *, timeout_s: float, on_start: Callable[[], object], environment: dict[str, str] | None = None
) -> tuple[dict[str, Any], LoadResult]:
    """Run a generator that prints one JSON line of figures (duration_us, statuses, p50_us, p99_us) at the end.

    Its CPU comes from the children's rusage around the run. Such generators report percentiles, not
    every latency: the two figures stand for the distribution.
    """
    on_start()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout_s, env=environment)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(
            f"{Path(command[0]).name} failed ({completed.returncode}): {completed.stderr[-500:]}{completed.stdout[-500:]}"
        )
    figures: dict[str, Any] = json.loads(lines[-1])
    result = LoadResult(elapsed_s=figures["duration_us"] / 1e6)
    result.statuses.update({int(status): count for status, count in figures["statuses"].items()})
    result.percentiles_s = {0.5: figures["p50_us"] / 1e6, 0.99: figures["p99_us"] / 1e6}
    result.client_cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return figures, result


# --------------------------------------------------------------------------- HTTP: httpx in processes


@dataclass(frozen=True)
class HttpJob:
    base_url: str
    uploads: list[bytes]
    tokens: dict[str, str]
    content_type: str
    concurrency: int
    duration_s: float
    salt: str
    start_at: float


def _http_job(job: HttpJob) -> LoadResult:
    uploads = [upload_pb2.Upload.FromString(body) for body in job.uploads]
    bodies = UploadBodies(uploads, salt=job.salt)
    _wait_until(job.start_at)
    began = time.process_time()
    result = asyncio.run(
        closed_loop(
            job.base_url,
            lambda: bodies.next(job.content_type),
            job.tokens,
            concurrency=job.concurrency,
            duration_s=job.duration_s,
        )
    )
    result.client_cpu_s = time.process_time() - began
    result.sent_at.clear()
    return result


def httpx_load(
    base_url: str,
    uploads: Sequence[upload_pb2.Upload],
    tokens: dict[str, str],
    *,
    content_type: str,
    concurrency: int,
    processes: int,
    duration_s: float,
    salt: str,
    on_start: Callable[[], object] = lambda: None,
) -> LoadResult:
    """`concurrency` httpx clients split over `processes` processes (each its own upload ids)."""
    serialized = [upload.SerializeToString() for upload in uploads]
    start_at = time.time() + 4.0
    jobs = [
        HttpJob(
            base_url,
            serialized,
            tokens,
            content_type,
            concurrency // processes + (1 if index < concurrency % processes else 0),
            duration_s,
            f"{salt}/{index}",
            start_at,
        )
        for index in range(processes)
    ]
    return _run_jobs(_http_job, jobs, start_at, on_start)


# --------------------------------------------------------------------------- gRPC streams


@dataclass(frozen=True)
class StreamJob:
    target: str
    # One (token, that device's serialized uploads) per stream.
    streams: list[tuple[str, list[bytes]]]
    window: int
    duration_s: float
    salt: str
    start_at: float


async def _one_stream(
    channel_target: str,
    token: str,
    bodies: UploadBodies,
    window: int,
    deadline: float,
    result: LoadResult,
) -> None:
    import grpc

    from michi.contracts.v1 import ingest_pb2

    async with grpc.aio.insecure_channel(channel_target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        method = channel.stream_stream(STREAM_METHOD, response_deserializer=ingest_pb2.UploadAck.FromString)
        call = method(metadata=(("authorization", f"Bearer {token}"),))
        slots = asyncio.Semaphore(window)
        sent: collections.deque[float] = collections.deque()

        async def write() -> None:
            while time.perf_counter() < deadline:
                await slots.acquire()
                body = bodies.next(PROTOBUF).body
                sent.append(time.perf_counter())
                await call.write(body)
            await call.done_writing()

        writer = asyncio.create_task(write())
        try:
            async for ack in call:
                result.latencies_s.append(time.perf_counter() - sent.popleft())
                result.statuses[ACK_STATUSES.get(ack.outcome, 0)] += 1
                if ack.reason:
                    result.reasons[ack.reason] += 1
                slots.release()
        finally:
            writer.cancel()


def _stream_job(job: StreamJob) -> LoadResult:
    streams = [
        (token, UploadBodies([upload_pb2.Upload.FromString(body) for body in bodies], salt=f"{job.salt}/{index}"))
        for index, (token, bodies) in enumerate(job.streams)
    ]
    _wait_until(job.start_at)
    began_cpu = time.process_time()
    result = LoadResult()

    async def main() -> None:
        began = time.perf_counter()
        deadline = began + job.duration_s
        await asyncio.gather(
            *(_one_stream(job.target, token, bodies, job.window, deadline, result) for token, bodies in streams)
        )
        result.elapsed_s = time.perf_counter() - began

    asyncio.run(main())
    result.client_cpu_s = time.process_time() - began_cpu
    return result


def device_streams(uploads: Sequence[upload_pb2.Upload], streams: int) -> dict[str, list[upload_pb2.Upload]]:
    """The uploads of the first `streams` devices (by id), one device per stream."""
    by_device: dict[str, list[upload_pb2.Upload]] = collections.defaultdict(list)
    for upload in uploads:
        by_device[upload.device_id].append(upload)
    devices = sorted(by_device)[:streams]
    if len(devices) < streams:
        raise ValueError(f"{streams} streams need {streams} devices; the uploads have {len(devices)}")
    return {device: by_device[device] for device in devices}


def grpc_stream_load(
    target: str,
    uploads: Sequence[upload_pb2.Upload],
    tokens: dict[str, str],
    *,
    streams: int,
    window: int,
    processes: int,
    duration_s: float,
    salt: str,
    on_start: Callable[[], object] = lambda: None,
) -> LoadResult:
    """`streams` device streams (one device each, its own connection) split over `processes` processes."""
    by_device = device_streams(uploads, streams)
    devices = sorted(by_device)
    start_at = time.time() + 4.0
    jobs = [
        StreamJob(
            target,
            [
                (tokens[device], [upload.SerializeToString() for upload in by_device[device]])
                for device in devices[index::processes]
            ],
            window,
            duration_s,
            f"{salt}/{index}",
            start_at,
        )
        for index in range(processes)
    ]
    return _run_jobs(_stream_job, jobs, start_at, on_start)


# --------------------------------------------------------------------------- gRPC: the Go generator


def go_load_binary() -> Path | None:
    """`benchmarks/grpc_load` built for this machine (rebuilt when its source changed); None without Go."""
    go = shutil.which("go") or (str(GO_FALLBACK) if GO_FALLBACK.exists() else None)
    if go is None:
        return None
    digest = hashlib.sha256()
    for path in [*sorted(GO_LOAD_SOURCE.glob("*.go")), GO_LOAD_SOURCE / "go.mod", GO_LOAD_SOURCE / "go.sum"]:
        digest.update(path.read_bytes())
    binary = cache_root() / "bin" / f"michi-grpc-load-{digest.hexdigest()[:16]}"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    completed = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=GO_LOAD_SOURCE,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"go build of {GO_LOAD_SOURCE} failed: {completed.stderr[-1000:]}")
    return binary


def go_stream_load(
    binary: Path,
    target: str,
    uploads: Sequence[upload_pb2.Upload],
    tokens: dict[str, str],
    folder: Path,
    *,
    streams: int,
    window: int,
    duration_s: float,
    run_number: int,
    on_start: Callable[[], object] = lambda: None,
) -> LoadResult:
    """`streams` device streams (one device each, its own connection) from one Go process."""
    by_device = device_streams(uploads, streams)
    folder.mkdir(parents=True, exist_ok=True)
    trips: dict[str, int] = {}
    plan: list[dict[str, object]] = []
    for device, device_uploads in sorted(by_device.items()):
        entries = []
        for upload in device_uploads:
            body = upload.SerializeToString()
            path = folder / f"{upload.upload_id}.body"
            path.write_bytes(body)
            offsets = id_offsets(body, upload)
            entries.append(
                {
                    "path": str(path),
                    "upload_at": offsets["upload"],
                    "trip_at": offsets["trip"],
                    "trip": trips.setdefault(upload.trip_id, len(trips)),
                }
            )
        plan.append({"token": tokens[device], "uploads": entries})
    manifest = folder / f"manifest-{run_number}.json"
    manifest.write_text(
        json.dumps({"target": target, "window": window, "duration_s": duration_s, "run": run_number, "streams": plan})
    )
    figures, result = _run_generator(
        [str(binary), str(manifest)],
        timeout_s=duration_s + 120,
        on_start=on_start,
        environment={**os.environ, "GOMAXPROCS": "2"},
    )
    if figures["errors"]:
        raise RuntimeError(f"grpc_load: {len(figures['errors'])} stream errors, first: {figures['errors'][0]}")
    result.reasons.update(figures["reasons"])
    return result
