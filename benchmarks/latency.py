"""End-to-end latency: upload POST → `ScoredEvent` (and → `Prediction`), with ingest, inference and scoring.

    .venv/bin/python -m benchmarks latency [--quick]

All three services run as processes on one machine. A short closed-loop probe (32 clients) gives
the rate the whole pipeline sustains (uploads accepted during the probe / time until inference and
scoring have no lag); uploads (simulator, many harsh events) are then sent at half of that rate —
or at half the ingest saturation from the ingest benchmark of the same run, whichever is lower.
Latency = Kafka timestamp of the output record minus the wall-clock time the upload's POST was sent (same
machine clock); a scored event's detection names its upload in `lineage.upload_id`.

The baseline is what Kafka alone costs for the same hops: the same bytes at the same rate through a
chain of bare confluent-kafka relays (produce → consume+produce → consume+produce), read at the
second topic (2 hops, like upload → prediction) and the third (3 hops, like upload → scored event).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Producer

from benchmarks.harness import (
    PREFIX,
    PROTOBUF,
    CpuMeter,
    LoadResult,
    Request,
    UploadBodies,
    Workspace,
    closed_loop,
    describe_cpu,
    milliseconds,
    note,
    open_loop,
    percentile,
    print_table,
    ratio,
    read_records,
    register_devices,
    simulated_uploads,
    upload_received,
    wait_for,
)
from michi.bus.admin import ensure_topics
from michi.bus.catalog import DETECTIONS, PREDICTIONS, SCORED_EVENTS, UPLOADS
from michi.bus.connection import KafkaConnection
from michi.bus.reader import end_offsets
from michi.cli.status import collect_status
from michi.contracts.v1 import inference_pb2, scoring_pb2

RELAY_PREFIX = "bench-relay."
PRODUCER_SETTINGS = {"enable.idempotence": True, "acks": "all", "linger.ms": 2, "compression.type": "none"}


@dataclass
class LatencyFigures:
    rate: float
    to_prediction_s: list[float] = field(default_factory=list)
    to_scored_s: list[float] = field(default_factory=list)
    relay_two_hops_s: list[float] = field(default_factory=list)
    relay_three_hops_s: list[float] = field(default_factory=list)


def drained(bootstrap: str) -> bool:
    lag = collect_status(bootstrap, PREFIX).lag
    return lag.get("inference", -1) == 0 and lag.get("scoring", -1) == 0


def relay_chain(
    bootstrap: str, payloads: list[tuple[bytes, bytes]], *, rate: float, duration_s: float
) -> tuple[list[float], list[float]]:
    """Latencies (s) at the 2nd and 3rd topic of a bare produce → relay → relay chain at `rate`."""
    ensure_topics(bootstrap, RELAY_PREFIX, [UPLOADS, DETECTIONS, SCORED_EVENTS])
    topics = [UPLOADS.name(RELAY_PREFIX), DETECTIONS.name(RELAY_PREFIX), SCORED_EVENTS.name(RELAY_PREFIX)]
    stop = threading.Event()
    ready = threading.Barrier(3)

    def relay(source: str, target: str) -> None:
        consumer = Consumer(
            KafkaConnection.plain(bootstrap).confluent_config(
                {
                    "group.id": f"michi-bench-relay-{uuid.uuid4().hex[:8]}",
                    "auto.offset.reset": "earliest",  # the relay topics are new and empty
                    "fetch.wait.max.ms": 10,
                    "session.timeout.ms": 6000,
                    "heartbeat.interval.ms": 1000,
                }
            )
        )
        producer = Producer(KafkaConnection.plain(bootstrap).confluent_config(PRODUCER_SETTINGS))
        consumer.subscribe([source], on_assign=lambda _consumer, _partitions: _wait(ready))
        try:
            while not stop.is_set():
                # poll() returns as soon as one record is there; consume(n, t) would wait for n or t.
                record = consumer.poll(0.05)
                if record is not None and not record.error():
                    producer.produce(target, value=record.value(), key=record.key())
                producer.poll(0)
        finally:
            producer.flush(30)
            consumer.close()

    threads = [
        threading.Thread(target=relay, args=(topics[0], topics[1]), daemon=True),
        threading.Thread(target=relay, args=(topics[1], topics[2]), daemon=True),
    ]
    for thread in threads:
        thread.start()
    _wait(ready)
    starts = [end_offsets(bootstrap, topic) for topic in topics]
    producer = Producer(KafkaConnection.plain(bootstrap).confluent_config(PRODUCER_SETTINGS))
    sent_at: dict[bytes, float] = {}
    total = max(1, round(rate * duration_s))
    began = time.perf_counter()
    for index in range(total):
        delay = began + index / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        key, value = payloads[index % len(payloads)]
        unique = f"{index}:".encode() + key
        # The first second warms the relays' fetch sessions up; it is sent but not counted.
        if index >= rate:
            sent_at[unique] = time.time()
        producer.produce(topics[0], value=value, key=unique)
        producer.poll(0)
    producer.flush(30)
    wait_for(lambda: sum(end_offsets(bootstrap, topics[2]).values()) - sum(starts[2].values()) >= total, 30)
    stop.set()
    for thread in threads:
        thread.join(30)
    two = [
        stamp / 1000.0 - sent_at[key] for key, stamp in _keyed_stamps(bootstrap, topics[1], starts[1]) if key in sent_at
    ]
    three = [
        stamp / 1000.0 - sent_at[key] for key, stamp in _keyed_stamps(bootstrap, topics[2], starts[2]) if key in sent_at
    ]
    return two, three


def _wait(barrier: threading.Barrier) -> None:
    # A relay whose partitions never get assigned must not hang the benchmark.
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(timeout=60)


def _keyed_stamps(bootstrap: str, topic: str, start: dict[int, int]) -> list[tuple[bytes, int]]:
    return [(key, stamp) for stamp, key, _ in read_records(bootstrap, topic, start)]


def run(*, quick: bool = False, ingest_saturation: float | None = None) -> LatencyFigures:
    probe_s = 2.0 if quick else 8.0
    measure_s = 5.0 if quick else 30.0
    with Workspace("latency", redis=True) as workspace:
        # Ten times the default event rate, so most trips carry harsh events to score.
        uploads = simulated_uploads(300 if quick else 1200, devices=30, event_rate_per_10min=30.0)
        tokens = register_devices(workspace, {upload.device_id for upload in uploads})
        bodies = UploadBodies(uploads)
        ingest = workspace.start_service("ingest", "MICHI_INGEST_HTTP_PORT")
        workspace.start_service("inference", "MICHI_INFERENCE_PORT")
        workspace.start_service("scoring", "MICHI_SCORING_PORT")

        def supply() -> Request:
            return bodies.next(PROTOBUF)

        note(f"latency: {probe_s:.0f} s closed-loop probe for the pipeline's sustained rate")
        began = time.monotonic()
        probe: LoadResult = asyncio.run(
            closed_loop(ingest.base_url, supply, tokens, concurrency=32, duration_s=probe_s)
        )
        wait_for(lambda: drained(workspace.bootstrap), 180, 0.5)
        pipeline_rate = probe.accepted / (time.monotonic() - began)
        rate = pipeline_rate / 2
        if ingest_saturation:
            rate = min(rate, ingest_saturation / 2)
        rate = max(rate, 1.0)

        starts = {
            spec.base_name: end_offsets(workspace.bootstrap, spec.name(PREFIX)) for spec in (PREDICTIONS, SCORED_EVENTS)
        }
        note(f"latency: {rate:.1f} uploads/s for {measure_s:.0f} s (probe: pipeline sustains {pipeline_rate:.1f}/s)")
        meter = CpuMeter(workspace.pids()).start()
        load = asyncio.run(open_loop(ingest.base_url, supply, tokens, rate=rate, duration_s=measure_s))
        cpu = meter.stop()
        wait_for(lambda: drained(workspace.bootstrap), 120, 0.5)
        # Scoring publishes a scored event after the lag reads 0 only if it had not yet acknowledged it.
        time.sleep(0.5)

        figures = LatencyFigures(rate)
        first_prediction: dict[str, int] = {}
        for stamp, _, value in read_records(
            workspace.bootstrap, PREDICTIONS.name(PREFIX), starts[PREDICTIONS.base_name]
        ):
            upload_id = inference_pb2.Prediction.FromString(value).lineage.upload_id
            if upload_id in load.sent_at:
                first_prediction[upload_id] = min(stamp, first_prediction.get(upload_id, stamp))
        figures.to_prediction_s = [
            stamp / 1000.0 - load.sent_at[upload_id] for upload_id, stamp in first_prediction.items()
        ]
        for stamp, _, value in read_records(
            workspace.bootstrap, SCORED_EVENTS.name(PREFIX), starts[SCORED_EVENTS.base_name]
        ):
            upload_id = scoring_pb2.ScoredEvent.FromString(value).lineage.upload_id
            if upload_id in load.sent_at:
                figures.to_scored_s.append(stamp / 1000.0 - load.sent_at[upload_id])

        for service in workspace.services:
            service.stop()
        note("latency: bare confluent-kafka relay chain at the same rate")
        payloads = [(upload.device_id.encode(), upload_received(upload).SerializeToString()) for upload in uploads]
        figures.relay_two_hops_s, figures.relay_three_hops_s = relay_chain(
            workspace.bootstrap, payloads, rate=rate, duration_s=min(measure_s, 15.0)
        )

    rows = [
        _row("upload → Prediction (ingest, inference)", figures.to_prediction_s, figures.relay_two_hops_s),
        _row("upload → ScoredEvent (+ scoring)", figures.to_scored_s, figures.relay_three_hops_s),
        _row("raw relay chain, 2 hops", figures.relay_two_hops_s, figures.relay_two_hops_s),
        _row("raw relay chain, 3 hops", figures.relay_three_hops_s, figures.relay_three_hops_s),
    ]
    print_table(
        f"latency at {rate:.1f} uploads/s (half of the {pipeline_rate:.1f}/s the pipeline sustained in the probe"
        + (f", ingest alone {ingest_saturation:.0f}/s" if ingest_saturation else "")
        + ")",
        ["path", "n", "p50 ms", "p99 ms", "p50 vs raw"],
        rows,
    )
    refused = {status: count for status, count in load.statuses.items() if status != 202}
    print(f"  uploads sent {sum(load.statuses.values())}, accepted {load.accepted}, refused {refused or 'none'}")
    print(f"  CPU cores during the run: {describe_cpu(cpu)}")
    return figures


def _row(name: str, values: list[float], baseline: list[float]) -> list[object]:
    return [
        name,
        len(values),
        milliseconds(percentile(values, 0.5)),
        milliseconds(percentile(values, 0.99)),
        ratio(percentile(values, 0.5), percentile(baseline, 0.5)),
    ]
