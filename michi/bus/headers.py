"""The Kafka headers every Michi message carries, written and read in this one place.

- `traceparent`: W3C trace context, so one upload can be traced across every service;
- `content-type`: `application/x-protobuf`;
- `schema`: the proto message's full name, e.g. `michi.v1.UploadReceived`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

CONTENT_TYPE = "application/x-protobuf"
_propagator = TraceContextTextMapPropagator()

HeaderList = list[tuple[str, bytes]]


def build_headers(schema: str, context: otel_context.Context | None = None) -> HeaderList:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=context)
    headers: HeaderList = [("content-type", CONTENT_TYPE.encode()), ("schema", schema.encode())]
    headers.extend((key, value.encode()) for key, value in carrier.items())
    return headers


def read_headers(raw: Iterable[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None) -> dict[str, str]:
    if raw is None:
        return {}
    items = raw.items() if isinstance(raw, Mapping) else raw
    return {str(key).lower(): (value or b"").decode("utf-8", "replace") for key, value in items}


def extract_context(headers: Mapping[str, str]) -> otel_context.Context:
    return _propagator.extract(headers)


def trace_id_of(headers: Mapping[str, str]) -> str:
    """The 32-hex trace id in a message's traceparent, or '' when it has none."""
    span_context = trace.get_current_span(extract_context(headers)).get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else ""


def current_trace_id() -> str:
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else ""


# The global propagator is also W3C, so libraries that use it agree with the bus.
propagate.set_global_textmap(_propagator)
