"""The wire contracts: generated protobuf classes plus small helpers to build events.

Generated modules live in `michi.contracts.v1` (see `make proto`); this module adds
the few helpers every producer needs: stable event ids and timestamps.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

# Namespace for deterministic event ids: the same inputs give the same id, so a
# redelivered message reproduces the id its first delivery had.
EVENT_NAMESPACE = uuid.UUID("6f1d4a8e-3c1b-5d2e-9a7f-4b6c8d0e2f13")


def stable_event_id(*parts: object) -> str:
    """An event id derived from what the event is about (idempotent across redelivery)."""
    return str(uuid.uuid5(EVENT_NAMESPACE, "\x1f".join(str(part) for part in parts)))


def new_event_id() -> str:
    return str(uuid.uuid4())


def timestamp_now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


def timestamp_from_datetime(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def timestamp_from_seconds(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


def timestamp_to_seconds(stamp: Timestamp) -> float:
    return float(stamp.seconds) + stamp.nanos / 1e9


def utc_now() -> datetime:
    return datetime.now(UTC)
