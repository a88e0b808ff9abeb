"""Prometheus metrics of the scoring service (one registry per app, served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from michi.telemetry.metrics import service_registry
from services.scoring.domain.limits import MAX_STATE_BYTES


class ScoringMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or service_registry()
        self.detections_scored = Counter(
            "michi_scoring_detections_scored", "Detections turned into scored events", registry=self.registry
        )
        self.detections_not_scored = Counter(
            "michi_scoring_detections_not_scored",
            "Detections recorded but not counted (not a risky type, or a shadow model's)",
            registry=self.registry,
        )
        self.duplicates_ignored = Counter(
            "michi_scoring_duplicates_ignored",
            "Redelivered inputs that changed nothing",
            ["kind"],
            registry=self.registry,
        )
        self.late_inputs = Counter(
            "michi_scoring_late_inputs",
            "Detections or segments that arrived after their trip was closed",
            ["kind"],
            registry=self.registry,
        )
        self.trips_closed = Counter(
            "michi_scoring_trips_closed", "Trip scores emitted", ["reason"], registry=self.registry
        )
        self.labels_applied = Counter(
            "michi_scoring_labels_applied",
            "Labels by what they did: overturned, added, corrected, no-change (confirmed), pending, stale",
            ["effect"],
            registry=self.registry,
        )
        self.labels_expired = Counter(
            "michi_scoring_labels_expired",
            "Labels dropped because their trip never arrived within the correction period",
            registry=self.registry,
        )
        self.trips_rescored = Counter(
            "michi_scoring_trips_rescored",
            "Closed trips published again with a higher revision",
            ["cause"],
            registry=self.registry,
        )
        self.driver_updates = Counter("michi_scoring_driver_updates", "Driver scores emitted", registry=self.registry)
        self.invalid_messages = Counter(
            "michi_scoring_invalid_messages",
            "Decodable messages sent to dead letters",
            ["topic"],
            registry=self.registry,
        )
        self.state_limits = Counter(
            "michi_scoring_state_limits",
            "Inputs refused (dead-lettered) because their trip's state would cross a bound",
            ["bound"],
            registry=self.registry,
        )
        self.state_bytes = Histogram(
            "michi_scoring_state_bytes",
            "Bytes of the trip and driver state records written to the changelogs",
            ["table"],
            buckets=(1024, 4096, 16384, 65536, 131072, 196608, MAX_STATE_BYTES),
            registry=self.registry,
        )
        self.trips_in_state = Gauge(
            "michi_scoring_trips_in_state", "Trips held in local state", ["state"], registry=self.registry
        )
        self.drivers_in_state = Gauge(
            "michi_scoring_drivers_in_state", "Drivers held in local state", registry=self.registry
        )
