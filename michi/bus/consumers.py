"""Settings of the plain confluent-kafka group consumers (annotation, trainer, warehouse sink).

Offsets are committed by hand, only after the work they stand for is durable (at-least-once); a new
group starts from the earliest record; short session and fetch waits so a restart or a rebalance
takes seconds, not the default 45 s.
"""

from __future__ import annotations

from typing import Any


def group_consumer_config(bootstrap: str, prefix: str, service: str) -> dict[str, Any]:
    """A consumer in the service's group `<prefix><service>` that never commits on its own."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": f"{prefix}{service}",
        "client.id": f"{prefix}{service}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "fetch.wait.max.ms": 100,
    }
