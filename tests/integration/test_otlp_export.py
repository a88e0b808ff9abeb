"""One upload's trace leaves the machine over OTLP: ingest, inference, scoring, warehouse and annotation,
run as processes, export it.

Each test starts a local OTLP receiver (HTTP: `POST /v1/traces` decoded as `ExportTraceServiceRequest`;
gRPC: a `TraceServiceServicer`), then `python -m services.<name>` for every service in
`TRACED_SERVICES` against the session's Kafka and redis-server, configured only through the standard
variables (OTEL_EXPORTER_OTLP_ENDPOINT, _PROTOCOL, _HEADERS, OTEL_RESOURCE_ATTRIBUTES). A device
posts one upload to ingest with a W3C traceparent; inference, told to find every window uncertain
(`MICHI_INFERENCE_UNCERTAINTY_BAND=1`), asks people to label its windows, so annotation makes tasks of
them. The test waits (bounded) until spans of that trace arrive from every service, with one trace id
across them, the resource attributes merged, and the header carrying a stand-in secret delivered to the
receiver but written to no service's log. (The label a person later gives is a trace of its own, linked
to this one: `tests/integration/test_annotation_trace_links.py`.)

    .venv/bin/pytest -q tests/integration/test_otlp_export.py
"""

from __future__ import annotations

import gzip
import os
import secrets
import signal
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from sqlalchemy import create_engine, text

from michi.infra.processes import free_port, wait_until
from services.ingest.wiring import device_registry

from .ingest_support import make_upload, settings_for

pytestmark = pytest.mark.integration

REPOSITORY = Path(__file__).resolve().parents[2]
# The services one upload's trace must reach, in start order, with the variable of each one's HTTP port;
# the receivers, the processes and the assertions follow it. (The trainer's spans are its runs', traces of
# their own: tests/unit/test_trace_links.py.)
TRACED_SERVICES = (
    ("ingest", "MICHI_INGEST_HTTP_PORT"),
    ("inference", "MICHI_INFERENCE_PORT"),
    ("scoring", "MICHI_SCORING_PORT"),
    ("warehouse", "MICHI_WAREHOUSE_PORT"),
    ("annotation", "MICHI_ANNOTATION_PORT"),
)
# A stand-in for a collector's API key: it must reach the receiver and no log.
SECRET_HEADER = "x-michi-test-api-key"


@dataclass
class ExportedSpan:
    service: str
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    resource: dict[str, str]


@dataclass
class Received:
    """What a receiver was sent: spans, and the value of SECRET_HEADER on every export."""

    spans: list[ExportedSpan] = field(default_factory=list)
    secret_values: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest, secret: str | None) -> None:
        spans: list[ExportedSpan] = []
        for resource_spans in request.resource_spans:
            resource = {attribute.key: attribute.value.string_value for attribute in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                spans.extend(
                    ExportedSpan(
                        service=resource.get("service.name", ""),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        resource=resource,
                    )
                    for span in scope_spans.spans
                )
        with self.lock:
            self.spans.extend(spans)
            self.secret_values.append(secret or "")

    def of_trace(self, trace_id: str) -> list[ExportedSpan]:
        with self.lock:
            return [span for span in self.spans if span.trace_id == trace_id]


@contextmanager
def http_receiver() -> Iterator[tuple[str, Received]]:
    """An OTLP/HTTP receiver on loopback: yields (base endpoint, what it received)."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
                self.send_error(404 if self.path != "/v1/traces" else 415)
                return
            encoding = self.headers.get("content-encoding")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            received.add(trace_service_pb2.ExportTraceServiceRequest.FromString(body), self.headers.get(SECRET_HEADER))
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="otlp-http-receiver", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def grpc_receiver() -> Iterator[tuple[str, Received]]:
    """An OTLP/gRPC receiver (TraceService/Export) on loopback: yields (endpoint, what it received)."""
    received = Received()

    class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(  # noqa: N802 (the generated servicer's name)
            self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
        ) -> trace_service_pb2.ExportTraceServiceResponse:
            metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
            received.add(request, metadata.get(SECRET_HEADER))
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.stop(grace=None).wait(10)


RECEIVERS = {"http/protobuf": http_receiver, "grpc": grpc_receiver}


@dataclass
class ServiceProcess:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_services(environment: dict[str, str], home: Path) -> Iterator[list[ServiceProcess]]:
    """Every TRACED_SERVICES process started at once, yielded once each answers /readyz; SIGTERM on leaving."""
    started: list[ServiceProcess] = []
    try:
        for name, port_variable in TRACED_SERVICES:
            log_path = home / f"{name}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", f"services.{name}"],
                    cwd=REPOSITORY,
                    env=environment,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            started.append(ServiceProcess(name, int(environment[port_variable]), process, log_path))
        for service in started:
            ready = wait_until(lambda service=service: _ready(service), 90, 0.2)  # type: ignore[misc]
            assert ready, f"{service.name} not ready (exit {service.process.poll()}): {service.log()[-3000:]}"
        yield started
    finally:
        for service in started:
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        for service in started:
            try:
                service.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait(timeout=30)


def _ready(service: ServiceProcess) -> bool:
    assert service.process.poll() is None, f"{service.name} exited early: {service.log()[-3000:]}"
    try:
        return httpx.get(f"http://127.0.0.1:{service.port}/readyz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def service_environment(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, home: Path, protocol: str, endpoint: str, secret: str
) -> dict[str, str]:
    """MICHI_* for the session's servers on free ports, and only the standard OTEL_* variables for tracing."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    environment.update(
        {
            "MICHI_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "MICHI_REDIS_URL": redis_url,
            "MICHI_TOPIC_PREFIX": topic_prefix,
            "MICHI_HOME": str(home),
            "MICHI_DATABASE_URL": f"sqlite:///{home / 'michi.db'}",
            "MICHI_BLOB_URL": f"file://{home / 'blobs'}",
            "MICHI_INGEST_GRPC_PORT": str(free_port()),
            # Every window uncertain: inference asks a label for each, the real path into annotation.
            "MICHI_INFERENCE_UNCERTAINTY_BAND": "1.0",
            # INFO: the start-up lines too are searched for the secret.
            "MICHI_LOG_LEVEL": "INFO",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_HEADERS": f"{SECRET_HEADER}={secret}",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=otlp-test",
        }
    )
    environment.update({port_variable: str(free_port()) for _, port_variable in TRACED_SERVICES})
    return environment


def orphans_in(spans: list[ExportedSpan], root_parent_id: str) -> list[ExportedSpan]:
    """Spans whose parent is neither among `spans` nor the device's span that started the trace."""
    span_ids = {span.span_id for span in spans}
    return [span for span in spans if span.parent_span_id not in span_ids and span.parent_span_id != root_parent_id]


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_one_upload_is_one_trace_across_the_services_at_the_collector(
    protocol: str, kafka_bootstrap: str, redis_url: str, topic_prefix: str, michi_home: Path
) -> None:
    registry = device_registry(settings_for(kafka_bootstrap, redis_url, topic_prefix, michi_home))
    token = registry.add_device("device-a")
    registry.close()
    secret = f"secret-{secrets.token_hex(8)}"
    trace_id = secrets.token_hex(16)
    device_span_id = secrets.token_hex(8)
    expected = {f"michi-{name}" for name, _ in TRACED_SERVICES}

    with RECEIVERS[protocol]() as (endpoint, received):
        environment = service_environment(
            kafka_bootstrap, redis_url, topic_prefix, michi_home, protocol, endpoint, secret
        )
        with running_services(environment, michi_home) as services:
            answer = httpx.post(
                f"http://127.0.0.1:{environment['MICHI_INGEST_HTTP_PORT']}/v1/uploads",
                content=make_upload("upload-otlp-1").SerializeToString(),
                headers={
                    "content-type": "application/x-protobuf",
                    "authorization": f"Bearer {token}",
                    "traceparent": f"00-{trace_id}-{device_span_id}-01",
                },
                timeout=30,
            )
            assert answer.status_code in (200, 201, 202), answer.text

            def every_service_exported() -> bool:
                # Children end (and are exported) before their parents: wait for the parents too.
                spans = received.of_trace(trace_id)
                return expected <= {span.service for span in spans} and not orphans_in(spans, device_span_id)

            wait_until(every_service_exported, 60, 0.5)
            spans = received.of_trace(trace_id)
            logs = {service.name: service.log() for service in services}

    by_service = {name: [span for span in spans if span.service == name] for name in expected}
    assert all(by_service.values()), (
        f"spans of the trace per service: { {name: len(found) for name, found in by_service.items()} }; "
        f"all received: {sorted({(span.service, span.name) for span in received.spans})}"
    )
    # The device's span is the parent of ingest's request span: the trace started at the device.
    assert any(
        span.parent_span_id == device_span_id and span.name == "POST /v1/uploads" for span in by_service["michi-ingest"]
    )
    # Inference and scoring continue it from the Kafka headers: spans on the topics they consume.
    assert any(span.name == f"{topic_prefix}uploads.v1 process" for span in by_service["michi-inference"])
    assert any(span.name.startswith(topic_prefix) for span in by_service["michi-scoring"])
    # Annotation made its tasks in the upload's trace: a consumer span per label request inference sent.
    assert any(span.name == f"{topic_prefix}label-requests.v1 process" for span in by_service["michi-annotation"])
    # Each task keeps the trace context it was made in: its label's publish span will link back to this trace.
    engine = create_engine(environment["MICHI_DATABASE_URL"])
    try:
        with engine.connect() as connection:
            traceparents = connection.execute(text("SELECT traceparent FROM annotation_task")).scalars().all()
    finally:
        engine.dispose()
    assert traceparents and {str(value).split("-")[1] for value in traceparents} == {trace_id}
    # One trace, parents inside it: every span but ingest's request span has its parent among the exported ones.
    assert {span.trace_id for span in spans} == {trace_id}
    orphans = orphans_in(spans, device_span_id)
    assert not orphans, [(span.service, span.name) for span in orphans]
    # OTEL_RESOURCE_ATTRIBUTES merged with Michi's service.name.
    assert {span.resource.get("deployment.environment.name") for span in spans} == {"otlp-test"}
    # The header reached the collector on every export, and no service wrote it to its log.
    assert received.secret_values and set(received.secret_values) == {secret}
    assert not [name for name, text in logs.items() if secret in text]
    # Each service said once where its spans go.
    assert all(f'"otlp_protocol":"{protocol}","otlp_endpoint":"{endpoint}' in text for text in logs.values())
