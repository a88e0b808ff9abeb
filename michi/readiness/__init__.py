"""`/readyz` for the HTTP services: each dependency's check, run concurrently with a bound.

    ready, checks = await run_checks({"redis": redis.ping, "database": database_ready})

A check is an async callable that returns when the dependency answers and raises when it does not;
`checks` maps each name to "ok" or "error: <type>: <message>" (cut to 300 characters), the body
`ReadinessAnswer` describes in the OpenAPI document.

    add_operations_routes(app, checks, metrics.registry, ready_summary="...", service="ingest")

adds a FastAPI service's `/healthz`, `/readyz` (200 or 503 with that body) and `/metrics` (Prometheus);
`add_stream_pages` does the same for a faust stream worker, and `serve_operations` for a service with no HTTP
app of its own (the warehouse sink: a `http.server` thread). Every service's `/readyz` answers one body
(`readiness_body`, docs/architecture.md):

    {"status": "ready", "service": "ingest", "ready": true, "checks": {"kafka": "ok", "redis": "ok"}}
    {"status": "not ready", "service": "ingest", "ready": false,
     "checks": {"kafka": "error: KafkaException: ...", "redis": "ok"}, "reason": "kafka: error: KafkaException: ..."}

`status` is "ready" or why not ("not ready"; a stream worker says "starting" or "stalled"), `checks` maps each
check to "ok" or "error: ...", `reason` (only when not ready) is the first failing check. `/healthz` answers
`{"status": "ok", "service": ...}`.

A service that consumes Kafka is ready only while it makes progress: `ConsumerProgress` is a check that
fails when records wait on the group's partitions and its committed offsets have not moved for
`NOT_READY_AFTER_S` (30 s; the faust stream workers have the same judgement built in, `michi/bus/stalls.py`):

    checks["progress"] = ConsumerProgress(settings.kafka_connection(), f"{prefix}warehouse", [PREDICTIONS.name(prefix)])
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from confluent_kafka import Consumer
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from pydantic import BaseModel

from michi.bus.connection import KafkaConnection, as_connection
from michi.bus.stalls import NOT_READY_AFTER_S, Partition, Position, StallDetector, read_positions
from michi.telemetry.metrics import render_metrics

CHECK_TIMEOUT_S = 5.0

ReadinessCheck = Callable[[], Awaitable[Any]]


READY = "ready"
NOT_READY = "not ready"


class ReadinessAnswer(BaseModel):
    """The body of every service's `/readyz` (200 when `ready`, else 503)."""

    status: str
    service: str
    ready: bool
    checks: dict[str, str]
    reason: str | None = None


def readiness_body(service: str, checks: Mapping[str, str], *, status: str | None = None) -> dict[str, Any]:
    """The `/readyz` body: ready when every check says "ok"; else `status` (default "not ready") and the reason."""
    ready = all(outcome == "ok" for outcome in checks.values())
    body: dict[str, Any] = {
        "status": READY if ready else (status or NOT_READY),
        "service": service,
        "ready": ready,
        "checks": dict(checks),
    }
    if not ready:
        body["reason"] = next(f"{name}: {outcome}" for name, outcome in checks.items() if outcome != "ok")
    return body


def health_body(service: str) -> dict[str, str]:
    """The `/healthz` body of a live process."""
    return {"status": "ok", "service": service}


async def run_checks(
    checks: Mapping[str, ReadinessCheck], timeout: float = CHECK_TIMEOUT_S
) -> tuple[bool, dict[str, str]]:
    """Whether every dependency answered within `timeout`, and what each said."""
    names = list(checks)
    results = await asyncio.gather(
        *(asyncio.wait_for(check(), timeout) for check in checks.values()), return_exceptions=True
    )
    outcomes = {
        name: "ok" if not isinstance(result, BaseException) else f"error: {type(result).__name__}: {result}"[:300]
        for name, result in zip(names, results, strict=True)
    }
    return all(value == "ok" for value in outcomes.values()), outcomes


class ConsumerStalled(RuntimeError):
    """Records wait and the consumer group has not committed progress for a while."""


class ConsumerProgress:
    """A readiness check: fails while a partition has records waiting and no committed progress for `not_ready_after_s`.

    The clock of a partition starts at the first check that sees it lagging, so a service is judged
    from its first `/readyz` on. `read` (the positions of the partitions, for tests) defaults to a plain
    consumer of the group that only reads offsets (it never joins the group or commits).
    """

    def __init__(
        self,
        bootstrap: KafkaConnection | str,
        group_id: str,
        topics: Iterable[str],
        *,
        not_ready_after_s: float = NOT_READY_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
        read: Callable[[], dict[Partition, Position]] | None = None,
    ) -> None:
        self.connection = as_connection(bootstrap)
        self.group_id = group_id
        self.topics = tuple(topics)
        self.not_ready_after_s = not_ready_after_s
        self._clock = clock
        self._read = read or self._read_from_broker
        self._detector = StallDetector(not_ready_after_s)
        self._client: Consumer | None = None
        self._lock = threading.Lock()

    def _read_from_broker(self) -> dict[Partition, Position]:
        with self._lock:
            if self._client is None:
                self._client = Consumer(
                    self.connection.confluent_config({"group.id": self.group_id, "enable.auto.commit": False})
                )
            metadata = self._client.list_topics(timeout=5)
            partitions = {
                (name, number)
                for name in self.topics
                if name in metadata.topics
                for number in metadata.topics[name].partitions
            }
            return read_positions(self._client, partitions)

    async def __call__(self) -> None:
        positions = await asyncio.to_thread(self._read)
        waiting = self._detector.observe(positions, self._clock())
        stuck = sorted(partition for partition, waited in waiting.items() if waited >= self.not_ready_after_s)
        if stuck:
            topic, number = stuck[0]
            committed, end = positions[stuck[0]]
            raise ConsumerStalled(
                f"no progress for {max(waiting[partition] for partition in stuck):.0f} s on {len(stuck)} "
                f"partition(s) with records waiting ({topic}[{number}]: committed {committed}, end {end})"
            )

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def add_operations_routes(
    app: FastAPI,
    checks: Mapping[str, ReadinessCheck] | Callable[[], dict[str, str]],
    registry: CollectorRegistry | Callable[[], bytes],
    *,
    ready_summary: str,
    service: str,
) -> None:
    """`/healthz` (the process is alive), `/readyz` and `/metrics` on `app`.

    `checks`: async checks run with `run_checks`, or a blocking function returning the outcomes (run in a
    thread: it may block on the broker). `registry`: a Prometheus registry, or a function rendering the page.
    """

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return health_body(service)

    @app.get(
        "/readyz",
        response_model=ReadinessAnswer,
        responses={503: {"model": ReadinessAnswer, "description": "A dependency does not answer"}},
        summary=ready_summary,
    )
    async def readyz() -> Response:
        if callable(checks):
            outcomes = await asyncio.to_thread(checks)
        else:
            outcomes = (await run_checks(checks))[1]
        body = readiness_body(service, outcomes)
        return Response(orjson.dumps(body), status_code=200 if body["ready"] else 503, media_type="application/json")

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics_page() -> Response:
        page = registry() if callable(registry) else render_metrics(registry)
        return Response(page, media_type=CONTENT_TYPE_LATEST)


def add_stream_pages(app: Any, service: str, render_metrics: Callable[[], bytes]) -> None:
    """`/healthz`, `/readyz` and `/metrics` of a faust stream worker (`michi.bus.streams.stream_readiness`).

    Its one check, `stream`, is "ok" while the worker processes; otherwise the body's `status` is the
    worker's ("starting": recovering or rebalancing; "stalled": records wait without progress).
    """
    from michi.bus.streams import stream_readiness  # faust: imported only by the services that run it

    @app.page("/healthz", name="healthz")  # type: ignore[untyped-decorator]
    async def healthz(web: Any, request: Any) -> Any:
        return web.json(health_body(service))

    @app.page("/readyz", name="readyz")  # type: ignore[untyped-decorator]
    async def readyz(web: Any, request: Any) -> Any:
        # Ready: partitions held, tables recovered, no rebalance, nothing crashed, and no held partition
        # with records waiting and no progress for 30 s (`michi.bus.streams.StreamWatch`).
        readiness = stream_readiness(app)
        outcome = "ok" if readiness.ready else f"error: {readiness.status}: {readiness.reason}"
        body = readiness_body(service, {"stream": outcome}, status=readiness.status)
        if not readiness.ready:
            body["reason"] = readiness.reason
        return web.json(body, status=200 if readiness.ready else 503)

    @app.page("/metrics", name="metrics")  # type: ignore[untyped-decorator]
    async def metrics_page(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type, so the Prometheus type goes in as a header.
        return web.bytes(render_metrics(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def serve_operations(
    service: str,
    port: int,
    *,
    alive: Callable[[], bool],
    registry: CollectorRegistry,
    ready: Mapping[str, Callable[[], str | None]] | None = None,
    checks: Mapping[str, ReadinessCheck] | None = None,
    host: str = "127.0.0.1",
) -> ThreadingHTTPServer:
    """`/healthz`, `/readyz` and `/metrics` of a service that has no HTTP app of its own, on `host:port`.

    `/healthz` is 200 with `health_body` while `alive()`, else 503. `/readyz` answers `readiness_body`
    (200 when every check says "ok", else 503): first the service's own judgements in `ready` (each returns
    None when ready, else why not), then the async `checks` (`run_checks`, in an event loop of their own per
    request, bounded like every `/readyz` check), one answer at a time (a `ConsumerProgress` keeps clocks).
    The pages run in a daemon thread and log nothing per request; `server.shutdown()` and
    `server.server_close()` stop them (port 0: a free port, `server.server_address[1]`).
    """
    own = dict(ready or {})
    dependencies = dict(checks or {})
    judging = threading.Lock()

    def outcomes() -> dict[str, str]:
        answers = {name: "ok" if (why := judge()) is None else f"error: {why}" for name, judge in own.items()}
        if dependencies:
            answers.update(asyncio.run(run_checks(dependencies))[1])
        return answers

    class OperationsPages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, render_metrics(registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                healthy = alive()
                body = health_body(service) if healthy else {"status": "unavailable", "service": service}
                self._answer(200 if healthy else 503, orjson.dumps(body), "application/json")
            elif self.path == "/readyz":
                with judging:
                    answer = readiness_body(service, outcomes())
                self._answer(200 if answer["ready"] else 503, orjson.dumps(answer), "application/json")
            else:
                self._answer(404, b'{"status": "not found"}', "application/json")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer((host, port), OperationsPages)
    threading.Thread(target=server.serve_forever, name=f"{service}-operations", daemon=True).start()
    return server
