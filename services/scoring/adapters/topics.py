"""The topics scoring reads and writes, including its two internal topics.

`TRIP_SCORES_BY_DRIVER` repartitions trip scores by driver_id, so the driver
table is partitioned by driver while the trip table is partitioned by trip.
`LABELS_BY_TRIP` repartitions labels (keyed by window_id) by trip_id with the
trip inputs' partition count, so a label reaches the worker and the table
partition that hold its trip. Both are scoring's own (not in the public
catalog), named under the prefix as `<prefix>scoring.<name>`.
"""

from __future__ import annotations

import time

from confluent_kafka.admin import AdminClient

from michi.bus.admin import ensure_topics
from michi.bus.catalog import (
    DAY_MS,
    DEAD_LETTERS,
    DETECTIONS,
    DRIVER_SCORES,
    LABELS,
    SCORED_EVENTS,
    TRIP_SCORES,
    TRIP_SEGMENTS,
    TopicSpec,
)
from michi.bus.connection import KafkaConnection, as_connection
from michi.contracts.v1 import labels_pb2, scoring_pb2

TRIP_SCORES_BY_DRIVER = TopicSpec(
    "scoring.trip-scores-by-driver.v1",
    "driver_id",
    scoring_pb2.TripScore,
    DRIVER_SCORES.partitions,
    7 * DAY_MS,
    description="internal to scoring: trip scores keyed by driver_id",
)

LABELS_BY_TRIP = TopicSpec(
    "scoring.labels-by-trip.v1",
    "trip_id",
    labels_pb2.Label,
    DETECTIONS.partitions,
    # Long enough for a stopped scoring service to catch up (labels themselves are kept forever).
    30 * DAY_MS,
    description="internal to scoring: labels keyed by trip_id, co-partitioned with detections",
)

CATALOG_TOPICS = (DETECTIONS, TRIP_SEGMENTS, LABELS, SCORED_EVENTS, TRIP_SCORES, DRIVER_SCORES, DEAD_LETTERS)


class TopicLayoutError(RuntimeError):
    """The topics on the broker cannot be processed together (one line for the operator)."""


def partition_counts(
    bootstrap: KafkaConnection | str, names: list[str], timeout: float = 30.0, settle_s: float = 10.0
) -> dict[str, int]:
    """Actual partition count of each topic on the broker (0 when missing).

    A topic created a moment ago can show no partitions in the broker's metadata for a short while:
    ask again (for up to `settle_s`) while any of them reads 0.
    """
    admin = AdminClient(as_connection(bootstrap).confluent_config())
    deadline = time.monotonic() + settle_s
    while True:
        metadata = admin.list_topics(timeout=timeout)
        counts = {name: len(metadata.topics[name].partitions) if name in metadata.topics else 0 for name in names}
        if all(counts.values()) or time.monotonic() >= deadline:
            return counts
        time.sleep(0.2)


def prepare_topics(bootstrap: KafkaConnection | str, prefix: str) -> tuple[int, int]:
    """Create what is missing; return (trip partitions, driver partitions) as they are on the broker.

    Detections, trip segments and the labels re-keyed by trip share the trip table, so
    they must have the same partition count (the internal labels topic is created with
    it); the internal trip-scores topic follows driver-scores' count.
    """
    ensure_topics(bootstrap, prefix, CATALOG_TOPICS)
    counts = partition_counts(
        bootstrap, [DETECTIONS.name(prefix), TRIP_SEGMENTS.name(prefix), DRIVER_SCORES.name(prefix)]
    )
    trip_partitions = counts[DETECTIONS.name(prefix)]
    if counts[TRIP_SEGMENTS.name(prefix)] != trip_partitions:
        raise TopicLayoutError(
            f"{DETECTIONS.name(prefix)} has {trip_partitions} partitions but {TRIP_SEGMENTS.name(prefix)} has "
            f"{counts[TRIP_SEGMENTS.name(prefix)]}; scoring joins them per trip, so they must be equal"
        )
    ensure_topics(bootstrap, prefix, [LABELS_BY_TRIP], partitions=trip_partitions)
    labels_partitions = partition_counts(bootstrap, [LABELS_BY_TRIP.name(prefix)])[LABELS_BY_TRIP.name(prefix)]
    if labels_partitions != trip_partitions:
        raise TopicLayoutError(
            f"{LABELS_BY_TRIP.name(prefix)} has {labels_partitions} partitions but {DETECTIONS.name(prefix)} has "
            f"{trip_partitions}; scoring applies labels to the trip table, so they must be equal"
        )
    ensure_topics(bootstrap, prefix, [TRIP_SCORES_BY_DRIVER], partitions=counts[DRIVER_SCORES.name(prefix)])
    driver_partitions = partition_counts(bootstrap, [TRIP_SCORES_BY_DRIVER.name(prefix)])[
        TRIP_SCORES_BY_DRIVER.name(prefix)
    ]
    return trip_partitions, driver_partitions
