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

`serve_operations` can also serve a service's own pages beside those three (the monitor's page,
`services/monitor/entrypoints/page.py`): `pages` maps a path (exact, or a prefix ending in `/*`) to a function
from a `PageRequest` (path, parsed query, headers) to a `PageAnswer` (status, body, content type, headers).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
from confluent_kafka import Consumer
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from pydantic import BaseModel

from michi.bus.connection import KafkaConnection, as_connection
from michi.bus.stalls import NOT_READY_AFTER_S, Partition, Position, StallDetector, read_positions
from michi.telemetry.metrics import render_metrics

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 5.0
# A service's own pages (`serve_operations(pages=...)`): the longest request target (path and query) and the most
# query parameters they are handed; longer or more is refused (414, 400) before a page sees it.
MAX_PAGE_TARGET = 2048
MAX_PAGE_PARAMETERS = 32
# Seconds a connection to the operations server may sit idle mid-request before it is dropped.
REQUEST_TIMEOUT_S = 30.0
# The pages every service answers itself; a service's own pages cannot take them.
OPERATIONS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

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


@dataclass(frozen=True)
class PageRequest:
    """A GET of one of a service's own pages (`serve_operations(pages=...)`).

    `path` is percent-decoded, without the query; `query` is the parsed query string (every value of each
    name, blank ones kept); `headers` has lower-case names.
    """

    path: str
    query: Mapping[str, list[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    def parameter(self, name: str) -> str | None:
        """The first value of query parameter `name`, None when absent."""
        values = self.query.get(name)
        return values[0] if values else None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class PageAnswer:
    """What a service's own page answers: status, body, content type and any further headers."""

    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


PageHandler = Callable[[PageRequest], PageAnswer]


def json_answer(status: int, body: Any, headers: Mapping[str, str] | None = None) -> PageAnswer:
    """A JSON answer (orjson: NaN and infinities become null)."""
    return PageAnswer(status, orjson.dumps(body), "application/json", dict(headers or {}))


def _page_of(pages: Mapping[str, PageHandler], path: str) -> PageHandler | None:
    """The page of `path`: its exact entry, else the longest `/*` prefix entry it starts with."""
    if path in pages:
        return pages[path]
    prefixes = sorted((key[:-1] for key in pages if key.endswith("/*")), key=len, reverse=True)
    for prefix in prefixes:
        if path.startswith(prefix):
            return pages[prefix + "*"]
    return None


def serve_operations(
    service: str,
    port: int,
    *,
    alive: Callable[[], bool],
    registry: CollectorRegistry,
    ready: Mapping[str, Callable[[], str | None]] | None = None,
    checks: Mapping[str, ReadinessCheck] | None = None,
    host: str = "127.0.0.1",
    pages: Mapping[str, PageHandler] | None = None,
) -> ThreadingHTTPServer:
    """`/healthz`, `/readyz` and `/metrics` of a service that has no HTTP app of its own, on `host:port`.

    `/healthz` is 200 with `health_body` while `alive()`, else 503. `/readyz` answers `readiness_body`
    (200 when every check says "ok", else 503): first the service's own judgements in `ready` (each returns
    None when ready, else why not), then the async `checks` (`run_checks`, in an event loop of their own per
    request, bounded like every `/readyz` check), one answer at a time (a `ConsumerProgress` keeps clocks).
    The pages run in a daemon thread and log nothing per request; `server.shutdown()` and
    `server.server_close()` stop them (port 0: a free port, `server.server_address[1]`).

    `pages`: the service's own GET pages beside those three, by path: an exact path ("/"), or a prefix ending in
    "/*" ("/v1/monitor/*": every path under it, the longest prefix first). Each gets a `PageRequest` and returns
    a `PageAnswer`; a request target longer than `MAX_PAGE_TARGET` is answered 414, a query with more than
    `MAX_PAGE_PARAMETERS` parameters 400, a page that raises 500 (logged). They answer whatever their caller
    decides about who may see them: `serve_operations` checks no credentials.
    """
    own = dict(ready or {})
    dependencies = dict(checks or {})
    judging = threading.Lock()
    own_pages = dict(pages or {})
    taken = sorted(OPERATIONS_PATHS & {key.removesuffix("/*") for key in own_pages})
    if taken:
        raise ValueError(f"pages cannot take the operations paths: {', '.join(taken)}")

    def outcomes() -> dict[str, str]:
        answers = {name: "ok" if (why := judge()) is None else f"error: {why}" for name, judge in own.items()}
        if dependencies:
            answers.update(asyncio.run(run_checks(dependencies))[1])
        return answers

    class OperationsPages(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT_S

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
            elif own_pages:
                self._own_page()
            else:
                self._answer(404, b'{"status": "not found"}', "application/json")

        def _own_page(self) -> None:
            if len(self.path) > MAX_PAGE_TARGET:
                self._answer(414, b'{"status": "request target too long"}', "application/json")
                return
            target = urlsplit(self.path)
            path = unquote(target.path)
            page = _page_of(own_pages, path)
            if page is None:
                self._answer(404, b'{"status": "not found"}', "application/json")
                return
            try:
                query = parse_qs(target.query, keep_blank_values=True, max_num_fields=MAX_PAGE_PARAMETERS)
            except ValueError:
                self._answer(400, b'{"status": "too many query parameters"}', "application/json")
                return
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                answer = page(PageRequest(path=path, query=query, headers=headers))
            except Exception:
                logger.exception("page failed", extra={"service": service, "path": path[:200]})
                self._answer(500, b'{"status": "error"}', "application/json")
                return
            self._answer(answer.status, answer.body, answer.content_type, answer.headers)

        def _answer(
            self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer((host, port), OperationsPages)
    threading.Thread(target=server.serve_forever, name=f"{service}-operations", daemon=True).start()
    return server
