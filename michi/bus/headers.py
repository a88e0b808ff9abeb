"""The Kafka headers every Michi message carries, written and read in this one place.

- `traceparent`: W3C trace context, so one upload can be traced across every service;
- `content-type`: `application/x-protobuf`;
- `schema`: the proto message's full name, e.g. `michi.v1.UploadReceived`.

Work that outlives its message (an annotation task, a retrain alert waiting for its run) keeps the
`current_traceparent()` of the span that received it, and the span that finishes the work later, in a
trace of its own, links back to it (`links_to`).
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


# A traceparent's last character is the low hex digit of its flags: odd means the trace is sampled.
_SAMPLED_DIGITS = frozenset(b"13579bdfBDF")
TRACEPARENT_LENGTH = 55


def sampled_traceparent(raw: Iterable[tuple[str, bytes | None]] | None) -> str | None:
    """The record's `traceparent` when it says its trace is sampled (W3C flags bit 0), else None.

    Read from the record's header list as confluent-kafka gives it, without decoding the other headers: a
    consumer that handles records in batches opens spans only for sampled traces, and asks this of every record,
    so an unsampled or untraced record costs a look at its few headers. A malformed traceparent counts as none
    (`extract_context` would ignore it too)."""
    if not raw:
        return None
    for key, value in raw:
        if len(key) == 11 and key.lower() == "traceparent":
            if value is None or len(value) < TRACEPARENT_LENGTH or value[TRACEPARENT_LENGTH - 1] not in _SAMPLED_DIGITS:
                return None
            return value[:TRACEPARENT_LENGTH].decode("ascii", "replace")
    return None


def traceparent_trace_id(traceparent: str) -> str:
    """The 32-hex trace id a traceparent names (its second field)."""
    return traceparent[3:35]


def extract_context(headers: Mapping[str, str]) -> otel_context.Context:
    return _propagator.extract(headers)


def trace_id_of(headers: Mapping[str, str]) -> str:
    """The 32-hex trace id in a message's traceparent, or '' when it has none."""
    span_context = trace.get_current_span(extract_context(headers)).get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else ""


def current_trace_id() -> str:
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else ""


def current_traceparent() -> str:
    """The current span's W3C traceparent, '' without one: kept with work that outlives its message (a task)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent", "")


def links_to(*traceparents: str | None) -> list[trace.Link]:
    """Span links to the spans these stored traceparents name (empty, malformed and repeated ones left out)."""
    links: dict[tuple[int, int], trace.Link] = {}
    for traceparent in traceparents:
        if not traceparent:
            continue
        span_context = trace.get_current_span(extract_context({"traceparent": traceparent})).get_span_context()
        if span_context.is_valid:
            links.setdefault((span_context.trace_id, span_context.span_id), trace.Link(span_context))
    return list(links.values())


# The global propagator is also W3C, so libraries that use it agree with the bus.
propagate.set_global_textmap(_propagator)
