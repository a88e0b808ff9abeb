"""Prometheus metrics of the annotation service (one registry per service instance, served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from michi.telemetry.metrics import service_registry

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class AnnotationMetrics:
    def __init__(self) -> None:
        self.registry = service_registry()
        self.requests = Counter(
            "michi_annotation_label_requests",
            "Label requests by outcome (new, merged, duplicate, invalid)",
            ["outcome"],
            registry=self.registry,
        )
        self.leases = Counter(
            "michi_annotation_leases", "Leases by outcome (new, held, empty)", ["outcome"], registry=self.registry
        )
        self.votes = Counter(
            "michi_annotation_votes",
            "Answers by how they counted (current, late, extra, duplicate)",
            ["kind"],
            registry=self.registry,
        )
        self.skips = Counter("michi_annotation_skips", "Skipped tasks", registry=self.registry)
        self.decisions = Counter(
            "michi_annotation_decisions",
            "Tasks decided, by outcome (consensus, adjudication-needed, adjudicated)",
            ["outcome"],
            registry=self.registry,
        )
        self.labels_published = Counter(
            "michi_annotation_labels_published", "Labels Kafka acknowledged", registry=self.registry
        )
        self.publish_failures = Counter(
            "michi_annotation_label_publish_failures",
            "Label publications that failed (retried by upkeep)",
            registry=self.registry,
        )
        self.leases_reclaimed = Counter(
            "michi_annotation_leases_reclaimed",
            "Expired leases returned to their queue by upkeep",
            registry=self.registry,
        )
        self.rebuilds = Counter(
            "michi_annotation_rebuilds", "Rebuilds of the live queues from SQL", registry=self.registry
        )
        self.refusals = Counter(
            "michi_annotation_refusals", "HTTP refusals by reason", ["reason"], registry=self.registry
        )
        self.dead_letters = Counter(
            "michi_annotation_dead_letters", "Label requests sent to dead letters", registry=self.registry
        )
        self.latency = Histogram(
            "michi_annotation_operation_seconds",
            "Time of lease and answer operations",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.waiting = Gauge(
            "michi_annotation_waiting_tasks", "Tasks waiting per queue", ["queue"], registry=self.registry
        )
        self.leased = Gauge("michi_annotation_leased_tasks", "Tasks currently leased", registry=self.registry)
