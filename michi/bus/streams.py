"""The one faust app factory every stream service uses, and decoding of what it reads.

`create_app()` configures faust for Michi (loopback web server or none, short
group timeouts, acks=all, in-memory tables recovered from their changelogs, a watchdog
that restarts a worker which stopped fetching).
`decoded_batches()` turns a faust stream of raw catalog messages into batches of
decoded protobufs; what cannot be decoded goes to the dead-letter topic with
the reason and the original bytes, and the stream goes on.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import faust
from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import trace

from michi.bus.catalog import TopicSpec
from michi.bus.codec import UndecodableMessage, decode_message
from michi.bus.headers import extract_context, read_headers
from michi.bus.producer import EventProducer
from michi.bus.stalls import STALL_TIMEOUT_S, install_stall_watchdog, remember_read_topic

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("michi.bus")

# Exit status of a stream worker that stopped on purpose so its input is redelivered.
EXIT_REDELIVER = 75


def create_app(
    service: str,
    *,
    bootstrap: str,
    app_id: str | None = None,
    data_dir: Path = Path(".michi") / "faust",
    web_port: int | None = None,
    partitions: int = 6,
    stall_timeout_s: float | None = STALL_TIMEOUT_S,
    **overrides: Any,
) -> faust.App:
    """A faust app for one Michi service. `web_port=None` runs it without a web server.

    Unless `stall_timeout_s` is None, a watchdog restarts the worker (exit 75) when the topics its
    agents read have records waiting and its committed offsets have not moved for that long
    (`michi/bus/stalls.py`).
    """
    identifier = app_id or f"michi-{service}"
    (data_dir / identifier).mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {
        "broker": f"kafka://{bootstrap}",
        "store": "memory://",
        "datadir": str(data_dir / identifier),
        "autodiscover": False,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": 6.0,
        "broker_heartbeat_interval": 1.0,
        "broker_commit_interval": 1.0,
        "producer_acks": -1,
        "topic_replication_factor": 1,
        "topic_partitions": partitions,
        "table_standby_replicas": 0,
        "web_enabled": web_port is not None,
        "web_host": "127.0.0.1",
        "web_port": web_port or 6066,
        "web_bind": "127.0.0.1",
        "logging_config": None,
    }
    settings.update(overrides)
    app = faust.App(identifier, **settings)
    if stall_timeout_s is not None:
        install_stall_watchdog(app, bootstrap=bootstrap, service=service, timeout_s=stall_timeout_s)
    return app


def catalog_topic(app: faust.App, spec: TopicSpec, prefix: str = "michi.", *, name: str | None = None) -> faust.TopicT:
    """The faust topic of a catalog entry an agent reads, as raw bytes (decoded by `decoded_batches`)."""
    remember_read_topic(app, name or spec.name(prefix))
    return app.topic(
        name or spec.name(prefix),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=None,
    )


@dataclass
class Inbound:
    """One decoded message and where it came from."""

    message: Message
    key: str
    headers: dict[str, str]
    topic: str
    partition: int
    offset: int
    context: otel_context.Context


async def decoded_batches(
    stream: faust.StreamT,
    spec: TopicSpec,
    *,
    producer: EventProducer,
    service: str,
    batch_size: int = 64,
    within: float = 0.05,
) -> AsyncIterator[list[Inbound]]:
    """Batches of decoded messages; undecodable ones are dead-lettered (and awaited) first.

    Guards against silent loss: if faust hands over an offset beyond the next one expected for its
    partition (a gap faust would then commit over, seen after restarts with a backlog), the process
    stops at once without acknowledging anything, so the supervisor restarts it from the committed offset.
    """
    last_offsets: dict[Any, int] = {}
    async for events in stream.take_events(batch_size, within=within):  # type: ignore[attr-defined]
        batch: list[Inbound] = []
        for event in events:
            message = event.message
            if not spec.compacted:
                _refuse_offset_gap(stream, message, last_offsets, service)
            last_offsets[message.tp] = message.offset
            headers = read_headers(message.headers)
            key = (
                message.key
                if isinstance(message.key, bytes)
                else (str(message.key).encode() if message.key is not None else None)
            )
            value = event.value if isinstance(event.value, bytes) else message.value
            try:
                decoded = decode_message(spec, value, headers)
            except UndecodableMessage as error:
                await _dead_letter(producer, service, message, key, value, headers, error.reason, error.detail)
                continue
            batch.append(
                Inbound(
                    message=decoded,
                    key=(key or b"").decode("utf-8", "replace"),
                    headers=headers,
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                    context=extract_context(headers),
                )
            )
        if batch:
            yield batch


async def process_batches(
    stream: faust.StreamT,
    spec: TopicSpec,
    handle: Callable[[list[Inbound]], Awaitable[object]],
    *,
    producer: EventProducer,
    service: str,
    batch_size: int = 64,
    within: float = 0.05,
) -> None:
    """Run `handle` on every decoded batch; a failing batch stops the process before it is acknowledged.

    faust acknowledges a batch when the loop moves on, even after an exception, so an error must not
    unwind through it: the process exits instead, and the batch is redelivered after the restart
    (effects are idempotent by event id).
    """
    async for batch in decoded_batches(
        stream, spec, producer=producer, service=service, batch_size=batch_size, within=within
    ):
        try:
            await handle(batch)
        except Exception:
            stop_without_acknowledging(service, "processing a batch failed", spec.base_name)


def _refuse_offset_gap(stream: faust.StreamT, message: Any, last_offsets: dict[Any, int], service: str) -> None:
    # faust keeps the offsets it committed (or sought to after an assignment) per partition.
    committed = getattr(stream.app.consumer, "_committed_offset", {}).get(message.tp)
    candidates = [
        offset for offset in (committed, last_offsets.get(message.tp, -2) + 1) if offset is not None and offset >= 0
    ]
    expected = max(candidates) if candidates else None
    if expected is not None and message.offset > expected:
        stop_without_acknowledging(
            service,
            f"offset gap on {message.topic}[{message.partition}]: expected {expected}, got {message.offset}",
            message.topic,
        )


def stop_without_acknowledging(service: str, reason: str, topic: str) -> NoReturn:
    """Exit now: no acknowledgement, no commit; the supervisor restarts the service from the committed offsets."""
    logger.critical(
        "stopping without acknowledging",
        extra={"service": service, "reason": reason, "topic": topic},
        exc_info=sys.exc_info()[0] is not None,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_REDELIVER)


async def _dead_letter(
    producer: EventProducer,
    service: str,
    message: Any,
    key: bytes | None,
    value: Any,
    headers: dict[str, str],
    reason: str,
    detail: str,
) -> None:
    import asyncio

    raw = value if isinstance(value, bytes) else (b"" if value is None else str(value).encode())
    future = producer.dead_letter(
        service=service,
        source_topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=key,
        value=raw,
        headers=headers,
        reason=reason,
        error=detail,
    )
    await asyncio.wrap_future(future)


def consumer_span(inbound: Inbound, service: str, operation: str = "process") -> Any:
    """A CONSUMER span continuing the trace the message carried."""
    return tracer.start_as_current_span(
        f"{inbound.topic} {operation}",
        context=inbound.context,
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": inbound.topic,
            "messaging.operation.type": operation,
            "messaging.kafka.destination.partition": inbound.partition,
            "messaging.kafka.message.offset": inbound.offset,
            "messaging.consumer.group.name": f"michi-{service}",
        },
    )


def run_worker(app: faust.App, *, loglevel: str = "warning") -> None:
    """Run a faust worker in this process until SIGINT/SIGTERM."""
    worker = faust.Worker(app, loglevel=loglevel, override_logging=False)
    worker.execute_from_commandline()
