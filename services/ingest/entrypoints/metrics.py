"""Prometheus metrics of one ingest app (its own registry, so several apps can live in one process).

With `MICHI_INGEST_WORKERS` > 1 every worker keeps its values in files under the run's workers directory
(`wiring.supervise`), and the registry collects all of them: `/metrics` answers for ingest, not for the one
worker that happens to serve the scrape (`michi.telemetry.metrics`). A gauge added here needs a
`multiprocess_mode` that says how the workers' values combine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import Counter, Histogram

from michi.telemetry.metrics import service_registry

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class IngestMetrics:
    def __init__(self, *, workers_directory: Path | None = None) -> None:
        """`workers_directory`: this process is one of ingest's workers, which share it (PROMETHEUS_MULTIPROC_DIR)."""
        self.registry = service_registry(workers_directory=workers_directory)
        self.uploads = Counter(
            "michi_ingest_uploads",
            "Uploads by outcome (accepted, duplicate, refused) and refusal reason",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "michi_ingest_request_seconds",
            "Time to answer POST /v1/uploads, by outcome",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.received_bytes = Counter(
            "michi_ingest_received_bytes", "Upload body bytes read", ["content_type"], registry=self.registry
        )
        # Children resolved once: labels() costs a lock and a dict lookup per call.
        self.accepted = self.uploads.labels("accepted", "")
        self.duplicate = self.uploads.labels("duplicate", "")
        self.accepted_latency = self.latency.labels("accepted")
        self.duplicate_latency = self.latency.labels("duplicate")
        self.refused_latency = self.latency.labels("refused")
        self._received_bytes_by_type: dict[str, Any] = {}
        self._refused_by_reason: dict[str, Any] = {}

    def received(self, content_type: str, size: int) -> None:
        child = self._received_bytes_by_type.get(content_type)
        if child is None:
            child = self._received_bytes_by_type[content_type] = self.received_bytes.labels(content_type)
        child.inc(size)

    def refused(self, reason: str) -> None:
        child = self._refused_by_reason.get(reason)
        if child is None:
            child = self._refused_by_reason[reason] = self.uploads.labels("refused", reason)
        child.inc()
