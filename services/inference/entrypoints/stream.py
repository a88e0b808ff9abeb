"""The faust agent on `uploads`: take a decoded batch, call the handlers, save device state, acknowledge.

The agent decides nothing about an upload itself: `services/inference/handlers.py` does (which uploads
are dead letters, what each yields, what is published in which order), through the `Publisher` port
`wiring` fills. Order per batch (at-least-once with idempotent effects):
- an upload naming no upload, device or trip id is dead-lettered (`schema-violation`, awaited) and
  yields nothing: its outputs could be attributed to nothing (`handlers.refuse_unattributable`);
0. if new models are pending (a newer rollout plan was loaded in the background), every offset
   handled so far is committed first (the commit barrier) and only then are they swapped in;
   otherwise the swap waits for a later batch. So an upload offset is handled by one model version
   only: what the old models handled is committed and never redelivered, what the new ones handle
   is redelivered to them. (A timer does the same while no uploads arrive.)
1. predictions (champion and shadow), detections and label requests of every upload are published
   and awaited (shadow disagreement requests within a per-minute budget);
2. then each upload's `TripSegment` (so a segment never precedes its detections) — awaited;
3. uploads that failed are dead-lettered (their segment was still published);
   steps 1 to 3 are `handlers.publish_outcome`;
4. only then the device states are written to the table (changelog), so a crash before this
   point replays the batch from the old state and yields the same ids and counts; then the batch's
   offsets count as handled and faust acknowledges them.

A redelivered upload found in its device's replay memory is replayed with the model versions that
first handled it: if one is not loaded any more, it is loaded (in a worker thread) before the batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP

from michi.bus.catalog import UPLOADS
from michi.bus.producer import EventProducer
from michi.bus.streams import Inbound, catalog_topic, process_batches
from michi.contracts.v1 import upload_pb2
from michi.readiness import add_stream_pages
from services.inference.adapters.device_table import read_state, write_state
from services.inference.adapters.metrics import InferenceMetrics
from services.inference.domain.rollout import RateBudget
from services.inference.domain.state import DeviceState
from services.inference.handlers import (
    SERVICE,
    BatchOutcome,
    Publisher,
    process_uploads,
    publish_outcome,
    record_outcome,
    recorded_versions,
    refuse_unattributable,
)
from services.inference.serving import ModelServing

logger = logging.getLogger(__name__)

# Commits what was handled so far; True once every given offset (partition -> next offset) is committed.
CommitBarrier = Callable[[Mapping[int, int]], Awaitable[bool]]


@dataclass
class StreamWiring:
    # Dead-letters what cannot be decoded (`michi.bus.streams.process_batches`).
    producer: EventProducer
    # Where the handlers' outputs and dead letters go.
    publisher: Publisher
    serving: ModelServing
    table: Any
    metrics: InferenceMetrics
    batch_size: int
    within: float
    commit_barrier: CommitBarrier
    budget: RateBudget
    clock: Callable[[], float] = time.monotonic
    # Held while a batch is handled or models are swapped.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Uploads partition -> the offset after the last one handled (while the partition is ours).
    processed: dict[int, int] = field(default_factory=dict)


async def swap_if_ready(wiring: StreamWiring) -> bool:
    """Activate pending models once everything handled so far is committed (call with the lock held)."""
    if wiring.serving.pending is None:
        return False
    if await wiring.commit_barrier(dict(wiring.processed)):
        wiring.serving.activate()
        return True
    wiring.metrics.swaps_postponed.inc()
    logger.info("model swap postponed: handled offsets not committed yet", extra={"processed": wiring.processed})
    return False


async def handle_batch(batch: list[Inbound], wiring: StreamWiring) -> BatchOutcome:
    async with wiring.lock:
        await swap_if_ready(wiring)
        return await _handle(batch, wiring)


async def _handle(received_batch: list[Inbound], wiring: StreamWiring) -> BatchOutcome:
    began = time.perf_counter()
    batch = await refuse_unattributable(received_batch, wiring.publisher, wiring.metrics)
    if not batch:
        _mark_processed(received_batch, wiring)
        return BatchOutcome([], 0, 0.0)
    uploads: list[upload_pb2.UploadReceived] = [inbound.message for inbound in batch]  # type: ignore[misc]
    states: dict[str, DeviceState] = {}
    original: dict[str, bytes | None] = {}
    partition_of: dict[str, int] = {}
    for inbound, received in zip(batch, uploads, strict=True):
        device = received.upload.device_id
        partition_of[device] = inbound.partition
        if device not in states:
            original[device] = read_state(wiring.table, device)
            states[device] = DeviceState.from_bytes(original[device])
    missing = wiring.serving.missing(recorded_versions(uploads, states))
    if missing:
        await asyncio.to_thread(wiring.serving.ensure_loaded, missing)
    trace_parents = [inbound.headers.get("traceparent", "") for inbound in batch]
    outcome = process_uploads(uploads, states, wiring.serving.pipeline, trace_parents)
    await publish_outcome(
        batch, outcome, wiring.publisher, budget=wiring.budget, clock=wiring.clock, metrics=wiring.metrics
    )

    for device, state in states.items():
        payload = state.to_bytes()
        if payload != original.get(device):
            write_state(wiring.table, device, payload, partition_of[device])
    _mark_processed(received_batch, wiring)

    record_outcome(outcome, wiring.metrics, len(batch), time.perf_counter() - began)
    return outcome


def _mark_processed(batch: list[Inbound], wiring: StreamWiring) -> None:
    for inbound in batch:
        wiring.processed[inbound.partition] = max(wiring.processed.get(inbound.partition, 0), inbound.offset + 1)


def faust_commit_barrier(app: faust.App, topic: str, *, attempts: int = 5) -> CommitBarrier:
    """The commit barrier of a faust app: commit acknowledged offsets, then check what faust recorded."""

    def committed(processed: Mapping[int, int]) -> bool:
        consumer = app.consumer
        assigned = consumer.assignment()
        # faust records the offsets it committed per partition (the same record `michi.bus.streams` reads).
        recorded: Mapping[TP, int | None] = getattr(consumer, "_committed_offset", {})
        for partition, next_offset in processed.items():
            tp = TP(topic, partition)
            if tp not in assigned:
                continue  # not ours any more: whoever holds it now goes on from its committed offset
            offset = recorded.get(tp)
            if offset is None or offset < next_offset:
                return False
        return True

    async def barrier(processed: Mapping[int, int]) -> bool:
        for attempt in range(attempts):
            if committed(processed):
                return True
            # Returns without committing if another commit is running; the next attempt checks again.
            await app.consumer.commit()
            if committed(processed):
                return True
            await asyncio.sleep(0.05 * (attempt + 1))
        return False

    return barrier


def register_agent(app: faust.App, wiring: StreamWiring, prefix: str) -> Any:
    topic = catalog_topic(app, UPLOADS, prefix)
    topic_name = UPLOADS.name(prefix)

    async def analyse_uploads(stream: faust.StreamT) -> None:
        async def handle(batch: list[Inbound]) -> None:
            await handle_batch(batch, wiring)

        await process_batches(
            stream,
            UPLOADS,
            handle,
            producer=wiring.producer,
            service=SERVICE,
            batch_size=wiring.batch_size,
            within=wiring.within,
        )

    async def forget_revoked(sender: Any, /, *arguments: Any, signal: Any, **kwargs: Any) -> None:
        # Offsets of partitions given away are no longer ours to commit before a swap.
        revoked: set[TP] = set(arguments[0]) if arguments else set(kwargs.get("revoked", ()))
        for tp in revoked:
            if tp.topic == topic_name:
                wiring.processed.pop(tp.partition, None)

    async def swap_when_idle() -> None:
        if wiring.serving.pending is not None and not wiring.lock.locked():
            async with wiring.lock:
                await swap_if_ready(wiring)

    app.on_partitions_revoked.connect(forget_revoked)
    app.timer(1.0, name="swap-models-when-idle", traced=False)(swap_when_idle)
    return app.agent(topic, name="analyse-uploads")(analyse_uploads)


def register_pages(app: faust.App, metrics: InferenceMetrics) -> None:
    """/healthz, /readyz and /metrics (`michi.readiness.add_stream_pages`)."""
    add_stream_pages(app, SERVICE, metrics.render)
