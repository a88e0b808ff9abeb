"""Ingest throughput and latency over real HTTP, against a raw confluent-kafka producer.

    .venv/bin/python -m benchmarks ingest [--quick]

A real `python -m services.ingest` (uvicorn, Redis claims, SQLite registry, Kafka acks=all)
receives 10 s / 50 Hz simulator uploads from N concurrent httpx clients (one asyncio process:
the benchmark itself; its CPU share is printed so you can see whether the client is the limit),
first as protobuf bodies, then as JSON. The baseline sends the bytes ingest publishes (the
serialized `UploadReceived`) with a bare confluent-kafka producer (idempotent, acks=all, same
settings as `EventProducer`) to an uploads topic of its own in the same broker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, Producer
from confluent_kafka import Message as KafkaMessage

from benchmarks.harness import (
    JSON,
    PROTOBUF,
    CpuMeter,
    LoadResult,
    UploadBodies,
    Workspace,
    closed_loop,
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
from michi.bus.admin import ensure_topics
from michi.bus.catalog import UPLOADS
from michi.bus.headers import build_headers

RAW_PREFIX = "bench-raw."
CONCURRENCY = 32


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
    raw_flood: RawResult
    raw_window: RawResult


def raw_produce(
    bootstrap: str, payloads: list[tuple[bytes, bytes]], *, duration_s: float, in_flight: int | None
) -> RawResult:
    """Send `payloads` (key, value) round and round for `duration_s`; `in_flight` bounds unacknowledged ones."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": "michi-bench-raw",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "compression.type": "none",
            "max.in.flight.requests.per.connection": 5,
        }
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


def run(*, quick: bool = False) -> IngestFigures:
    phase_s = 4.0 if quick else 20.0
    with Workspace("ingest", redis=True) as workspace:
        uploads = simulated_uploads(300 if quick else 1500, devices=40)
        tokens = register_devices(workspace, {upload.device_id for upload in uploads})
        bodies = UploadBodies(uploads)
        ingest = workspace.start_service("ingest", "MICHI_INGEST_HTTP_PORT")
        meter = CpuMeter(workspace.pids())

        def load(content_type: str, duration: float) -> tuple[LoadResult, dict[str, float]]:
            meter.start()
            result = asyncio.run(
                closed_loop(
                    ingest.base_url,
                    lambda: bodies.next(content_type),
                    tokens,
                    concurrency=CONCURRENCY,
                    duration_s=duration,
                )
            )
            return result, meter.stop()

        note("ingest: warm-up")
        load(PROTOBUF, 1.0 if quick else 3.0)
        note(f"ingest: {CONCURRENCY} clients, protobuf bodies, {phase_s:.0f} s")
        protobuf, protobuf_cpu = load(PROTOBUF, phase_s)
        note(f"ingest: {CONCURRENCY} clients, JSON bodies, {phase_s:.0f} s")
        json_result, json_cpu = load(JSON, phase_s)
        ingest.stop()

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
    refused = {
        name: {status: count for status, count in result.statuses.items() if status != 202}
        for name, result in (("protobuf", protobuf), ("json", json_result))
    }
    rows: list[list[object]] = [
        _http_row("ingest HTTP protobuf", protobuf, flood),
        _http_row("ingest HTTP JSON", json_result, flood),
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
        f"ingest: 10 s / 50 Hz uploads ({size / 1024:.1f} KiB UploadReceived), {CONCURRENCY} concurrent clients",
        ["path", "msgs/s", "p50 ms", "p99 ms", "vs raw"],
        rows,
    )
    print(f"  CPU cores, protobuf phase: {describe_cpu(protobuf_cpu)}")
    print(f"  CPU cores, JSON phase:     {describe_cpu(json_cpu)}")
    print(f"  CPU cores, raw unbounded:  {describe_cpu(flood_cpu)}")
    if any(refused.values()):
        print(f"  non-202 answers: {refused}")
    return IngestFigures(protobuf, json_result, flood, window)


def _http_row(name: str, result: LoadResult, baseline: RawResult) -> list[object]:
    return [
        name,
        f"{result.rate:,.0f}",
        milliseconds(percentile(result.latencies_s, 0.5)),
        milliseconds(percentile(result.latencies_s, 0.99)),
        ratio(result.rate, baseline.rate),
    ]
