"""Prometheus metrics of the inference service (one registry per app, served at /metrics)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram, generate_latest

from michi.contracts.v1 import common_pb2
from michi.telemetry.metrics import service_registry


class InferenceMetrics:
    def __init__(self) -> None:
        self.registry = service_registry()
        self.windows = Counter("michi_inference_windows_total", "Windows analysed", registry=self.registry)
        self.windows_per_second = Gauge(
            "michi_inference_windows_per_second",
            "Windows analysed per second over the last batch cycle",
            registry=self.registry,
        )
        self.batch_uploads = Histogram(
            "michi_inference_batch_uploads",
            "Uploads per batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.batch_windows = Histogram(
            "michi_inference_batch_windows",
            "Windows per ONNX run",
            buckets=(1, 8, 32, 64, 128, 256, 512, 1024, 2048),
            registry=self.registry,
        )
        self.onnx_seconds = Histogram(
            "michi_inference_onnx_seconds",
            "ONNX Runtime latency per batch",
            buckets=(0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "michi_inference_batch_seconds", "Whole batch: features, ONNX, publish", registry=self.registry
        )
        self.detections = Counter(
            "michi_inference_detections_total", "Detections emitted", ["event_type"], registry=self.registry
        )
        self.hindsight_detections = Counter(
            "michi_inference_hindsight_detections_total",
            "Detections of held uploads decided again once their device's mount was calibrated",
            registry=self.registry,
        )
        self.uploads = Counter(
            "michi_inference_uploads_total", "Uploads by outcome", ["outcome"], registry=self.registry
        )
        self.calibration_confidence = Histogram(
            "michi_inference_calibration_confidence",
            "Mount calibration confidence per upload",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=self.registry,
        )
        self.orientation_changes = Counter(
            "michi_inference_orientation_changes_total", "Device mounts seen moving", registry=self.registry
        )
        # Serving: what is served, plans, swaps, refusals, shadow.
        self.model_served = Gauge(
            "michi_inference_model_served",
            "1 for each model version served now, by variant (champion, canary, treatment, shadow)",
            ["model", "version", "variant"],
            registry=self.registry,
        )
        self.arm_share = Gauge(
            "michi_inference_arm_share",
            "Share of devices each arm of the plan served now covers (serving arms: the devices it serves; "
            "shadow: the devices it scores), with the plan's rollout id ('' when it has none)",
            ["model", "version", "variant", "rollout_id"],
            registry=self.registry,
        )
        self.arm_uploads = Counter(
            "michi_inference_arm_uploads_total",
            "Uploads scored, by the serving arm's model version and variant (champion, canary, treatment)",
            ["version", "variant"],
            registry=self.registry,
        )
        self.plan_revision = Gauge(
            "michi_inference_plan_revision",
            "Revision of the rollout plan served (0: none, baseline)",
            registry=self.registry,
        )
        self.plans = Counter(
            "michi_inference_plans_total",
            "Rollout plans read, by decision (apply, duplicate, stale, other-model)",
            ["decision"],
            registry=self.registry,
        )
        self.swaps = Counter(
            "michi_inference_model_swaps_total",
            "Hot swaps of the served models (between batches, after the commit barrier)",
            registry=self.registry,
        )
        self.swaps_postponed = Counter(
            "michi_inference_model_swaps_postponed_total",
            "Swaps put off to the next batch because processed offsets were not committed yet",
            registry=self.registry,
        )
        self.models_refused = Counter(
            "michi_inference_models_refused_total",
            "Model artifacts refused (the current model kept), by reason and variant",
            ["reason", "variant"],
            registry=self.registry,
        )
        self.replay_model_missing = Counter(
            "michi_inference_replay_model_missing_total",
            "Redelivered uploads whose recorded model version was no longer available",
            registry=self.registry,
        )
        self.shadow_disagreements = Counter(
            "michi_inference_shadow_disagreements_total",
            "Windows where champion and shadow disagreed on a risky class",
            registry=self.registry,
        )
        self.shadow_label_requests = Counter(
            "michi_inference_shadow_label_requests_total",
            "Shadow disagreement label requests, by outcome (published, rate-limited)",
            ["outcome"],
            registry=self.registry,
        )
        self.shadow_failures = Counter(
            "michi_inference_shadow_failures_total", "Batches whose shadow run failed", registry=self.registry
        )
        self.shadow_seconds = Histogram(
            "michi_inference_shadow_seconds",
            "ONNX Runtime latency of the shadow model per batch",
            buckets=(0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0),
            registry=self.registry,
        )
        self._last_batch_end: float | None = None

    def record_rate(self, windows: int) -> None:
        now = time.perf_counter()
        if self._last_batch_end is not None and now > self._last_batch_end:
            self.windows_per_second.set(windows / (now - self._last_batch_end))
        self._last_batch_end = now

    def detection(self, event_type: int) -> None:
        self.detections.labels(event_type=common_pb2.EventType.Name(event_type)).inc()

    def serve(
        self, served: list[tuple[str, str, str]], shares: list[float] | None = None, rollout_id: str = ""
    ) -> None:
        """Set the served-model gauges to exactly these (model, version, variant) triples and their shares."""
        self.model_served.clear()
        self.arm_share.clear()
        for index, (model, version, variant) in enumerate(served):
            self.model_served.labels(model=model, version=version, variant=variant).set(1)
            share = shares[index] if shares is not None else 1.0
            self.arm_share.labels(model=model, version=version, variant=variant, rollout_id=rollout_id).set(share)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
