"""Prometheus metrics of the trainer (one registry per service, served at /metrics)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

from michi.telemetry.metrics import render_metrics, service_registry


class TrainerMetrics:
    def __init__(self) -> None:
        self.registry = service_registry()
        self.runs = Counter(
            "michi_trainer_runs_total",
            "Workflow runs by trigger and outcome",
            ["trigger", "status"],
            registry=self.registry,
        )
        self.run_seconds = Histogram(
            "michi_trainer_run_seconds",
            "Duration of a workflow run",
            buckets=(1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600),
            registry=self.registry,
        )
        self.steps = Counter(
            "michi_trainer_steps_total",
            "Workflow steps by name and outcome",
            ["step", "status"],
            registry=self.registry,
        )
        self.step_seconds = Histogram(
            "michi_trainer_step_seconds",
            "Duration of a workflow step",
            ["step"],
            buckets=(0.01, 0.1, 0.5, 1, 5, 15, 30, 60, 300, 1800),
            registry=self.registry,
        )
        self.labels = Counter(
            "michi_trainer_labels_total",
            "Labels consumed by outcome (stored, duplicate, dead-letter, camera: a camera review's, left out)",
            ["outcome"],
            registry=self.registry,
        )
        self.alerts = Counter("michi_trainer_alerts_total", "Alerts consumed by kind", ["kind"], registry=self.registry)
        self.running = Gauge("michi_trainer_run_in_progress", "1 while a workflow run is going", registry=self.registry)
        self.last_run = Gauge(
            "michi_trainer_last_run_timestamp_seconds",
            "When the last run finished (epoch seconds)",
            registry=self.registry,
        )

    def run_finished(self, trigger: str, status: str, seconds: float) -> None:
        self.runs.labels(trigger=trigger, status=status).inc()
        self.run_seconds.observe(seconds)
        self.last_run.set(time.time())

    def step_finished(self, step: str, status: str, seconds: float) -> None:
        self.steps.labels(step=step, status=status).inc()
        self.step_seconds.labels(step=step).observe(seconds)

    def render(self) -> bytes:
        return render_metrics(self.registry)
