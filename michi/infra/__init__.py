"""Embedded infrastructure: real Kafka (KRaft), redis-server, SQLite and blobs on loopback."""

from michi.infra.embedded import EmbeddedInfrastructure, Endpoints
from michi.infra.processes import InfrastructureError

__all__ = ["EmbeddedInfrastructure", "Endpoints", "InfrastructureError"]
