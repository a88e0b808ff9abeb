"""Faust agents, the deadline timer and /healthz, /readyz, /metrics of the scoring service.

Agents:
- `score-detections` on detections (keyed trip_id) and `collect-segments` on trip
  segments (keyed trip_id, same partitions): both update the trip table;
- `repartition-labels` on labels (keyed window_id): re-keys them by trip_id onto
  scoring's internal topic, co-partitioned with the trip inputs;
- `apply-labels` on that internal topic: updates the trip table (overturned,
  added and corrected events; closed trips re-scored);
- `close-overdue-trips` (timer): closes trips whose deadline passed and forgets
  trips past the correction period;
- `repartition-trip-scores` on trip scores (keyed trip_id): re-keys them by
  driver_id onto scoring's internal topic;
- `roll-up-drivers` on that internal topic: updates the driver table and
  publishes driver scores.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from prometheus_client import generate_latest

from michi.bus.catalog import DETECTIONS, LABELS, TRIP_SCORES, TRIP_SEGMENTS
from michi.bus.producer import EventProducer
from michi.bus.streams import catalog_topic, process_batches, stream_readiness
from michi.readiness import add_stream_pages
from services.scoring.adapters.topics import LABELS_BY_TRIP, TRIP_SCORES_BY_DRIVER
from services.scoring.handlers import SERVICE, ScoringHandlers

logger = logging.getLogger(__name__)


def is_ready(app: faust.App) -> bool:
    """Partitions assigned, tables recovered, nothing crashed and no input waiting without progress."""
    return stream_readiness(app).ready


def register_agents(
    app: faust.App,
    *,
    handlers: ScoringHandlers,
    producer: EventProducer,
    prefix: str,
    batch_size: int,
    timer_interval_s: float,
) -> None:
    async def process(stream: Any, spec: Any, handle: Any) -> None:
        await process_batches(stream, spec, handle, producer=producer, service=SERVICE, batch_size=batch_size)

    @app.agent(catalog_topic(app, DETECTIONS, prefix), name="score-detections")
    async def score_detections(stream: faust.StreamT) -> None:
        await process(stream, DETECTIONS, handlers.on_detections)

    @app.agent(catalog_topic(app, TRIP_SEGMENTS, prefix), name="collect-segments")
    async def collect_segments(stream: faust.StreamT) -> None:
        await process(stream, TRIP_SEGMENTS, handlers.on_segments)

    @app.agent(catalog_topic(app, LABELS, prefix), name="repartition-labels")
    async def repartition_labels(stream: faust.StreamT) -> None:
        await process(stream, LABELS, handlers.forward_labels)

    @app.agent(catalog_topic(app, LABELS_BY_TRIP, prefix), name="apply-labels")
    async def apply_labels(stream: faust.StreamT) -> None:
        await process(stream, LABELS_BY_TRIP, handlers.on_labels)

    @app.agent(catalog_topic(app, TRIP_SCORES, prefix), name="repartition-trip-scores")
    async def repartition_trip_scores(stream: faust.StreamT) -> None:
        await process(stream, TRIP_SCORES, handlers.forward_trip_scores)

    @app.agent(catalog_topic(app, TRIP_SCORES_BY_DRIVER, prefix), name="roll-up-drivers")
    async def roll_up_drivers(stream: faust.StreamT) -> None:
        await process(stream, TRIP_SCORES_BY_DRIVER, handlers.on_driver_trip_scores)

    @app.timer(interval=timer_interval_s, name="close-overdue-trips")
    async def close_overdue_trips() -> None:
        # During a rebalance the table may hold partitions being recovered or handed over.
        if not is_ready(app):
            return
        await handlers.close_overdue_trips()

    add_stream_pages(app, SERVICE, lambda: generate_latest(handlers.metrics.registry))
