"""Inference throughput: the faust agent against a bare confluent-kafka loop on the same uploads.

    .venv/bin/python -m benchmarks inference [--quick]
    .venv/bin/python -m benchmarks inference --model PATH           # serve this ONNX model (model contract)
    .venv/bin/python -m benchmarks inference --model signals-demo   # a small 1D-CNN reading the signals input

Without `--model` the service serves its built-in baseline (no rollout plan). With one, the model is
written into the workspace's blob store (`models/michi-risk/bench-1/model.onnx`) and a `RolloutPlan`
naming it is published before the service starts, so the agent loads it the way it loads a trained
model (blob → cache → sha256 → ONNX Runtime); the bare loop runs the same file.

The uploads topic is filled first with M `UploadReceived` (simulator uploads, published with the
shared `EventProducer`); then `python -m services.inference` drains it, and windows/s is the number
of `Prediction` records over the span between the first and the last one's Kafka timestamp (start-up
and group join excluded). The baseline is one process that consumes the same topic with confluent-kafka
(its own group), calls `services.inference.handlers.process_uploads` on batches of the same size,
publishes predictions, detections, label requests, then segments with `EventProducer` and waits for
the acknowledgements — the agent's work without faust, aiokafka and the device-state changelog —
measured the same way on its own output topics.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from confluent_kafka import Consumer
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.harness import (
    PREFIX,
    BenchmarkFailed,
    CpuMeter,
    Workspace,
    describe_cpu,
    note,
    print_table,
    ratio,
    read_records,
    simulated_uploads,
    topic_size,
    upload_received,
    wait_for,
)
from michi.blobs.store import BlobStore
from michi.bus.admin import ensure_topics
from michi.bus.catalog import DETECTIONS, LABEL_REQUESTS, MODEL_ROLLOUTS, PREDICTIONS, TRIP_SEGMENTS, UPLOADS
from michi.bus.connection import KafkaConnection
from michi.bus.producer import EventProducer
from michi.cli.status import collect_status
from michi.contracts.v1 import upload_pb2
from michi.roads import RoadMap
from michi.windows.features import DATA_VERSION
from michi.windows.model_spec import MODEL_NAME
from services.inference.adapters.onnx_model import ModelArtifact, OnnxDetector
from services.inference.domain.state import DeviceState
from services.inference.handlers import Detector, InferencePipeline, process_uploads
from services.inference.settings import InferenceSettings
from services.inference.wiring import default_detector
from tests.model_graphs import build_signals_model, rollout_plan, store_model

BARE_PREFIX = "bench-bare."
SIGNALS_DEMO = "signals-demo"
BENCH_VERSION = "bench-1"


@dataclass
class Throughput:
    predictions: int
    span_s: float
    uploads: int

    @property
    def windows_per_s(self) -> float:
        return self.predictions / self.span_s if self.span_s > 0 else 0.0

    @property
    def uploads_per_s(self) -> float:
        return self.uploads / self.span_s if self.span_s > 0 else 0.0


@dataclass
class InferenceFigures:
    agent: Throughput
    bare: Throughput


def served_version(base_url: str) -> str | None:
    """The champion version the service reports in /metrics."""
    text = httpx.get(f"{base_url}/metrics", timeout=5.0).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "michi_inference_model_served" and sample.labels.get("variant") == "champion":
                return sample.labels.get("version")
    return None


def prediction_span(bootstrap: str, prefix: str, uploads: int) -> Throughput:
    """Predictions on `prefix`'s topic and the span between the first and last Kafka timestamps."""
    stamps = [stamp for stamp, _, _ in read_records(bootstrap, PREDICTIONS.name(prefix))]
    if len(stamps) < 2:
        return Throughput(len(stamps), 0.0, uploads)
    return Throughput(len(stamps), (max(stamps) - min(stamps)) / 1000.0, uploads)


def model_payload(model: str) -> bytes:
    """The bytes of `--model`: a file, or the signals demo graph."""
    if model == SIGNALS_DEMO:
        return build_signals_model()
    path = Path(model)
    if not path.is_file():
        raise BenchmarkFailed(f"--model {model}: no such file (or use {SIGNALS_DEMO})")
    return path.read_bytes()


def serve_model(workspace: Workspace, payload: bytes) -> ModelArtifact:
    """Put the model in the workspace's blob store and publish a plan naming it; the local artifact for the bare loop."""
    store = BlobStore(f"file://{workspace.home / 'blobs'}")
    reference = asyncio.run(store_model(store, BENCH_VERSION, payload))
    producer = EventProducer(workspace.bootstrap, PREFIX, client_id="michi-bench-plan")
    try:
        producer.publish_and_wait(MODEL_ROLLOUTS, MODEL_NAME, rollout_plan(1, reference, reason="benchmark"))
    finally:
        producer.close()
    path = workspace.folder / "bench-model.onnx"
    path.write_bytes(payload)
    return ModelArtifact(MODEL_NAME, BENCH_VERSION, DATA_VERSION, path, reference.sha256)


def bare_loop(bootstrap: str, settings: InferenceSettings, uploads: int, batch_size: int, detector: Detector) -> None:
    """consume → process_uploads → publish (awaited) until `uploads` uploads were handled."""
    ensure_topics(bootstrap, BARE_PREFIX, [PREDICTIONS, DETECTIONS, LABEL_REQUESTS, TRIP_SEGMENTS])
    pipeline = InferencePipeline(detector, RoadMap.default(), uncertainty_band=settings.inference_uncertainty_band)
    producer = EventProducer(bootstrap, BARE_PREFIX, client_id="michi-bench-bare")
    consumer = Consumer(
        KafkaConnection.plain(bootstrap).confluent_config(
            {
                "group.id": f"michi-bench-bare-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 1000,
            }
        )
    )
    states: dict[str, DeviceState] = {}
    handled = 0
    deadline = time.monotonic() + 600
    try:
        consumer.subscribe([UPLOADS.name(PREFIX)])
        while handled < uploads and time.monotonic() < deadline:
            records = [record for record in consumer.consume(batch_size, 0.05) if not record.error()]
            if not records:
                continue
            batch = [upload_pb2.UploadReceived.FromString(record.value() or b"") for record in records]
            outcome = process_uploads(batch, states, pipeline)
            first_wave = []
            for result in outcome.uploads:
                first_wave += [
                    producer.publish(PREDICTIONS, result.device_id, message) for message in result.predictions
                ]
                first_wave += [producer.publish(DETECTIONS, result.trip_id, message) for message in result.detections]
                first_wave += [
                    producer.publish(LABEL_REQUESTS, message.lineage.window_id, message)
                    for message in result.label_requests
                ]
            for future in first_wave:
                future.result(30)
            segments = [producer.publish(TRIP_SEGMENTS, result.trip_id, result.segment) for result in outcome.uploads]
            for future in segments:
                future.result(30)
            handled += len(batch)
    finally:
        consumer.close()
        producer.close()


@dataclass
class PipelineCost:
    """CPU time per window of `process_uploads` alone (no Kafka), and of its ONNX runs."""

    model: str
    pipeline_us: float
    onnx_us: float


def pipeline_cost(received: list[upload_pb2.UploadReceived], detector: Detector, batch_size: int) -> PipelineCost:
    """CPU time (not wall time: the machine is shared) per window over `received`, in batches."""
    pipeline = InferencePipeline(detector, RoadMap.default())
    states: dict[str, DeviceState] = {}
    windows, onnx_seconds = 0, 0.0
    began = time.process_time()
    for first in range(0, len(received), batch_size):
        outcome = process_uploads(received[first : first + batch_size], states, pipeline)
        windows += outcome.window_count
        onnx_seconds += outcome.onnx_seconds
    cpu = time.process_time() - began
    return PipelineCost(detector.model_version, cpu / max(windows, 1) * 1e6, onnx_seconds / max(windows, 1) * 1e6)


def run(*, quick: bool = False, model: str | None = None) -> InferenceFigures:
    count = 600 if quick else 5000
    settings = InferenceSettings()
    payload = model_payload(model) if model is not None else None
    with Workspace("inference") as workspace:
        artifact = serve_model(workspace, payload) if payload is not None else None
        note(f"inference: simulating and publishing {count} uploads")
        uploads = simulated_uploads(count, devices=40)
        producer = EventProducer(workspace.bootstrap, PREFIX, client_id="michi-bench-fill")
        try:
            for upload in uploads:
                producer.publish(UPLOADS, upload.device_id, upload_received(upload))
            if producer.flush(60):
                raise BenchmarkFailed("the uploads topic could not be filled")
        finally:
            producer.close()

        note("inference: the faust agent (python -m services.inference)")
        service = workspace.start_service("inference", "MICHI_INFERENCE_PORT")
        served = served_version(service.base_url)
        if served != (BENCH_VERSION if artifact is not None else "baseline-1"):
            raise BenchmarkFailed(f"inference serves {served!r}, not the benchmark's model:\n{service.log_tail()}")
        meter = CpuMeter(workspace.pids()).start()
        segments_topic = TRIP_SEGMENTS.name(PREFIX)
        if not wait_for(lambda: topic_size(workspace.bootstrap, segments_topic) >= count, 300, 0.5):
            raise BenchmarkFailed(f"inference did not finish {count} uploads:\n{service.log_tail()}")
        agent_cpu = meter.stop()
        # The agent commits offsets every second: give the last commit a moment before reading the lag.
        wait_for(lambda: collect_status(workspace.bootstrap, PREFIX).lag.get("inference", -1) == 0, 10, 0.5)
        lag = collect_status(workspace.bootstrap, PREFIX).lag.get("inference", -1)
        service.stop()
        agent = prediction_span(workspace.bootstrap, PREFIX, count)

        note("inference: bare confluent-kafka loop in one process")
        settings = InferenceSettings(home=workspace.home)
        detector = OnnxDetector(artifact) if artifact is not None else default_detector(settings)
        bare_meter = CpuMeter({"kafka": workspace.pids()["kafka"], "benchmark": workspace.pids()["benchmark"]}).start()
        bare_loop(workspace.bootstrap, settings, count, settings.inference_batch_size, detector)
        bare_cpu = bare_meter.stop()
        bare = prediction_span(workspace.bootstrap, BARE_PREFIX, count)

    rows = [
        [
            "faust agent (services.inference)",
            f"{agent.windows_per_s:,.0f}",
            f"{agent.uploads_per_s:,.0f}",
            agent.predictions,
            f"{agent.span_s:.1f}",
            ratio(agent.windows_per_s, bare.windows_per_s),
        ],
        [
            "bare confluent-kafka loop",
            f"{bare.windows_per_s:,.0f}",
            f"{bare.uploads_per_s:,.0f}",
            bare.predictions,
            f"{bare.span_s:.1f}",
            "100%",
        ],
    ]
    inputs = "+".join(detector.input_names)
    print_table(
        f"inference: {count} pre-filled uploads (10 s, 50 Hz), batches of {settings.inference_batch_size}, "
        f"model {detector.model_version} (inputs: {inputs})",
        ["path", "windows/s", "uploads/s", "predictions", "span s", "vs bare"],
        rows,
    )
    print(f"  consumer-group lag after the agent's run: {lag}")
    print(f"  CPU cores, agent run (incl. start-up): {describe_cpu(agent_cpu)}")
    print(f"  CPU cores, bare loop:                  {describe_cpu(bare_cpu)}")
    # What the model itself costs: the pipeline alone on the first 600 uploads, the baseline then the served model.
    sample = [upload_received(upload) for upload in uploads[:600]]
    pipeline_cost(sample[:128], default_detector(settings), settings.inference_batch_size)  # warm-up
    costs = [pipeline_cost(sample, default_detector(settings), settings.inference_batch_size)]
    if artifact is not None:
        costs.append(pipeline_cost(sample, detector, settings.inference_batch_size))
    for cost in costs:
        print(
            f"  process_uploads alone, model {cost.model}: {cost.pipeline_us:,.0f} us CPU per window "
            f"(ONNX Runtime {cost.onnx_us:,.1f} us of it)"
        )
    return InferenceFigures(agent, bare)
