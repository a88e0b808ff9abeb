"""The one faust app factory every stream service uses, and decoding of what it reads.

`create_app()` configures faust for Michi (loopback web server or none, short
group timeouts, acks=all, in-memory tables recovered from their changelogs, every
partition sought back to its committed offset or its start after a rebalance) and
makes sure a worker never lives on without working: a crashed agent, a crashed
faust service (producer, consumer, tables, timers) or a worker that stopped
progressing is stopped without acknowledging (exit 75, `redelivery.py`; the watch
is `stalls.StreamWatch`), and `stream_readiness()` tells `/readyz` the truth.
`decoded_batches()` turns a faust stream of raw catalog messages into batches of
decoded protobufs; what cannot be decoded goes to the dead-letter topic with
the reason and the original bytes, and the stream goes on. `process_batches()`
runs a handler on each batch and stops the worker when a batch cannot be finished.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import trace

from michi.bus import tracing
from michi.bus.catalog import TopicSpec
from michi.bus.codec import UndecodableMessage, decode_message
from michi.bus.connection import KafkaConnection, as_connection
from michi.bus.headers import extract_context, read_headers
from michi.bus.producer import EventProducer, PendingDelivery
from michi.bus.redelivery import EXIT_REDELIVER, stop_without_acknowledging
from michi.bus.stalls import CHECK_INTERVAL_S, NOT_READY_AFTER_S, STALL_TIMEOUT_S, StreamWatch

__all__ = [
    "EXIT_REDELIVER",
    "Inbound",
    "Readiness",
    "catalog_topic",
    "create_app",
    "decoded_batches",
    "faust_broker_settings",
    "process_batches",
    "run_worker",
    "stop_without_acknowledging",
    "stream_readiness",
    "stream_watch",
]

logger = logging.getLogger(__name__)

# The watch of each app `create_app` made (filled there, read by `catalog_topic` and `stream_readiness`).
_WATCHES: weakref.WeakKeyDictionary[faust.App, StreamWatch] = weakref.WeakKeyDictionary()


class RedeliveringAgent(faust.Agent):
    """A faust agent whose crash stops the worker unacknowledged instead of being restarted.

    faust would restart the crashed actor and, on the way, commit what the failed batch had
    acknowledged (its take buffer acknowledges on unwinding, and the app's error callback commits).
    This handler runs first and never returns.
    """

    def __init__(self, fun: Any, *, on_error: Any = None, **kwargs: Any) -> None:
        super().__init__(fun, on_error=_stop_on_agent_error, **kwargs)


async def _stop_on_agent_error(agent: Any, error: BaseException) -> None:
    stop_without_acknowledging(
        agent.app.conf.id, f"agent {agent.name} crashed: {error!r}"[:500], str(getattr(agent.channel, "topics", ""))
    )


async def seek_to_committed_or_start(consumer: Any, *, keep: frozenset[str] = frozenset()) -> dict[Any, int | None]:
    """Seek each assigned partition to its committed offset, and one without a commit (or at 0) to its start.

    aiokafka's own `seek_to_committed` moves only partitions committed past 0: the others stay where its
    fetcher got to. faust calls it after every rebalance, having thrown away what it fetched and had not
    processed yet, so such a partition would go on after those records: they were never processed, and
    once a later record of the partition is, its commit passes them (seen after a broker restart: the
    records fetched while the group was being re-joined; Michi's groups start a partition at its first
    record, `consumer_auto_offset_reset="earliest"`). Partitions of the topics in `keep` (the tables'
    changelogs, which faust's recovery seeks itself and never commits) are left where they are. Returns the
    committed offsets, as aiokafka's does.
    """
    committed: dict[Any, int | None] = await consumer.seek_to_committed()
    uncommitted = [tp for tp, offset in committed.items() if (offset is None or offset <= 0) and tp.topic not in keep]
    if uncommitted:
        await consumer.seek_to_beginning(*uncommitted)
    return committed


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def seek_to_committed(self) -> Any:
        return await self.call_thread(self._seek_to_committed_or_start)

    async def _seek_to_committed_or_start(self) -> dict[Any, int | None]:
        changelogs = frozenset(self.consumer.app.tables.changelog_topics)
        return await seek_to_committed_or_start(self._ensure_consumer(), keep=changelogs)


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class _App(faust.App):
    """faust's app whose consumer seeks back every partition it holds after a rebalance (`seek_to_committed_or_start`)."""

    def _new_transport(self) -> Any:
        if self.conf.consumer_auto_offset_reset != "earliest":
            return super()._new_transport()
        return _Transport(self.conf.broker_consumer, self)


def faust_broker_settings(connection: KafkaConnection) -> dict[str, Any]:
    """faust's `broker` (a `kafka://` URL per server) and `broker_credentials` (SASL and/or TLS) for `connection`."""
    settings: dict[str, Any] = {"broker": [f"kafka://{server}" for server in connection.servers]}
    if connection.uses_sasl:
        assert connection.sasl_password is not None  # checked on creation
        settings["broker_credentials"] = faust.SASLCredentials(
            username=connection.sasl_username,
            password=connection.sasl_password.get_secret_value(),
            mechanism=connection.sasl_mechanism,
            ssl_context=connection.ssl_context() if connection.uses_tls else None,
        )
    elif connection.uses_tls:
        settings["broker_credentials"] = faust.SSLCredentials(connection.ssl_context())
    return settings


def create_app(
    service: str,
    *,
    bootstrap: KafkaConnection | str,
    app_id: str | None = None,
    data_dir: Path = Path(".michi") / "faust",
    web_port: int | None = None,
    web_host: str = "127.0.0.1",
    partitions: int = 6,
    stall_timeout_s: float | None = STALL_TIMEOUT_S,
    not_ready_after_s: float = NOT_READY_AFTER_S,
    watch_interval_s: float = CHECK_INTERVAL_S,
    **overrides: Any,
) -> faust.App:
    """A faust app for one Michi service. `web_port=None` runs it without a web server; `web_host` is the address
    it binds (127.0.0.1 unless the service's `<name>_host` says otherwise).

    `bootstrap` is the Kafka connection (a bare bootstrap string: PLAINTEXT); faust's clients and the
    watch's consumer are built from it.

    Its worker stops without acknowledging (exit 75) when an agent or a faust service crashes, and
    when the partitions it holds of the topics its agents read have records waiting and its committed
    offsets have not moved for `stall_timeout_s` (None: never for a stall); `stream_readiness()` says
    not ready after `not_ready_after_s` of it (`michi/bus/stalls.py`).
    """
    connection = as_connection(bootstrap)
    identifier = app_id or f"michi-{service}"
    (data_dir / identifier).mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {
        **faust_broker_settings(connection),
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
        # Copies of the topics faust creates. A service with tables passes the cluster's default when
        # MICHI_KAFKA_REPLICATION_FACTOR is unset (`michi.bus.admin.replication_factor`; scoring does), so its
        # changelogs are replicated like every other topic; without tables faust makes only its leader topic.
        "topic_replication_factor": connection.replication_factor or 1,
        "topic_partitions": partitions,
        "table_standby_replicas": 0,
        "web_enabled": web_port is not None,
        "web_host": web_host,
        "web_port": web_port or 6066,
        "web_bind": web_host,
        "logging_config": None,
        "Agent": RedeliveringAgent,
    }
    settings.update(overrides)
    app = _App(identifier, **settings)
    watch = StreamWatch(
        app,
        bootstrap=connection,
        service=service,
        timeout_s=stall_timeout_s,
        not_ready_after_s=not_ready_after_s,
        interval_s=watch_interval_s,
    )
    _WATCHES[app] = watch
    _connect_watch(app, watch)
    return app


def _connect_watch(app: faust.App, watch: StreamWatch) -> None:
    """The watch learns the worker's partitions from faust's rebalance signals and stops with its shutdown.

    `run_worker` starts it; so does the first assignment, for a worker started some other way.
    """

    def stop(sender: Any, /, *arguments: Any, signal: Any, **kwargs: Any) -> None:
        watch.stop()

    def assigned(sender: Any, /, *arguments: Any, signal: Any, **kwargs: Any) -> None:
        watch.assigned(arguments[0] if arguments else kwargs.get("assigned", ()))
        watch.start()

    def revoked(sender: Any, /, *arguments: Any, signal: Any, **kwargs: Any) -> None:
        watch.revoked(arguments[0] if arguments else kwargs.get("revoked", ()))

    app.on_before_shutdown.connect(stop)
    app.on_partitions_assigned.connect(assigned)
    app.on_partitions_revoked.connect(revoked)


def stream_watch(app: faust.App) -> StreamWatch | None:
    """The watch `create_app` gave the app (None for an app made otherwise)."""
    return _WATCHES.get(app)


@dataclass(frozen=True)
class Readiness:
    """What `/readyz` of a stream worker says: `status` ready, starting (recovering, rebalancing) or stalled."""

    status: str
    reason: str = ""

    @property
    def ready(self) -> bool:
        return self.status == "ready"


def stream_readiness(app: faust.App) -> Readiness:
    """Whether the worker is processing (for `/readyz`: 200 when ready, else 503 with the reason).

    Processing means: its partitions assigned and its tables recovered, no rebalance under way,
    nothing crashed, and no partition it holds with records waiting and no progress for
    `not_ready_after_s` (`StreamWatch.readiness`).
    """
    recovery = getattr(app.tables, "recovery", None)
    if recovery is None or not recovery.completed.is_set() or app.in_recovery:
        return Readiness("starting", "recovering its tables")
    if app.rebalancing:
        return Readiness("starting", "rebalancing")
    watch = _WATCHES.get(app)
    problem = watch.readiness() if watch is not None else None
    return Readiness("stalled", problem) if problem is not None else Readiness("ready")


def catalog_topic(app: faust.App, spec: TopicSpec, prefix: str = "michi.", *, name: str | None = None) -> faust.TopicT:
    """The faust topic of a catalog entry an agent reads, as raw bytes (decoded by `decoded_batches`)."""
    watch = _WATCHES.get(app)
    if watch is not None:
        watch.read_topic(name or spec.name(prefix))
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
    """Run `handle` on every decoded batch; a batch that is not finished stops the process unacknowledged.

    faust acknowledges a batch when the loop moves on, also while an exception unwinds it or a
    cancellation (a shutdown, a rebalance) closes it, so neither may: the process exits instead
    (`redelivery.py`), and the batch is redelivered after the restart (effects are idempotent by
    event id). The same holds for a failure while reading the stream (a dead letter that cannot
    be published, say).
    """
    try:
        async for batch in decoded_batches(
            stream, spec, producer=producer, service=service, batch_size=batch_size, within=within
        ):
            try:
                await handle(batch)
            except asyncio.CancelledError:
                stop_without_acknowledging(service, "processing a batch was cancelled", spec.base_name)
            except Exception:
                stop_without_acknowledging(service, "processing a batch failed", spec.base_name)
    except Exception:
        stop_without_acknowledging(service, "reading the stream failed", spec.base_name)


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


def consumer_span(inbound: Inbound, service: str, operation: str = "process") -> AbstractContextManager[trace.Span]:
    """A CONSUMER span continuing the trace the message carried (`michi.bus.tracing.consumer_span`)."""
    return tracing.consumer_span(
        service,
        topic=inbound.topic,
        partition=inbound.partition,
        offset=inbound.offset,
        context=inbound.context,
        operation=operation,
    )


def run_worker(app: faust.App, *, loglevel: str = "warning") -> None:
    """Run a faust worker in this process until SIGINT/SIGTERM (or until its watch stops it, exit 75)."""
    worker = faust.Worker(app, loglevel=loglevel, override_logging=False)
    watch = _WATCHES.get(app)
    if watch is not None:
        watch.start()
    worker.execute_from_commandline()


class StreamPublisher:
    """The `Publisher` port of a stream service's handlers (inference, scoring) over the shared producer.

    `publish` sends now, inside the current span (its trace context goes into the headers); `dead_letter`
    parks a consumed record (its message re-serialized, with topic, partition, offset, key and headers).
    Both return the pending delivery, which the handler awaits per batch (`michi.bus.producer.wait_for_deliveries`).
    """

    def __init__(self, producer: EventProducer, service: str) -> None:
        self._producer = producer
        self._service = service

    def publish(self, spec: TopicSpec, key: str, message: Message) -> PendingDelivery:
        return self._producer.publish(spec, key, message)

    def dead_letter(self, inbound: Inbound, reason: str, detail: str) -> PendingDelivery:
        return self._producer.dead_letter_inbound(service=self._service, inbound=inbound, reason=reason, error=detail)
