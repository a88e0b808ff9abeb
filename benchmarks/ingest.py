"""Ingest throughput and latency over HTTP and the gRPC stream, against a raw confluent-kafka producer.

    .venv/bin/python -m benchmarks ingest [--quick] [--ingest-workers N]

A real `python -m services.ingest` (uvicorn + grpc.aio, auth, Redis rate limits and claims, SQLite
registry, Kafka acks=all) receives 10 s / 50 Hz simulator uploads, every upload id distinct: over
HTTP as protobuf then JSON bodies (32 connections from wrk, or httpx in 2 processes without it), then
over `StreamUploads` (16 device streams, each keeping the server's window of 8 uploads in flight,
the Go client in `benchmarks/grpc_load/` when Go is installed, else grpc.aio in 2 processes). See `benchmarks/generators.py`; the generator's CPU is printed. The baseline sends the bytes ingest publishes (the
serialized `UploadReceived`) with a bare confluent-kafka producer (idempotent, acks=all, same
settings as `EventProducer`) to an uploads topic of its own in the same broker.

Before the loads, with a fresh process, `benchmarks/media.py` PUTs 10 MiB clips and reads ingest's peak
resident memory (one worker only: with several, the process is a supervisor).

The framework floors (`benchmarks/floors.py`) take the same HTTP and gRPC loads with nothing behind
the door (parse the upload, answer): the most this machine gives those frameworks and generators.
The I/O floors add, per upload, only the Redis and Kafka work no ingest can skip (rate-limit token,
idempotency claim, publish with acks=all, settlement) with ingest's adapters: the most any ingest
written on grpc.aio, redis-py and confluent-kafka could reach here, before authentication,
validation, the raw archive, tracing and metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, Producer
from confluent_kafka import Message as KafkaMessage

from benchmarks.floors import GRPC, GRPC_IO, HTTP, HTTP_IO, floor_server
from benchmarks.generators import (
    go_load_binary,
    go_stream_load,
    grpc_stream_load,
    httpx_load,
    write_wrk_manifest,
    wrk_available,
    wrk_load,
)
from benchmarks.harness import (
    JSON,
    PREFIX,
    PROTOBUF,
    CpuMeter,
    LoadResult,
    Workspace,
    describe_cpu,
    milliseconds,
    note,
    percentile,
    print_table,
    ratio,
    register_devices,
    simulated_uploads,
    upload_received,
)
from benchmarks.media import MEBIBYTE, MediaFigures, measure_media
from michi.bus.admin import ensure_topics
from michi.bus.catalog import UPLOADS
from michi.bus.connection import KafkaConnection
from michi.bus.headers import build_headers
from michi.infra.processes import free_port

RAW_PREFIX = "bench-raw."
CONCURRENCY = 32
WRK_THREADS = 2
# Client processes of the Python generators (httpx without wrk, grpc.aio always).
CLIENT_PROCESSES = 2
# Device streams on StreamUploads, each keeping the server's in-flight window (ingest_grpc_stream_window) busy.
STREAMS = 16
STREAM_WINDOW = 8
# Ingest processes on the shared ports (MICHI_INGEST_WORKERS); `--ingest-workers` overrides it.
DEFAULT_WORKERS = 1
# HTTP load before the measured phases.
WARM_UP_S = 10.0
# 10 MiB clips PUT in the media phase.
MEDIA_CLIPS = 5


@dataclass
class RawResult:
    sent: int
    elapsed_s: float
    latencies_s: list[float]

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s else 0.0


@dataclass
class IngestFigures:
    protobuf: LoadResult
    json: LoadResult
    stream: LoadResult
    raw_flood: RawResult
    raw_window: RawResult
    http_floor: LoadResult
    grpc_floor: LoadResult
    http_io_floor: LoadResult
    grpc_io_floor: LoadResult
    media: MediaFigures | None


def raw_produce(
    bootstrap: str, payloads: list[tuple[bytes, bytes]], *, duration_s: float, in_flight: int | None
) -> RawResult:
    """Send `payloads` (key, value) round and round for `duration_s`; `in_flight` bounds unacknowledged ones."""
    producer = Producer(
        KafkaConnection.plain(bootstrap).confluent_config(
            {
                "client.id": "michi-bench-raw",
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 2,
                "compression.type": "none",
                "max.in.flight.requests.per.connection": 5,
            }
        )
    )
    topic = UPLOADS.name(RAW_PREFIX)
    headers: list[tuple[str, str | bytes | None]] = list(build_headers(UPLOADS.schema))
    latencies: list[float] = []
    failures = 0

    def delivered_at(sent: float) -> Callable[[KafkaError | None, KafkaMessage], None]:
        def delivered(error: KafkaError | None, record: KafkaMessage) -> None:
            nonlocal failures
            if error is not None:
                failures += 1
            else:
                latencies.append(time.perf_counter() - sent)

        return delivered

    sent = 0
    began = time.perf_counter()
    deadline = began + duration_s
    while time.perf_counter() < deadline:
        if in_flight is not None and sent - len(latencies) - failures >= in_flight:
            producer.poll(0.001)
            continue
        key, value = payloads[sent % len(payloads)]
        try:
            producer.produce(
                topic, value=value, key=key, headers=headers, on_delivery=delivered_at(time.perf_counter())
            )  # type: ignore[arg-type]
        except BufferError:
            producer.poll(0.01)
            continue
        sent += 1
        producer.poll(0)
    producer.flush(60)
    elapsed = time.perf_counter() - began
    return RawResult(len(latencies), elapsed, latencies)


def run(*, quick: bool = False, workers: int | None = None) -> IngestFigures:
    phase_s = 4.0 if quick else 20.0
    workers = workers or DEFAULT_WORKERS
    use_wrk = wrk_available()
    generator = (
        f"wrk ({WRK_THREADS} threads, {CONCURRENCY} connections, Lua rotating pre-built bodies)"
        if use_wrk
        else f"httpx in {CLIENT_PROCESSES} processes ({CONCURRENCY} clients; install wrk for a cheaper one)"
    )
    go_binary = go_load_binary()
    stream_generator = (
        f"benchmarks/grpc_load (Go), {STREAMS} device streams"
        if go_binary is not None
        else f"grpc.aio in {CLIENT_PROCESSES} processes, {STREAMS} device streams (install Go for a cheaper one)"
    )
    with Workspace("ingest", redis=True) as workspace:
        uploads = simulated_uploads(300 if quick else 1500, devices=40)
        tokens = register_devices(workspace, {upload.device_id for upload in uploads})
        grpc_port = free_port()
        ingest = workspace.start_service(
            "ingest",
            "MICHI_INGEST_HTTP_PORT",
            environment={
                "MICHI_INGEST_GRPC_PORT": str(grpc_port),
                "MICHI_INGEST_WORKERS": str(workers),
                # Rate limits stay on (one Redis script per upload) but high enough never to refuse here.
                "MICHI_INGEST_DEVICE_RATE_PER_S": "1000000",
                "MICHI_INGEST_DEVICE_BURST": "1000000",
                "MICHI_INGEST_GLOBAL_RATE_PER_S": "1000000",
            },
        )
        meter = CpuMeter(workspace.pids(), with_children=["ingest"])
        manifests = (
            {
                content_type: write_wrk_manifest(workspace.folder / f"wrk-{name}", uploads, tokens, content_type)
                for name, content_type in (("protobuf", PROTOBUF), ("json", JSON))
            }
            if use_wrk
            else {}
        )
        salts = iter(range(1_000_000))

        def http_load(
            content_type: str, duration: float, base_url: str | None = None
        ) -> tuple[LoadResult, dict[str, float]]:
            base_url = base_url or ingest.base_url
            if use_wrk:
                result = wrk_load(
                    f"{base_url}/v1/uploads",
                    manifests[content_type],
                    connections=CONCURRENCY,
                    threads=WRK_THREADS,
                    duration_s=duration,
                    run_number=next(salts),
                    on_start=meter.start,
                )
            else:
                result = httpx_load(
                    base_url,
                    uploads,
                    tokens,
                    content_type=content_type,
                    concurrency=CONCURRENCY,
                    processes=CLIENT_PROCESSES,
                    duration_s=duration,
                    salt=f"http-{next(salts)}",
                    on_start=meter.start,
                )
            return result, _with_client(meter.stop(), result)

        def stream_load(duration: float, port: int = grpc_port) -> tuple[LoadResult, dict[str, float]]:
            if go_binary is not None:
                result = go_stream_load(
                    go_binary,
                    f"127.0.0.1:{port}",
                    uploads,
                    tokens,
                    workspace.folder / "grpc-load",
                    streams=STREAMS,
                    window=STREAM_WINDOW,
                    duration_s=duration,
                    run_number=next(salts),
                    on_start=meter.start,
                )
                return result, _with_client(meter.stop(), result)
            result = grpc_stream_load(
                f"127.0.0.1:{port}",
                uploads,
                tokens,
                streams=STREAMS,
                window=STREAM_WINDOW,
                processes=CLIENT_PROCESSES,
                duration_s=duration,
                salt=f"grpc-{next(salts)}",
                on_start=meter.start,
            )
            return result, _with_client(meter.stop(), result)

        note(f"ingest: {workers} worker(s); HTTP load from {generator}")
        media: MediaFigures | None = None
        if workers == 1:
            note(f"ingest: media, {MEDIA_CLIPS} clips of 10 MiB, one after another")
            media = measure_media(
                ingest.base_url,
                next(iter(tokens.values())),
                workspace.pids()["ingest"],
                workspace.folder / "media-baseline",
                clips=MEDIA_CLIPS,
            )
        # Long enough for the broker's JIT and ingest's first batches to settle: the phases measure the
        # sustained rate (the first 20 s phase after a 3 s warm-up ran up to 30% slower than a later one).
        note("ingest: warm-up")
        http_load(PROTOBUF, 1.0 if quick else WARM_UP_S)
        note(f"ingest: HTTP protobuf bodies, {phase_s:.0f} s")
        protobuf, protobuf_cpu = http_load(PROTOBUF, phase_s)
        note(f"ingest: HTTP JSON bodies, {phase_s:.0f} s")
        json_result, json_cpu = http_load(JSON, phase_s)
        note(f"ingest: gRPC StreamUploads, {STREAMS} streams x {STREAM_WINDOW} in flight, {phase_s:.0f} s")
        stream, stream_cpu = stream_load(phase_s)
        ingest.stop()

        meter_pids = {name: pid for name, pid in workspace.pids().items() if name != "ingest"}
        note(f"ingest: framework floor, uvicorn app that parses and answers 202, {phase_s / 2:.0f} s")
        with floor_server(HTTP) as (floor_port, floor_pid):
            meter = CpuMeter({"floor": floor_pid, **meter_pids})
            http_floor, http_floor_cpu = http_load(PROTOBUF, phase_s / 2, f"http://127.0.0.1:{floor_port}")
        note(f"ingest: framework floor, grpc.aio StreamUploads that parses and acknowledges, {phase_s / 2:.0f} s")
        with floor_server(GRPC) as (floor_port, floor_pid):
            meter = CpuMeter({"floor": floor_pid, **meter_pids})
            grpc_floor, grpc_floor_cpu = stream_load(phase_s / 2, floor_port)
        assert workspace.redis is not None
        io_arguments = (workspace.bootstrap, workspace.redis.url, PREFIX, STREAM_WINDOW)
        note(f"ingest: I/O floor, the HTTP app with ingest's Redis and Kafka work only, {phase_s / 2:.0f} s")
        with floor_server(HTTP_IO, *io_arguments, processes=workers) as (floor_port, floor_pid):
            meter = CpuMeter({"floor": floor_pid, **meter_pids}, with_children=["floor"])
            # The producer's first connection and idempotence id, the broker's first batches of this client.
            http_load(PROTOBUF, WARM_UP_S / 5, f"http://127.0.0.1:{floor_port}")
            http_io_floor, http_io_floor_cpu = http_load(PROTOBUF, phase_s / 2, f"http://127.0.0.1:{floor_port}")
        note(f"ingest: I/O floor, the gRPC stream with ingest's Redis and Kafka work only, {phase_s / 2:.0f} s")
        with floor_server(GRPC_IO, *io_arguments, processes=workers) as (floor_port, floor_pid):
            meter = CpuMeter({"floor": floor_pid, **meter_pids}, with_children=["floor"])
            stream_load(WARM_UP_S / 5, floor_port)
            grpc_io_floor, grpc_io_floor_cpu = stream_load(phase_s / 2, floor_port)

        ensure_topics(workspace.bootstrap, RAW_PREFIX, [UPLOADS])
        payloads = [(upload.device_id.encode(), upload_received(upload).SerializeToString()) for upload in uploads]
        raw_meter = CpuMeter({"kafka": workspace.pids()["kafka"], "benchmark": workspace.pids()["benchmark"]})
        note(f"ingest: raw confluent-kafka producer, unbounded, {phase_s:.0f} s")
        raw_meter.start()
        flood = raw_produce(workspace.bootstrap, payloads, duration_s=phase_s, in_flight=None)
        flood_cpu = raw_meter.stop()
        note(f"ingest: raw producer, {CONCURRENCY} messages in flight, {phase_s / 2:.0f} s")
        window = raw_produce(workspace.bootstrap, payloads, duration_s=phase_s / 2, in_flight=CONCURRENCY)

    size = sum(len(value) for _, value in payloads) / len(payloads)
    named = (("protobuf", protobuf), ("json", json_result), ("grpc stream", stream))
    refused = {
        name: {status: count for status, count in result.statuses.items() if status != 202} for name, result in named
    }
    rows: list[list[object]] = [
        _http_row("ingest HTTP protobuf", protobuf, flood),
        _http_row("ingest HTTP JSON", json_result, flood),
        _http_row(f"ingest gRPC stream ({STREAMS} x {STREAM_WINDOW})", stream, flood),
        _http_row("floor: uvicorn, parse + 202", http_floor, flood),
        _http_row(f"floor: grpc.aio stream ({STREAMS} x {STREAM_WINDOW}), parse + ack", grpc_floor, flood),
        _http_row(f"I/O floor: uvicorn + Redis and Kafka, {workers} process(es)", http_io_floor, flood),
        _http_row(f"I/O floor: grpc.aio stream + Redis and Kafka, {workers} process(es)", grpc_io_floor, flood),
        [
            "raw producer (unbounded)",
            f"{flood.rate:,.0f}",
            milliseconds(percentile(flood.latencies_s, 0.5)),
            milliseconds(percentile(flood.latencies_s, 0.99)),
            "100%",
        ],
        [
            f"raw producer ({CONCURRENCY} in flight)",
            f"{window.rate:,.0f}",
            milliseconds(percentile(window.latencies_s, 0.5)),
            milliseconds(percentile(window.latencies_s, 0.99)),
            ratio(window.rate, flood.rate),
        ],
    ]
    print_table(
        f"ingest: 10 s / 50 Hz uploads ({size / 1024:.1f} KiB UploadReceived), {workers} ingest worker(s)",
        ["path", "msgs/s", "p50 ms", "p99 ms", "vs raw"],
        rows,
    )
    print(f"  HTTP load generator: {generator}")
    print(f"  gRPC load generator: {stream_generator}")
    for name, result, cores in (
        ("HTTP protobuf", protobuf, protobuf_cpu),
        ("HTTP JSON", json_result, json_cpu),
        ("gRPC stream", stream, stream_cpu),
    ):
        per_upload = cores["ingest"] / result.rate * 1000 if result.rate else float("nan")
        print(f"  CPU cores, {name + ':':14} {describe_cpu(cores)}; ingest {per_upload:.2f} ms CPU per upload")
    for name, result, cores in (
        ("HTTP floor", http_floor, http_floor_cpu),
        ("gRPC floor", grpc_floor, grpc_floor_cpu),
        ("HTTP I/O floor", http_io_floor, http_io_floor_cpu),
        ("gRPC I/O floor", grpc_io_floor, grpc_io_floor_cpu),
    ):
        per_upload = cores["floor"] / result.rate * 1000 if result.rate else float("nan")
        print(f"  CPU cores, {name + ':':14} {describe_cpu(cores)}; floor {per_upload:.2f} ms CPU per upload")
    for name, result, floor in (
        ("HTTP protobuf / its framework floor", protobuf, http_floor),
        ("gRPC stream / its framework floor", stream, grpc_floor),
        ("HTTP protobuf / its I/O floor", protobuf, http_io_floor),
        ("gRPC stream / its I/O floor", stream, grpc_io_floor),
    ):
        print(f"  ingest {name}: {ratio(result.rate, floor.rate)}")
    print(f"  CPU cores, raw unbounded:  {describe_cpu(flood_cpu)}")
    if any(refused.values()):
        print(f"  non-202 answers: {refused}")
    if stream.reasons:
        print(f"  gRPC refusal reasons: {dict(stream.reasons)}")
    if media is not None:
        _print_media(media)
    return IngestFigures(
        protobuf, json_result, stream, flood, window, http_floor, grpc_floor, http_io_floor, grpc_io_floor, media
    )


def _print_media(media: MediaFigures) -> None:
    size = media.clip_bytes
    ingest_rate = media.rate_mib_s(media.put_seconds, size)
    baseline_rate = media.rate_mib_s(media.baseline_seconds, size)
    print_table(
        f"ingest media: {len(media.put_seconds)} clips of {size / MEBIBYTE:.0f} MiB, PUT one after another",
        ["path", "MiB/s", "p50 s per clip", "vs baseline"],
        [
            [
                "ingest PUT /v1/uploads/{id}/media/{name}",
                f"{ingest_rate:,.0f}",
                f"{percentile(media.put_seconds, 0.5):.3f}",
                ratio(ingest_rate, baseline_rate),
            ],
            [
                "baseline: sha256 + file write, same blocks",
                f"{baseline_rate:,.0f}",
                f"{percentile(media.baseline_seconds, 0.5):.3f}",
                "100%",
            ],
        ],
    )
    since = "its size before the clips" if media.peak_reset else "its peak before the clips (could not reset it)"
    print(
        f"  ingest peak resident memory: {media.peak_kib / 1024:.1f} MiB, {media.growth_mib:+.1f} MiB over {since}"
        f" (bound: 50 MiB per process)"
    )


def _with_client(cores: dict[str, float], result: LoadResult) -> dict[str, float]:
    # The generator's own CPU (wrk or the client processes), over the same phase.
    if result.elapsed_s:
        cores = {**cores, "client": result.client_cpu_s / result.elapsed_s}
    return cores


def _http_row(name: str, result: LoadResult, baseline: RawResult) -> list[object]:
    return [
        name,
        f"{result.rate:,.0f}",
        milliseconds(result.percentile(0.5)),
        milliseconds(result.percentile(0.99)),
        ratio(result.rate, baseline.rate),
    ]
