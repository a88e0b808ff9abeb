"""Logging and tracing, configured once per process.

`configure_logging()` writes JSON lines carrying the current trace and span ids.
`configure_tracing()` reads the standard OpenTelemetry variables (`tracing_setup()`): spans go over
OTLP (http/protobuf or grpc) when OTEL_TRACES_EXPORTER says `otlp` or, unset, when an OTLP endpoint
is set; else to `.michi/traces/<service>.jsonl`, which `michi trace` reads. Sampling, resource
attributes, headers, TLS and timeouts are the SDK's and the exporters' own reading of the same
variables; this module only refuses values they would silently replace (docs/observability.md).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter, SpanExportResult

if TYPE_CHECKING:
    from fastapi.telemetry import TelemetryConfig

logger = logging.getLogger(__name__)

_STANDARD_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_configured_tracing = False


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line with the active trace context and any `extra=` fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _STANDARD_RECORD_FIELDS and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries that log every fetch or request at INFO drown the decisions we log.
    for noisy in ("aiokafka", "faust", "mode", "uvicorn.access", "httpx", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans to a JSON-lines file (one file per service)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            context = span.get_span_context()
            if context is None:
                continue
            lines.append(
                orjson.dumps(
                    {
                        "trace_id": format(context.trace_id, "032x"),
                        "span_id": format(context.span_id, "016x"),
                        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
                        "name": span.name,
                        "kind": span.kind.name,
                        "service": span.resource.attributes.get("service.name"),
                        "start_ns": span.start_time,
                        "end_ns": span.end_time,
                        "status": span.status.status_code.name,
                        # Attribute values are str, bool, int, float or tuples of one of them.
                        "attributes": dict(span.attributes or {}),
                    },
                    option=orjson.OPT_APPEND_NEWLINE,
                )
            )
        with self._lock, self.path.open("ab") as output:
            output.write(b"".join(lines))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


# The values each standard variable may take here; anything else stops the process at start
# (the SDK and the exporters would log a warning and carry on with a default instead).
TRACES_EXPORTERS = ("otlp", "console", "none")
OTLP_PROTOCOLS = ("http/protobuf", "grpc")
TRACES_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
OTLP_COMPRESSIONS = {"http/protobuf": ("none", "gzip", "deflate"), "grpc": ("none", "gzip")}
_RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")
_DEFAULT_OTLP_ENDPOINTS = {"http/protobuf": "http://localhost:4318", "grpc": "http://localhost:4317"}
# OTEL_EXPORTER_OTLP_*HEADERS entries as the exporters parse them (`opentelemetry.util.re`, liberal):
# a token, '=', then printable ASCII without '"', ',', ';' or '\'.
_HEADER_ENTRY = re.compile(
    r"[ \t]*[\x21\x23-\x27\x2a\x2b\x2d\x2e\x30-\x39\x41-\x5a\x5e-\x7a\x7c\x7e]+[ \t]*=[ \t]*"
    r"[\x20\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*[ \t]*"
)
_LIST_DELIMITER = re.compile(r"[ \t]*,[ \t]*")


class TracingConfigurationError(ValueError):
    """An OTEL_* variable holds a value tracing cannot use; the message names the variable, never a header value."""


@dataclass(frozen=True)
class TracingSetup:
    """Where spans go, as the OTEL_* variables say: `exporters` among `otlp`, `console` and `files`."""

    exporters: tuple[str, ...]
    protocol: str = "http/protobuf"
    compression: str | None = None
    # Where OTLP spans are sent, without user info or query (safe to log); '' without `otlp`.
    endpoint: str = ""


def _setting(*names: str) -> tuple[str, str] | None:
    """The first of these variables that is set and not empty (empty means unset), as (name, value)."""
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return name, value
    return None


def tracing_setup() -> TracingSetup:
    """Read and check the OTEL_* variables tracing uses; raise `TracingConfigurationError` on the first bad one."""
    _check_sampler()
    _check_resource_attributes()
    endpoint = _setting("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    chosen = _setting("OTEL_TRACES_EXPORTER")
    exporters: tuple[str, ...]
    if chosen is None:
        # Michi's default: a collector when one is named, else the files `michi trace` reads.
        exporters = ("otlp",) if endpoint else ("files",)
    else:
        name, value = chosen
        exporters = tuple(dict.fromkeys(part.lower() for part in _LIST_DELIMITER.split(value) if part))
        unknown = [part for part in exporters if part not in TRACES_EXPORTERS]
        if unknown:
            raise TracingConfigurationError(f"{name}: unknown exporter {unknown[0]!r} (otlp, console or none)")
        if "none" in exporters:
            if len(exporters) > 1:
                raise TracingConfigurationError(f"{name}: 'none' cannot be combined with other exporters")
            exporters = ()
    if "otlp" not in exporters:
        return TracingSetup(exporters)
    protocol = _otlp_protocol()
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        _check_endpoint(variable)
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"):
        _check_headers(variable)
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        _check_timeout(variable)
    compression = _setting("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION")
    if compression is not None:
        name, value = compression
        if value.lower() not in OTLP_COMPRESSIONS[protocol]:
            allowed = ", ".join(OTLP_COMPRESSIONS[protocol])
            raise TracingConfigurationError(f"{name}: unknown compression {value!r} with {protocol} ({allowed})")
    return TracingSetup(
        exporters,
        protocol=protocol,
        compression=compression[1].lower() if compression else None,
        endpoint=_otlp_endpoint(protocol),
    )


def _otlp_protocol() -> str:
    chosen = _setting("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    if chosen is None:
        return "http/protobuf"
    name, value = chosen
    if value == "http/json":
        raise TracingConfigurationError(
            f"{name}: http/json is not supported by the Python exporter (http/protobuf or grpc)"
        )
    if value not in OTLP_PROTOCOLS:
        raise TracingConfigurationError(f"{name}: unknown protocol {value!r} (http/protobuf or grpc)")
    return value


def _check_sampler() -> None:
    sampler = os.environ.get("OTEL_TRACES_SAMPLER")
    if not sampler:
        return
    # The SDK lower-cases the name but does not strip it.
    if sampler.lower() not in TRACES_SAMPLERS:
        raise TracingConfigurationError(
            f"OTEL_TRACES_SAMPLER: unknown sampler {sampler!r} ({', '.join(TRACES_SAMPLERS)})"
        )
    argument = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if sampler.lower() in _RATIO_SAMPLERS and argument:
        try:
            ratio = float(argument)
        except ValueError:
            ratio = math.nan
        if not 0.0 <= ratio <= 1.0:
            raise TracingConfigurationError(
                f"OTEL_TRACES_SAMPLER_ARG: {argument!r} is not a ratio from 0 to 1 (for {sampler.lower()})"
            )


def _check_resource_attributes() -> None:
    value = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    for position, entry in enumerate(value.split(","), start=1):
        key, separator, _ = entry.partition("=")
        if entry.strip() and not (separator and key.strip()):
            raise TracingConfigurationError(f"OTEL_RESOURCE_ATTRIBUTES: entry {position} is not key=value")


def _check_endpoint(variable: str) -> None:
    value = os.environ.get(variable, "").strip()
    if not value:
        return
    try:
        parts = urlsplit(value)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 (a port that is not a number raises ValueError)
    except ValueError:
        valid = False
    if not valid:
        # The value is not repeated: a URL may carry credentials.
        raise TracingConfigurationError(f"{variable}: not an http:// or https:// URL with a host")


def _check_headers(variable: str) -> None:
    value = os.environ.get(variable, "")
    for position, entry in enumerate(_LIST_DELIMITER.split(value), start=1):
        if entry and not _HEADER_ENTRY.fullmatch(entry.strip()):
            # Never the entry itself: header values are API keys and tokens.
            raise TracingConfigurationError(
                f"{variable}: entry {position} is not name=value (URL-encode the value; it is not shown here)"
            )


def _check_timeout(variable: str) -> None:
    value = os.environ.get(variable, "").strip()
    if not value:
        return
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise TracingConfigurationError(
            f"{variable}: {value!r} is not a positive number (of seconds, as the Python exporters read it)"
        )


def _otlp_endpoint(protocol: str) -> str:
    """Where the exporter of `protocol` sends spans (their own defaults and rules), without credentials."""
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or _DEFAULT_OTLP_ENDPOINTS[protocol]
    if traces:
        url = traces
    elif protocol == "http/protobuf":
        url = f"{base.removesuffix('/')}/v1/traces"
    else:
        url = base
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def service_resource(service: str) -> Resource:
    """`service.name` from OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES, else `michi-<service>`; plus the rest of those."""
    named = OTELResourceDetector().detect().attributes.get(SERVICE_NAME)
    return Resource.create({SERVICE_NAME: str(named) if named else f"michi-{service}"})


def span_exporters(setup: TracingSetup, service: str, home: Path) -> list[SpanExporter]:
    """The exporters `setup` names; each OTLP exporter reads its endpoint, headers, TLS files and timeout itself."""
    exporters: list[SpanExporter] = []
    for name in setup.exporters:
        if name == "files":
            exporters.append(JsonLinesSpanExporter(home / "traces" / f"{service}.jsonl"))
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            exporters.append(_otlp_span_exporter(setup))
    return exporters


def _otlp_span_exporter(setup: TracingSetup) -> SpanExporter:
    try:
        if setup.protocol == "grpc":
            import grpc
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

            # Given, not read again: the gRPC exporter refuses `none` (which the specification allows) and an
            # empty variable (which means unset).
            gzip = setup.compression == "gzip"
            return GrpcSpanExporter(compression=grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

        return HttpSpanExporter()
    except ImportError as error:
        raise TracingConfigurationError(
            f"OTLP over {setup.protocol} needs {error.name}, which is not installed (pip install -c constraints.txt -e .)"
        ) from None


def configure_tracing(service: str, home: Path) -> None:
    """Install the process-wide tracer provider once; a bad OTEL_* value stops the process with a one-line message."""
    global _configured_tracing
    if _configured_tracing:
        return
    try:
        setup = tracing_setup()
        exporters = span_exporters(setup, service, home)
    except TracingConfigurationError as error:
        print(f"michi: configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    # No sampler given: the SDK builds it from OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (checked above).
    provider = TracerProvider(resource=service_resource(service))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    _configured_tracing = True
    logger.info(
        "tracing configured",
        extra={
            "exporters": ",".join(setup.exporters) or "none",
            "otlp_protocol": setup.protocol if setup.endpoint else None,
            "otlp_endpoint": setup.endpoint or None,
        },
    )


# The operations pages every service answers (`michi.readiness`): probed every few seconds, never traced.
OPERATIONS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def _is_operations_request(scope: Any) -> bool:
    return scope.get("type") == "http" and scope.get("path") in OPERATIONS_PATHS


def http_telemetry() -> TelemetryConfig:
    """FastAPI's own telemetry (`FastAPI(telemetry=...)`) for a service's people-facing API.

    Request spans for the API's routes; none for `/healthz`, `/readyz` and `/metrics`, which probes and
    scrapers call every few seconds (each would be a trace of its own at the collector). Metrics stay
    Prometheus's (`michi.telemetry.metrics`), logs Michi's JSON lines.
    """
    config: TelemetryConfig = {"tracing": True, "metrics": False, "logs": False, "exclude": _is_operations_request}
    return config
