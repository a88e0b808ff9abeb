"""Rollout arms: inference throughput serving a plan of 3 arms against the champion alone (the cost of splitting).

    .venv/bin/python -m benchmarks rollouts [--quick]

The same M `UploadReceived` (simulator uploads, 40 devices) go through `python -m services.inference`
four times on one embedded Kafka, alternating the two plans (1 arm, 3 arms, 1 arm, 3 arms) so that the
machine's load drifts over both alike. Each run has its own topic prefix (so its own consumer group,
device-state table and outputs), its uploads topic filled before the service starts, and a plan built
by the registry's own `michi.registry.rollout.build_rollout_plan` published before it starts:

- **1 arm**: version 1 champion, no rollout (what inference serves between rollouts);
- **3 arms**: a canary rollout (`rollout_id`, strategy CANARY) of version 2 at 50 % of the devices beside
  champion 1, and version 3 in shadow (share 0: it scores every window). Inference splits the devices
  with `michi.rollouts.assignment.TrafficSplit` and runs three ONNX sessions per batch.

The three versions are the built-in baseline graph at gains 1.0, 0.8 and 1.2 (`build_baseline_model`),
stored in the workspace's blob store the way the trainer stores models. windows/s counts the serving
arms' predictions (shadow predictions are extra output, not windows) over the span between the first
and the last one's Kafka timestamp (start-up and group join excluded); CPU per window is the inference
process's CPU time from ready to the last trip segment, over those windows. Errors per 1,000
predictions are the uploads inference dead-lettered as `processing-failed` (`michi.dead-letters.v1`),
per serving prediction.

Then, steadier than rates on a shared machine: `process_uploads` alone (no Kafka) on 600 of the uploads, CPU time
per window (`time.process_time`), with the pipeline the service's own `ModelServing` and `blob_loader` build
for each plan, alternated 1 arm / 2 arms (the canary and the champion, no shadow) / 3 arms three times: what the
split costs, and what the shadow adds.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import psutil
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
from michi.bus.catalog import DEAD_LETTERS, MODEL_ROLLOUTS, PREDICTIONS, TRIP_SEGMENTS, UPLOADS
from michi.bus.producer import EventProducer
from michi.contracts.v1 import inference_pb2, operations_pb2, upload_pb2
from michi.registry.records import ModelVersion
from michi.registry.rollout import ServingRollout, build_rollout_plan, plan_problems
from michi.registry.stages import Stage
from michi.roads import RoadMap
from michi.windows.features import DATA_VERSION
from michi.windows.model_spec import MODEL_NAME
from services.inference.adapters.metrics import InferenceMetrics
from services.inference.adapters.onnx_model import build_baseline_model
from services.inference.domain.state import DeviceState
from services.inference.handlers import InferencePipeline, process_uploads
from services.inference.serving import ModelServing
from services.inference.settings import InferenceSettings
from services.inference.wiring import blob_loader, default_detector
from tests.model_graphs import store_model

# Version -> gain of the baseline graph it serves.
GAINS = {"1": 1.0, "2": 0.8, "3": 1.2}
CANARY_SHARE = 0.5
ROLLOUT_ID = "ro-michi-risk-2-bench0001"
ONE_ARM = "1 arm"
TWO_ARMS = "2 arms"
THREE_ARMS = "3 arms"


@dataclass
class ArmRun:
    """One drain of the uploads by the service under one plan."""

    plan: str
    windows: int
    shadow_predictions: int
    span_s: float
    cpu_s: float
    errors: int
    cores: dict[str, float]
    load_average: float
    uploads_by_arm: dict[str, int] = field(default_factory=dict)

    @property
    def windows_per_s(self) -> float:
        return self.windows / self.span_s if self.span_s > 0 else 0.0

    @property
    def cpu_us_per_window(self) -> float:
        return self.cpu_s / max(self.windows, 1) * 1e6

    @property
    def errors_per_1000(self) -> float:
        return self.errors / max(self.windows, 1) * 1000


def registered(reference: operations_pb2.ModelRef, stage: Stage, number: int) -> ModelVersion:
    """A registry record of a stored model (what `michi models register` keeps)."""
    return ModelVersion(
        name=MODEL_NAME,
        version=reference.version,
        stage=stage,
        artifact_uri=reference.artifact_uri,
        artifact_sha256=reference.sha256,
        code_version="benchmark",
        data_version=DATA_VERSION,
        parameters={},
        metrics={},
        parent_version=None,
        created_by="benchmark",
        created_at=datetime.now(UTC),
        number=number,
    )


def plans(workspace: Workspace) -> dict[str, operations_pb2.RolloutPlan]:
    """Both plans, built by the registry's code from stored models."""
    store = BlobStore(f"file://{workspace.home / 'blobs'}")
    references = {
        version: asyncio.run(store_model(store, version, build_baseline_model(gain))) for version, gain in GAINS.items()
    }
    champion = registered(references["1"], Stage.CHAMPION, 1)
    one = build_rollout_plan(MODEL_NAME, [champion], revision=1, changed_at=None, reason="benchmark: 1 arm")
    three = build_rollout_plan(
        MODEL_NAME,
        [champion, registered(references["2"], Stage.CANARY, 2), registered(references["3"], Stage.SHADOW, 3)],
        revision=1,
        changed_at=None,
        reason="benchmark: 3 arms",
        rollout=ServingRollout(ROLLOUT_ID, "canary", "2", CANARY_SHARE),
    )
    two = build_rollout_plan(
        MODEL_NAME,
        [champion, registered(references["2"], Stage.CANARY, 2)],
        revision=1,
        changed_at=None,
        reason="benchmark: 2 arms",
        rollout=ServingRollout(ROLLOUT_ID, "canary", "2", CANARY_SHARE),
    )
    for plan in (one, two, three):
        if problems := plan_problems(plan):
            raise BenchmarkFailed(f"inference would refuse the plan: {problems}")
    return {ONE_ARM: one, TWO_ARMS: two, THREE_ARMS: three}


def served_arms(base_url: str) -> dict[str, str]:
    """Variant -> version of each model the service reports serving in /metrics."""
    text = httpx.get(f"{base_url}/metrics", timeout=5.0).text
    return {
        sample.labels["variant"]: sample.labels["version"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "michi_inference_model_served" and sample.value == 1
    }


def upload_counts(base_url: str) -> tuple[dict[str, int], int]:
    """Uploads per serving arm (`michi_inference_arm_uploads_total`, "variant version") and failed uploads."""
    text = httpx.get(f"{base_url}/metrics", timeout=5.0).text
    samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    by_arm = {
        f"{sample.labels['variant']} {sample.labels['version']}": int(sample.value)
        for sample in samples
        if sample.name == "michi_inference_arm_uploads_total"
    }
    failed = sum(
        int(sample.value)
        for sample in samples
        if sample.name == "michi_inference_uploads_total" and sample.labels.get("outcome") == "failed"
    )
    return by_arm, failed


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def serving_span(bootstrap: str, prefix: str) -> tuple[int, int, float]:
    """(serving predictions, shadow predictions, span in s between the first and last serving one)."""
    stamps: list[int] = []
    shadows = 0
    for stamp, _, value in read_records(bootstrap, PREDICTIONS.name(prefix)):
        if inference_pb2.Prediction.FromString(value).variant == inference_pb2.VARIANT_SHADOW:
            shadows += 1
        else:
            stamps.append(stamp)
    span = (max(stamps) - min(stamps)) / 1000.0 if len(stamps) > 1 else 0.0
    return len(stamps), shadows, span


def drain(
    workspace: Workspace,
    prefix: str,
    name: str,
    plan: operations_pb2.RolloutPlan,
    received: list[upload_pb2.UploadReceived],
) -> ArmRun:
    """Fill `prefix`'s uploads topic, publish `plan`, run the service until every upload has its segment."""
    ensure_topics(workspace.bootstrap, prefix)
    producer = EventProducer(workspace.bootstrap, prefix, client_id="michi-bench-fill")
    try:
        for message in received:
            producer.publish(UPLOADS, message.upload.device_id, message)
        producer.publish(MODEL_ROLLOUTS, MODEL_NAME, plan)
        if producer.flush(60):
            raise BenchmarkFailed("the uploads topic could not be filled")
    finally:
        producer.close()

    service = workspace.start_service("inference", "MICHI_INFERENCE_PORT", environment={"MICHI_TOPIC_PREFIX": prefix})
    expected = {"champion": "1"} if name == ONE_ARM else {"canary": "2", "champion": "1", "shadow": "3"}
    if (arms := served_arms(service.base_url)) != expected:
        raise BenchmarkFailed(f"inference serves {arms}, not {expected}:\n{service.log_tail()}")
    meter = CpuMeter({"inference": service.pid, "kafka": workspace.pids()["kafka"]}).start()
    cpu_before = cpu_seconds(service.pid)
    segments = TRIP_SEGMENTS.name(prefix)
    if not wait_for(lambda: topic_size(workspace.bootstrap, segments) >= len(received), 600, 0.5):
        raise BenchmarkFailed(f"inference did not finish {len(received)} uploads:\n{service.log_tail()}")
    cpu = cpu_seconds(service.pid) - cpu_before
    cores = meter.stop()
    load = os.getloadavg()[0]
    arms_uploads, failed = upload_counts(service.base_url)
    service.stop()
    workspace.services.remove(service)
    windows, shadows, span = serving_span(workspace.bootstrap, prefix)
    dead_letters = topic_size(workspace.bootstrap, DEAD_LETTERS.name(prefix))
    if dead_letters != failed:
        note(f"rollouts: {dead_letters} dead letters on {prefix} but {failed} failed uploads in /metrics")
    return ArmRun(name, windows, shadows, span, cpu, failed, cores, load, arms_uploads)


class OnePlan:
    """A plan source holding one plan (what the service reads from `model-rollouts` at start)."""

    def __init__(self, plan: operations_pb2.RolloutPlan) -> None:
        self.plan = plan

    def read_to_end(self, timeout: float = 30.0) -> list[operations_pb2.RolloutPlan]:
        return [self.plan]

    def poll(self, timeout: float = 1.0) -> list[operations_pb2.RolloutPlan]:
        return []


def serving_pipeline(workspace: Workspace, plan: operations_pb2.RolloutPlan) -> InferencePipeline:
    """The pipeline inference serves `plan` with: its `ModelServing`, loading from the workspace's blob store."""
    settings = InferenceSettings(home=workspace.home, blob_url=f"file://{workspace.home / 'blobs'}")
    template = InferencePipeline(
        default_detector(settings),
        RoadMap.default(),
        uncertainty_band=settings.inference_uncertainty_band,
        shadow_requests_per_upload=settings.inference_shadow_requests_per_upload,
        qa_sample_rate=settings.inference_qa_sample_rate,
    )
    serving = ModelServing(
        model_name=MODEL_NAME,
        template=template,
        loader=blob_loader(settings),
        metrics=InferenceMetrics(),
        retain=settings.inference_retained_models,
        max_arms=settings.inference_max_arms,
    )
    serving.start(OnePlan(plan))
    return serving.pipeline


def pipeline_us_per_window(pipeline: InferencePipeline, received: list[upload_pb2.UploadReceived]) -> float:
    """CPU time (not wall time) per serving window of `process_uploads` over `received`, in batches of 64."""
    states: dict[str, DeviceState] = {}
    windows = 0
    began = time.process_time()
    for first in range(0, len(received), 64):
        windows += process_uploads(received[first : first + 64], states, pipeline).window_count
    return (time.process_time() - began) / max(windows, 1) * 1e6


def run(*, quick: bool = False) -> list[ArmRun]:
    count = 600 if quick else 4000
    order = [ONE_ARM, THREE_ARMS] if quick else [ONE_ARM, THREE_ARMS, ONE_ARM, THREE_ARMS]
    runs: list[ArmRun] = []
    with Workspace("rollouts") as workspace:
        by_name = plans(workspace)
        note(f"rollouts: simulating {count} uploads")
        received = [upload_received(upload) for upload in simulated_uploads(count, devices=40)]
        for index, name in enumerate(order):
            note(f"rollouts: run {index + 1} of {len(order)}, {name} (python -m services.inference)")
            runs.append(drain(workspace, f"{PREFIX}run{index + 1}.", name, by_name[name], received))
        note("rollouts: process_uploads alone, 1 arm / 2 arms / 3 arms alternated")
        pipelines = {name: serving_pipeline(workspace, plan) for name, plan in by_name.items()}
        sample = received[:600]
        pipeline_us_per_window(pipelines[ONE_ARM], sample[:128])  # warm-up
        alone: dict[str, list[float]] = {ONE_ARM: [], TWO_ARMS: [], THREE_ARMS: []}
        for _ in range(1 if quick else 3):
            for name in (ONE_ARM, TWO_ARMS, THREE_ARMS):
                alone[name].append(pipeline_us_per_window(pipelines[name], sample))

    rows = [
        [
            f"{index + 1}. {item.plan}",
            f"{item.windows_per_s:,.0f}",
            item.windows,
            item.shadow_predictions,
            f"{item.span_s:.1f}",
            f"{item.cpu_us_per_window:,.0f}",
            f"{item.errors_per_1000:.2f}",
            f"{item.cores['machine']:.2f}",
            f"{item.load_average:.1f}",
        ]
        for index, item in enumerate(runs)
    ]
    print_table(
        f"rollouts: {count} uploads (10 s, 50 Hz, 40 devices) through services.inference per run, "
        f"1 arm (champion) vs 3 arms (canary {CANARY_SHARE:.0%} + champion + shadow), alternated",
        [
            "run",
            "windows/s",
            "windows",
            "shadow preds",
            "span s",
            "CPU us/window",
            "errors/1k preds",
            "machine cores",
            "load 1m",
        ],
        rows,
    )
    for index, item in enumerate(runs):
        arms = ", ".join(f"{arm} {uploads}" for arm, uploads in sorted(item.uploads_by_arm.items()))
        print(f"  run {index + 1} uploads per serving arm: {arms}")
    one = [item for item in runs if item.plan == ONE_ARM]
    three = [item for item in runs if item.plan == THREE_ARMS]
    rate_one = statistics.fmean(item.windows_per_s for item in one)
    rate_three = statistics.fmean(item.windows_per_s for item in three)
    cpu_one = statistics.fmean(item.cpu_us_per_window for item in one)
    cpu_three = statistics.fmean(item.cpu_us_per_window for item in three)
    print(
        f"  3 arms vs 1 arm, windows/s (mean of runs): {rate_three:,.0f} vs {rate_one:,.0f} = {ratio(rate_three, rate_one)}"
    )
    print(
        f"  3 arms vs 1 arm, inference CPU per window:  {cpu_three:,.0f} vs {cpu_one:,.0f} us = "
        f"{ratio(cpu_three, cpu_one)}"
    )
    one_alone = statistics.fmean(alone[ONE_ARM])
    for name in (ONE_ARM, TWO_ARMS, THREE_ARMS):
        each = ", ".join(f"{value:,.0f}" for value in alone[name])
        mean = statistics.fmean(alone[name])
        print(
            f"  process_uploads alone (no Kafka), {name}: {each} us CPU per window; vs 1 arm {ratio(mean, one_alone)}"
        )
    for index, item in enumerate(runs):
        print(f"  run {index + 1} CPU cores, ready to last segment: {describe_cpu(item.cores)}")
    return runs
