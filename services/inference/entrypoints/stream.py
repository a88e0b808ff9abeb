"""The faust agent on `uploads`: decode a batch, run the pipeline, publish, then save device state.

Order per batch (at-least-once with idempotent effects):
1. predictions, detections and label requests of every upload are published and awaited;
2. then each upload's `TripSegment` (so a segment never precedes its detections) — awaited;
3. uploads that failed are dead-lettered (their segment was still published);
4. only then the device states are written to the table (changelog), so a crash before this
   point replays the batch from the old state and yields the same ids and counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST

from michi.bus.catalog import DETECTIONS, LABEL_REQUESTS, PREDICTIONS, TRIP_SEGMENTS, UPLOADS
from michi.bus.producer import EventProducer
from michi.bus.streams import Inbound, catalog_topic, consumer_span, process_batches
from michi.contracts.v1 import upload_pb2
from services.inference.adapters.device_table import read_state, write_state
from services.inference.adapters.metrics import InferenceMetrics
from services.inference.domain.state import DeviceState
from services.inference.handlers import BatchOutcome, InferencePipeline, process_uploads

logger = logging.getLogger(__name__)
SERVICE = "inference"


@dataclass
class StreamWiring:
    producer: EventProducer
    pipeline: InferencePipeline
    table: Any
    metrics: InferenceMetrics
    batch_size: int
    within: float


async def handle_batch(batch: list[Inbound], wiring: StreamWiring) -> BatchOutcome:
    began = time.perf_counter()
    producer, metrics = wiring.producer, wiring.metrics
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
    outcome = process_uploads(uploads, states, wiring.pipeline)

    # Each upload's outputs are published inside a span continuing the upload's trace, so
    # `michi trace <upload_id>` follows it from ingest through inference to scoring.
    first_wave = []
    for inbound, result in zip(batch, outcome.uploads, strict=True):
        with consumer_span(inbound, SERVICE):
            first_wave += [producer.publish(PREDICTIONS, result.device_id, message) for message in result.predictions]
            first_wave += [producer.publish(DETECTIONS, result.trip_id, message) for message in result.detections]
            first_wave += [
                producer.publish(LABEL_REQUESTS, message.lineage.window_id, message)
                for message in result.label_requests
            ]
    await asyncio.gather(*(asyncio.wrap_future(future) for future in first_wave))
    second_wave = []
    for inbound, result in zip(batch, outcome.uploads, strict=True):
        with consumer_span(inbound, SERVICE, "settle"):
            second_wave.append(producer.publish(TRIP_SEGMENTS, result.trip_id, result.segment))
    await asyncio.gather(*(asyncio.wrap_future(future) for future in second_wave))
    for inbound, received, result in zip(batch, uploads, outcome.uploads, strict=True):
        if result.failure is not None:
            await asyncio.wrap_future(
                producer.dead_letter(
                    service=SERVICE,
                    source_topic=inbound.topic,
                    partition=inbound.partition,
                    offset=inbound.offset,
                    key=inbound.key.encode(),
                    value=received.SerializeToString(),
                    headers=inbound.headers,
                    reason="processing-failed",
                    error=result.failure,
                )
            )
        elif result.skipped_reason is not None:
            logger.warning("upload skipped", extra={"upload_id": result.upload_id, "reason": result.skipped_reason})

    for device, state in states.items():
        payload = state.to_bytes()
        if payload != original.get(device):
            write_state(wiring.table, device, payload, partition_of[device])

    _record(outcome, metrics, len(batch), time.perf_counter() - began)
    return outcome


def _record(outcome: BatchOutcome, metrics: InferenceMetrics, uploads: int, seconds: float) -> None:
    metrics.batch_uploads.observe(uploads)
    metrics.batch_seconds.observe(seconds)
    if outcome.window_count:
        metrics.batch_windows.observe(outcome.window_count)
        metrics.onnx_seconds.observe(outcome.onnx_seconds)
    metrics.windows.inc(outcome.window_count)
    metrics.record_rate(outcome.window_count)
    for result in outcome.uploads:
        kind = (
            "failed"
            if result.failure
            else "skipped"
            if result.skipped_reason
            else "replayed"
            if result.replayed
            else "processed"
        )
        metrics.uploads.labels(outcome=kind).inc()
        for detection in result.detections:
            metrics.detection(detection.event_type)
        if result.calibration_confidence is not None:
            metrics.calibration_confidence.observe(result.calibration_confidence)
        if result.orientation_changed:
            metrics.orientation_changes.inc()
            logger.info(
                "device mount moved: calibration restarted",
                extra={"device_id": result.device_id, "upload_id": result.upload_id},
            )


def register_agent(app: faust.App, wiring: StreamWiring, prefix: str) -> Any:
    topic = catalog_topic(app, UPLOADS, prefix)

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

    return app.agent(topic, name="analyse-uploads")(analyse_uploads)


def register_pages(app: faust.App, metrics: InferenceMetrics, ready: Any) -> None:
    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "service": SERVICE})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        if ready():
            return web.json({"status": "ready"})
        return web.json({"status": "starting"}, status=503)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type, so the Prometheus type goes in as a header.
        return web.bytes(metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
